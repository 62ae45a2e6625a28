--- rtbackup.run: one backup run of one source, from open to close. The library owns
-- the run; a command parses its arguments and calls run.backup, a site hands in
-- choices (rtbackup.site).
--
--   open     the per-source lock (3 when another run holds it), the journal, the
--            run's context (audit log, metrics collector), the site's choices
--   drive    the window; the source's flow (rtbackup.qr.flow for ARIA/MIM,
--            rtbackup.mosaiq.flow for Mosaiq): plan -> units; transfer and verify
--            each job on the peers' associations, retrying what is still missing;
--            finish (references)
--   close    the exit code (rtbackup.exit), the summary (journal run history,
--            <state_dir>/<ENV>-<SOURCE>[-shardIofN]-last-run.json, stdout), metrics,
--            the last audit batch, the lock; then the alert the summary deserves
--            (rtbackup.alerts), and run history older than run_history_days pruned
--
-- A flow is a table: kind, LOOKBACK_DAYS (the period without --since: that many days
-- before --until or today, unless the setting lookback_days says otherwise); plan(run) -> {open = units,
-- complete = units, found, present, skipped (instances found but not planned: a peer
-- failed), errors = {}, summary = {...}}; describe(run, units) -> dry-run rows;
-- group(run, units) -> jobs ({units = ...}); transfer(run, job, units) -> reported
-- count (each C-MOVE's result handed to run:move_answered(job, r)); verify(run, job,
-- units) -> {[key] = {total =, missing = {uid = true}, n =}}; retry(run, job, units,
-- missing, attempt); selects(run, unit) (optional); finish(run)
-- (optional); moves_from(run) -> the peer the moves are asked of (optional: the pace
-- keeps to what its limiter learned it admits). Jobs are moved largest first, up to the
-- pace's limit at once (rtbackup.pace), each verified beside the next moves. plan(run,
-- hand) may call hand(open, complete) with each part of the units as soon as they can
-- be sent, and return the rest: their moves start while it plans on (Run:work_plan).
-- In a dry run hand is nil and the plan is returned whole.
--
-- An interrupted run (SIGINT/SIGTERM) finishes the jobs in progress, starts none, and
-- is recorded as interrupted everywhere it is recorded (exit 130/143, summary,
-- last-run.json, metrics, journal); what it left undone is counted as skipped.
local alerts = require "rtbackup.alerts"
local clock = require "rtbackup.clock"
local context = require "rtbackup.context"
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local exit = require "rtbackup.exit"
local files = require "rtbackup.files"
local host = require "rtbackup.host"
local journal = require "rtbackup.journal"
local limits = require "rtbackup.limits"
local log = require "rtbackup.log"
local metrics = require "rtbackup.metrics"
local pace = require "rtbackup.pace"
local progress = require "rtbackup.progress"
local settings = require "rtbackup.settings"
local site = require "rtbackup.site"
local summary_mod = require "rtbackup.summary"
local sys = require "rtbackup.sys"
local task = require "rtbackup.task"
local units = require "rtbackup.units"

local run = {}

local Run = {}
Run.__index = Run

local FLOWS = {aria = "rtbackup.qr.flow", mim = "rtbackup.qr.flow", mosaiq = "rtbackup.mosaiq.flow"}

--- Where journals, locks, summaries and spools live (created 0700): the setting
-- state_dir, else $RTBACKUP_STATE_DIR, else the installed binary's (/var/lib/rtbackup
-- under /usr or /usr/local, <prefix>/var/lib/rtbackup under another prefix: the host
-- decides, by the rule that lays out the install) and ./state in a development tree.
function run.state_dir(env)
    local dir = settings.get(env, "state_dir") or os.getenv("RTBACKUP_STATE_DIR")
        or host.info().state_dir or "state"
    return files.private_dir(dir)
end

local function shard_suffix(shard)
    return shard and string.format("-shard%dof%d", shard.index, shard.count) or ""
end

--- In --shard I/N runs, a key (study UID, patient) belongs to shard hash(key) mod N.
function run.in_shard(shard, key)
    if not shard then return true end
    local h = 2166136261
    key = tostring(key)
    for i = 1, #key do h = ((h ~ key:byte(i)) * 16777619) & 0xffffffff end
    return h % shard.count == shard.index - 1
end

--- A run of source `alias` (not yet open). opts: since, till, patient, study, shard
-- {index, count}, dry_run, ignore_window, metrics_file, format, target.
function run.new(env, alias, opts)
    opts = opts or {}
    local source = (env.sources or {})[alias]
    if not source then
        local names = {}
        for name in pairs(env.sources or {}) do names[#names + 1] = name end
        table.sort(names)
        errors.raise{kind = "usage", message = string.format("%s has no source %s (sources: %s)", env.name,
                     tostring(alias), table.concat(names, ", "))}
    end
    local flow_module = FLOWS[source.type]
    if not flow_module then
        errors.raise{kind = "config", message = string.format("source %s: no backup for type %s", alias,
                     tostring(source.type))}
    end
    local target = opts.target or env.default_backup
    if not target then
        errors.raise{kind = "config", message = env.name .. ": no default_backup (the archive backups go to), " ..
                     "and none given"}
    end
    if not (env.backup_targets or {})[target] then
        errors.raise{kind = "config", message = env.name .. ": the backup target " .. tostring(target) ..
                     " is not defined (default_backup)"}
    end
    local self = setmetatable({
        env = env, opts = opts, source_alias = alias, source_cfg = source,
        target_alias = target, target_cfg = env.backup_targets[target],
        flow = require(flow_module), choices = site.choices(env),
        started = host.monotonic(), started_at = clock.iso_utc(), phase = "starting",
        failures = {configuration = false, unreachable = false, partial = false},
        moves_done = 0, -- moves ended well, so a job requeued by a busy source knows others progress
        moves_accepted = 0, -- C-MOVEs the source answered without failure (retries included)
        reported_failed = {}, -- SOP Instance UIDs the source listed as failed sub-operations
    }, Run)
    if opts.metrics_file then
        self.metrics = metrics.new{env = env.name, source = alias,
                                   shard = opts.shard and (opts.shard.index .. "/" .. opts.shard.count)}
    end
    self.ctx = context.new(env, {command = "backup", source = alias, metrics = self.metrics, batched = true})
    if not (opts.patient and self.flow.WHOLE_PATIENT and not opts.since and not opts["until"]) then
        self.since, self["until"] = clock.lookback(opts.since, opts["until"], settings.get(env, "timezone"),
                                                   self:setting("lookback_days") or self.flow.LOOKBACK_DAYS)
    end -- else every date: the patient's whole history
    self.summary = {env = env.name, source = alias, target = target, command = "backup", kind = self.flow.kind,
                    started_at = self.started_at, since = self.since, ["until"] = self["until"],
                    shard = opts.shard and (opts.shard.index .. "/" .. opts.shard.count) or nil,
                    dry_run = opts.dry_run or nil}
    return self
end

--- A setting for this run's source (its own value first).
function Run:setting(name, alias)
    return settings.get(self.env, name, alias or self.source_alias)
end

--- The peer `alias` in this run's context.
function Run:peer(alias)
    return self.ctx:peer(alias)
end

--- Takes the lock and opens the journal. Raises {kind = "locked"} (exit 3). A dry run
-- reads the journal (to say what a real run would do) without locking.
function Run:open()
    local dir = run.state_dir(self.env)
    self.state_dir = dir
    local base = string.format("%s/%s-%s", dir, self.env.name, self.source_alias)
    local suffix = shard_suffix(self.opts.shard)
    self.summary_path = base .. suffix .. "-last-run.json"
    -- What a run killed between writing and renaming left: gone before this one starts.
    files.remove_stale_temporaries(self.summary_path)
    if self.opts.metrics_file then files.remove_stale_temporaries(self.opts.metrics_file) end
    if not self.opts.dry_run then
        -- The source's lock is exclusive for an unsharded run and shared by sharded
        -- ones (each also holds its shard's lock): the two never move the same studies.
        local ok, lock = pcall(journal.lock, base .. ".lock", {shared = self.opts.shard ~= nil})
        if not ok then
            if not self.opts.shard then run.name_shard_holders(dir, base, lock) end
            error(lock, 0)
        end
        self.locks = {lock}
        if self.opts.shard then
            local got, shard_lock = pcall(journal.lock, base .. suffix .. ".lock")
            if not got then
                self:release_locks()
                error(shard_lock, 0)
            end
            self.locks[2] = shard_lock
        end
    end
    -- Opening reads the schema; beginning the run writes: either finds a damaged file.
    local ok, err = pcall(function()
        self.journal = journal.open(string.format("%s/%s%s.journal.sqlite", dir, self.env.name, suffix))
        self.book = units.book(self.journal, self.source_alias)
        if not self.opts.dry_run then
            self.run_id = self.journal:begin_run{env = self.env.name, source = self.source_alias}
        end
    end)
    if not ok then
        if self.journal then pcall(self.journal.close, self.journal) end
        self.journal, self.book = nil, nil
        self:release_locks()
        run.journal_error(err)
    end
end

--- The operator's error (kind "config": exit 2, with the way out) for a journal that
-- cannot be used, whenever the run finds out: damaged, or written by a newer
-- rtbackup. nil for any other error.
function run.journal_problem(err)
    if not (errors.is(err, "corrupt") or errors.is(err, "version")) then return nil end
    local path = tostring(err.path or "JOURNAL")
    local why = tostring(err.message or err)
    if why:sub(1, #path + 10) == "journal " .. path .. ": " then why = why:sub(#path + 11) end
    local first = errors.is(err, "version")
        and "Run the rtbackup that wrote it (or put back the state copied before the upgrade); or move"
        or "Move"
    return errors.new{kind = "config", path = err.path, message = string.format(
        "the journal %s cannot be used: %s. %s it aside (mv %s %s.broken) and run again: the next run " ..
        "rebuilds it by comparing the source with the archive (everything already there is found " ..
        "complete and not moved again; the run history is lost)", path, why, first, path, path)}
end

--- A journal that cannot be opened is a state problem for the operator (exit 2), with
-- the way out.
function run.journal_error(err)
    error(run.journal_problem(err) or err, 0)
end

--- An unsharded run kept out by sharded ones: their shared lock names no one, so the
-- error gets the PIDs their own shard locks hold (<base>-shardIofN.lock).
function run.name_shard_holders(dir, base, err)
    if not errors.is(err, "locked") or (err.holder_pid or 0) ~= 0 then return end
    local prefix = base:match("[^/]*$") .. "-shard"
    local ok, names = pcall(sys.list, dir)
    if not ok then return end
    table.sort(names)
    local holders = {}
    for _, name in ipairs(names) do
        local i, n = name:match("^(%d+)of(%d+)%.lock$", #prefix + 1)
        if i and name:sub(1, #prefix) == prefix then
            local f = io.open(dir .. "/" .. name)
            local text = f and f:read("a") or ""
            if f then f:close() end
            local pid, started = text:match("pid=(%d+)"), text:match("started=(%S+)")
            -- A killed holder leaves its details behind: only a live PID names a holder.
            if pid and sys.stat("/proc/" .. pid) then
                holders[#holders + 1] = string.format("shard %s/%s: PID %s, started %s", i, n, pid, started or "?")
                if (err.holder_pid or 0) == 0 then
                    err.holder_pid, err.holder_started = math.tointeger(tonumber(pid)), started
                end
            end
        end
    end
    if #holders > 0 then err.message = err.message .. " (" .. table.concat(holders, "; ") .. ")" end
end

function Run:release_locks()
    for i = #(self.locks or {}), 1, -1 do self.locks[i]:release() end
    self.locks = nil
end

--- The window "HH:MM-HH:MM" when the source has one and it is closed now, else nil.
function Run:outside_window()
    local window = self:setting("window")
    if not window or self.opts.ignore_window then return nil end
    if clock.in_window(window, clock.now_hhmm(self:setting("timezone"))) then return nil end
    return window
end

-- Why the run may start no more work: stopped, or the window closed.
function Run:must_stop()
    local signal = task.stopping()
    if signal then return "the run was stopped (" .. signal .. ")" end
    local window = self:outside_window()
    if window then
        self.failures.window = window
        return "outside the time window " .. window
    end
end

-- What was being attempted when `err` happened, and with whom (the summary's error).
function Run:cause(err)
    local t = type(err) == "table" and err or {}
    return {phase = self.phase, kind = t.kind or "internal",
            message = type(err) == "table" and tostring(err.message or err) or tostring(err),
            peer = t.alias, address = type(t.peer) == "string" and t.peer or nil, operation = t.operation}
end

--- Notes an error that kept units from being done: a setting to change makes exit 2,
-- unreachable peers exit 4, others make the run partial (1).
function Run:note_failure(err)
    if exit.is_stopped(err) then return end
    if exit.is_unreachable(err) and not exit.needs_configuration(err) then
        -- The first peer this run could not reach is its cause, said with the summary
        -- (not only in the log); a setting to change is said as the hint, below.
        self.summary.error = self.summary.error or self:cause(err)
    end
    if exit.needs_configuration(err) then
        if not self.failures.configuration then
            log.error("nothing more can be moved until a setting is changed", {source = self.source_alias,
                                                                                error = tostring(err)})
            self.summary.hint = tostring(err) -- names peers and AE titles, never a patient
        end
        self.failures.configuration = true
    elseif exit.is_unreachable(err) then
        self.failures.unreachable = true
    else
        self.failures.partial = true
    end
end

-- Errors after which this run cannot move anything more from its source: left for
-- the next run (their units keep their state), not counted as failed.
local function ends_moving(err)
    return exit.is_unreachable(err) or exit.is_stopped(err) or exit.needs_configuration(err)
end

-- Errors that say a peer is alive but struggling under this load: the transfer is
-- tried again later with fewer at once (rtbackup.pace), not given up for the run.
-- An archive at its own limit of associations (exit.is_busy) says so plainly, and
-- is asked again also when the number at once is fixed: for as long as other moves
-- are running on it (one of them ending frees the place), and for a while when none
-- is (its other clients, our own verification queries among them, hold the places):
-- MAX_BUSY_REQUEUES times in a row without a move ending, about 20 s. Other trouble
-- sends a job back as long as other moves end meanwhile, else MAX_REQUEUES times.
local STRUGGLING = {rejected = true, aborted = true, timeout = true}
local MAX_REQUEUES, MAX_BUSY_REQUEUES, REQUEUE_WAIT_MS = 3, 8, 200

-- True (and the job marked for the queue) when a failed move is to be tried again.
function Run:requeue_move(job, err)
    if type(err) ~= "table" or not STRUGGLING[err.kind] or not self.pace then return false end
    local busy, others = exit.is_busy(err), self.pace.active > 1
    if not (busy or (self.pace.adaptive and others)) then return false end
    local progress = self.moves_done > (job.mark or -1)
    local limit = busy and MAX_BUSY_REQUEUES or MAX_REQUEUES
    if not (progress or (busy and others)) and (job.requeues or 0) >= limit then return false end
    job.requeues = progress and 0 or (job.requeues or 0) + 1
    job.mark = self.moves_done
    job.wait_ms = REQUEUE_WAIT_MS << math.min(job.requeues, 4)
    -- A busy refusal already taught the peer's limiter how many it admits
    -- (rtbackup.limits); the pace halving as well would leave places unused.
    job.trouble = not busy
    return true
end

--- Notes a C-MOVE the source answered without failure, `r` its result: what its
-- association took to open (a wait for the source to accept included), for the pace
-- (a source that queues associations is asked for fewer; job nil: a retry's move),
-- and the instances it reported it could not send (Failed SOP Instance UID List).
function Run:move_answered(job, r)
    if job then
        job.opening = (job.opening or 0) + (tonumber(r.open_seconds) or 0)
        job.associations = (job.associations or 0) + 1
    end
    self.moves_accepted = self.moves_accepted + 1
    for _, uid in ipairs(type(r.failed_uids) == "table" and r.failed_uids or {}) do
        self.reported_failed[uid] = true
    end
end

-- The peer the moves are asked of (the source, or Mosaiq's staging), nil if none.
function Run:moves_peer()
    return self.flow.moves_from and self.flow.moves_from(self)
end

--- How many of `uids` (a set) the source reported it could not send, as a clause for
-- a unit's failure: "; ARIA reported it could not send 3 of them (...)", or "".
function Run:reported_failed_clause(uids)
    local n = 0
    for uid in pairs(uids) do if self.reported_failed[uid] then n = n + 1 end end
    if n == 0 then return "" end
    local from = self:moves_peer()
    return string.format("; %s reported it could not send %d of them (failed sub-operations: its log says why)",
                         from and (from.alias or from.aet) or self.source_alias, n)
end

--- Where to look when something failed and the peer the moves are asked of accepted
-- none of the run's C-MOVEs, whatever their form: it most likely cannot deliver to the
-- archive at all (Orthanc answers 0xC000 for a destination it does not know). nil
-- otherwise.
function Run:undelivered_hint()
    local from = self:moves_peer()
    if self.moves_accepted > 0 or not from or not self.book or self.book.counts.failed == 0 then return nil end
    return string.format("%s accepted none of this run's C-MOVEs: %s", from.alias or from.aet,
                         dicom.check_destination(self:peer(self.target_alias), self.target_alias))
end

-- The move stage of a job: transfers its units that are not moved yet. Returns
-- "verify" (hand it to the verify stage), "done" (nothing more to do: stopped or
-- unreachable, its units counted as skipped) or "requeue" (try it again later), and
-- the number of instances it moved (for the pace).
function Run:move_job(job)
    local book, flow = self.book, self.flow
    local stop = self:must_stop()
    if stop then
        for _, u in ipairs(job.units) do book:skipped(u, stop) end
        return "done", 0
    end
    local fresh = {}
    for _, u in ipairs(job.units) do if u.state ~= "moved" then fresh[#fresh + 1] = u end end
    if #fresh == 0 then return "verify", 0 end
    local ok, reported = pcall(flow.transfer, self, job, fresh)
    if ok then
        book:moved(fresh, reported)
        self.moves_done = self.moves_done + 1
        return "verify", tonumber(reported) or 0
    end
    if self:requeue_move(job, reported) then
        -- A source at its limit says so and is simply asked again (an archive capped at
        -- two associations does that many times a run): not a warning.
        local busy = exit.is_busy(reported)
        local fields = {source = self.source_alias, unit = fresh[1].key, error = tostring(reported)}
        if busy then
            log.info("the source is at its limit of associations; the move is tried again later", fields)
        else
            log.warn("the source struggles with this many associations; the move is tried again with fewer", fields)
        end
        return "requeue", 0
    end
    if ends_moving(reported) then
        if not exit.needs_configuration(reported) then -- said once, by note_failure
            log.error("cannot move", {source = self.source_alias, unit = fresh[1].key, error = tostring(reported)})
        end
        self:note_failure(reported)
        for _, u in ipairs(job.units) do book:skipped(u, reported) end
        return "done", 0
    end
    -- Refused: what the source does accept is found by the retries of the verify
    -- stage (the ladder: UID lists, single UIDs, the series), from what is missing.
    log.warn("the source refused a move; retrying what is missing the ways it accepts",
             {source = self.source_alias, unit = fresh[1].key, error = tostring(reported)})
    return "verify", 0
end

-- The verify stage of a job: verifies all its units, moving what is still missing
-- again (flow.retry, with backoff) up to max_retries times. Runs beside the next
-- moves, so verification is off the moves' critical path.
function Run:verify_job(job, bar)
    local book, flow = self.book, self.flow
    local ok, found = pcall(flow.verify, self, job, job.units)
    if not ok then
        self:note_failure(found)
        for _, u in ipairs(job.units) do book:skipped(u, found) end -- still "moved": verified first next time
        return
    end
    local attempt, delay = 0, self:setting("retry_backoff_ms")
    local max_retries = self:setting("max_retries")
    while attempt < max_retries do
        local pending = {}
        for _, u in ipairs(job.units) do
            if found[u.key] and found[u.key].n > 0 then pending[#pending + 1] = u end
        end
        if #pending == 0 or self:must_stop() then break end
        attempt = attempt + 1
        log.warn("instances missing after the move; moving them again",
                 {source = self.source_alias, units = #pending, attempt = attempt})
        task.sleep(delay)
        delay = delay * 2
        local moved, err = pcall(flow.retry, self, job, pending, found, attempt)
        if not moved then
            self:note_failure(err)
            if ends_moving(err) then
                for _, u in ipairs(pending) do book:skipped(u, err); found[u.key] = nil end
                break
            end
        end
        local again_ok, again = pcall(flow.verify, self, job, pending)
        if not again_ok then
            self:note_failure(again)
            for _, u in ipairs(pending) do book:skipped(u, again) end
            for _, u in ipairs(pending) do found[u.key] = nil end
            break
        end
        for key, f in pairs(again) do found[key] = f end
    end
    local complete = {} -- recorded in one transaction
    for _, u in ipairs(job.units) do
        local f = found[u.key]
        if f and f.n == 0 then complete[#complete + 1] = {u, f.total} end
    end
    book:verified_all(complete)
    for _, u in ipairs(job.units) do
        local f = found[u.key]
        if f and f.n > 0 then
            self.failures.partial = true
            book:failed(u, f.n, f.total, flow.describe_missing(self, u, f, attempt))
        end
        if bar then bar:add(u.expected or 1) end
    end
end

--- Moves and verifies one job now (the references pass: one series at a time).
function Run:process(job, bar)
    local outcome
    repeat
        if job.wait_ms then task.sleep(job.wait_ms) end
        outcome = self:move_job(job)
    until outcome ~= "requeue"
    if outcome == "verify" then self:verify_job(job, bar) end
end

-- A job's instances still to move: the order of work, largest first, so that the
-- last association does not run alone at the end.
local function job_size(job)
    local n = 0
    for _, u in ipairs(job.units) do n = n + math.max(0, (u.expected or 1) - ((u.data and u.data.present) or 0)) end
    return n
end

-- The work of a run: jobs moved up to the pace's limit at once (adaptive below
-- max_associations), largest first among those waiting, each job's verification started
-- as its move ends, beside the next moves. Jobs may be added while the work goes on
-- (the plan hands them over in parts); the movers wait for more until it is closed.
--   local w = self:start_work(bar); w:add(jobs); ...; w:close(); w:wait()
function Run:start_work(bar)
    local cap = self:setting("max_associations")
    local from = self:moves_peer()
    local limiter = from and from.limiter
    self.pace = pace.new{cap = cap, adaptive = self:setting("adaptive_associations"), name = self.source_alias,
                         admits = limiter and function() return limiter:limit() end}
    local queue, next_index, verifiers, idle, closed = {}, 1, {}, {}, false
    local w = {}
    local function failed_job(job, err)
        -- A journal found damaged while recording: nothing after it can be trusted.
        local trouble = run.journal_problem(err)
        if trouble then
            self.journal_trouble = self.journal_trouble or trouble
            return
        end
        -- Not started (the run stopping) or a bug in a job: its units stay for later.
        if not exit.is_stopped(err) then
            self.failures.partial = true
            log.error("a job failed", {source = self.source_alias, error = tostring(err)})
        end
        for _, u in ipairs(job.units) do self.book:skipped(u, err) end
    end
    -- Verifications wait their turn (as many at once as moves may run); once the run
    -- is asked to stop, those not begun are left "moved", verified first next time.
    local verifying = pace.new{cap = cap, adaptive = false}
    local function verify(job)
        verifying:enter()
        local stop = self:must_stop()
        if stop then
            for _, u in ipairs(job.units) do self.book:skipped(u, stop) end
        else
            local ok, err = xpcall(self.verify_job, task.traceback, self, job, bar)
            if not ok then failed_job(job, err) end
        end
        verifying:leave()
        self.ctx:flush() -- a job is an audit batch: on disk before the next starts
    end
    local function wake_all()
        local waiting = idle
        idle = {}
        for _, t in ipairs(waiting) do task.wake(t) end
    end
    -- The next job, waiting while more may come; nil once the work is closed and done.
    local function take()
        while next_index > #queue do
            if closed or self.journal_trouble then return nil end
            idle[#idle + 1] = task.current()
            task.suspend()
        end
        next_index = next_index + 1
        return queue[next_index - 1]
    end
    local function mover()
        while not self.journal_trouble do
            local job = take()
            if not job then break end
            if job.wait_ms then task.sleep(job.wait_ms) end
            local ticket = self.pace:enter()
            job.opening, job.associations = nil, nil -- this move's, not a retry's
            local t0, w0 = host.monotonic(), limits.waited()
            local ok, outcome, moved = xpcall(self.move_job, task.traceback, self, job)
            -- The move's own time: without its wait for the peer's limiter (a peer that
            -- admits fewer associations than the pace allows is not a slow one).
            local seconds = host.monotonic() - t0 - (limits.waited() - w0)
            self.pace:leave({instances = ok and moved or 0, seconds = seconds, trouble = job.trouble,
                             opening = job.opening, associations = job.associations}, ticket)
            job.trouble = nil
            if not ok then
                failed_job(job, outcome)
            elseif outcome == "requeue" then
                queue[#queue + 1] = job
            elseif outcome == "verify" then
                verifiers[#verifiers + 1] = task.spawn(verify, job)
            else
                self.ctx:flush()
            end
        end
        wake_all() -- a mover leaving on journal trouble: the others see it too
    end
    local movers = {}
    for i = 1, cap do movers[i] = task.spawn(mover) end
    --- Queues jobs, largest first among them, behind those already waiting.
    function w.add(_, jobs)
        local order = {}
        for i, job in ipairs(jobs) do order[i] = {job = job, size = job_size(job), i = i} end
        table.sort(order, function(a, b)
            if a.size ~= b.size then return a.size > b.size end
            return a.i < b.i
        end)
        for _, o in ipairs(order) do queue[#queue + 1] = o.job end
        wake_all()
    end
    --- No more jobs will come.
    function w.close()
        closed = true
        wake_all()
    end
    --- Until every job is moved and verified, or left for later.
    function w.wait()
        for _, m in ipairs(movers) do task.wait(m) end
        for _, v in ipairs(verifiers) do task.wait(v) end
        self.summary.associations_chosen = self.pace:report()
        if self.journal_trouble then error(self.journal_trouble, 0) end
    end
    return w
end

-- What the plan says beyond its units: summary, counts, errors.
function Run:take_plan(plan)
    for k, v in pairs(plan.summary or {}) do self.summary[k] = v end
    self.summary.found, self.summary.already_present = plan.found, plan.present
    self.book.counts.skipped = self.book.counts.skipped + (plan.skipped or 0)
    for _, err in ipairs(plan.errors or {}) do self:note_failure(err) end
end

-- The progress of the moves and verifications: `total` units' instances.
function Run:progress(total)
    return progress.new(self.source_alias .. " -> " .. self.target_alias, total,
                        {unit = self.flow.unit, interval = settings.get(self.env, "progress_interval")})
end

-- The plan, worked while it goes on: the flow hands over each part of its open units
-- as soon as they can be sent, and each part's jobs start at once, so moving overlaps
-- planning; once the plan is whole, the open units not sent yet (the journal's from
-- earlier runs among them) follow, oldest first.
--
-- Under max_uids_per_run at most that many instances are sent, the oldest open units
-- first: while the plan goes on, the share of the cap that the journal's open units of
-- earlier runs would take is kept for them, and a part's units are sent only within
-- what is left; the rest is decided once the plan is whole, oldest first, and what
-- does not fit waits for later runs (deferred).
function Run:work_plan()
    local flow, book = self.flow, self.book
    local cap = self:setting("max_uids_per_run")
    local bar = self:progress(0)
    local work, started
    local taken, instances = {}, 0 -- the units sent, and their instances
    local kept, kept_n = {}, 0 -- earlier runs' open units the cap is kept for
    local function fits(n)
        local used = instances + kept_n
        return not cap or used == 0 or used + n <= cap -- (the first unit is always sent)
    end
    if cap then
        for _, u in ipairs(book:open_units()) do
            if fits(u.expected or 0) then
                kept[u.key] = u.expected or 0
                kept_n = kept_n + kept[u.key]
            end
        end
    end
    -- Starts the moves of the units of `list` that this run may send and the cap
    -- admits; at the `last` pass, what it does not admit is deferred.
    local function send(list, last)
        local sendable = {}
        for _, u in ipairs(list) do
            if not taken[u.key] and (not flow.selects or flow.selects(self, u)) then
                local n = u.expected or 0
                if kept[u.key] then kept_n, kept[u.key] = kept_n - kept[u.key], nil end
                if fits(n) then
                    sendable[#sendable + 1] = u
                    taken[u.key] = true
                    instances = instances + n
                    bar.total = bar.total + (u.expected or 1)
                elseif last then
                    book.counts.deferred = book.counts.deferred + n
                end
            end
        end
        if #sendable == 0 then return end
        if not work then
            started = host.monotonic()
            work = self:start_work(bar)
        end
        work:add(flow.group(self, sendable))
    end
    local function hand(open, complete)
        book:record_plan(open, complete or {})
        send(open)
    end
    local t0 = host.monotonic()
    local ok, plan = pcall(flow.plan, self, hand)
    self.summary.plan_seconds = host.monotonic() - t0
    if ok then
        self:take_plan(plan)
        self.phase = "moving"
        hand(plan.open, plan.complete)
        kept, kept_n = {}, 0 -- what was kept and not sent yet is decided now, oldest first
        send(book:open_units(), true)
        -- What the references pass may still move under max_uids_per_run.
        self.budget = cap and math.max(0, cap - instances) or math.huge
        if book.counts.deferred > 0 then
            log.info("max_uids_per_run reached: the rest waits for the next runs",
                     {deferred_instances = book.counts.deferred})
        end
    end
    if work then
        work:close()
        work:wait()
        self.summary.move_verify_seconds = host.monotonic() - started
    end
    bar:finish()
    if not ok then error(plan, 0) end
end

-- Everything between open and close: raises only for bugs and configuration errors
-- (which then end the run with their own exit code).
function Run:drive()
    local flow, opts = self.flow, self.opts
    local window = self:outside_window()
    if window then
        log.warn("outside the source's time window; nothing done (--ignore-window to run anyway)",
                 {source = self.source_alias, window = window})
        self.failures.window = window
        self.summary.outside_window = window
        return
    end
    self.phase = "planning"
    log.info("planning", {source = self.source_alias, target = self.target_alias, since = self.since,
                          ["until"] = self["until"]})
    if opts.dry_run then
        local t0 = host.monotonic()
        local plan = flow.plan(self)
        self.summary.plan_seconds = host.monotonic() - t0
        self:take_plan(plan)
        self.summary.plan = flow.describe(self, plan.open)
        return
    end
    -- The archive's REST API (rtbackup.orthanc), checked once before verifications run at once.
    require("rtbackup.orthanc").of_run(self)
    self:work_plan()
    if flow.finish and not task.stopping() then
        self.phase = "following references"
        flow.finish(self)
    end
end

--- The exit code of what happened.
function Run:exit_code()
    local stop = exit.stop_code()
    if stop then return stop end
    if self.summary.outside_window then return exit.outside_window end
    if self.failures.configuration then return exit.usage end
    if self.failures.unreachable then
        -- Work left for later because a peer could not be reached (or the window
        -- closed on it meanwhile).
        return self.failures.window and exit.outside_window or exit.unreachable
    end
    if self.failures.window then return exit.outside_window end
    if self.failures.partial or (self.book and self.book.counts.failed > 0) then return exit.partial end
    return exit.ok
end

--- Runs the flow and records how it ended; returns the exit code.
function Run:execute()
    local ok, err = xpcall(self.drive, task.traceback, self)
    if ok then return self:exit_code() end
    err = run.journal_problem(err) or err
    local code = exit.stop_code() or exit.of_error(err)
    self.summary.error = self:cause(err)
    log.error("the backup of a source stopped", {source = self.source_alias, phase = self.phase,
                                                 error = tostring(err)})
    if type(err) ~= "table" and log.enabled("debug") then io.stderr:write(tostring(err), "\n") end
    return code
end

--- Ends the run: the summary everywhere it is recorded, the lock released.
function Run:close(code)
    local s = self.summary
    if self.book then
        for k, v in pairs(self.book.counts) do s[k] = v end
        s.errors = self.book.errors
        s.units_verified, s.units_failed, s.units_skipped = self.book.outcomes.verified,
            self.book.outcomes.failed, self.book.outcomes.skipped
        s.hint = s.hint or self:undelivered_hint()
    end
    s.finished_at = clock.iso_utc()
    s.duration_seconds = host.monotonic() - self.started
    s.instances_per_second = s.duration_seconds > 0 and (s.moved or 0) / s.duration_seconds or 0
    s.exit_code, s.status = code, exit.status(code)
    s.interrupted = exit.stop_code() ~= nil or nil
    s.associations = self.ctx:association_count()
    if self.journal then
        if self.run_id then
            local ok, err = pcall(self.journal.finish_run, self.journal, self.run_id, {status = s.status, summary = s})
            if not ok then log.error("cannot record the run in the journal", {error = tostring(err)}) end
            run.prune_history(self.env, self.journal)
        end
        self.journal:close()
        if not self.opts.dry_run then
            local ok, err = pcall(files.replace, self.summary_path, summary_mod.json(s) .. "\n")
            if not ok then log.error("cannot write the summary", {path = self.summary_path, error = tostring(err)}) end
        end
    end
    self:release_locks()
    local flushed, ferr = pcall(self.ctx.flush, self.ctx)
    if not flushed then log.error("cannot write the audit log", {error = tostring(ferr)}) end
    if self.metrics then
        -- Metrics are for watching: a file that cannot be written must not turn a
        -- verified backup into a failed one.
        local ok, err = pcall(self.metrics.write, self.metrics, self.opts.metrics_file, s)
        if not ok then log.error("cannot write the metrics file", {path = self.opts.metrics_file, error = tostring(err)}) end
    end
    alerts.notify(self.env, s) -- after everything is recorded; never raises
    return s
end

--- Deletes the runs of `journal` that started more than run_history_days ago (the
-- status command and page read the rest). History is for watching: a failure is logged.
function run.prune_history(env, journal)
    local days = settings.get(env, "run_history_days")
    local ok, err = pcall(journal.prune_runs, journal, clock.iso_utc(clock.now() - days * 86400))
    if not ok then log.error("cannot prune the run history", {error = tostring(err)}) end
end

-- A run locked out: how long the other run has held the lock, for the summary and the
-- alert (alert_locked_after_minutes).
local function note_lock_holder(summary, err)
    summary.lock_holder_pid = err.holder_pid
    local since = clock.parse_utc(err.holder_started)
    if since then
        summary.lock_held_since = err.holder_started
        summary.lock_held_seconds = math.max(0, math.floor(clock.now() - since))
    end
end

--- Backs up each source in `aliases`, one after the other; prints each summary (as
-- JSON with opts.format == "json"); returns the worst exit code.
function run.backup(env, aliases, opts)
    opts = opts or {}
    local worst, summaries = exit.ok, {}
    for _, alias in ipairs(aliases) do
        local r = run.new(env, alias, opts)
        local ok, err = pcall(r.open, r)
        local code
        if not ok then
            if not errors.is(err, "locked") then error(err, 0) end
            io.stderr:write("rtbackup backup: ", tostring(err), "\n")
            code = exit.locked
            r.summary.exit_code, r.summary.status = code, exit.status(code)
            r.summary.error = {phase = "locking", kind = "locked", message = tostring(err)}
            note_lock_holder(r.summary, err)
            alerts.notify(env, r.summary)
            if r.metrics then
                -- a run locked out is a run too: its exit code and time, for the monitor
                local wrote, werr = pcall(r.metrics.write, r.metrics, opts.metrics_file, r.summary)
                if not wrote then log.error("cannot write the metrics file", {path = opts.metrics_file,
                                                                              error = tostring(werr)}) end
            end
            summaries[#summaries + 1] = r.summary
        else
            code = r:execute()
            summaries[#summaries + 1] = r:close(code)
        end
        if opts.format ~= "json" then summary_mod.print(summaries[#summaries]) end
        if code > worst then worst = code end
        if exit.stop_code() then break end
    end
    if opts.format == "json" then
        io.stdout:write(summary_mod.json(#summaries == 1 and summaries[1] or summaries), "\n")
    end
    return worst
end

return run
