--- rtbackup.qr_backup: verified incremental backup of a DICOM Q/R source (ARIA, MIM)
-- into a target archive.
--
--   plan    C-FIND studies in the date window, then per study the series on both
--           sides (NumberOfSeriesRelatedInstances; IMAGE-level UID lists where a
--           peer gives no counts); every incomplete series becomes a journal unit.
--   move    C-MOVE whole series, `concurrency` associations at once, oldest work
--           first, at most max_uids_per_run instances per run.
--   verify  every source SOP Instance UID of a moved series must be found in the
--           target (one IMAGE-level C-FIND per series and side); stragglers are
--           moved again at IMAGE level with backoff, then reported.
--
-- A series goes queued -> moved -> verified (or failed) in the journal, so a run
-- killed anywhere is finished by the next: moved-but-unverified series are verified
-- before anything is moved again, and verified ones are never moved again.
local audit = require "rtbackup.audit"
local errors = require "rtbackup.error"
local log = require "rtbackup.log"
local task = require "rtbackup.task"
local progress = require "rtbackup.progress"

local qr = {}

-- Attributes of the STUDY level (sent with the study query); other keys of
-- dicom_query_keys go to the series query.
local STUDY_KEYS = {
    PatientID = true, PatientName = true, PatientBirthDate = true, PatientSex = true,
    StudyDate = true, StudyTime = true, AccessionNumber = true, StudyID = true,
    StudyDescription = true, ReferringPhysicianName = true, ModalitiesInStudy = true,
}

local function is_unreachable(err)
    return type(err) == "table" and (err.kind == "connect_failed" or err.kind == "timeout"
        or err.kind == "rejected" or err.kind == "aborted" or err.kind == "unreachable")
end
qr.is_unreachable = is_unreachable

--- A circuit breaker per peer: after `limit` consecutive connection failures the peer
-- is skipped for the rest of the run (and reported), so a dead system is not hammered.
local Breaker = {}
Breaker.__index = Breaker

function qr.breaker(peer, limit)
    return setmetatable({peer = peer, limit = limit or 3, failures = 0, open = false}, Breaker)
end

--- Calls fn(...) unless the breaker is open; counts connection failures.
function Breaker:call(fn, ...)
    if self.open then
        errors.raise{kind = "unreachable", message = string.format(
            "%s skipped: %d connection failures in a row", tostring(self.peer), self.failures),
            peer = self.peer.alias}
    end
    local results = table.pack(pcall(fn, ...))
    if results[1] then
        self.failures = 0
        return table.unpack(results, 2, results.n)
    end
    local err = results[2]
    if is_unreachable(err) then
        self.failures = self.failures + 1
        if self.failures >= self.limit and not self.open then
            self.open = true
            log.error("peer unreachable, skipping it for the rest of the run",
                      {peer = tostring(self.peer), failures = self.failures, error = tostring(err)})
        end
    end
    error(err, 0)
end

local function count_of(row)
    local n = row and row.NumberOfSeriesRelatedInstances
    return math.type(n) == "integer" and n or nil
end

-- SOP Instance UIDs of one series (a set and a count), one IMAGE-level C-FIND.
local function instance_uids(peer, breaker, study, series)
    local set, n = {}, 0
    breaker:call(peer.find, peer, {level = "IMAGE", StudyInstanceUID = study, SeriesInstanceUID = series,
                                   SOPInstanceUID = ""}, function(m)
        if m.SOPInstanceUID and not set[m.SOPInstanceUID] then
            set[m.SOPInstanceUID] = true
            n = n + 1
        end
    end)
    return set, n
end

--- The studies of the source in the selection: {study_date_range, patient, study,
-- keys} -> list of study rows.
function qr.studies(ctx, selection)
    local q = {level = "STUDY", StudyInstanceUID = selection.study or "", PatientID = "*",
               StudyDate = selection.study_dates or "", PatientName = "", NumberOfStudyRelatedInstances = ""}
    for k, v in pairs(selection.keys or {}) do
        if STUDY_KEYS[k] then q[k] = v end
    end
    if selection.patient then q.PatientID = selection.patient end
    if selection.study then q.StudyDate = "" end -- a named study is taken whatever its date
    return ctx.source_breaker:call(ctx.source.find, ctx.source, q)
end

-- Compares one study's series on both sides; returns units for series not complete
-- in the target, plus counts for the summary.
local function diff_study(ctx, study, selection)
    local sq = {level = "SERIES", StudyInstanceUID = study.StudyInstanceUID, SeriesInstanceUID = "",
                Modality = "", NumberOfSeriesRelatedInstances = "", SeriesDate = ""}
    for k, v in pairs(selection.keys or {}) do
        if not STUDY_KEYS[k] then sq[k] = v end
    end
    local src = ctx.source_breaker:call(ctx.source.find, ctx.source, sq)
    local tgt = ctx.target_breaker:call(ctx.target.find, ctx.target, {
        level = "SERIES", StudyInstanceUID = study.StudyInstanceUID, SeriesInstanceUID = "",
        NumberOfSeriesRelatedInstances = ""})
    local in_target = {}
    for _, s in ipairs(tgt) do in_target[s.SeriesInstanceUID] = s end

    local result = {units = {}, complete = {}, found = 0, present = 0}
    for _, s in ipairs(src) do
        local uid = s.SeriesInstanceUID
        local expected, present = count_of(s), count_of(in_target[uid])
        if in_target[uid] == nil then present = 0 end
        if expected == nil or present == nil then
            -- A peer without counts (dcmqrscp): compare the instance lists.
            local src_set, n = instance_uids(ctx.source, ctx.source_breaker, study.StudyInstanceUID, uid)
            local tgt_set = in_target[uid] and
                instance_uids(ctx.target, ctx.target_breaker, study.StudyInstanceUID, uid) or {}
            expected, present = n, 0
            for u in pairs(src_set) do if tgt_set[u] then present = present + 1 end end
        end
        result.found = result.found + expected
        local data = {study = study.StudyInstanceUID, patient = study.PatientID, modality = s.Modality,
                      series_in_study = #src,
                      date = study.StudyDate}
        if present >= expected then
            result.present = result.present + expected
            result.complete[#result.complete + 1] = {key = uid, kind = "series", expected = expected, data = data}
        else
            result.present = result.present + present
            result.units[#result.units + 1] = {key = uid, kind = "series", expected = expected,
                                               present = present, data = data}
        end
    end
    return result
end

--- Plans the work: which series of the selection are incomplete in the target.
-- Returns {units = {...}, complete = {...}, found =, present =, studies =}.
-- Studies the target already holds whole, by instance counts at STUDY level: the
-- incremental run's shortcut (two C-FINDs instead of two per study). Only where both
-- peers give NumberOfStudyRelatedInstances; any doubt goes to the series diff.
local function complete_studies(ctx, studies)
    local counted, complete = {}, {}
    for _, st in ipairs(studies) do
        if math.type(st.NumberOfStudyRelatedInstances) == "integer" then counted[#counted + 1] = st end
    end
    for i = 1, #counted, 100 do
        local uids = {}
        for k = i, math.min(i + 99, #counted) do uids[#uids + 1] = counted[k].StudyInstanceUID end
        local there = {}
        for _, t in ipairs(ctx.target_breaker:call(ctx.target.find, ctx.target, {
                level = "STUDY", StudyInstanceUID = #uids == 1 and uids[1] or uids,
                NumberOfStudyRelatedInstances = ""})) do
            there[t.StudyInstanceUID] = t.NumberOfStudyRelatedInstances
        end
        for k = i, math.min(i + 99, #counted) do
            local st = counted[k]
            local n = there[st.StudyInstanceUID]
            if math.type(n) == "integer" and n >= st.NumberOfStudyRelatedInstances then
                complete[st.StudyInstanceUID] = true
            end
        end
    end
    return complete
end

function qr.plan(ctx, selection)
    local studies = qr.studies(ctx, selection)
    -- A series-level filter (Modality = "RTPLAN", say) makes the study's count the
    -- wrong "found" figure: then every study goes through the series diff.
    local series_keys = false
    for k, v in pairs(selection.keys or {}) do
        if not STUDY_KEYS[k] and v ~= "" and v ~= "*" then series_keys = true end
    end
    local whole = series_keys and {} or complete_studies(ctx, studies)
    local results, failures = task.map(studies, function(study)
        if whole[study.StudyInstanceUID] then
            local n = study.NumberOfStudyRelatedInstances
            return {units = {}, complete = {}, found = n, present = n}
        end
        return diff_study(ctx, study, selection)
    end, {concurrency = ctx.concurrency, errors = "return"})
    audit.flush() -- the planning C-FINDs are one batch
    local plan = {units = {}, complete = {}, found = 0, present = 0, studies = #studies, errors = {}}
    for i = 1, #studies do
        local r = results[i]
        if r then
            plan.found, plan.present = plan.found + r.found, plan.present + r.present
            for _, u in ipairs(r.units) do plan.units[#plan.units + 1] = u end
            for _, u in ipairs(r.complete) do plan.complete[#plan.complete + 1] = u end
        else
            plan.errors[#plan.errors + 1] = failures[i]
            log.error("cannot compare a study", {study = studies[i].StudyInstanceUID, error = tostring(failures[i])})
        end
    end
    return plan
end

-- Moves the instances in `missing` (a set) at IMAGE level, in batches.
local function move_instances(ctx, unit, missing)
    local uids = {}
    for u in pairs(missing) do uids[#uids + 1] = u end
    table.sort(uids)
    for i = 1, #uids, 100 do
        local batch = table.move(uids, i, math.min(i + 99, #uids), 1, {})
        ctx.source_breaker:call(ctx.source.move, ctx.source, {
            level = "IMAGE", StudyInstanceUID = unit.data.study, SeriesInstanceUID = unit.key,
            SOPInstanceUID = #batch == 1 and batch[1] or batch, destination = ctx.destination})
    end
end

-- Missing = source UIDs not found in the target.
local function missing_in_target(ctx, unit)
    local src = instance_uids(ctx.source, ctx.source_breaker, unit.data.study, unit.key)
    local tgt = instance_uids(ctx.target, ctx.target_breaker, unit.data.study, unit.key)
    local missing, n, total = {}, 0, 0
    for u in pairs(src) do
        total = total + 1
        if not tgt[u] then missing[u] = true; n = n + 1 end
    end
    return missing, n, total
end

--- Verifies one series; stragglers are moved again at IMAGE level with exponential
-- backoff, up to ctx.max_retries times. Returns total, missing_count, missing set.
function qr.verify(ctx, unit)
    local missing, n, total = missing_in_target(ctx, unit)
    local attempt, delay = 0, ctx.backoff_ms
    while n > 0 and attempt < ctx.max_retries do
        attempt = attempt + 1
        log.warn("instances missing after the move; moving them again",
                 {series = unit.key, missing = n, attempt = attempt})
        task.sleep(delay)
        delay = delay * 2
        move_instances(ctx, unit, missing)
        missing, n, total = missing_in_target(ctx, unit)
    end
    return total, n, missing
end

local function first_uids(set, max)
    local list = {}
    for u in pairs(set) do
        list[#list + 1] = u
        if #list >= max then break end
    end
    table.sort(list)
    return table.concat(list, ", ")
end

-- Records a failed move of `units` in the journal; returns "skipped" (the peer is
-- unreachable: the units stay queued for the next run) or "failed".
local function move_failed(ctx, units, err)
    local unreachable = err.kind == "unreachable" or is_unreachable(err)
    for _, unit in ipairs(units) do
        ctx.journal:mark(ctx.source_alias, unit.key, unreachable and "queued" or "failed",
                         {error = tostring(err), attempts_increment = true})
    end
    return unreachable and "skipped" or "failed"
end

--- Verifies one moved unit and records the outcome. Returns "verified" | "failed" |
-- "skipped", and the error or message.
function qr.check(ctx, unit)
    local j, source = ctx.journal, ctx.source_alias
    local ok, total, n, missing = pcall(qr.verify, ctx, unit)
    if not ok then
        -- Still "moved": the next run verifies before moving anything again.
        j:mark(source, unit.key, "moved", {error = tostring(total)})
        return is_unreachable(total) and "skipped" or "failed", total
    end
    if n == 0 then
        j:mark(source, unit.key, "verified", {})
        ctx.stats.verified = ctx.stats.verified + total
        return "verified"
    end
    local message = string.format("%d of %d instances not in %s after %d retries: %s%s", n, total,
                                  ctx.target_alias, ctx.max_retries, first_uids(missing, 5), n > 5 and ", ..." or "")
    j:mark(source, unit.key, "failed", {error = message})
    ctx.stats.failed = ctx.stats.failed + n
    log.error("series not completely backed up", {series = unit.key, missing = n, total = total})
    return "failed", message
end

--- Moves a group of units with one C-MOVE (a whole study when `level` is "STUDY",
-- else the one series), then verifies each. Returns a list of {unit, state, err}.
function qr.process(ctx, units, level)
    local outcomes = {}
    if ctx.outside_window and ctx.outside_window() then
        for _, unit in ipairs(units) do
            outcomes[#outcomes + 1] = {unit, "skipped", "outside the time window " .. ctx.window}
        end
        return outcomes
    end
    local fresh = {}
    for _, unit in ipairs(units) do
        if unit.state ~= "moved" then fresh[#fresh + 1] = unit end
    end
    if #fresh > 0 then
        local first = fresh[1]
        local query = {level = level, StudyInstanceUID = first.data.study, destination = ctx.destination}
        if level == "SERIES" then query.SeriesInstanceUID = first.key end
        local ok, r = pcall(ctx.source_breaker.call, ctx.source_breaker, ctx.source.move, ctx.source, query)
        if not ok then
            local state = move_failed(ctx, fresh, r)
            for _, unit in ipairs(fresh) do outcomes[#outcomes + 1] = {unit, state, r} end
            return outcomes
        end
        for _, unit in ipairs(fresh) do
            ctx.journal:mark(ctx.source_alias, unit.key, "moved",
                             {moved = level == "SERIES" and r.completed or nil, attempts_increment = true})
        end
        ctx.stats.moved = ctx.stats.moved + (r.completed or 0)
    end
    -- A whole study: one IMAGE-level C-FIND per side covers all its series, where the
    -- peers answer it; a series found incomplete (or peers that refuse such a query)
    -- gets the per-series check, with its retries.
    local complete = level == "STUDY" and qr.complete_series(ctx, units[1].data.study) or {}
    for _, unit in ipairs(units) do
        if complete[unit.key] == unit.expected then
            ctx.journal:mark(ctx.source_alias, unit.key, "verified", {})
            ctx.stats.verified = ctx.stats.verified + unit.expected
            outcomes[#outcomes + 1] = {unit, "verified"}
        else
            local state, err = qr.check(ctx, unit)
            outcomes[#outcomes + 1] = {unit, state, err}
        end
    end
    return outcomes
end

-- Instances of a study by series: {series UID -> {SOP Instance UID -> true}}, from one
-- IMAGE-level C-FIND with the series left open. nil when the peer refuses that.
local function study_instances(peer, study)
    local by_series = {}
    local ok = pcall(peer.find, peer, {level = "IMAGE", StudyInstanceUID = study, SeriesInstanceUID = "",
                                       SOPInstanceUID = ""}, function(m)
        local series = m.SeriesInstanceUID
        if type(series) == "string" and series ~= "" then
            by_series[series] = by_series[series] or {}
            by_series[series][m.SOPInstanceUID] = true
        end
    end)
    return ok and by_series or nil
end

--- For a study just moved whole: {series UID -> number of its source instances found
-- in the target}, for the series whose every source instance is there. Empty when
-- either peer does not answer study-wide IMAGE queries (dcmqrscp, strictly
-- hierarchical): the caller then checks series by series.
function qr.complete_series(ctx, study)
    local src = study_instances(ctx.source, study)
    local tgt = src and study_instances(ctx.target, study)
    local complete = {}
    if not tgt then return complete end
    for series, uids in pairs(src) do
        local n, all = 0, true
        for uid in pairs(uids) do
            if tgt[series] and tgt[series][uid] then n = n + 1 else all = false end
        end
        if all then complete[series] = n end
    end
    return complete
end

--- Picks the journal's open units, oldest first, within the per-run instance cap.
function qr.select(ctx, cap)
    local open = ctx.journal:units(ctx.source_alias, {state = {"moved", "queued", "failed"}, order = "oldest"})
    local chosen, instances, deferred = {}, 0, 0
    for _, u in ipairs(open) do
        local n = u.expected or 0
        if cap and instances > 0 and instances + n > cap then
            deferred = deferred + 1
        else
            chosen[#chosen + 1] = u
            instances = instances + n
        end
    end
    return chosen, instances, deferred
end

-- Work items: a study whose every series is to be moved goes as one STUDY-level
-- C-MOVE (one sub-association at the source instead of one per series); other
-- series go one by one.
local function group(units)
    local by_study, order = {}, {}
    for _, u in ipairs(units) do
        local study = u.data.study
        if not by_study[study] then by_study[study] = {}; order[#order + 1] = study end
        table.insert(by_study[study], u)
    end
    local jobs = {}
    for _, study in ipairs(order) do
        local list = by_study[study]
        local whole = list[1].data.series_in_study == #list
        for _, u in ipairs(list) do whole = whole and u.state ~= "moved" end
        if whole and #list > 1 then
            jobs[#jobs + 1] = {level = "STUDY", units = list}
        else
            for _, u in ipairs(list) do jobs[#jobs + 1] = {level = "SERIES", units = {u}} end
        end
    end
    return jobs
end

--- Runs the move+verify phase over `units`; returns {verified =, failed =, skipped =}.
function qr.execute(ctx, units, total_instances)
    local bar = progress.new(ctx.source_alias .. " -> " .. ctx.target_alias, total_instances)
    local outcome = {verified = 0, failed = 0, skipped = 0, errors = {}}
    task.map(group(units), function(job)
        for _, o in ipairs(qr.process(ctx, job.units, job.level)) do
            local unit, state, err = o[1], o[2], o[3]
            outcome[state] = outcome[state] + 1
            if err then outcome.errors[#outcome.errors + 1] = {series = unit.key, error = tostring(err)} end
            bar:add(unit.expected or 0)
        end
        audit.flush() -- a job (a series or a study) is a batch: on disk before the next starts
    end, {concurrency = ctx.concurrency, errors = "return"})
    bar:finish()
    return outcome
end

return qr
