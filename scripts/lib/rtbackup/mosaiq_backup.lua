--- rtbackup.mosaiq_backup: the staged Mosaiq backup.
--
--   1. the day's delivered treatments from Mosaiq (rtbackup.mosaiq, one parameterised
--      query per day);
--   2. one RT Beams Treatment Record per plan and delivered fraction
--      (rtbackup.mosaiq_map: deterministic UIDs, so a rerun gives the same records);
--   3. C-STORE them to the staging SCP (staging_target_alias) on one association;
--   4. C-MOVE them from staging to the backup archive (IMAGE level, per series);
--   5. verify every record there with C-FIND.
-- Without a staging target the records are stored straight into the archive. A
-- record verified in an earlier run is not sent again (journal units of kind
-- "record", keyed by SOP Instance UID).
local clock = require "rtbackup.clock"
local dicom = require "rtbackup.dicom"
local log = require "rtbackup.log"
local map = require "rtbackup.mosaiq_map"
local mosaiq = require "rtbackup.mosaiq"
local odbc = require "rtbackup.odbc"
local qr = require "rtbackup.qr_backup"

local M = {}

-- Days from --since (default: today in the site's time zone) to --until (default: today).
local function days(run, setting)
    local tz = setting(run.env, nil, "timezone")
    local today = clock.today(tz, 0)
    local first = run.opts.since or today
    local last = run.opts["until"] or (run.opts.since and today or first)
    local list, t = {}, os.time{year = tonumber(first:sub(1, 4)), month = tonumber(first:sub(6, 7)),
                                day = tonumber(first:sub(9, 10)), hour = 12}
    while true do
        local d = os.date("%Y-%m-%d", t)
        if d > last then break end
        list[#list + 1] = d
        t = t + 86400
    end
    return list
end

--- The mapping's options from the site's choices and settings.
function M.map_options(run, choices)
    return {
        uid_scope = choices.uid_scope or (run.env.name .. "/" .. run.source_alias),
        null = odbc.NULL,
        private_block = choices.private_block,
        energy_unit_enum = choices.energy_unit_enum,
        mlc = choices.mlc or {encoding = "float32_mm"},
        control_point_time = choices.control_point_time,
        flat_table_top = choices.flat_table_top,
    }
end

--- The records of the days: {records = {{ds, key, day, patient}}, failures = {{key, error}}, found}.
function M.build(run, choices, setting)
    local db = odbc.connect(run.source_cfg, run.env.settings)
    local opts = M.map_options(run, choices)
    local out = {records = {}, failures = {}, found = 0}
    for _, day in ipairs(days(run, setting)) do
        local deliveries = mosaiq.deliveries(db, day, {sql = choices.sql or (run.env.settings or {}).mosaiq_backup_sql_query})
        for _, d in ipairs(deliveries) do
            local patient = tostring(odbc.value(d.patient.IDA) or odbc.value(d.patient.Pat_ID1) or "?")
            local key = string.format("%s/%s/%s/%s", day, tostring(odbc.value(d.site.SIT_SET_ID)),
                                      tostring(odbc.value(d.plan.OriginalPlanUID)), tostring(d.fraction))
            if (not run.opts.patient or run.opts.patient == patient)
               and (not run.opts.shard or require("rtbackup.backup").in_shard(run.opts.shard, patient)) then
                out.found = out.found + 1
                local ok, ds = pcall(map.build, d, opts)
                if ok then
                    out.records[#out.records + 1] = {ds = ds, key = ds.SOPInstanceUID, day = day, patient = patient,
                                                     study = ds.StudyInstanceUID, series = ds.SeriesInstanceUID}
                else
                    out.failures[#out.failures + 1] = {key = key, patient = patient, error = tostring(ds)}
                    log.error("cannot build a treatment record", {record = key, error = tostring(ds)})
                end
            end
        end
    end
    db:close()
    return out
end

-- SOP Instance UIDs of the series found in `peer`.
local function present(peer, study, series)
    local set = {}
    peer:find({level = "IMAGE", StudyInstanceUID = study, SeriesInstanceUID = series, SOPInstanceUID = ""},
              function(m) set[m.SOPInstanceUID] = true end)
    return set
end

--- backup.mosaiq(run, choices): choices = {private_block, mlc, energy_unit_enum, sql,
-- uid_scope, control_point_time, flat_table_top}.
function M.run(backup, run, choices)
    choices = choices or {}
    local env, j, source = run.env, run.journal, run.source_alias
    local setting = backup.setting
    local built = M.build(run, choices, setting)
    local summary = {source = source, target = run.target_alias, found = built.found,
                     records_built = #built.records, build_failed = #built.failures,
                     already_present = 0, moved = 0, verified = 0, failed = #built.failures}
    local days_list = days(run, setting)
    summary.since, summary["until"] = days_list[1], days_list[#days_list]

    -- Records verified by an earlier run are not sent again.
    local todo = {}
    for _, r in ipairs(built.records) do
        local known = j and j:get(source, r.key)
        if known and known.state == "verified" then
            summary.already_present = summary.already_present + 1
        else
            todo[#todo + 1] = r
        end
    end
    if run.opts.dry_run then
        summary.plan = {}
        for _, r in ipairs(todo) do
            summary.plan[#summary.plan + 1] = {series = r.key, patient = r.patient, modality = "RTRECORD",
                                               instances = 1, missing = 1}
        end
        return summary, #built.failures > 0 and backup.EXIT.partial or backup.EXIT.ok
    end

    local units = {}
    for _, r in ipairs(todo) do
        units[#units + 1] = {key = r.key, kind = "record", expected = 1,
                             data = {study = r.study, series = r.series, patient = r.patient, day = r.day}}
    end
    for _, f in ipairs(built.failures) do
        units[#units + 1] = {key = f.key, kind = "record", data = {patient = f.patient}}
    end
    j:upsert(source, units)
    for _, f in ipairs(built.failures) do j:mark(source, f.key, "failed", {error = f.error, attempts_increment = true}) end
    if #todo == 0 then
        return summary, #built.failures > 0 and backup.EXIT.partial or backup.EXIT.ok
    end

    local main = dicom.peer(env, run.target_alias)
    local staging_alias = run.source_cfg.staging_target_alias
    local staging = staging_alias and dicom.peer(env, staging_alias) or nil
    local first_hop = staging or main

    -- 3. one association for the day's records
    local datasets = {}
    for i, r in ipairs(todo) do datasets[i] = r.ds end
    local ok, stored = pcall(first_hop.store, first_hop, datasets)
    if not ok or stored.error then
        local err = ok and stored.error or stored
        for _, r in ipairs(todo) do j:mark(source, r.key, "queued", {error = tostring(err), attempts_increment = true}) end
        log.error("cannot store the treatment records", {peer = first_hop.alias, error = tostring(err)})
        summary.failed = summary.failed + #todo
        summary.errors = {{series = first_hop.alias, error = tostring(err)}}
        return summary, qr.is_unreachable(err) and backup.EXIT.unreachable or backup.EXIT.partial
    end
    local by_series, order = {}, {}
    for i, r in ipairs(todo) do
        local item = stored.items[i]
        if item.ok then
            if not by_series[r.series] then by_series[r.series] = {}; order[#order + 1] = r.series end
            table.insert(by_series[r.series], r)
        else
            j:mark(source, r.key, "failed", {error = tostring(item.error), attempts_increment = true})
            summary.failed = summary.failed + 1
        end
    end

    -- 4. staging -> archive, one C-MOVE per series; 5. verify in the archive
    local code = backup.EXIT.ok
    summary.errors = {}
    for _, series in ipairs(order) do
        local records = by_series[series]
        local uids = {}
        for i, r in ipairs(records) do uids[i] = r.key end
        local moved, err = true, nil
        if staging then
            moved, err = pcall(staging.move, staging, {level = "IMAGE", StudyInstanceUID = records[1].study,
                SeriesInstanceUID = series, SOPInstanceUID = #uids == 1 and uids[1] or uids,
                destination = main.aet})
        end
        local verified, there = false, {}
        if moved then
            for _, r in ipairs(records) do j:mark(source, r.key, "moved", {moved = 1}) end
            summary.moved = summary.moved + #records
            verified, there = pcall(present, main, records[1].study, series)
            if not verified then err = there; there = {} end
        end
        for _, r in ipairs(records) do
            if there[r.key] then
                j:mark(source, r.key, "verified", {})
                summary.verified = summary.verified + 1
            else
                -- Not moved: queued again (storing and moving are idempotent: same UIDs).
                -- Moved but unverifiable: stays "moved". Moved and absent: failed.
                local state = not moved and "queued" or (not verified and "moved" or "failed")
                local why = err and tostring(err) or ("not found in " .. run.target_alias .. " after the move")
                j:mark(source, r.key, state, {error = why})
                summary.failed = summary.failed + 1
                summary.errors[#summary.errors + 1] = {series = r.key, error = why}
                if err and qr.is_unreachable(err) then code = backup.EXIT.unreachable end
            end
        end
    end
    if summary.failed > 0 and code == backup.EXIT.ok then code = backup.EXIT.partial end
    return summary, code
end

return M
