--- rtbackup.validate: a DICOM source compared with the backup archive, instance by
-- instance (and with deep = true, content by canonical digest through C-GET, which
-- retrieves every instance as stored).
--
--   local code = validate.run(env, "ARIA", "ORTHANC_MAIN", {since = ..., until = ..., deep = true,
--                                                          format = "json", metrics_file = path})
--
-- Exit codes: 0 no discrepancy, 1 discrepancies (listed), 4 a peer unreachable (the
-- studies it could not compare are counted), 130/143 interrupted.
local clock = require "rtbackup.clock"
local context = require "rtbackup.context"
local exit = require "rtbackup.exit"
local log = require "rtbackup.log"
local metrics = require "rtbackup.metrics"
local plan = require "rtbackup.qr.plan"
local progress = require "rtbackup.progress"
local qr_flow = require "rtbackup.qr.flow"
local settings = require "rtbackup.settings"
local task = require "rtbackup.task"

local validate = {}

local function series_of(peer, study, patient)
    local list = {}
    for _, s in ipairs(peer:find{level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = "", Modality = "",
                                 patient = patient}) do
        list[s.SeriesInstanceUID] = s
    end
    return list
end

-- Digest of every instance of a series, by SOP Instance UID, through C-GET.
local function digests(peer, study, series, patient)
    local out = {}
    peer:get({level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = series, patient = patient},
             function(ds) out[ds.SOPInstanceUID] = ds:digest() end)
    return out
end

-- The target's instances of a series, as a set of SOP Instance UIDs: `src` itself when
-- the archive's REST API (rtbackup.orthanc; nil: none) says the series holds exactly
-- the source's n instances, else from a C-FIND (which names what is missing or extra).
local function target_uids(target, archive, study, series, patient, src, n)
    if archive then
        local held, count, all = archive:series_holds(patient, study, series, src)
        if all and count == n then return held end
    end
    return plan.instance_uids(target, study, series, patient)
end

--- Compares one study: missing (in source, not in backup), extra (in backup only),
-- and with deep, different (both have it, digests differ). archive: the target's
-- REST API (rtbackup.orthanc), or nil.
function validate.study(source, target, study, deep, archive)
    local found = {missing = {}, extra = {}, different = {}, instances = 0, compared = 0, errors = {}}
    local id, patient = study.StudyInstanceUID, study.PatientID
    local src_series, tgt_series = series_of(source, id, patient), series_of(target, id, patient)
    local function note(list, series, uid)
        list[#list + 1] = {patient = patient, study = id, series = series, sop_instance_uid = uid}
    end
    for series in pairs(src_series) do
        local src, n = plan.instance_uids(source, id, series, patient)
        local tgt = tgt_series[series] and target_uids(target, archive, id, series, patient, src, n) or {}
        for uid in pairs(src) do
            found.instances = found.instances + 1
            if not tgt[uid] then note(found.missing, series, uid) end
        end
        for uid in pairs(tgt) do if not src[uid] then note(found.extra, series, uid) end end
        if deep and tgt_series[series] then
            -- A retrieve that fails leaves this series' contents not compared (said), and
            -- takes nothing away from what the listings above found.
            local ok, err = pcall(function()
                local a, b = digests(source, id, series, patient), digests(target, id, series, patient)
                for uid, d in pairs(a) do
                    if b[uid] then
                        found.compared = found.compared + 1
                        if b[uid] ~= d then note(found.different, series, uid) end
                    end
                end
            end)
            if not ok then
                if exit.is_stopped(err) or exit.is_unreachable(err) then error(err, 0) end
                found.errors[#found.errors + 1] = {study = id, series = series, error = err}
                log.error("cannot compare the contents of a series", {study = id, series = series,
                                                                     error = tostring(err)})
            end
        end
    end
    for series in pairs(tgt_series) do
        if not src_series[series] then
            for uid in pairs(plan.instance_uids(target, id, series, patient)) do note(found.extra, series, uid) end
        end
    end
    return found
end

--- Compares the studies of a selection ({study_dates, patient, study, keys}) of the
-- peers `source` and `target`. Returns {studies, instances, compared, missing, extra,
-- different, errors}. opts: deep, concurrency, progress_interval (seconds between the
-- progress lines a long comparison logs when stderr is not a terminal), archive (the
-- target's REST API, rtbackup.orthanc, checked usable).
function validate.compare(source, target, selection, opts)
    opts = opts or {}
    local studies = plan.studies(source, selection)
    local bar = progress.new(string.format("validate %s vs %s", source.alias or source.aet, target.alias or target.aet),
                             #studies, {unit = "studies", interval = opts.progress_interval})
    local results, failures = task.map(studies, function(s)
        local r = validate.study(source, target, s, opts.deep, opts.archive)
        bar:add(1)
        return r
    end, {concurrency = opts.concurrency or 4, errors = "return"})
    bar:finish()
    local total = {instances = 0, compared = 0, missing = {}, extra = {}, different = {}, errors = {},
                   studies = #studies}
    for i = 1, #studies do
        local r = results[i]
        if r then
            total.instances, total.compared = total.instances + r.instances, total.compared + r.compared
            for _, k in ipairs{"missing", "extra", "different", "errors"} do
                for _, item in ipairs(r[k]) do total[k][#total[k] + 1] = item end
            end
        else
            total.errors[#total.errors + 1] = {study = studies[i].StudyInstanceUID, error = failures[i]}
            if not exit.is_stopped(failures[i]) then
                log.error("cannot compare a study", {study = studies[i].StudyInstanceUID, error = tostring(failures[i])})
            end
        end
    end
    for _, k in ipairs{"missing", "extra", "different"} do
        table.sort(total[k], function(a, b) return a.sop_instance_uid < b.sop_instance_uid end)
    end
    return total
end

--- The validate command: compares, prints the discrepancies (rows) and a summary line,
-- writes metrics; returns the exit code.
function validate.run(env, source_alias, target_alias, opts)
    local print_rows = require("rtbackup.dicom_cli").print_rows
    local collector = opts.metrics_file and metrics.new{env = env.name, source = source_alias, command = "validate"}
    local ctx = context.new(env, {command = "validate", source = source_alias, metrics = collector, batched = true})
    local tz = settings.get(env, "timezone")
    local since, till = clock.lookback(opts.since, opts["until"], tz,
        settings.get(env, "lookback_days", source_alias) or qr_flow.LOOKBACK_DAYS)
    local selection = {patient = opts.patient, study = opts.study,
                       keys = settings.get(env, "dicom_query_keys", source_alias),
                       study_dates = clock.dicom_date(since) .. "-" .. clock.dicom_date(till),
                       -- Studies without a StudyDate belong to no date range, and are backed up
                       -- all the same: the proof covers them too (one C-FIND of every study).
                       undated = true}
    local started_at = clock.iso_utc()
    local source, target = ctx:peer(source_alias), ctx:peer(target_alias)
    local archive = require("rtbackup.orthanc").for_peer(env.backup_targets[target_alias], target_alias, ctx)
    if archive and not archive:usable() then archive = nil end -- asked once, before the comparisons
    local ok, result = pcall(validate.compare, source, target, selection,
                             {deep = opts.deep, concurrency = settings.get(env, "max_associations", source_alias),
                              progress_interval = settings.get(env, "progress_interval"), archive = archive})
    ctx:flush()
    local code
    if not ok then
        if not exit.is_unreachable(result) then error(result, 0) end
        io.stderr:write("rtbackup validate: ", tostring(result), "\n")
        code = exit.stop_code() or exit.unreachable
    else
        local rows = {}
        for _, kind in ipairs{"missing", "extra", "different"} do
            for _, item in ipairs(result[kind]) do
                rows[#rows + 1] = {problem = kind, patient = item.patient, study = item.study, series = item.series,
                                   sop_instance_uid = item.sop_instance_uid}
            end
        end
        if #rows > 0 or opts.format then
            print_rows(rows, {"problem", "patient", "study", "series", "sop_instance_uid"}, opts.format)
        end
        io.stderr:write(string.format("%s %s vs %s (%s .. %s): %d studies, %d instances; %d missing, %d extra%s%s\n",
            env.name, source_alias, target_alias, since, till, result.studies, result.instances, #result.missing,
            #result.extra,
            opts.deep and string.format(", %d compared, %d different", result.compared, #result.different) or "",
            #result.errors > 0 and string.format("; %d studies or series could not be compared", #result.errors)
                or ""))
        local unreachable = false
        for _, e in ipairs(result.errors) do unreachable = unreachable or exit.is_unreachable(e.error) end
        code = exit.stop_code() or (unreachable and exit.unreachable)
               or ((#rows > 0 or #result.errors > 0) and exit.partial or exit.ok)
    end
    if collector then
        local failed = ok and (#result.missing + #result.extra + #result.different) or nil
        local wrote, err = pcall(collector.write, collector, opts.metrics_file, {
            started_at = started_at, finished_at = clock.iso_utc(), exit_code = code,
            found = ok and result.instances or nil, failed = failed})
        if not wrote then io.stderr:write("rtbackup validate: cannot write the metrics file: ", tostring(err), "\n") end
    end
    validate.record(env, {env = env.name, source = source_alias, target = target_alias, command = "validate",
                          started_at = started_at, finished_at = clock.iso_utc(), since = since, ["until"] = till,
                          patient = opts.patient, study = opts.study, deep = opts.deep or nil,
                          exit_code = code, status = exit.status(code),
                          studies = ok and result.studies or nil, found = ok and result.instances or nil,
                          compared = ok and opts.deep and result.compared or nil,
                          missing = ok and #result.missing or nil, extra = ok and #result.extra or nil,
                          different = ok and #result.different or nil,
                          error = not ok and {kind = type(result) == "table" and result.kind or "internal",
                                                   message = tostring(result)} or nil})
    return code
end

--- What a validation found, for `rtbackup status` and the status page
-- (<state_dir>/<ENV>-<SOURCE>-last-validate.json), and the alert it deserves
-- (rtbackup.alerts). Neither may change the validation's exit code.
function validate.record(env, s)
    local ok, err = pcall(function()
        local dir = require("rtbackup.run").state_dir(env)
        require("rtbackup.files").replace(string.format("%s/%s-%s-last-validate.json", dir, env.name, s.source),
                                          require("rtbackup.summary").json(s) .. "\n")
    end)
    if not ok then log.error("cannot record the validation", {error = tostring(err)}) end
    require("rtbackup.alerts").notify(env, s)
end

return validate
