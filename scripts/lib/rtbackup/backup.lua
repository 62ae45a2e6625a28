--- rtbackup.backup: a backup run of one source, end to end: window, lock, journal,
-- the source's flow (DICOM Q/R or Mosaiq), summary and exit code. Site scripts
-- (scripts/<site>/backup.lua) call backup.qr(run, choices) or backup.mosaiq(run,
-- choices) with their choices; everything else is here.
local audit = require "rtbackup.audit"
local clock = require "rtbackup.clock"
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local host = require "rtbackup.host"
local journal = require "rtbackup.journal"
local log = require "rtbackup.log"
local metrics = require "rtbackup.metrics"
local qr = require "rtbackup.qr_backup"

local backup = {}

-- Exit codes of backup (README and --help list them).
backup.EXIT = {ok = 0, partial = 1, usage = 2, locked = 3, unreachable = 4, outside_window = 5}

local function setting(env, source, key, default)
    if source and source[key] ~= nil then return source[key] end
    local s = env.settings or {}
    if s[key] ~= nil then return s[key] end
    return default
end
backup.setting = setting

--- Where journals, locks, summaries and spools live: settings.state_dir, else
-- $RTBACKUP_STATE_DIR, else /var/lib/rtbackup for an installed binary and ./state
-- in a development tree.
function backup.state_dir(env)
    local dir = (env.settings or {}).state_dir or os.getenv("RTBACKUP_STATE_DIR")
    if not dir then
        local scripts = host.info().scripts_dir
        dir = scripts:find("/share/rtbackup/scripts", 1, true) and "/var/lib/rtbackup" or "state"
    end
    os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'")
    return dir
end

local function shard_suffix(opts)
    return opts.shard and string.format("-shard%dof%d", opts.shard.index, opts.shard.count) or ""
end

--- Prepares a run: lock, journal, peers. Raises {kind = "locked"} (exit 3) when
-- another run holds the source.
function backup.open(env, source_alias, opts)
    opts = opts or {}
    local source = env.sources and env.sources[source_alias]
    if not source then
        errors.raise{kind = "config", message = string.format("%s has no source %s", env.name, tostring(source_alias))}
    end
    local target_alias = opts.target or env.default_backup
    local dir = backup.state_dir(env)
    local base = string.format("%s/%s-%s%s", dir, env.name, source_alias, shard_suffix(opts))
    local run = {
        env = env, opts = opts, state_dir = dir,
        source_alias = source_alias, source_cfg = source,
        target_alias = target_alias, target_cfg = env.backup_targets[target_alias],
        summary_path = base .. "-last-run.json",
        started = host.monotonic(), started_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    }
    if opts.metrics_file then
        -- The active collector from here on: the DICOM layer feeds it.
        run.metrics = metrics.new{env = env.name, source = source_alias,
                                  shard = opts.shard and (opts.shard.index .. "/" .. opts.shard.count)}
    end
    if not opts.dry_run then
        audit.for_env(env) -- nil (and no audit) without settings.audit_log
        run.lock = journal.lock(base .. ".lock")
        run.journal = journal.open(string.format("%s/%s%s.journal.sqlite", dir, env.name, shard_suffix(opts)))
        run.run_id = run.journal:begin_run{env = env.name, source = source_alias}
    end
    return run
end

--- The time window check for the source: nil when there is none or when ignored.
function backup.window(run)
    local window = setting(run.env, run.source_cfg, "window")
    if not window or run.opts.ignore_window then return nil end
    local tz = setting(run.env, nil, "timezone")
    return window, function() return not clock.in_window(window, clock.now_hhmm(tz)) end
end

--- The date window of the selection: --since/--until, else yesterday and today in
-- the site's time zone (setting `timezone`).
function backup.date_range(run)
    local tz = setting(run.env, nil, "timezone")
    local since = run.opts.since or clock.today(tz, -1)
    local till = run.opts["until"] or clock.today(tz, 0)
    return since, till
end

-- In --shard I/N runs, a study belongs to shard hash(StudyInstanceUID) mod N.
local function in_shard(shard, key)
    if not shard then return true end
    local h = 2166136261
    for i = 1, #key do h = ((h ~ key:byte(i)) * 16777619) & 0xffffffff end
    return h % shard.count == shard.index - 1
end
backup.in_shard = in_shard

--- The ARIA/MIM flow. `choices` (from the site script): keys (query keys; default
-- settings.dicom_query_keys), concurrency, max_retries, retry_backoff_ms.
function backup.qr(run, choices)
    choices = choices or {}
    local env, opts = run.env, run.opts
    local ctx = {
        env = env, journal = run.journal, source_alias = run.source_alias, target_alias = run.target_alias,
        source = dicom.peer(env, run.source_alias), target = dicom.peer(env, run.target_alias),
        concurrency = choices.concurrency or setting(env, run.source_cfg, "max_associations", 4),
        max_retries = choices.max_retries or setting(env, run.source_cfg, "max_retries", 3),
        backoff_ms = choices.retry_backoff_ms or setting(env, nil, "retry_backoff_ms", 1000),
        stats = {moved = 0, verified = 0, failed = 0},
    }
    ctx.destination = ctx.target.aet
    local limit = setting(env, nil, "circuit_breaker_failures", 3)
    ctx.source_breaker, ctx.target_breaker = qr.breaker(ctx.source, limit), qr.breaker(ctx.target, limit)
    ctx.window, ctx.outside_window = backup.window(run)

    local since, till = backup.date_range(run)
    local selection = {keys = choices.keys or setting(env, run.source_cfg, "dicom_query_keys", {}),
                       patient = opts.patient, study = opts.study,
                       study_dates = clock.dicom_date(since) .. "-" .. clock.dicom_date(till)}
    log.info("planning", {source = run.source_alias, target = run.target_alias, since = since, ["until"] = till})
    local t0 = host.monotonic()
    local plan = qr.plan(ctx, selection)
    local plan_seconds = host.monotonic() - t0
    if opts.shard then
        local keep = {}
        for _, u in ipairs(plan.units) do if in_shard(opts.shard, u.data.study) then keep[#keep + 1] = u end end
        plan.units = keep
    end
    local summary = {source = run.source_alias, target = run.target_alias, since = since, ["until"] = till,
                     studies = plan.studies, found = plan.found, already_present = plan.present,
                     moved = 0, verified = 0, failed = 0, series_to_move = #plan.units,
                     plan_errors = #plan.errors}

    if opts.dry_run then
        summary.plan = {}
        for _, u in ipairs(plan.units) do
            summary.plan[#summary.plan + 1] = {series = u.key, study = u.data.study, patient = u.data.patient,
                                               modality = u.data.modality, instances = u.expected,
                                               missing = u.expected - (u.present or 0)}
        end
        return summary, #plan.errors > 0 and backup.EXIT.unreachable or backup.EXIT.ok
    end

    -- Record what the plan found: new work queued; series the target lost are
    -- queued again; complete series are verified (counted, not moved).
    local j = run.journal
    local lost = {}
    for _, u in ipairs(plan.units) do
        local known = j:get(run.source_alias, u.key)
        if known and known.state == "verified" then lost[#lost + 1] = u.key end
    end
    if #lost > 0 then
        log.warn("series verified earlier are incomplete in the target again; queueing them", {count = #lost})
        j:requeue(run.source_alias, lost) -- first, so the upsert below refreshes their counts
    end
    j:upsert(run.source_alias, plan.units)
    local complete_keys = {}
    for _, u in ipairs(plan.complete) do complete_keys[#complete_keys + 1] = u.key end
    j:upsert(run.source_alias, plan.complete)
    j:mark_many(run.source_alias, complete_keys, "verified", {})

    local units, instances, deferred = qr.select(ctx, setting(env, nil, "max_uids_per_run"))
    if deferred > 0 then
        log.info("max_uids_per_run reached: the rest waits for the next runs", {deferred_series = deferred})
    end
    summary.deferred_series = deferred
    t0 = host.monotonic()
    local outcome = qr.execute(ctx, units, instances)
    summary.plan_seconds, summary.move_verify_seconds = plan_seconds, host.monotonic() - t0
    if setting(env, nil, "complete_references", true) then
        -- Only the RT objects verified in this run: earlier runs checked theirs.
        local verified = {}
        for _, u in ipairs(units) do
            local now = j:get(run.source_alias, u.key)
            if now and now.state == "verified" then verified[#verified + 1] = now end
        end
        local ok, refs = pcall(require("rtbackup.references").complete, ctx, verified)
        if ok then
            ctx.stats.moved = ctx.stats.moved + refs.moved
            ctx.stats.failed = ctx.stats.failed + refs.failed
            if refs.failed > 0 then outcome.failed = outcome.failed + 1 end
            summary.references_moved_series, summary.references_unresolved = refs.moved_series, #refs.unresolved
        else
            log.error("cannot complete the references of RT objects", {error = tostring(refs)})
            summary.plan_errors = summary.plan_errors + 1
        end
    end
    summary.moved, summary.verified, summary.failed = ctx.stats.moved, ctx.stats.verified, ctx.stats.failed
    summary.series_verified, summary.series_failed, summary.series_skipped = outcome.verified, outcome.failed, outcome.skipped
    summary.errors = outcome.errors

    local code = backup.EXIT.ok
    if outcome.failed > 0 then code = backup.EXIT.partial end
    if outcome.skipped > 0 or #plan.errors > 0 or ctx.source_breaker.open or ctx.target_breaker.open then
        code = (ctx.outside_window and ctx.outside_window()) and backup.EXIT.outside_window or backup.EXIT.unreachable
    end
    return summary, code
end

--- The Mosaiq flow (RT records built from the day's treatments, staged, moved,
-- verified) is provided by rtbackup.mosaiq_backup once present.
function backup.mosaiq(run, choices)
    local ok, flow = pcall(require, "rtbackup.mosaiq_backup")
    if not ok then
        errors.raise{kind = "config", message = "Mosaiq backup is not available in this build: " .. tostring(flow)}
    end
    return flow.run(backup, run, choices)
end

--- Ends a run: summary into the journal and as JSON in the state dir, lock released.
function backup.close(run, summary, code)
    summary.env = run.env.name
    summary.started_at = run.started_at
    summary.finished_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
    summary.duration_seconds = host.monotonic() - run.started
    summary.instances_per_second = summary.duration_seconds > 0 and (summary.moved or 0) / summary.duration_seconds or 0
    summary.exit_code = code
    local associations = 0
    for _, n in pairs(dicom.associations) do associations = associations + n end
    summary.associations = associations
    if run.journal then
        run.journal:finish_run(run.run_id, {status = code == 0 and "ok" or "exit " .. code, summary = summary})
        local f = io.open(run.summary_path .. ".tmp", "w")
        if f then
            f:write(require("cjson").encode(summary), "\n")
            f:close()
            os.rename(run.summary_path .. ".tmp", run.summary_path)
        end
        run.journal:close()
    end
    if run.lock then run.lock:release() end
    audit.close() -- the last batch, then no default log until the next run opens one
    if run.metrics then
        -- Metrics are for watching; a file that cannot be written must not turn a
        -- verified backup into a failed one.
        local ok, err = pcall(run.metrics.write, run.metrics, run.opts.metrics_file, summary)
        if not ok then
            log.error("cannot write the metrics file", {path = run.opts.metrics_file, error = tostring(err)})
        end
        metrics.deactivate()
    end
    return summary
end

--- One line per number, for people.
function backup.print_summary(s)
    local out = io.stdout
    out:write(string.format("%s %s -> %s (%s .. %s)\n", s.env or "", s.source, s.target or "", s.since or "", s["until"] or ""))
    if s.records_built then
        out:write(string.format("  found %d deliveries; built %d records (%d could not be built); already backed up %d\n",
                                s.found or 0, s.records_built, s.build_failed or 0, s.already_present or 0))
    else
        out:write(string.format("  found %d instances in %d studies; already present %d\n", s.found or 0,
                                s.studies or 0, s.already_present or 0))
    end
    if s.plan then
        out:write(string.format("  dry run: %d series would be moved\n", #s.plan))
        for _, p in ipairs(s.plan) do
            out:write(string.format("    %s %s %s: %d of %d instances missing\n", p.patient or "?", p.modality or "?",
                                    p.series, p.missing, p.instances))
        end
        return
    end
    out:write(string.format("  moved %d, verified %d, failed %d instances", s.moved or 0, s.verified or 0, s.failed or 0))
    if (s.deferred_series or 0) > 0 then out:write(string.format("; %d series left for later runs", s.deferred_series)) end
    out:write(string.format("\n  %.1f s, %.0f instances/s, exit %d\n", s.duration_seconds or 0,
                            s.instances_per_second or 0, s.exit_code or 0))
    for _, e in ipairs(s.errors or {}) do out:write("  error: ", e.series or e.key or "", ": ", e.error, "\n") end
end

return backup
