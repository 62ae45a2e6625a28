--- rtbackup.audit: who touched which patient's data, when, from where, with what
-- outcome — an append-only JSON-lines file kept apart from the logs (setting
-- `audit_log`). Logs are for debugging and rotate away; the audit trail is evidence
-- and is kept for years, so rtbackup only ever appends to it (rotation and
-- retention: deploy/logrotate/rtbackup-audit, docs/operations.md).
--
--   local log = audit.for_env(env)          -- nil when the environment keeps no audit log
--   log:event{op = "c-move", peer = "ARIA", patient_id = mrn, study_uid = s,
--             series_uid = x, count = r.completed, outcome = "ok"}
--   log:event{op = "sql", peer = "MOSAIQ", query_name = "day", params = {date}, rows = #rows}
--   log:event{op = "rest", peer = "MAIN", method = "GET", path = "/series/<id>", patient_id = mrn, count = n}
--   log:flush()                              -- at the end of each batch
--
-- There is no module-level "current" log: a run's context (rtbackup.context) holds
-- its log, and every operation on patient data is audited through that context, so
-- whether something is audited never depends on what ran before.
--
-- Each line is one event: op, outcome and the event's own fields, plus time (UTC,
-- ISO-8601 with milliseconds), user (the effective OS account; sudo_user when run via
-- sudo), host and env. Events wait in memory until flush(), which appends the batch
-- with one write and fsyncs it: a crash loses at most the batch in flight, and a line
-- is never half there. Events still pending when the process ends normally are
-- written then. The file is created 0600 (it names patients), whatever the umask.
--
-- Never secrets: a field whose key contains password, secret or token is dropped at
-- any depth; a secret value of the configuration is written as "********"; and when
-- opened with the environment table, the plain text of its secrets is masked
-- wherever it would appear (say, inside an error message).
local clock = require "rtbackup.clock"
local config = require "rtbackup.config"
local text = require "rtbackup.text"
local errors = require "rtbackup.error"
local sys = require "rtbackup.sys"
local cjson = require("cjson").new() -- our own instance: its settings stay private

cjson.encode_sparse_array(true) -- a params list with an odbc.NULL hole stays a list
cjson.encode_invalid_numbers("null")

local audit = {}

-- The operations that touch patient data (issue #6); anything else is a bug in the
-- caller, not an event to record under a name nobody searches for.
audit.OPS = {["c-find"] = true, ["c-move"] = true, ["c-get"] = true, ["c-store"] = true,
             sql = true, restore = true, repl = true, drill = true, query = true, report = true,
             rtrecord = true, rest = true}

audit.MASK = "********"

-- Events kept in memory before flush() writes them anyway, so a long batch cannot
-- grow without bound.
audit.MAX_PENDING = 1000

-- Fields every line carries; an event cannot override them.
local RESERVED = {time = true, user = true, sudo_user = true, host = true, env = true}

local MAX_DEPTH = 6

-- ---- facts about this process ----------------------------------------------------------

-- The account the OS runs us as (the effective uid's entry): an audit trail should
-- not take a process's word ($USER) for who it is.
local function os_user()
    return sys.user()
end

local function host_name()
    local ok, name = pcall(sys.hostname)
    return ok and name or "unknown"
end

audit.iso_time = clock.iso_utc

-- ---- making an event safe to write ------------------------------------------------------

local function is_secret_key(key)
    if type(key) ~= "string" then return false end
    local k = key:lower()
    return k:find("password", 1, true) or k:find("secret", 1, true) or k:find("token", 1, true)
end
audit.is_secret_key = is_secret_key

local function odbc_null()
    local odbc = package.loaded["rtbackup.odbc"]
    return odbc and odbc.NULL
end

local function is_array(t)
    local n = #t
    local count = 0
    for k in pairs(t) do
        if math.type(k) ~= "integer" or k < 1 or k > n then return false end
        count = count + 1
    end
    return count == n and n > 0
end

-- A copy of v that JSON can hold and that holds no secret.
local function clean(self, v, depth, seen)
    local t = type(v)
    if v == nil then return nil end
    if config.is_secret(v) then return audit.MASK end
    if t == "string" then return self:mask(v) end
    if t == "number" or t == "boolean" then return v end
    if v == odbc_null() then return cjson.null end
    if t == "table" then
        if errors.is(v) then
            return {kind = v.kind, message = self:mask(tostring(v)), peer = v.peer and self:mask(tostring(v.peer)),
                    status = math.type(v.status) == "integer" and v.status or nil}
        end
        if seen[v] or depth > MAX_DEPTH then return "[...]" end
        seen[v] = true
        local out = {}
        if is_array(v) then
            for i = 1, #v do
                local c = clean(self, v[i], depth + 1, seen)
                out[i] = c == nil and cjson.null or c
            end
        else
            for k, x in pairs(v) do
                if not is_secret_key(k) then out[self:mask(tostring(k))] = clean(self, x, depth + 1, seen) end
            end
        end
        seen[v] = nil
        return out
    end
    return self:mask(tostring(v)) -- functions, threads, other userdata: their name only
end

-- ---- the log ----------------------------------------------------------------------------

local Log = {}
Log.__index = Log

-- Logs with events still pending, flushed when the Lua state closes (a safety net).
local open_logs = setmetatable({}, {__mode = "k"})

-- The plain text of every secret in an environment table, to mask wherever it shows.
local function secrets_of(env)
    local found, seen = {}, {}
    local function walk(t, depth)
        if seen[t] or depth > 4 then return end
        seen[t] = true
        for _, v in pairs(t) do
            if config.is_secret(v) then
                local plain = config.reveal(v)
                if #plain >= 4 then found[#found + 1] = plain end -- masking "ab" would garble text
            elseif type(v) == "table" then
                walk(v, depth + 1)
            end
        end
    end
    walk(env, 0)
    table.sort(found, function(a, b) return #a > #b end) -- longest first: no partial masks
    return found
end

function Log:mask(s)
    for _, secret in ipairs(self.secrets) do
        local i = s:find(secret, 1, true)
        while i do
            s = s:sub(1, i - 1) .. audit.MASK .. s:sub(i + #secret)
            i = s:find(secret, i + #audit.MASK, true)
        end
    end
    return s
end

--- The audit log at `path` (created 0600 at the first flush). opts.env: the
-- environment (table, whose secrets are then masked everywhere) or its name.
function audit.open(path, opts)
    opts = opts or {}
    if type(path) ~= "string" or path == "" then
        errors.raise{kind = "config", message = "audit log: settings.audit_log must be a file path"}
    end
    local env = opts.env
    local self = setmetatable({
        path = path, pending = {},
        env = type(env) == "table" and env.name or env,
        secrets = type(env) == "table" and secrets_of(env) or {},
        user = os_user(), sudo_user = os.getenv("SUDO_USER"), host = host_name(),
    }, Log)
    open_logs[self] = true
    return self
end

--- The environment's audit log (setting `audit_log`), or nil when it keeps none.
function audit.for_env(env)
    local path = env.settings and env.settings.audit_log
    if not path then return nil end
    return audit.open(path, {env = env})
end

--- Records one event (kept in memory until flush). Required: op (one of audit.OPS).
-- outcome defaults to "failed" when error is given, else "ok".
function Log:event(e)
    if type(e) ~= "table" or not audit.OPS[e.op] then
        local ops = {}
        for op in pairs(audit.OPS) do ops[#ops + 1] = op end
        table.sort(ops)
        errors.raise{kind = "invalid", message = "audit event: op must be one of " .. table.concat(ops, ", ") ..
                     " (got " .. tostring(type(e) == "table" and e.op or e) .. ")"}
    end
    local record = {}
    for k, v in pairs(e) do
        if type(k) == "string" and not RESERVED[k] and not is_secret_key(k) then
            record[k] = clean(self, v, 1, {})
        end
    end
    record.outcome = record.outcome or (e.error ~= nil and "failed" or "ok")
    record.time = clock.iso_utc()
    record.user, record.sudo_user, record.host, record.env = self.user, self.sudo_user, self.host, self.env
    self.pending[#self.pending + 1] = cjson.encode(text.clean(record))
    if #self.pending >= audit.MAX_PENDING then self:flush() end
end

--- Appends the pending events with one write and fsyncs the file (created 0600,
-- with its directory synced, the first time). On failure they stay pending (the next
-- flush tries again) and an {kind = "io"} error is raised: a caller that must not
-- touch patient data without an audit trail stops there.
function Log:flush()
    if #self.pending == 0 then return 0 end
    local text = table.concat(self.pending, "\n") .. "\n"
    local n = #self.pending
    local ok, err = pcall(sys.append, self.path, text, {mode = 384}) -- 0600
    if not ok then
        errors.raise{kind = "io", message = "cannot append to the audit log " .. self.path .. ": " ..
                     tostring(type(err) == "table" and err.message or err)}
    end
    self.pending = {}
    return n
end

Log.close = Log.flush

-- A safety net, not the mechanism: events still pending when the Lua state closes
-- (the end of any command that forgot to flush) are written then. A finalizer must
-- not raise, so a failure here is only reported on stderr.
audit._at_exit = setmetatable({}, {__gc = function()
    for l in pairs(open_logs) do
        if #l.pending > 0 then
            local ok, err = pcall(l.flush, l)
            if not ok then io.stderr:write("rtbackup: audit log: ", tostring(err), "\n") end
        end
    end
end})

return audit
