--- rtbackup.qr.plan: what a DICOM Q/R source holds in a selection, and what of it the
-- target lacks — C-FIND on both sides, compared by counts where both peers give
-- them and by SOP Instance UID lists where one does not.
--
--   studies    STUDY-level C-FIND at the source (date window, patient, study, the
--              study-level dicom_query_keys)
--   series     the series of 100 studies at a time, on each side (one SERIES-level
--              C-FIND with their UIDs as a list; study by study where a peer does not
--              answer lists)
--   diff       per study: a series the target lacks, or holds fewer instances of,
--              becomes a unit of work; one it holds more of than the source lists
--              (the archive keeps what the source deleted) is compared UID by UID
--
-- Why not by study counts: the archive keeps what the source deleted, so a study whose
-- old plan was deleted and a new one made has the same count on both sides while the
-- archive lacks the new plan. The series show it (a new series), at the price of the
-- series rows. What counts cannot show is an instance replaced by another in the same
-- series with the count unchanged; `rtbackup validate` compares UID lists and does.
local clock = require "rtbackup.clock"
local log = require "rtbackup.log"
local task = require "rtbackup.task"

local plan = {}

-- Studies whose series one C-FIND asks for (their UIDs as a list); answers to a
-- STUDY-level C-FIND from this many rows on are asked again in halves of their dates.
plan.STUDIES_PER_QUERY, plan.SPLIT_AT = 100, 200

-- Attributes of the STUDY level (sent with the study query); other keys of
-- dicom_query_keys go to the series query.
plan.STUDY_KEYS = {
    PatientID = true, PatientName = true, PatientBirthDate = true, PatientSex = true,
    StudyDate = true, StudyTime = true, AccessionNumber = true, StudyID = true,
    StudyDescription = true, ReferringPhysicianName = true, ModalitiesInStudy = true,
}

--- The rows of a C-FIND answer with a usable `key` (a UID, not empty), each UID once:
-- an archive answering from two nodes, or filing a study under two patient records,
-- lists it twice, and a row without its unique key names nothing to move or compare
-- (asking with it missing would match everything). Rows left out are logged.
function plan.unique(rows, key, peer_name)
    local seen, kept, blank, twice = {}, {}, 0, 0
    for _, row in ipairs(rows) do
        local uid = row[key]
        if type(uid) ~= "string" or uid == "" then
            blank = blank + 1
        elseif seen[uid] then
            twice = twice + 1
        else
            seen[uid] = true
            kept[#kept + 1] = row
        end
    end
    if blank > 0 or twice > 0 then
        log.warn("the archive's C-FIND answer lists rows twice or without their UID: each counted once",
                 {peer = peer_name, key = key, duplicates = twice, without_uid = blank})
    end
    return kept
end

local function count_of(row, key)
    local n = row and row[key or "NumberOfSeriesRelatedInstances"]
    return math.type(n) == "integer" and n or nil
end

--- SOP Instance UIDs of one series in `peer`: a set and a count (one IMAGE-level
-- C-FIND). `patient` names the patient for the audit log.
function plan.instance_uids(peer, study, series, patient)
    local set, n = {}, 0
    peer:find({level = "IMAGE", StudyInstanceUID = study, SeriesInstanceUID = series, SOPInstanceUID = "",
               patient = patient}, function(m)
        local uid = m.SOPInstanceUID
        if type(uid) == "string" and uid ~= "" and not set[uid] then
            set[uid] = true
            n = n + 1
        end
    end)
    return set, n
end

-- The day number of "YYYYMMDD", or nil.
local function day_of(s)
    return s and clock.day(s:sub(1, 4) .. "-" .. s:sub(5, 6) .. "-" .. s:sub(7, 8))
end

-- The STUDY-level answer of `peer` to `q` for the days first..last (day numbers): asked
-- whole, and again in halves while an answer holds SPLIT_AT rows or more. An archive
-- with a cap on its answers cuts a long list short and still ends with success; no cap
-- of SPLIT_AT or more goes unnoticed this way. A peer whose halves share a study does
-- not select by date: its whole answer is taken.
local function studies_by_halves(peer, q, first, last, rows)
    local function ask(from, to)
        local one = {}
        for k, v in pairs(q) do one[k] = v end
        one.StudyDate = clock.dicom_date(clock.format_day(from)) .. "-" .. clock.dicom_date(clock.format_day(to))
        return peer:find(one)
    end
    rows = rows or ask(first, last)
    if #rows < plan.SPLIT_AT or first == last then return rows end
    local middle = (first + last) // 2
    local left, right = ask(first, middle), ask(middle + 1, last)
    local in_left = {}
    for _, r in ipairs(left) do in_left[r.StudyInstanceUID or ""] = true end
    for _, r in ipairs(right) do
        if in_left[r.StudyInstanceUID or ""] then return rows end
    end
    left, right = studies_by_halves(peer, q, first, middle, left), studies_by_halves(peer, q, middle + 1, last, right)
    return table.move(right, 1, #right, #left + 1, left)
end

-- Studies without a StudyDate (Type 2: it may be empty) match no date range, so a run
-- by dates never sees them. With selection.undated they are listed too: every study
-- `q` selects is asked for, whatever its date, and those without one are kept.
local function undated_studies(peer, q)
    local all = {}
    for k, v in pairs(q) do all[k] = v end
    all.StudyDate = ""
    local rows, undated = peer:find(all), {}
    for _, r in ipairs(rows) do
        if r.StudyDate == nil or r.StudyDate == "" then undated[#undated + 1] = r end
    end
    if #rows >= plan.SPLIT_AT and q.PatientID == "*" then
        -- One answer for the whole archive: an archive with a cap on its answers may
        -- have cut it short, and only the undated studies of what it listed are seen.
        log.info("looked for studies without a StudyDate among every study of the source", {peer = peer.alias,
                 studies = #rows, undated = #undated})
    end
    return undated
end

--- The studies of `peer` in a selection {study_dates, patient, study, keys, undated
-- (true: also those without a StudyDate), undated_only (only those)}.
function plan.studies(peer, selection)
    local q = {level = "STUDY", StudyInstanceUID = selection.study or "", PatientID = "*",
               StudyDate = selection.study_dates or "", PatientName = "", NumberOfStudyRelatedInstances = "",
               NumberOfStudyRelatedSeries = ""}
    for k, v in pairs(selection.keys or {}) do
        if plan.STUDY_KEYS[k] then q[k] = v end
    end
    if selection.patient then q.PatientID = selection.patient end
    if selection.study then q.StudyDate = "" end -- a named study is taken whatever its date
    if selection.undated_only then
        return plan.unique(plan.of_patient(undated_studies(peer, q), selection.patient, peer.alias),
                           "StudyInstanceUID", peer.alias)
    end
    local a, b = q.StudyDate:match("^(%d%d%d%d%d%d%d%d)%-(%d%d%d%d%d%d%d%d)$")
    local first, last = day_of(a), day_of(b)
    local rows = (first and last and first <= last) and studies_by_halves(peer, q, first, last) or peer:find(q)
    if selection.undated and not selection.study and q.StudyDate ~= "" then
        local undated = undated_studies(peer, q)
        rows = table.move(undated, 1, #undated, #rows + 1, rows)
    end
    return plan.unique(plan.of_patient(rows, selection.patient, peer.alias), "StudyInstanceUID", peer.alias)
end

--- The rows of `rows` that are `patient`'s (all of them when patient is nil). C-FIND
-- reads '*' and '?' in an ID as wildcards, and an archive may match loosely (case,
-- prefix, its own rules): a row naming another patient is left out, and said. A row
-- naming none is kept only when the ID has no wildcard (the archive matched it exactly).
function plan.of_patient(rows, patient, peer_name)
    if not patient then return rows end
    local pattern = patient:find("[*?]") ~= nil
    local kept, others = {}, 0
    for _, row in ipairs(rows) do
        local id = row.PatientID
        if type(id) ~= "string" or id == "" then id = not pattern and patient or nil end
        if id ~= patient then
            others = others + 1
        else
            kept[#kept + 1] = row
        end
    end
    if others > 0 then
        log.warn("the archive answered a query for one patient with studies of others: left out",
                 {peer = peer_name, patient = patient, studies_left_out = others})
    end
    return kept
end

-- The series keys of the selection (those not at STUDY level).
local function series_keys(selection)
    local keys = {}
    for k, v in pairs(selection.keys or {}) do
        if not plan.STUDY_KEYS[k] then keys[k] = v end
    end
    return keys
end

-- Whether the selection's series keys filter the series (Modality = "RTPLAN", say):
-- then a study may have fewer matching series than it has, or none.
local function filters_series(selection)
    for _, v in pairs(series_keys(selection)) do
        if v ~= "" and v ~= "*" then return true end
    end
    return false
end

-- The SERIES-level query of the source (with the selection's series keys) or of the
-- target, for `study` (a UID or a list of them).
local function series_query(study, selection, patient)
    if not selection then
        return {level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = "",
                NumberOfSeriesRelatedInstances = "", patient = patient}
    end
    local q = {level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = "", Modality = "",
               NumberOfSeriesRelatedInstances = "", SeriesDate = "", patient = patient}
    for k, v in pairs(series_keys(selection)) do q[k] = v end
    return q
end

-- The series of a batch of studies in `peer`, in one C-FIND with their UIDs as a list:
-- {[study uid] = rows} for the studies of the batch it answered for (no rows: it holds
-- none of its series), or nil where the peer does not answer lists: a row outside the
-- batch or without its study, or no rows at all while the batch's first study asked
-- alone has some (a peer that reads a list as one UID matches nothing). selection: the
-- source's (its series keys), nil for the target. Of the source (unless its series are
-- filtered), a study with fewer rows than its NumberOfStudyRelatedSeries, or none, is
-- left out (asked alone later): an answer cut short by a cap on answers must not pass
-- for a study's whole list.
local function series_of_studies(peer, batch, selection)
    local uids, patients, out = {}, {}, {}
    for i, st in ipairs(batch) do
        uids[i], patients[i] = st.StudyInstanceUID, st.PatientID
        out[st.StudyInstanceUID] = {}
    end
    local rows = peer:find(series_query(#uids == 1 and uids[1] or uids, selection, patients))
    for _, row in ipairs(rows) do
        local list = out[row.StudyInstanceUID]
        if not list then return nil end
        list[#list + 1] = row
    end
    if #rows == 0 and #uids > 1 then
        local ok, alone = pcall(peer.find, peer, series_query(uids[1], selection, patients[1]))
        if not ok or #alone > 0 then return nil end
    end
    if selection and not filters_series(selection) then
        for _, st in ipairs(batch) do
            local n, listed = count_of(st, "NumberOfStudyRelatedSeries"), #out[st.StudyInstanceUID]
            if listed == 0 or (n and listed < n) then out[st.StudyInstanceUID] = nil end
        end
    end
    return out
end

-- Compares one study's series on both sides; units for the series not complete in
-- the target, plus counts. src_rows, tgt_rows: the study's series rows where the
-- batch queries gave them (nil: asked here).
local function diff_study(src_peer, tgt_peer, study, selection, accept, src_rows, tgt_rows)
    local patient = study.PatientID
    local src = plan.unique(src_rows or src_peer:find(series_query(study.StudyInstanceUID, selection, patient)),
                            "SeriesInstanceUID", src_peer.alias)
    local tgt = tgt_rows or tgt_peer:find(series_query(study.StudyInstanceUID, nil, patient))
    local in_target = {}
    for _, s in ipairs(tgt) do in_target[s.SeriesInstanceUID] = s end

    local result = {units = {}, complete = {}, found = 0, present = 0}
    for _, s in ipairs(src) do
        local uid = s.SeriesInstanceUID
        if not accept or accept(s, study) then
            local expected, present = count_of(s), count_of(in_target[uid])
            if in_target[uid] == nil then present = 0 end
            if expected == nil or present == nil or present > expected then
                -- A peer without counts (dcmqrscp, some archives), or a target holding
                -- more than the source lists (what the source deleted, beside what it
                -- may have added since): compare the lists.
                local src_set, n = plan.instance_uids(src_peer, study.StudyInstanceUID, uid, patient)
                local tgt_set = in_target[uid] and plan.instance_uids(tgt_peer, study.StudyInstanceUID, uid, patient) or {}
                expected, present = n, 0
                for u in pairs(src_set) do if tgt_set[u] then present = present + 1 end end
            end
            result.found = result.found + expected
            local data = {study = study.StudyInstanceUID, patient = patient, modality = s.Modality,
                          series_in_study = #src, date = study.StudyDate}
            if present >= expected then
                result.present = result.present + expected
                result.complete[#result.complete + 1] = {key = uid, kind = "series", expected = expected, data = data}
            else
                result.present = result.present + present
                result.units[#result.units + 1] = {key = uid, kind = "series", expected = expected,
                                                   present = present, data = data}
            end
        end
    end
    return result
end

--- The plan of a selection: {units = {...}, complete = {...}, found, present,
-- studies, errors = {...}, whole = {[study uid] = true: every series the source lists
-- is complete in the target}, not_compared = instances of the studies that could not be
-- compared (a peer failed), as the source counted them}. opts: concurrency, shard
-- (function(study_uid) -> bool), accept (function(series, study) -> bool), on_study
-- (function(result): each compared study's {units, complete, found, present} as soon
-- as it is known).
function plan.make(src_peer, tgt_peer, selection, opts)
    opts = opts or {}
    local studies = plan.studies(src_peer, selection)
    if opts.shard then
        local keep = {}
        for _, st in ipairs(studies) do if opts.shard(st.StudyInstanceUID) then keep[#keep + 1] = st end end
        studies = keep
    end
    -- The series of the studies, STUDIES_PER_QUERY at a time on each side (both sides
    -- at once); a batch a peer does not answer as a list is asked study by study
    -- (diff_study), as is one whose C-FIND failed. Each side's first batch goes alone:
    -- a peer that fails it (a strict archive may abort the association) is not asked
    -- the others, each of which would count toward its circuit breaker.
    local src_rows, tgt_rows = {}, {}
    local sides = {{peer = src_peer, selection = selection, into = src_rows}, {peer = tgt_peer, into = tgt_rows}}
    local function list(side, batch)
        local ok, listed = pcall(series_of_studies, side.peer, batch, side.selection)
        if not (ok and listed) then return false end
        for uid, rows in pairs(listed) do side.into[uid] = rows end
        return true
    end
    local batches = {}
    for i = 1, #studies, plan.STUDIES_PER_QUERY do
        batches[#batches + 1] = table.move(studies, i, math.min(i + plan.STUDIES_PER_QUERY - 1, #studies), 1, {})
    end
    local rest = {}
    if #batches > 0 then
        local first = task.map(sides, function(side) return list(side, batches[1]) end,
                               {concurrency = 2, errors = "return"})
        for k, side in ipairs(sides) do
            if first[k] then
                for b = 2, #batches do rest[#rest + 1] = {side = side, batch = batches[b]} end
            end
        end
    end
    task.map(rest, function(q) list(q.side, q.batch) end, {concurrency = opts.concurrency or 4, errors = "return"})
    local results, failures = task.map(studies, function(study)
        local uid = study.StudyInstanceUID
        local r = diff_study(src_peer, tgt_peer, study, selection, opts.accept, src_rows[uid], tgt_rows[uid])
        if opts.on_study then opts.on_study(r) end
        return r
    end, {concurrency = opts.concurrency or 4, errors = "return"})
    local out = {units = {}, complete = {}, found = 0, present = 0, studies = #studies, errors = {}, study_uids = {},
                 whole = {}, not_compared = 0}
    for _, st in ipairs(studies) do out.study_uids[st.StudyInstanceUID] = true end
    for i = 1, #studies do
        local r = results[i]
        if r then
            out.found, out.present = out.found + r.found, out.present + r.present
            if #r.units == 0 then out.whole[studies[i].StudyInstanceUID] = true end
            for _, u in ipairs(r.units) do out.units[#out.units + 1] = u end
            for _, u in ipairs(r.complete) do out.complete[#out.complete + 1] = u end
        else
            -- Not compared (a peer failed): its instances, where the source counted
            -- them, are work this run did not do.
            local n = count_of(studies[i], "NumberOfStudyRelatedInstances") or 0
            out.found, out.not_compared = out.found + n, out.not_compared + n
            out.errors[#out.errors + 1] = failures[i]
            if failures[i].kind ~= "stopped" then
                log.error("cannot compare a study", {study = studies[i].StudyInstanceUID, error = tostring(failures[i])})
            end
        end
    end
    return out
end

return plan
