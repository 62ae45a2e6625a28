--- rtbackup.qr.references: referential completeness of RT objects in the archive.
--
-- A treatment record is of little use without its RT Plan, a plan without its
-- structure set and dose, a structure set without the images it was drawn on — and
-- clinics lay these out across studies (the planning CT and structure set weeks
-- before the plan), sometimes across patients (a plan copied to a new MRN).
--
-- After the run's moves: every RT object verified in this run is read back from the
-- archive (C-GET) and each reference it carries becomes an edge in the journal
-- (refs table: from SOP Instance UID -> referenced instance or series). Every edge of
-- the selection, and every edge still open from earlier runs, is checked against the
-- archive (not the journal: the journal remembers what was verified, the archive says
-- what is there now). A referenced instance or series the archive lacks is looked up
-- in the source wherever it is (IMAGE-level C-FIND by SOP Instance UID across studies
-- and patients; where the source refuses that, within the referring patient's
-- studies), and its series becomes a unit of the run: moved, verified by UID and
-- journaled like every other. What cannot be found anywhere stays an open edge,
-- re-checked by every run until it resolves or an operator acknowledges it
-- (`rtbackup refs ENV --ack UID`); open edges make the run partial (exit 1) and are
-- named in the summary.
local errors = require "rtbackup.error"
local exit = require "rtbackup.exit"
local log = require "rtbackup.log"

local references = {}

local RT_MODALITIES = {RTRECORD = true, RTPLAN = true, RTSTRUCT = true, RTDOSE = true, RTIMAGE = true}
references.RT_MODALITIES = RT_MODALITIES

-- Composite (storage) SOP classes: what can be in an archive. Study and patient
-- "references" (Detached Study Management...) are not instances.
local function is_composite(class)
    return class == nil or class == "" or class:find("^1%.2%.840%.10008%.5%.1%.4%.") ~= nil
end

local SERIES_SEQUENCES = {RTReferencedSeriesSequence = true, ReferencedSeriesSequence = true}
local NOT_INSTANCES = {RTReferencedStudySequence = true, ReferencedStudySequence = true,
                       ReferencedPatientSequence = true}

--- What an RT object (ds:totable()) points at: {kind = "instance" | "series", uid,
-- study (for series, when the object says), via (the sequence)}, each once. Every
-- sequence is walked, so every kind of reference an RT object can carry is found
-- (plan, structure set, dose, record, images, frame-of-reference series).
function references.of(t)
    local out, seen = {}, {}
    local function add(ref)
        local key = ref.kind .. ref.uid
        if not seen[key] then seen[key] = true; out[#out + 1] = ref end
    end
    local function walk(node, study, depth)
        if depth > 12 then return end
        for keyword, value in pairs(node) do
            if type(value) == "table" and type(value[1]) == "table" then
                for _, item in ipairs(value) do
                    local item_study = study
                    if keyword == "RTReferencedStudySequence" then item_study = item.ReferencedSOPInstanceUID end
                    local uid = item.ReferencedSOPInstanceUID
                    if type(uid) == "string" and uid ~= "" and not NOT_INSTANCES[keyword]
                       and is_composite(item.ReferencedSOPClassUID) then
                        add{kind = "instance", uid = uid, via = keyword}
                    end
                    if SERIES_SEQUENCES[keyword] and type(item.SeriesInstanceUID) == "string" then
                        -- The series covers the images listed inside it.
                        add{kind = "series", uid = item.SeriesInstanceUID, study = item_study or item.StudyInstanceUID,
                            via = keyword}
                    else
                        walk(item, item_study, depth + 1)
                    end
                end
            end
        end
    end
    walk(t, nil, 0)
    return out
end

-- ---- looking things up ------------------------------------------------------------

-- Where `uid` (a SOP Instance UID) is in `peer`: {study, series, patient} or nil. One
-- IMAGE-level C-FIND by the UID alone; a peer that refuses such a query (it wants the
-- study and series: strictly hierarchical) is searched in the referring patient's
-- studies instead, and remembered as such for the run.
local function locate_instance(run, peer, uid, patient)
    run.lookup = run.lookup or {}
    if run.lookup[peer] ~= "hierarchical" then
        local ok, rows = pcall(peer.find, peer, {level = "IMAGE", SOPInstanceUID = uid, StudyInstanceUID = "",
                                                 SeriesInstanceUID = "", PatientID = "", patient = patient})
        if ok then
            local r = rows[1]
            if r and type(r.SeriesInstanceUID) == "string" and r.SeriesInstanceUID ~= "" then
                return {study = r.StudyInstanceUID, series = r.SeriesInstanceUID, patient = r.PatientID}
            end
            if r == nil then return nil end
        elseif exit.is_unreachable(rows) then
            error(rows, 0)
        else
            run.lookup[peer] = "hierarchical"
            log.info("the source does not answer a C-FIND by SOP Instance UID alone; searching the patient's studies",
                     {peer = peer.alias, error = tostring(rows)})
        end
    end
    if not patient then return nil end
    for _, study in ipairs(peer:find{level = "STUDY", PatientID = patient, StudyInstanceUID = ""}) do
        for _, s in ipairs(peer:find{level = "SERIES", StudyInstanceUID = study.StudyInstanceUID,
                                     SeriesInstanceUID = "", patient = patient}) do
            local hits = peer:find{level = "IMAGE", StudyInstanceUID = study.StudyInstanceUID,
                                   SeriesInstanceUID = s.SeriesInstanceUID, SOPInstanceUID = uid, patient = patient}
            if #hits > 0 then
                return {study = study.StudyInstanceUID, series = s.SeriesInstanceUID, patient = patient}
            end
        end
    end
    return nil
end

-- The study of series `uid` in `peer` (when the reference did not say), or nil. A
-- peer that answers such a query with a failure status (it wants the study: strictly
-- hierarchical) cannot say; one that cannot be asked at all raises.
local function locate_series(peer, uid, study, patient)
    if study then return study end
    local ok, rows = pcall(peer.find, peer, {level = "SERIES", SeriesInstanceUID = uid, StudyInstanceUID = "",
                                             patient = patient})
    if ok then return rows[1] and rows[1].StudyInstanceUID or nil end
    if not errors.is(rows, "status") then error(rows, 0) end
    return nil
end

-- SOP Instance UIDs of a series in `peer` (a set and a count).
local function series_uids(peer, study, series, patient)
    return require("rtbackup.qr.plan").instance_uids(peer, study, series, patient)
end

-- The source's instances `src` of a series when the archive's REST API says it holds
-- them all (rtbackup.orthanc), else nil: a C-FIND of the archive decides.
local function archive_holds_all(run, patient, study, series, src)
    local archive = require("rtbackup.orthanc").of_run(run)
    if not archive then return nil end
    local held, _, all = archive:series_holds(patient, study, series, src)
    return all and held or nil
end

-- ---- the pass --------------------------------------------------------------------------

local function detail_of(edge)
    return {study = edge.study, series = edge.series, patient = edge.patient, from_series = edge.from_series,
            from_study = edge.from_study, why = edge.why, via = edge.via}
end

-- Records an edge and its state.
local function put(run, edge, state, why)
    edge.why = why
    edge.state = state
    run.journal:put_ref{source = run.source_alias, from = edge.from, to = edge.uid, kind = edge.kind,
                        state = state, detail = detail_of(edge)}
end

-- Reads the RT objects of a series from the archive; returns their edges.
local function edges_of_series(run, study, series, patient)
    local target = run:peer(run.target_alias)
    local edges = {}
    target:get({level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = series, patient = patient},
               function(ds)
        if RT_MODALITIES[ds.Modality or ""] then
            local t = ds:totable()
            for _, ref in ipairs(references.of(t)) do
                edges[#edges + 1] = {from = ds.SOPInstanceUID, from_series = series, from_study = study,
                                     patient = ds.PatientID or patient, kind = ref.kind, uid = ref.uid,
                                     study = ref.study, via = ref.via}
            end
        end
    end)
    return edges
end

-- Checks one edge against the archive; a missing target is located in the source and
-- its series returned as a unit to move. Returns "resolved", "move" and a unit, or
-- "open" and why.
local function check(run, edge, in_target, known_present)
    local source, target = run:peer(run.source_alias), run:peer(run.target_alias)
    local study, series = edge.study, edge.uid
    if edge.kind == "instance" then
        if known_present[edge.uid] then return "covered" end
        local there = locate_instance(run, target, edge.uid, edge.patient)
        if there then
            edge.study, edge.series = there.study, there.series
            return "resolved"
        end
        local at = locate_instance(run, source, edge.uid, edge.patient)
        if not at then return "open", "in neither archive" end
        study, series = at.study, at.series
        edge.study, edge.series = study, series
    else
        study = locate_series(source, series, study, edge.patient)
        if not study then
            -- Not in the source: the archive may still hold it (a source that purged it).
            local t_study = locate_series(target, series, edge.study, edge.patient)
            if t_study and select(2, series_uids(target, t_study, series, edge.patient)) > 0 then
                return "resolved"
            end
            return "open", "in neither archive"
        end
        edge.study = study
    end
    -- The archive must hold the whole series, by UID.
    local key = study .. "/" .. series
    if in_target[key] == nil then
        local src, n = series_uids(source, study, series, edge.patient)
        local tgt = archive_holds_all(run, edge.patient, study, series, src) or
                    series_uids(target, study, series, edge.patient)
        local present = 0
        for uid in pairs(src) do if tgt[uid] then present = present + 1 end end
        for uid in pairs(tgt) do known_present[uid] = true end
        in_target[key] = {expected = n, present = present}
    end
    local c = in_target[key]
    if c.expected > 0 and c.present >= c.expected then return "resolved" end
    return "move", {key = series, kind = "series", expected = c.expected, present = c.present,
                    data = {study = study, patient = edge.patient, modality = nil, series_in_study = 0,
                            reference = true}}
end

-- Series first: the images a structure set lists one by one are then found in the
-- series it references, without a C-FIND each.
local function series_first(a, b)
    return a.kind ~= b.kind and a.kind == "series"
end

--- The references pass of a run (see the top of this file). Updates the run's book
-- (moved, verified, failed) and summary (references_checked, references_moved_series,
-- references_unresolved, unresolved = {...}).
function references.complete(run)
    local book = run.book
    local s = run.summary
    s.references_checked, s.references_moved_series, s.references_unresolved = 0, 0, 0
    s.unresolved = {}
    -- Seeds: RT series verified in this run, read back from the archive.
    local edges, read = {}, {}
    local function read_series(study, series, patient)
        local key = study .. "/" .. series
        if read[key] then return end
        read[key] = true
        local ok, found = pcall(edges_of_series, run, study, series, patient)
        if not ok then
            run:note_failure(found)
            run.failures.partial = true
            s.references_errors = (s.references_errors or 0) + 1
            book.errors[#book.errors + 1] = {unit = series, kind = "references", patient = patient,
                                             error = "cannot read the RT objects back from " .. run.target_alias ..
                                                     " to follow their references: " .. tostring(found)}
            log.error("cannot follow the references of RT objects", {series = series, error = tostring(found)})
            return
        end
        table.sort(found, series_first)
        for _, e in ipairs(found) do edges[#edges + 1] = e end
    end
    for _, u in ipairs(book.done or {}) do
        if RT_MODALITIES[u.data.modality or ""] then read_series(u.data.study, u.key, u.data.patient) end
    end
    -- Edges still open from earlier runs, and edges of the selection's RT objects and
    -- of everything they lead to (a record's plan's structure set's images): the
    -- archive may have lost any of it since. A resolved edge into a study this run's
    -- plan found whole in the archive (every series the source lists, compared just
    -- now) is not asked again: over a lookback of months that is most of them, each a
    -- C-FIND or two.
    local by_from, seeded = {}, {}
    local function known_edge(r)
        local d = type(r.detail) == "table" and r.detail or {}
        return {from = r.from, kind = r.kind, uid = r.to, study = d.study, patient = d.patient,
                from_series = d.from_series, from_study = d.from_study, via = d.via,
                acknowledged = r.state == "acknowledged"}
    end
    local selected, whole = run.selected_studies or {}, run.whole_studies or {}
    for _, r in ipairs(run.journal:refs(run.source_alias)) do
        local e = known_edge(r)
        by_from[e.from] = by_from[e.from] or {}
        table.insert(by_from[e.from], e)
        if r.state == "open" or (selected[e.from_study] and not (r.state == "resolved" and whole[e.study])) then
            edges[#edges + 1] = e
            seeded[e.from .. ">" .. e.uid] = true
        end
    end
    -- The journal's edges from `uid` (what an object we just found in the archive
    -- references), queued once.
    local function follow_known(uid)
        for _, e in ipairs(by_from[uid] or {}) do
            local id = e.from .. ">" .. e.uid
            if not seeded[id] then
                seeded[id] = true
                edges[#edges + 1] = e
            end
        end
    end
    table.sort(edges, series_first)
    local in_target, known_present, done = {}, {}, {}
    local i = 1
    while i <= #edges do
        local edge = edges[i]
        i = i + 1
        local id = edge.from .. ">" .. edge.uid
        if not done[id] then
            done[id] = true
            s.references_checked = s.references_checked + 1
            local ok, state, extra = pcall(check, run, edge, in_target, known_present)
            if not ok then
                run:note_failure(state)
                put(run, edge, "open", "could not be checked: " .. tostring(state))
                s.references_unresolved = s.references_unresolved + 1
                s.unresolved[#s.unresolved + 1] = {from = edge.from, kind = edge.kind, uid = edge.uid,
                                                   why = "could not be checked: " .. tostring(state)}
            elseif state == "covered" then
                -- In a referenced series the archive holds: that series' edge stands for it.
                s.references_checked = s.references_checked - 1
            elseif state == "resolved" then
                put(run, edge, "resolved")
                if edge.kind == "instance" then follow_known(edge.uid) end
            elseif state == "open" then
                put(run, edge, "open", extra)
                if not edge.acknowledged then
                    s.references_unresolved = s.references_unresolved + 1
                    s.unresolved[#s.unresolved + 1] = {from = edge.from, kind = edge.kind, uid = edge.uid, why = extra}
                    log.warn("a reference is unresolved", {from = edge.from, to = edge.uid, kind = edge.kind, why = extra})
                end
            elseif (extra.expected - extra.present) > (run.budget or math.huge) then
                -- max_uids_per_run: a later run moves it (the edge stays open till then).
                put(run, edge, "open", "left for a later run (max_uids_per_run)")
                s.references_deferred = (s.references_deferred or 0) + 1
            else -- "move": the archive lacks the series; a unit of the run like any other
                run.budget = (run.budget or math.huge) - (extra.expected - extra.present)
                local unit = book:adopt(extra)
                unit.state = "queued"
                run:process({level = "SERIES", study = unit.data.study, units = {unit}})
                in_target[unit.data.study .. "/" .. unit.key] = nil
                s.references_moved_series = s.references_moved_series + 1
                local after = run.journal:get(run.source_alias, unit.key)
                if after and after.state == "verified" then
                    put(run, edge, "resolved")
                    if edge.kind == "instance" then follow_known(edge.uid) end
                    -- What it references in turn (a plan's structure set, its images).
                    read_series(unit.data.study, unit.key, edge.patient)
                else
                    put(run, edge, "open", "moved but not complete in the archive")
                    s.references_unresolved = s.references_unresolved + 1
                    s.unresolved[#s.unresolved + 1] = {from = edge.from, kind = edge.kind, uid = edge.uid,
                                                       why = "moved but not complete in the archive"}
                end
            end
        end
    end
    if s.references_unresolved > 0 then run.failures.partial = true end
    run.ctx:flush()
    return s
end

--- Marks open references to `uid` (or from it) as acknowledged: the operator says the
-- archive may lack them. Returns how many.
function references.acknowledge(j, source, uid)
    local n = 0
    for _, r in ipairs(j:refs(source, "open")) do
        if r.to == uid or r.from == uid then
            j:put_ref{source = source, from = r.from, to = r.to, kind = r.kind, state = "acknowledged"}
            n = n + 1
        end
    end
    if n == 0 then
        errors.raise{kind = "usage", message = "no open reference to or from " .. uid .. " in " .. source}
    end
    return n
end

--- The refs command: lists (and with opts.ack acknowledges) references in the journal.
function references.command(env, alias, opts)
    local journal = require "rtbackup.journal"
    local run_mod = require "rtbackup.run"
    local suffix = opts.shard and string.format("-shard%dof%d", opts.shard.index, opts.shard.count) or ""
    local j = journal.open(string.format("%s/%s%s.journal.sqlite", run_mod.state_dir(env), env.name, suffix))
    local code = 0
    for _, uid in ipairs(opts.ack or {}) do
        local ok, n = pcall(references.acknowledge, j, alias, uid)
        if ok then
            io.stderr:write(string.format("acknowledged %d reference%s to or from %s\n", n, n == 1 and "" or "s", uid))
        else
            io.stderr:write("rtbackup refs: ", tostring(n), "\n")
            code = 1
        end
    end
    local rows = {}
    for _, r in ipairs(j:refs(alias, not opts.all and "open" or nil)) do
        local d = type(r.detail) == "table" and r.detail or {}
        rows[#rows + 1] = {state = r.state, from = r.from, kind = r.kind, to = r.to, patient = d.patient,
                           why = d.why, last_checked = r.last_checked}
    end
    j:close()
    require("rtbackup.dicom_cli").print_rows(rows, {"state", "patient", "from", "kind", "to", "why", "last_checked"},
                                             opts.format)
    return code
end

return references
