--- rtbackup.qr.flow: the backup of a DICOM Q/R source (ARIA, MIM) into the archive,
-- as a flow of rtbackup.run.
--
--   plan      rtbackup.qr.plan: the series the target lacks (or holds in part)
--   group     a study whose every series is missing is one STUDY-level C-MOVE (one
--             sub-association at the source instead of one per series); other series
--             go one by one
--   transfer  the C-MOVE, straight from the source to the archive's AE
--   verify    every SOP Instance UID of the source found in the target (study-wide in
--             one C-FIND per side where the peers answer it, else series by series)
--   retry     what is still missing, on the source's rung of rtbackup.qr.ladder
--   finish    the references of the RT objects verified in this run (rtbackup.qr.references)
local clock = require "rtbackup.clock"
local ladder = require "rtbackup.qr.ladder"
local log = require "rtbackup.log"
local orthanc = require "rtbackup.orthanc"
local plan = require "rtbackup.qr.plan"
local run_mod -- rtbackup.run, required lazily (it requires this module)

local flow = {kind = "qr", unit = "instances"}

-- Days a run looks back by default (lookback_days unset): long enough for a course of
-- treatment, since the objects of a course (plans, structure sets, each day's
-- treatment records) are often added to the study of its planning CT, and StudyDate,
-- the only date a Q/R archive is asked by, is that CT's.
flow.LOOKBACK_DAYS = 90
-- A run for one patient without --since/--until takes the patient's every study,
-- whatever its date: asked for a patient, a backup of 90 days of them is a surprise.
flow.WHOLE_PATIENT = true

-- The journal's record of the last look for studies without a StudyDate: per source
-- and shard (each shard looks at its own share).
local function undated_fact(run)
    local shard = run.opts.shard
    return "source " .. run.source_alias .. (shard and (" shard " .. shard.index .. "/" .. shard.count) or ""),
           "undated_studies_looked_for"
end

-- Whether this run also looks for studies without a StudyDate, which no date range
-- matches: a run for one patient always (one cheap C-FIND), others once every
-- undated_sweep_days (a C-FIND listing every study of the source).
local function looks_for_undated(run)
    if run.opts.patient then return true end
    local every = run:setting("undated_sweep_days")
    if not every or every == 0 then return false end
    local last = run.journal and run.journal:fact(undated_fact(run))
    local today = clock.day(clock.today(run:setting("timezone")))
    return not (last and clock.day(last) and today - clock.day(last) < every)
end

--- The selection of a run: dates, patient, study, the source's query keys, and whether
-- studies without a StudyDate are looked for too.
function flow.selection(run)
    return {keys = run:setting("dicom_query_keys"), patient = run.opts.patient, study = run.opts.study,
            study_dates = run.since and (clock.dicom_date(run.since) .. "-" .. clock.dicom_date(run["until"])) or "",
            undated = not run.opts.study and run.since ~= nil and looks_for_undated(run)}
end

-- hand (rtbackup.run; nil in a dry run): each study's series as soon as they are
-- compared, so the first studies move while the others are still being compared.
function flow.plan(run, hand)
    run_mod = run_mod or require "rtbackup.run"
    local shard = run.opts.shard
    local accept = run.choices.qr.accept_series or nil
    local selection = flow.selection(run)
    local p = plan.make(run:peer(run.source_alias), run:peer(run.target_alias), selection, {
        concurrency = run:setting("max_associations"), accept = accept,
        shard = shard and function(study) return run_mod.in_shard(shard, study) end,
        on_study = hand and function(r) hand(r.units, r.complete) end,
    })
    run.ctx:flush() -- the planning C-FINDs are one audit batch
    if selection.undated and not run.opts.patient and not run.opts.dry_run then
        local scope, key = undated_fact(run)
        run.journal:set_fact(scope, key, clock.today(run:setting("timezone")))
    end
    -- Units the journal still has open (moved by a run that stopped before verifying
    -- them, say) in a study the target now holds whole: verified, not moved again.
    if not run.opts.dry_run and next(p.whole) then
        local done = {}
        for _, u in ipairs(run.journal:units(run.source_alias, {state = {"moved", "queued", "failed"}})) do
            if type(u.data) == "table" and p.whole[u.data.study] then done[#done + 1] = u.key end
        end
        if #done > 0 then run.journal:mark_many(run.source_alias, done, "verified", {}) end
    end
    -- The selection's studies: the references pass re-checks the edges of their RT objects.
    run.selected_studies, run.whole_studies = p.study_uids, p.whole
    if selection.patient and p.studies == 0 then
        run.summary.patient_not_found = selection.patient
        log.warn("the source has no study of this patient", {source = run.source_alias, patient = selection.patient})
    end
    return {open = hand and {} or p.units, complete = hand and {} or p.complete, found = p.found,
            present = p.present, errors = p.errors, skipped = p.not_compared,
            summary = {studies = p.studies, series_to_move = #p.units, plan_errors = #p.errors}}
end

--- The moves are asked of the source.
function flow.moves_from(run)
    return run:peer(run.source_alias)
end

--- The dry run's rows.
function flow.describe(run, units)
    local rows = {}
    for _, u in ipairs(units) do
        rows[#rows + 1] = {series = u.key, study = u.data.study, patient = u.data.patient, modality = u.data.modality,
                           instances = u.expected, missing = u.expected - (u.present or 0)}
    end
    return rows
end

--- Jobs: a whole study at once where every one of its series is to be moved and none
-- is half-done; series one by one otherwise.
function flow.group(run, units)
    local by_study, order = {}, {}
    for _, u in ipairs(units) do
        local study = u.data.study
        if not by_study[study] then by_study[study] = {}; order[#order + 1] = study end
        table.insert(by_study[study], u)
    end
    local jobs = {}
    for _, study in ipairs(order) do
        local list = by_study[study]
        local whole = list[1].data.series_in_study == #list and #list > 1
        for _, u in ipairs(list) do whole = whole and u.state ~= "moved" end
        if whole then
            jobs[#jobs + 1] = {level = "STUDY", study = study, units = list}
        else
            for _, u in ipairs(list) do jobs[#jobs + 1] = {level = "SERIES", study = study, units = {u}} end
        end
    end
    return jobs
end

--- The C-MOVE of a job's units; returns what the source reported it completed.
function flow.transfer(run, job, units)
    local source = run:peer(run.source_alias)
    local q = {level = job.level, StudyInstanceUID = job.study, destination = run:peer(run.target_alias).aet,
               patient = units[1].data.patient}
    if job.level == "STUDY" and #units == #job.units and ladder.study_moves(run) then
        local ok, r = pcall(source.move, source, q)
        if ok then
            run:move_answered(job, r)
            ladder.confirm(run)
            return r.completed
        end
        if not ladder.refused(r) then error(r, 0) end
        ladder.no_study_moves(run, r) -- then series by series, below
    end
    local completed = 0
    for _, u in ipairs(units) do
        q.level, q.SeriesInstanceUID = "SERIES", u.key
        local r = source:move(q)
        run:move_answered(job, r)
        ladder.confirm(run)
        completed = completed + (r.completed or 0)
    end
    return completed
end

-- Instances of a study by series: {series UID -> {SOP Instance UID -> true}}, from one
-- IMAGE-level C-FIND with the series left open; nil when the peer refuses that.
local function study_instances(peer, study, patient)
    local by_series = {}
    local ok = pcall(peer.find, peer, {level = "IMAGE", StudyInstanceUID = study, SeriesInstanceUID = "",
                                       SOPInstanceUID = "", patient = patient}, function(m)
        local series = m.SeriesInstanceUID
        if type(series) == "string" and series ~= "" then
            by_series[series] = by_series[series] or {}
            by_series[series][m.SOPInstanceUID] = true
        end
    end)
    return ok and by_series or nil
end

local function compare(src, tgt)
    local missing, n, total = {}, 0, 0
    for uid in pairs(src) do
        total = total + 1
        if not tgt[uid] then missing[uid] = true; n = n + 1 end
    end
    return {total = total, missing = missing, n = n}
end

-- The source counted more instances of unit `u` than it listed (a cap on its C-FIND
-- answers cuts lists short): what it did not list cannot be checked by UID. With every
-- listed one there and the archive holding at least the source's count, the series is
-- verified by that count, and the log says so once a run; otherwise it stays as
-- compared (the listed ones), and the summary counts the rest as unverified.
local function beyond_list(run, u, f, held)
    local unlisted = u.expected - f.total
    if f.n == 0 and held >= u.expected then
        f.total = u.expected
        if not run.said_unlisted then
            run.said_unlisted = true
            log.warn("the source lists fewer instances of a series than it counts (a cap on its C-FIND answers?): " ..
                     "the rest are verified by the archive's count", {source = run.source_alias, series = u.key,
                     counted = u.expected, listed = u.expected - unlisted, archive_holds = held})
        end
    else
        -- (asked again at each retry: counted once per series)
        run.unverified = run.unverified or {}
        run.unverified[u.key] = unlisted
        local sum = 0
        for _, k in pairs(run.unverified) do sum = sum + k end
        run.summary.unverified = sum
        run.failures.partial = true
        log.warn("instances the source counts but does not list cannot be verified",
                 {source = run.source_alias, series = u.key, counted = u.expected, unverified = unlisted})
    end
    return f
end

-- Unit `u`'s instances the source listed (`listed`) compared with the target's: through
-- the archive's REST API when it holds them all, else over DICOM (`study_wide`: the
-- target's answer for the whole study, if asked). Returns the comparison and the number
-- of instances the target holds of the series (nil from a study-wide answer).
local function compare_with_target(run, tgt, u, listed, study_wide)
    local archive = orthanc.of_run(run)
    if archive then
        local held, n, all = archive:series_holds(u.data.patient, u.data.study, u.key, listed)
        if all then return compare(listed, held), n end
    end
    if study_wide then return compare(listed, study_wide[u.key] or {}) end
    local b, held = plan.instance_uids(tgt, u.data.study, u.key, u.data.patient)
    return compare(listed, b), held
end

--- Which instances of `units` the target still lacks: {[key] = {total, missing, n}}.
-- A study moved whole is checked with one study-wide C-FIND at the source first (and
-- at the target, unless its REST API answers); series that check leaves in doubt (or
-- peers that refuse it, or a list shorter than the source's count) are checked one by
-- one. Only a C-FIND of the target declares an instance missing.
function flow.verify(run, job, units)
    local src, tgt = run:peer(run.source_alias), run:peer(run.target_alias)
    local found, rest = {}, units
    if job.level == "STUDY" and not job.checked_whole then
        job.checked_whole = true
        local patient = units[1].data.patient
        local a = study_instances(src, job.study, patient)
        local b = a and (orthanc.of_run(run) and {} or study_instances(tgt, job.study, patient))
        if b then
            rest = {}
            for _, u in ipairs(units) do
                local f = a[u.key] and compare_with_target(run, tgt, u, a[u.key], b)
                if f and f.n == 0 and f.total >= (u.expected or 0) then found[u.key] = f else rest[#rest + 1] = u end
            end
        end
    end
    for _, u in ipairs(rest) do
        local a = plan.instance_uids(src, u.data.study, u.key, u.data.patient)
        local f, held = compare_with_target(run, tgt, u, a)
        if u.expected and f.total < u.expected then f = beyond_list(run, u, f, held) end
        found[u.key] = f
    end
    return found
end

--- Moves what is still missing again, unit by unit, on the source's ladder rung.
function flow.retry(run, job, units, found, attempt)
    for _, u in ipairs(units) do
        local f = found[u.key]
        ladder.move_missing(run, u, f.missing, f.n)
    end
end

local function first_uids(set, max)
    local list = {}
    for u in pairs(set) do list[#list + 1] = u end
    table.sort(list)
    local shown = table.move(list, 1, math.min(max, #list), 1, {})
    return table.concat(shown, ", ") .. (#list > max and ", ..." or "")
end

--- The failure message of a unit still incomplete after the retries.
function flow.describe_missing(run, u, f, attempts)
    return string.format("%d of %d instances not in %s after %d retries: %s%s", f.n, f.total, run.target_alias,
                         attempts, first_uids(f.missing, 5), run:reported_failed_clause(f.missing))
end

--- The references of the RT objects verified in this run.
function flow.finish(run)
    if not run:setting("complete_references") then return end
    if run.failures.unreachable or run.failures.configuration then
        -- A peer this run could not use: what it would say of a reference is not known.
        run.summary.references_not_checked = true
        log.warn("references not checked: a peer could not be used in this run", {source = run.source_alias})
        return
    end
    require("rtbackup.qr.references").complete(run)
end

return flow
