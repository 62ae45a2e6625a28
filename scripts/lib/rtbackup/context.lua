--- rtbackup.context: what every operation on patient data must know about the run it
-- belongs to — the environment, its audit log, the run's metrics collector, and the
-- counters of what it did. Explicit, not global: a context is made by the command (a
-- backup run, validate, query, the REPL) and handed down; the DICOM and SQL layers
-- write their audit events and metrics through it. Whether an operation is audited
-- depends only on the environment's `audit_log` setting, never on what ran before.
--
--   local ctx = context.new(env, {command = "backup", source = "ARIA", metrics = collector})
--   local aria = ctx:peer("ARIA")             -- a DICOM peer bound to this context
--   ctx:event{op = "sql", peer = "MOSAIQ", query_name = "day", params = {date}}
--   ctx:flush()                               -- audit events of the batch, on disk
--
-- Peers hold their per-peer limits process-wide (rtbackup.limits): two contexts in one
-- process share one cap per peer.
local audit = require "rtbackup.audit"
local host = require "rtbackup.host"
local settings = require "rtbackup.settings"

local context = {}

local Context = {}
Context.__index = Context

-- The context made last for an environment table, so that a script calling
-- dicom.peer(env, alias) is audited and counted with the run that loaded env.
local by_env = setmetatable({}, {__mode = "k"})

--- A context for env (may be nil for ad-hoc peers). opts: command (default: the
-- running command), source (alias), metrics (a rtbackup.metrics collector), batched
-- (true: audit events wait for ctx:flush(), as a run flushes once per job; otherwise
-- each is written at once), audit (false: no audit log even if the environment has
-- one — only for tests).
function context.new(env, opts)
    opts = opts or {}
    local ctx = setmetatable({
        env = env,
        command = opts.command or host.info().command,
        source = opts.source,
        audit = (opts.audit ~= false and env) and audit.for_env(env) or nil,
        metrics = opts.metrics,
        batched = opts.batched or false,
        associations = {echo = 0, find = 0, move = 0, get = 0, store = 0},
        peers = {},
    }, Context)
    if env then by_env[env] = ctx end
    return ctx
end

--- The context of env: the last one made for it, or a new one.
function context.of(env)
    return by_env[env] or context.new(env)
end

--- A setting for this environment (for a peer when alias is given): rtbackup.settings.get.
function Context:setting(name, alias)
    return settings.get(self.env, name, alias)
end

--- The DICOM peer `alias` (a source or backup target of the environment), bound to
-- this context; the same object for the same alias.
function Context:peer(alias)
    local p = self.peers[alias]
    if not p then
        p = require("rtbackup.dicom").peer_in(self, alias)
        self.peers[alias] = p
    end
    return p
end

--- Records an audit event (nothing without an audit log).
function Context:event(e)
    if self.audit then
        self.audit:event(e)
        if not self.batched then self.audit:flush() end
    end
end

--- Writes the pending audit events (one batch, fsynced).
function Context:flush()
    if self.audit then self.audit:flush() end
end

--- One DICOM operation took `seconds` (for the metrics).
function Context:observe(op, peer, seconds)
    if self.metrics then self.metrics:observe(op, peer, seconds) end
end

--- An association with `peer` failed with error kind `kind`.
function Context:count_failure(peer, kind)
    if self.metrics then self.metrics:count_failure(tostring(peer), tostring(kind or "unknown")) end
end

--- Associations opened through this context, in all.
function Context:association_count()
    local n = 0
    for _, k in pairs(self.associations) do n = n + k end
    return n
end

return context
