--- rtbackup.mosaiq.flow: the staged Mosaiq backup, as a flow of rtbackup.run.
--
--   plan      the days' deliveries from Mosaiq (rtbackup.mosaiq.query, one
--             parameterised query per day), one RT Beams Treatment Record per
--             (patient, site, plan, fraction, day, session) — its identity — built by
--             rtbackup.mosaiq.map. Every delivery is built or named as skipped, with
--             its reason (summary, metrics, exit code 1). As they are built, the
--             records to send are C-STOREd to the staging SCP (staging_target_alias;
--             straight into the archive without staging) in batches, each freed once
--             stored: memory stays flat over a year of records
--   transfer  C-MOVE from staging to the archive, per record series
--   verify    each record retrieved from the archive as stored (its file through the
--             Orthanc REST API of a target with an http_url, else C-GET) and its
--             canonical digest compared with what was built: a target holding other
--             bytes under our UID is a failure, named. A target that refuses C-GET is
--             checked by presence (C-FIND) and the summary says the content was not
--             compared.
--   retry     stored and moved again
--   finish    superseded versions reported (and removed, mosaiq_remove_superseded)
--
-- Units are records (kind "record") keyed by identity, not by UID, so that a record
-- is tracked across corrections: the journal keeps, per identity, the current
-- version's UID and digest and the chain of superseded ones. The UID is derived from
-- the content (rtbackup.mosaiq.map): the same Mosaiq rows always give the same bytes
-- under the same UID, and a corrected row gives a new version with a new UID, queued
-- and verified like any record, while the one it supersedes is reported.
--
-- A continuation (the rest of an interrupted beam) references the records of the
-- same fraction before it (Referenced Treatment Record Sequence): the day's earlier
-- sessions, and for a day that starts with a continuation, the records of the nearest
-- earlier day of that fraction (within CONTINUATION_DAYS), built again from Mosaiq
-- when that day is not in the run. Never from the journal: the same rows give the same
-- record whatever was backed up before, by which run, shard or journal.
local clock = require "rtbackup.clock"
local errors = require "rtbackup.error"
local host = require "rtbackup.host"
local exit = require "rtbackup.exit"
local dicom = require "rtbackup.dicom"
local log = require "rtbackup.log"
local map = require "rtbackup.mosaiq.map"
local mosaiq = require "rtbackup.mosaiq.query"
local odbc = require "rtbackup.odbc"
local orthanc = require "rtbackup.orthanc"
local settings = require "rtbackup.settings"
local task = require "rtbackup.task"

local flow = {kind = "mosaiq", unit = "records"}

-- Days a run looks back by default (lookback_days unset): the scheduled run after
-- midnight covers the evening before, and a Dose_Hst row corrected within the week
-- (the weekly chart check) is built again and archived as a new version.
flow.LOOKBACK_DAYS = 7
-- How far back a continuation's interrupted part is looked for (days).
flow.CONTINUATION_DAYS = 7

--- The stable name that scopes the UIDs of this Mosaiq database's records: the
-- setting uid_namespace, else the one this journal derived and kept the first time.
-- Derived from the database it names (its DSN, or server and database), not from the
-- environment's or the source's name: renaming either (which starts a new journal)
-- or a journal of another shard derives the same, so no record is archived again
-- under another UID. ("ENV/SOURCE" only for a database named by secrets.)
function flow.uid_namespace(env, alias, journal, read_only)
    local configured = settings.get(env, "uid_namespace", alias)
    if configured then return configured end
    local scope = "mosaiq " .. alias
    local kept = journal and journal:fact(scope, "uid_namespace")
    if kept then return kept end
    local src = env.sources[alias] or {}
    local derived
    if type(src.dsn) == "string" then
        derived = "MOSAIQ DSN " .. src.dsn
    elseif type(src.db_server) == "string" and type(src.db_database) == "string" then
        derived = "MOSAIQ " .. src.db_server:lower() .. "/" .. src.db_database
    else
        derived = env.name .. "/" .. alias
    end
    if journal and not read_only then journal:set_fact(scope, "uid_namespace", derived) end
    return derived
end

--- The mapping's options: the site's mosaiq choices, the UID namespace, ODBC's NULL.
function flow.map_options(env, alias, choices, journal, read_only)
    local o = {}
    for k, v in pairs(choices.mosaiq) do o[k] = v end
    o.uid_scope = flow.uid_namespace(env, alias, journal, read_only)
    o.null = odbc.NULL
    return o
end

local function text(v)
    v = odbc.value(v)
    if type(v) == "number" and math.type(v) == "float" and v == math.floor(v) then return string.format("%d", v) end
    return v ~= nil and tostring(v) or "?"
end

-- patient/site/plan/fraction: the records of one fraction share it.
local function fraction_key(g)
    return string.format("%s/%s/%s/%s", text(g.patient.Pat_ID1), text(g.site.SIT_SET_ID),
                         text(g.plan.OriginalPlanUID), text(g.fraction))
end

--- A record's identity: what stays the same when Mosaiq corrects its rows.
function flow.identity(g, day)
    return string.format("%s/%s/s%d", fraction_key(g), day, g.session or 1)
end

local function patient_of(g)
    return text(odbc.value(g.patient.IDA) ~= nil and g.patient.IDA or g.patient.Pat_ID1)
end

local move_records -- defined with transfer

local function staging(run)
    local alias = run.source_cfg.staging_target_alias
    return alias and run:peer(alias) or nil
end

--- The records of the days from since to till: {records = {{ds, key (identity), uid,
-- digest, day, patient, study, series, warnings}}, skipped = {{patient, plan,
-- fraction, day, reason}}, warnings = {...}, found}. opts: patient, shard (function(
-- patient) -> bool), journal (UID namespace, continuations), read_only (a dry run),
-- on_record (function(r), called as each record is built: it may take r.ds away).
-- out.seconds = {query, build}: time spent in the day queries and in the mapping.
function flow.build(ctx, env, alias, choices, since, till, opts)
    opts = opts or {}
    local source = env.sources[alias]
    local db = odbc.connect(source, settings.resolve(env, alias), {alias = alias, ctx = ctx})
    local j = opts.journal
    local map_opts = flow.map_options(env, alias, choices, j, opts.read_only)
    local out = {records = {}, skipped = {}, warnings = {}, found = 0, seconds = {query = 0, build = 0}}
    -- fraction key -> day -> the UIDs of its records that day, in session order ({}: it
    -- had deliveries, none built); the run's days and the earlier days looked up.
    local by_fraction = {}
    local now = require("rtbackup.host").monotonic
    local function wanted(patient)
        return (not opts.patient or opts.patient == patient) and (not opts.shard or opts.shard(patient))
    end
    local query_opts = {sql = settings.get(env, "mosaiq_backup_sql_query", alias),
                        devices_sql = settings.get(env, "mosaiq_devices_sql_query", alias),
                        points_sql = settings.get(env, "mosaiq_points_sql_query", alias),
                        points = mosaiq.points_memory()}
    local first_day = clock.day(since)
    local earlier_groups = {} -- day (before the run) -> its groups, as queried
    local free_conn = db -- the connection no day's query is using at the moment
    local function day_records(fkey, day)
        by_fraction[fkey] = by_fraction[fkey] or {}
        by_fraction[fkey][day] = by_fraction[fkey][day] or {}
        return by_fraction[fkey][day]
    end
    local references -- defined below (it and earlier_uids call each other)
    -- The UIDs of fraction fkey's records on `day`, before the run: that day's groups
    -- built again (nil when the fraction had no delivery that day).
    local function earlier_uids(fkey, day, depth)
        local known = by_fraction[fkey] and by_fraction[fkey][day]
        if known then return known end
        if not earlier_groups[day] then earlier_groups[day] = mosaiq.deliveries(free_conn, day, query_opts) end
        local list
        for _, g in ipairs(earlier_groups[day]) do
            if fraction_key(g) == fkey then
                list = day_records(fkey, day)
                g.referenced_records = references(g, fkey, day, depth + 1)
                local built, ds = pcall(map.build, g, map_opts)
                if built then list[#list + 1] = ds.SOPInstanceUID end
            end
        end
        return list
    end
    -- What group g (fraction fkey, on `day`) references: the day's earlier sessions and,
    -- when the day starts with a continuation, the nearest earlier day's records.
    references = function(g, fkey, day, depth)
        if (g.session or 1) <= 1 then return nil end
        local refs = {}
        local today = by_fraction[fkey] and by_fraction[fkey][day]
        if not today or #today == 0 then
            local n = clock.day(day)
            for back = 1, flow.CONTINUATION_DAYS do
                local d = clock.format_day(n - back)
                local uids
                if n - back >= first_day then
                    uids = by_fraction[fkey] and by_fraction[fkey][d] -- the run's (done already)
                elseif depth < flow.CONTINUATION_DAYS then
                    uids = earlier_uids(fkey, d, depth)
                end
                if uids then
                    for _, u in ipairs(uids) do refs[#refs + 1] = u end
                    break
                end
            end
        end
        for _, u in ipairs(today or {}) do refs[#refs + 1] = u end
        return #refs > 0 and refs or nil
    end
    -- The next day's query runs (on a connection of its own) while this day's records
    -- are built: the database and the mapping work at the same time.
    local days = clock.days(since, till)
    local dbs, pending = {db}, nil
    local function fetch(i)
        local conn = dbs[(i - 1) % #dbs + 1]
        return task.spawn(function()
            local t0 = now()
            local groups, skipped = mosaiq.deliveries(conn, days[i], query_opts)
            return {groups, skipped, now() - t0}
        end)
    end
    local ok, err = pcall(function()
        if #days > 1 then
            dbs[2] = odbc.connect(source, settings.resolve(env, alias), {alias = alias, ctx = ctx})
        end
        pending = #days > 0 and fetch(1) or nil
        for i, day in ipairs(days) do
            local fetched = task.wait(pending)
            free_conn = dbs[(i - 1) % #dbs + 1] -- this day's, done: the next day's runs on the other
            pending = days[i + 1] and fetch(i + 1) or nil
            local groups, skipped = fetched[1], fetched[2]
            out.seconds.query = out.seconds.query + fetched[3]
            for _, s in ipairs(skipped) do
                if wanted(s.patient) then
                    out.found = out.found + 1
                    out.skipped[#out.skipped + 1] = s
                    log.warn("a Mosaiq delivery is not backed up as a treatment record",
                             {patient = s.patient, plan = s.plan, fraction = s.fraction, day = day,
                              dhs_id = s.dhs_id, reason = s.reason})
                end
            end
            for _, g in ipairs(groups) do
                local patient = patient_of(g)
                if wanted(patient) then
                    out.found = out.found + 1
                    local fkey, key = fraction_key(g), flow.identity(g, day)
                    if (g.session or 1) > 1 then
                        -- A continuation: the fraction's records before it.
                        g.referenced_records = references(g, fkey, day, 0)
                        if not g.referenced_records then
                            log.warn("a continuation's interrupted part is not in Mosaiq within " ..
                                     flow.CONTINUATION_DAYS .. " days before it: its record references none",
                                     {record = key})
                        end
                    end
                    local t1 = now()
                    local built, ds, warnings = pcall(map.build, g, map_opts)
                    local r = built and {ds = ds, key = key, uid = ds.SOPInstanceUID, digest = ds:digest(), day = day,
                                         patient = patient, study = ds.StudyInstanceUID,
                                         series = ds.SeriesInstanceUID, warnings = warnings}
                    out.seconds.build = out.seconds.build + now() - t1
                    local list = day_records(fkey, day)
                    if built then
                        out.records[#out.records + 1] = r
                        list[#list + 1] = r.uid
                        for _, w in ipairs(warnings) do
                            w.record, w.day = key, day
                            out.warnings[#out.warnings + 1] = w
                            log.warn("treatment record: " .. w.message, {record = key, field = w.field})
                        end
                        if opts.on_record then opts.on_record(r) end
                    else
                        out.skipped[#out.skipped + 1] = {patient = patient, plan = text(g.plan.OriginalPlanUID),
                                                         fraction = g.fraction, day = day, record = key,
                                                         kind = "unmappable", reason = tostring(ds)}
                        log.error("cannot build a treatment record", {record = key, error = tostring(ds)})
                    end
                end
            end
        end
    end)
    if pending then pcall(task.wait, pending) end -- a query still running uses a connection
    for _, conn in ipairs(dbs) do conn:close() end
    if not ok then error(err, 0) end
    return out
end

--- The kinds of skipped deliveries the site accepts as never being records (the site
-- choice mosaiq.accepted_skips), as a set; a kind that means missing data is refused.
function flow.accepted_skips(choices)
    local accepted = {}
    for _, kind in ipairs(choices.mosaiq.accepted_skips or {}) do
        if kind ~= "qa_mode" and kind ~= "brachytherapy" and kind ~= "imaging" then
            errors.raise{kind = "config", message = string.format("site choice mosaiq.accepted_skips: %q cannot " ..
                "be accepted (only \"qa_mode\", \"brachytherapy\" and \"imaging\": other skips mean data is missing)",
                tostring(kind))}
        end
        accepted[kind] = true
    end
    return accepted
end

--- Whether skipped deliveries make a run partial (exit 1): any whose kind the site's
-- mosaiq.accepted_skips does not list.
function flow.makes_partial(choices, skipped)
    local accepted = flow.accepted_skips(choices)
    for _, s in ipairs(skipped) do
        if not accepted[s.kind] then return true end
    end
    return false
end

-- The chain of versions a unit's data keeps: {{uid, digest}, ...}, oldest first.
local function versions_of(data)
    local list = {}
    for _, v in ipairs(data.versions or {}) do list[#list + 1] = v end
    if #list == 0 and data.uid then list[1] = {uid = data.uid, digest = data.digest} end
    return list
end

-- Records are staged while they are built, flow.STAGE_BATCH per association: the
-- datasets of a year of records would not fit in memory, and staging overlaps the
-- queries.
flow.STAGE_BATCH = 32
-- Staged records are handed to the moves in parts of about flow.PART_RECORDS: moving
-- starts while the plan goes on, and a part is large enough that a series' records of
-- it (a course's fractions over some weeks) share one C-MOVE and one C-GET.
flow.PART_RECORDS = 512

-- C-STOREs records to the first hop (staging, else the archive). A record stored is
-- freed (r.ds = nil: the move takes it from there); one refused keeps its dataset and
-- its error (r.store_error) for the retries. Raises when the association failed.
local function stage(run, records)
    if #records == 0 then return end
    local hop = staging(run) or run:peer(run.target_alias)
    local datasets = {}
    for i, r in ipairs(records) do datasets[i] = r.ds end
    local t0 = host.monotonic()
    local ok, res = pcall(hop.store, hop, datasets)
    run.seconds.store = run.seconds.store + host.monotonic() - t0
    if not ok or (res.error and res.stored == 0) then
        local err = ok and res.error or res
        for _, r in ipairs(records) do r.store_error = err end
        run:note_failure(err)
        log.error("cannot store the treatment records", {peer = hop.alias or run.target_alias, error = tostring(err)})
        return
    end
    for i, r in ipairs(records) do
        local item = res.items[i]
        if item and item.ok then
            r.ds:free()
            r.ds, r.store_error = nil, nil
        else
            r.store_error = item and item.error or res.error
            run.failures.partial = true
        end
    end
end

-- hand (rtbackup.run; nil in a dry run): each part of the open units once its records
-- are in staging; the units not handed yet are returned as the plan's open ones.
function flow.plan(run, hand)
    local run_mod = require "rtbackup.run"
    local shard = run.opts.shard
    local j, alias, dry = run.journal, run.source_alias, run.opts.dry_run
    run.records, run.seconds = {}, {store = 0}
    local open, present, corrected, requeue, batch, storing = {}, 0, {}, {}, {}, {}
    local staged = 0 -- open[1 .. staged]: units whose records' stores have ended
    -- Hands over the staged units once there are enough of them.
    local function hand_staged()
        if not hand or staged < flow.PART_RECORDS then return end
        local part, rest = {}, {}
        for i, u in ipairs(open) do
            if i <= staged then part[#part + 1] = u else rest[#rest + 1] = u end
        end
        open, staged = rest, 0
        -- Corrected records verified earlier go back to the queue before the part is
        -- recorded (which would take them for lost ones).
        if #requeue > 0 and not dry then j:requeue(alias, requeue) end
        requeue = {}
        hand(part)
    end
    -- The stores ended, oldest first (or, with `wait`, the oldest waited for): their
    -- units are staged then.
    local function stores_ended(wait)
        while storing[1] and (storing[1].ended or wait) do
            local t = table.remove(storing, 1)
            task.wait(t.task)
            staged, wait = staged + t.units, false
        end
        hand_staged()
    end
    -- Each record as it is built: already archived (same identity, same content), new,
    -- or a new version of one archived before (a correction).
    local function on_record(r)
        local known = j:get(alias, r.key)
        local data = known and type(known.data) == "table" and known.data or {}
        local unit = {key = r.key, kind = "record", expected = 1, present = 0,
                      data = {uid = r.uid, digest = r.digest, study = r.study, series = r.series,
                              patient = r.patient, day = r.day}}
        if known and data.digest == r.digest and data.uid == r.uid then
            unit.data.versions, unit.data.superseded = data.versions, data.superseded
            if known.state == "verified" then
                present = present + 1
                r.ds:free()
                r.ds = nil
                return
            end
        elseif known and data.uid then
            -- Mosaiq changed what this record says: a new version supersedes the last.
            local versions = versions_of(data)
            versions[#versions + 1] = {uid = r.uid, digest = r.digest}
            local superseded = {}
            for _, uid in ipairs(data.superseded or {}) do superseded[#superseded + 1] = uid end
            superseded[#superseded + 1] = data.uid
            unit.data.versions, unit.data.superseded = versions, superseded
            corrected[#corrected + 1] = {record = r.key, patient = r.patient, day = r.day, current = r.uid,
                                         superseded = data.uid, version = #versions}
            log.warn("Mosaiq corrected a delivered record: a new version supersedes the archived one",
                     {record = r.key, patient = r.patient, superseded = data.uid, current = r.uid})
            if known.state == "verified" then requeue[#requeue + 1] = r.key end
        end
        run.records[r.key] = r
        open[#open + 1] = unit
        if dry then
            r.ds:free()
            r.ds = nil
        else
            batch[#batch + 1] = r
            if #batch >= flow.STAGE_BATCH then
                -- Stored while the next records are built; two batches at most in flight.
                -- open[] and the batches are in the same order: a batch's units are the
                -- next #batch of open[] after those of the batches before it.
                stores_ended(#storing >= 2)
                local entry, records = {units = #batch}, batch
                entry.task = task.spawn(function()
                    local ok, err = pcall(stage, run, records)
                    entry.ended = true
                    if not ok then error(err, 0) end
                end)
                storing[#storing + 1] = entry
                batch = {}
            end
        end
    end
    local ok, built = pcall(flow.build, run.ctx, run.env, alias, run.choices, run.since, run["until"], {
        patient = run.opts.patient, journal = j, read_only = dry, on_record = on_record,
        shard = shard and function(patient) return run_mod.in_shard(shard, patient) end,
    })
    for _, t in ipairs(storing) do pcall(task.wait, t.task) end
    if not ok then error(built, 0) end
    stage(run, batch)
    if #requeue > 0 and not dry then j:requeue(alias, requeue) end
    if flow.makes_partial(run.choices, built.skipped) then run.failures.partial = true end
    if run.opts.patient and built.found == 0 then
        run.summary.patient_not_found = run.opts.patient
        log.warn("Mosaiq has no delivery of this patient in the period", {source = alias, patient = run.opts.patient})
    end
    run.corrected = corrected
    local warnings = {}
    for i, w in ipairs(built.warnings) do
        if i > 100 then break end -- the log has them all
        warnings[i] = {record = w.record, patient = w.patient, fraction = w.fraction, field = w.field,
                       message = w.message}
    end
    run.seconds.query, run.seconds.build = built.seconds.query, built.seconds.build
    return {open = open, complete = {}, found = built.found, present = present,
            summary = {records_built = #built.records, deliveries_skipped = #built.skipped,
                       skipped_deliveries = built.skipped, records_corrected = #corrected,
                       corrected_records = corrected, record_warnings = #built.warnings,
                       record_warning_list = warnings}}
end

function flow.describe(run, units)
    local rows = {}
    for _, u in ipairs(units) do
        rows[#rows + 1] = {record = u.key, uid = u.data.uid, patient = u.data.patient, day = u.data.day,
                           instances = 1, missing = 1}
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
        u.data = u.data or {}
        local r = run.records[u.key]
        u.data.uid = r.uid -- the version built now, whatever the journal had
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

--- The moves are asked of staging (none without it).
function flow.moves_from(run)
    return staging(run)
end

function flow.transfer(run, job, units)
    local list = {}
    for _, u in ipairs(units) do
        local r = run.records[u.key]
        if r.store_error then error(r.store_error, 0) end
        list[#list + 1] = u.data.uid
    end
    local hop = staging(run)
    if not hop then return #list end -- stored straight into the archive
    local t0 = host.monotonic()
    local ok, completed = pcall(move_records, run, hop, job, units, list)
    run.seconds.move = (run.seconds.move or 0) + host.monotonic() - t0
    if not ok then error(completed, 0) end
    return completed
end

-- C-MOVEs the records from staging to the archive: a UID list per series, else one by
-- one for a staging SCP that refuses lists.
move_records = function(run, hop, job, units, list)
    local q = {level = "IMAGE", StudyInstanceUID = job.study, SeriesInstanceUID = job.series,
               destination = run:peer(run.target_alias).aet, patient = units[1].data.patient}
    local ok, r = pcall(function()
        q.SOPInstanceUID = #list == 1 and list[1] or list
        return hop:move(q)
    end)
    if ok then
        run:move_answered(job, r)
        return r.completed
    end
    if exit.is_unreachable(r) or exit.needs_configuration(r) then error(r, 0) end
    -- A staging SCP that refuses UID lists: one record per C-MOVE.
    local completed = 0
    for _, uid in ipairs(list) do
        q.SOPInstanceUID = uid
        local one = hop:move(q)
        run:move_answered(job, one)
        completed = completed + (one.completed or 0)
    end
    return completed
end

-- The digests of the records the archive holds, by UID (C-GET), or nil and the error
-- when the archive refuses C-GET.
local function archived_digests(main, job, uids, patient)
    local got = {}
    local ok, err = pcall(main.get, main, {level = "IMAGE", StudyInstanceUID = job.study,
        SeriesInstanceUID = job.series, SOPInstanceUID = #uids == 1 and uids[1] or uids, patient = patient},
        function(ds)
            got[ds.SOPInstanceUID] = ds:digest()
            ds:free()
        end)
    if ok then return got end
    if exit.is_unreachable(err) then error(err, 0) end
    return nil, err
end

-- Presence by C-FIND, for an archive that refuses C-GET.
local function archived_uids(main, job, patient)
    local there = {}
    main:find({level = "IMAGE", StudyInstanceUID = job.study, SeriesInstanceUID = job.series, SOPInstanceUID = "",
               patient = patient}, function(m) there[m.SOPInstanceUID] = true end)
    return there
end

function flow.verify(run, job, units)
    local t0 = host.monotonic()
    local found = flow.check(run, job, units)
    run.seconds.verify = (run.seconds.verify or 0) + host.monotonic() - t0
    return found
end

-- The digests of the records of `units` the archive's REST API (rtbackup.orthanc)
-- gives as stored, by UID, and the UIDs it did not give (not stored under those
-- identifiers, not readable, an error): a C-GET decides for those.
local function stored_digests(archive, job, units)
    local got, rest = {}, {}
    for _, u in ipairs(units) do
        local uid = u.data.uid
        local bytes = archive:instance_file(u.data.patient, job.study, job.series, uid)
        local ok, ds = false, nil
        if bytes then ok, ds = pcall(dicom.parse, bytes, uid) end
        if ok and ds.SOPInstanceUID == uid then got[uid] = ds:digest() else rest[#rest + 1] = uid end
        if ok then ds:free() end
    end
    return got, rest
end

-- Each record of `units` in the archive, with its content (see the top): as stored,
-- through the archive's REST API where it has one, else (and for what that did not
-- give) by C-GET, else by presence (C-FIND).
function flow.check(run, job, units)
    local main = run:peer(run.target_alias)
    local patient = units[1].data.patient
    local archive = orthanc.of_run(run)
    local digests, uids = {}, {}
    if archive then
        digests, uids = stored_digests(archive, job, units)
    else
        for i, u in ipairs(units) do uids[i] = u.data.uid end
    end
    local there
    if #uids > 0 then
        local got, refused = archived_digests(main, job, uids, patient)
        if got then
            for uid, d in pairs(got) do digests[uid] = d end
        else
            there = archived_uids(main, job, patient)
            if not run.content_unchecked then
                run.content_unchecked = true
                run.summary.records_content_unchecked = 0
                log.warn("the archive refuses C-GET: records are checked by presence, their content is not compared",
                         {target = run.target_alias, error = tostring(refused)})
            end
            run.summary.records_content_unchecked = run.summary.records_content_unchecked + #uids
        end
    end
    local found = {}
    for _, u in ipairs(units) do
        local uid, f = u.data.uid, {total = 1, missing = {}, n = 0}
        if digests[uid] then
            if digests[uid] ~= u.data.digest then
                f.missing[uid], f.n, f.different = true, 1, digests[uid]
            end
        elseif not (there and there[uid]) then
            f.missing[uid], f.n = true, 1
        end
        found[u.key] = f
    end
    return found
end

--- Stores again what staging refused, then moves again.
function flow.retry(run, job, units)
    local again = {}
    for _, u in ipairs(units) do
        local r = run.records[u.key]
        if r.ds then again[#again + 1] = r end
    end
    stage(run, again)
    for _, r in ipairs(again) do
        if r.store_error then error(r.store_error, 0) end
    end
    flow.transfer(run, job, units)
end

function flow.describe_missing(run, u, f, attempts)
    if f.different then
        return string.format("%s holds different content under the record's UID %s (digest %s, built %s) " ..
                             "after %d retries: its copy is not this record", run.target_alias, u.data.uid,
                             f.different, u.data.digest, attempts)
    end
    return string.format("record %s not found in %s after %d retries%s", u.data.uid, run.target_alias, attempts,
                         run:reported_failed_clause(f.missing))
end

--- The superseded versions of the records verified in this run: removed from the
-- archive (mosaiq_remove_superseded, Orthanc REST), else reported as kept.
function flow.finish(run)
    local remove = run:setting("mosaiq_remove_superseded")
    local http_url = run.target_cfg.http_url
    local archive = remove and http_url and orthanc.for_peer(
        {type = "orthanc", http_url = http_url, aet = run.target_cfg.aet}, run.target_alias, run.ctx)
    if remove and not http_url then
        log.warn("mosaiq_remove_superseded is set but the backup target has no http_url: superseded records " ..
                 "are kept", {target = run.target_alias})
    end
    -- Where the time went (busy seconds: moves and verifications overlap).
    run.summary.phase_seconds = run.seconds
    local report = {}
    for _, u in ipairs(run.book.done) do
        local data = u.data or {}
        if data.superseded and #data.superseded > 0 and run.records[u.key] then
            local entry = {record = u.key, patient = data.patient, current = data.uid, superseded = {}}
            local still = {}
            for _, uid in ipairs(data.superseded) do
                local state = "kept"
                if archive then
                    local ok, why = archive:remove_instance(uid, data.patient)
                    state = ok and "removed" or ("kept: " .. tostring(why))
                    if not ok and why ~= "not in the archive" then
                        log.error("cannot remove a superseded record", {record = u.key, uid = uid, error = why})
                        still[#still + 1] = uid
                    end
                else
                    still[#still + 1] = uid
                end
                entry.superseded[#entry.superseded + 1] = {uid = uid, state = state}
            end
            if #still ~= #data.superseded then
                data.superseded = still
                run.journal:mark(run.source_alias, u.key, "verified", {data = data})
            end
            report[#report + 1] = entry
        end
    end
    if #report > 0 then run.summary.superseded_records = report end
end

return flow
