--- rtbackup.mosaiq.flow: the staged Mosaiq backup, as a flow of rtbackup.run.
--
--   plan      the days' delivered treatments from Mosaiq (rtbackup.mosaiq.query, one
--             parameterised query per day), one RT Beams Treatment Record per plan and
--             delivered fraction (rtbackup.mosaiq.map: deterministic UIDs, so a rerun
--             gives the same records); a record verified by an earlier run is not sent
--             again; a delivery that cannot be built is named, with its reason
--   prepare   C-STORE of the run's records to the staging SCP (staging_target_alias)
--             on one association — or straight into the archive without staging
--   transfer  C-MOVE from staging to the archive, per record series
--   verify    each record found in the archive by its SOP Instance UID
--   retry     stored and moved again
-- Units are records (kind "record"), keyed by SOP Instance UID.
local clock = require "rtbackup.clock"
local exit = require "rtbackup.exit"
local log = require "rtbackup.log"
local map = require "rtbackup.mosaiq.map"
local mosaiq = require "rtbackup.mosaiq.query"
local odbc = require "rtbackup.odbc"
local settings = require "rtbackup.settings"

local flow = {kind = "mosaiq", unit = "records"}

--- Days from --since (default: today in the site's time zone) to --until (default:
-- today, or --since's day when only --until is missing and --since is today).
function flow.period(run)
    local today = clock.today(settings.get(run.env, "timezone"), 0)
    local first = run.opts.since or today
    local last = run.opts["until"] or (run.opts.since and today or first)
    return first, last
end

--- The stable name that scopes the UIDs of this Mosaiq database's records: the
-- setting uid_namespace, else the one this journal derived and kept the first time
-- ("ENV/SOURCE" then), so renaming an environment never re-archives a record.
function flow.uid_namespace(env, alias, journal)
    local configured = settings.get(env, "uid_namespace", alias)
    if configured then return configured end
    local scope = "mosaiq " .. alias
    local kept = journal and journal:fact(scope, "uid_namespace")
    if kept then return kept end
    local derived = env.name .. "/" .. alias
    if journal then journal:set_fact(scope, "uid_namespace", derived) end
    return derived
end

--- The mapping's options: the site's mosaiq choices, the UID namespace, ODBC's NULL.
function flow.map_options(env, alias, choices, journal)
    local o = {}
    for k, v in pairs(choices.mosaiq) do o[k] = v end
    o.uid_scope = flow.uid_namespace(env, alias, journal)
    o.null = odbc.NULL
    return o
end

--- The records of the days from since to till: {records = {{ds, key, day, patient,
-- study, series}}, failures = {{key, patient, plan, fraction, day, error}}, found}.
-- opts: patient, shard (function(patient) -> bool), journal (for the UID namespace).
function flow.build(ctx, env, alias, choices, since, till, opts)
    opts = opts or {}
    local source = env.sources[alias]
    local db = odbc.connect(source, settings.resolve(env, alias), {alias = alias, ctx = ctx})
    local map_opts = flow.map_options(env, alias, choices, opts.journal)
    local out = {records = {}, failures = {}, found = 0}
    local ok, err = pcall(function()
        for _, day in ipairs(clock.days(since, till)) do
            local deliveries = mosaiq.deliveries(db, day, {sql = settings.get(env, "mosaiq_backup_sql_query", alias)})
            for _, d in ipairs(deliveries) do
                local patient = tostring(odbc.value(d.patient.IDA) or odbc.value(d.patient.Pat_ID1) or "?")
                local plan_uid = tostring(odbc.value(d.plan.OriginalPlanUID))
                local key = string.format("%s/%s/%s/%s", day, tostring(odbc.value(d.site.SIT_SET_ID)), plan_uid,
                                          tostring(d.fraction))
                if (not opts.patient or opts.patient == patient) and (not opts.shard or opts.shard(patient)) then
                    out.found = out.found + 1
                    local built, ds = pcall(map.build, d, map_opts)
                    if built then
                        out.records[#out.records + 1] = {ds = ds, key = ds.SOPInstanceUID, day = day, patient = patient,
                                                         study = ds.StudyInstanceUID, series = ds.SeriesInstanceUID}
                    else
                        out.failures[#out.failures + 1] = {key = key, patient = patient, plan = plan_uid,
                                                           fraction = d.fraction, day = day, error = tostring(ds)}
                        log.error("cannot build a treatment record", {record = key, error = tostring(ds)})
                    end
                end
            end
        end
    end)
    db:close()
    if not ok then error(err, 0) end
    return out
end

function flow.plan(run)
    local run_mod = require "rtbackup.run"
    local shard = run.opts.shard
    local built = flow.build(run.ctx, run.env, run.source_alias, run.choices, run.since, run["until"], {
        patient = run.opts.patient, journal = run.journal,
        shard = shard and function(patient) return run_mod.in_shard(shard, patient) end,
    })
    run.records = {}
    local open, present = {}, 0
    for _, r in ipairs(built.records) do
        local known = run.journal:get(run.source_alias, r.key)
        if known and known.state == "verified" then
            present = present + 1
        else
            run.records[r.key] = r
            open[#open + 1] = {key = r.key, kind = "record", expected = 1, present = 0,
                               data = {study = r.study, series = r.series, patient = r.patient, day = r.day}}
        end
    end
    local skipped = {}
    for _, f in ipairs(built.failures) do
        skipped[#skipped + 1] = {patient = f.patient, plan = f.plan, fraction = f.fraction, day = f.day,
                                 reason = f.error}
    end
    if #skipped > 0 then run.failures.partial = true end
    return {open = open, complete = {}, found = built.found, present = present,
            summary = {records_built = #built.records, deliveries_skipped = #skipped, skipped_deliveries = skipped}}
end

function flow.describe(run, units)
    local rows = {}
    for _, u in ipairs(units) do
        rows[#rows + 1] = {record = u.key, patient = u.data.patient, day = u.data.day, instances = 1, missing = 1}
    end
    return rows
end

--- Only the records built in this run can be sent (their bytes are here).
function flow.selects(run, u)
    return run.records[u.key] ~= nil
end

function flow.group(run, units)
    local by_series, jobs = {}, {}
    for _, u in ipairs(units) do
        local job = by_series[u.data.series]
        if not job then
            job = {series = u.data.series, study = u.data.study, units = {}}
            by_series[u.data.series] = job
            jobs[#jobs + 1] = job
        end
        job.units[#job.units + 1] = u
    end
    return jobs
end

local function staging(run)
    local alias = run.source_cfg.staging_target_alias
    return alias and run:peer(alias) or nil
end

-- C-STOREs the records of `units` to the first hop (staging, else the archive);
-- returns the units that could not be stored, with why.
local function store(run, units)
    local hop = staging(run) or run:peer(run.target_alias)
    local datasets = {}
    for i, u in ipairs(units) do datasets[i] = run.records[u.key].ds end
    local r = hop:store(datasets)
    if r.error and r.stored == 0 then error(r.error, 0) end
    local failed = {}
    for i, u in ipairs(units) do
        local item = r.items[i]
        if not (item and item.ok) then failed[#failed + 1] = {u, item and item.error or r.error} end
    end
    return failed
end

--- One association for all the run's records, before the moves.
function flow.prepare(run, jobs)
    local all = {}
    for _, job in ipairs(jobs) do for _, u in ipairs(job.units) do all[#all + 1] = u end end
    local ok, failed = pcall(store, run, all)
    if not ok then
        run:note_failure(failed)
        log.error("cannot store the treatment records", {peer = (staging(run) or {}).alias or run.target_alias,
                                                         error = tostring(failed)})
        for _, job in ipairs(jobs) do job.store_error = failed end
        return
    end
    for _, f in ipairs(failed) do
        local u, err = f[1], f[2]
        u.store_error = err
        run.failures.partial = true
    end
end

function flow.transfer(run, job, units)
    if job.store_error then error(job.store_error, 0) end
    local list = {}
    for _, u in ipairs(units) do
        if u.store_error then error(u.store_error, 0) end
        list[#list + 1] = u.key
    end
    local hop = staging(run)
    if not hop then return #list end -- stored straight into the archive
    local q = {level = "IMAGE", StudyInstanceUID = job.study, SeriesInstanceUID = job.series,
               destination = run:peer(run.target_alias).aet, patient = units[1].data.patient}
    local ok, r = pcall(function()
        q.SOPInstanceUID = #list == 1 and list[1] or list
        return hop:move(q)
    end)
    if ok then return r.completed end
    if exit.is_unreachable(r) then error(r, 0) end
    -- A staging SCP that refuses UID lists: one record per C-MOVE.
    local completed = 0
    for _, uid in ipairs(list) do
        q.SOPInstanceUID = uid
        completed = completed + (hop:move(q).completed or 0)
    end
    return completed
end

function flow.verify(run, job, units)
    local main = run:peer(run.target_alias)
    local there = {}
    main:find({level = "IMAGE", StudyInstanceUID = job.study, SeriesInstanceUID = job.series, SOPInstanceUID = "",
               patient = units[1].data.patient}, function(m) there[m.SOPInstanceUID] = true end)
    local found = {}
    for _, u in ipairs(units) do
        local missing = {}
        if not there[u.key] then missing[u.key] = true end
        found[u.key] = {total = 1, missing = missing, n = there[u.key] and 0 or 1}
    end
    return found
end

function flow.retry(run, job, units)
    local failed = store(run, units)
    if #failed > 0 then error(failed[1][2], 0) end
    flow.transfer(run, job, units)
end

function flow.describe_missing(run, u, f, attempts)
    return string.format("record not found in %s after %d retries", run.target_alias, attempts)
end

return flow
