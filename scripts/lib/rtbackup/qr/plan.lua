--- rtbackup.qr.plan: what a DICOM Q/R source holds in a selection, and what of it the
-- target lacks — C-FIND on both sides, compared by counts where both peers give
-- them and by SOP Instance UID lists where one does not.
--
--   studies    STUDY-level C-FIND at the source (date window, patient, study, the
--              study-level dicom_query_keys)
--   shortcut   studies the target holds whole by NumberOfStudyRelatedInstances (one
--              C-FIND per 100 studies) are counted, not compared series by series
--   diff       per remaining study, SERIES-level C-FIND on both sides (the source's
--              only, for a study that query showed the target lacks); a series the
--              target lacks (or holds in part) becomes a unit of work
local log = require "rtbackup.log"
local task = require "rtbackup.task"

local plan = {}

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

--- The studies of `peer` in a selection {study_dates, patient, study, keys}.
function plan.studies(peer, selection)
    local q = {level = "STUDY", StudyInstanceUID = selection.study or "", PatientID = "*",
               StudyDate = selection.study_dates or "", PatientName = "", NumberOfStudyRelatedInstances = ""}
    for k, v in pairs(selection.keys or {}) do
        if plan.STUDY_KEYS[k] then q[k] = v end
    end
    if selection.patient then q.PatientID = selection.patient end
    if selection.study then q.StudyDate = "" end -- a named study is taken whatever its date
    local rows = plan.of_patient(peer:find(q), selection.patient, peer.alias)
    return plan.unique(rows, "StudyInstanceUID", peer.alias)
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

-- Compares one study's series on both sides; units for the series not complete in
-- the target, plus counts. absent: the target's STUDY-level C-FIND did not return the
-- study, so its series are not asked of the target.
local function diff_study(src_peer, tgt_peer, study, selection, accept, absent)
    local patient = study.PatientID
    local sq = {level = "SERIES", StudyInstanceUID = study.StudyInstanceUID, SeriesInstanceUID = "",
                Modality = "", NumberOfSeriesRelatedInstances = "", SeriesDate = "", patient = patient}
    for k, v in pairs(series_keys(selection)) do sq[k] = v end
    local src = plan.unique(src_peer:find(sq), "SeriesInstanceUID", src_peer.alias)
    local tgt = absent and {} or tgt_peer:find{level = "SERIES", StudyInstanceUID = study.StudyInstanceUID,
                                               SeriesInstanceUID = "", NumberOfSeriesRelatedInstances = "",
                                               patient = patient}
    local in_target = {}
    for _, s in ipairs(tgt) do in_target[s.SeriesInstanceUID] = s end

    local result = {units = {}, complete = {}, found = 0, present = 0}
    for _, s in ipairs(src) do
        local uid = s.SeriesInstanceUID
        if not accept or accept(s, study) then
            local expected, present = count_of(s), count_of(in_target[uid])
            if in_target[uid] == nil then present = 0 end
            if expected == nil or present == nil then
                -- A peer without counts (dcmqrscp, some archives): compare the lists.
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

-- Studies the target already holds whole, by instance counts at STUDY level: the
-- incremental run's shortcut. Only where both peers give NumberOfStudyRelatedInstances;
-- any doubt goes to the series diff. Second result: the counted studies the target did
-- not return at all (it holds none of their series; a full backup's common case), where
-- its answer can be trusted for that: it returned some study of a list, or the list's
-- first study asked alone is not there either (a peer that ignores a list of UIDs
-- answers nothing; taking that as "absent" would move again what it holds).
local function complete_studies(tgt_peer, studies)
    local counted, complete, absent = {}, {}, {}
    for _, st in ipairs(studies) do
        if count_of(st, "NumberOfStudyRelatedInstances") then counted[#counted + 1] = st end
    end
    for i = 1, #counted, 100 do
        local uids, patients = {}, {}
        for k = i, math.min(i + 99, #counted) do
            uids[#uids + 1] = counted[k].StudyInstanceUID
            patients[#patients + 1] = counted[k].PatientID
        end
        local there = {}
        for _, t in ipairs(tgt_peer:find{level = "STUDY", StudyInstanceUID = #uids == 1 and uids[1] or uids,
                                         NumberOfStudyRelatedInstances = "", patient = patients}) do
            there[t.StudyInstanceUID] = t.NumberOfStudyRelatedInstances or false -- returned, uncounted
        end
        local lists = #uids == 1 or next(there) ~= nil
        if not lists then -- the probe; a failure of it only costs the shortcut
            local ok, alone = pcall(tgt_peer.find, tgt_peer, {level = "STUDY", StudyInstanceUID = uids[1],
                                                               patient = patients[1]})
            lists = ok and #alone == 0
        end
        for k = i, math.min(i + 99, #counted) do
            local st = counted[k]
            local n = there[st.StudyInstanceUID]
            if math.type(n) == "integer" and n >= st.NumberOfStudyRelatedInstances then
                complete[st.StudyInstanceUID] = true
            elseif n == nil and lists then
                absent[st.StudyInstanceUID] = true
            end
        end
    end
    return complete, absent
end

--- The plan of a selection: {units = {...}, complete = {...}, found, present,
-- studies, errors = {...}, whole = {[study uid] = true: complete in the target, its
-- series not compared}, not_compared = instances of the studies that could not be
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
    -- A series-level filter (Modality = "RTPLAN", say) or a site's accept_series makes
    -- the study's count the wrong "found" figure: then every study is diffed.
    local filtered = opts.accept ~= nil
    for _, v in pairs(series_keys(selection)) do
        if v ~= "" and v ~= "*" then filtered = true end
    end
    local whole, absent = {}, {}
    if not filtered then whole, absent = complete_studies(tgt_peer, studies) end
    local results, failures = task.map(studies, function(study)
        if whole[study.StudyInstanceUID] then
            local n = study.NumberOfStudyRelatedInstances
            return {units = {}, complete = {}, found = n, present = n}
        end
        local r = diff_study(src_peer, tgt_peer, study, selection, opts.accept, absent[study.StudyInstanceUID])
        if opts.on_study then opts.on_study(r) end
        return r
    end, {concurrency = opts.concurrency or 4, errors = "return"})
    local out = {units = {}, complete = {}, found = 0, present = 0, studies = #studies, errors = {}, study_uids = {},
                 whole = whole, not_compared = 0}
    for _, st in ipairs(studies) do out.study_uids[st.StudyInstanceUID] = true end
    for i = 1, #studies do
        local r = results[i]
        if r then
            out.found, out.present = out.found + r.found, out.present + r.present
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
