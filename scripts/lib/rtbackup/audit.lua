--- rtbackup.audit: who touched which patient's data, when, from where, with what
-- outcome — an append-only JSON-lines file kept apart from the logs (setting
-- `audit_log`). Logs are for debugging and rotate away; the audit trail is evidence
-- and is kept for years, so rtbackup only ever appends to it (rotation and
-- retention: deploy/logrotate/rtbackup-audit, docs/operations.md).
--
--   local audit = require "rtbackup.audit"
--   audit.open(env.settings.audit_log, {env = env})   -- or audit.for_env(env)
--   audit.event{op = "c-move", peer = "ARIA", patient_id = mrn, study_uid = s,
--               series_uid = x, count = r.completed, outcome = "ok"}
--   audit.event{op = "sql", peer = "MOSAIQ", query_name = "day", params = {date}, rows = #rows}
--   audit.flush()                                      -- at the end of each batch
--
-- Each line is one event: op, outcome and the event's own fields, plus time (UTC,
-- ISO-8601 with milliseconds), user (the OS account; sudo_user when run via sudo),
-- host and env. Events wait in memory until flush(), which appends the batch with one
-- write and fsyncs it: a crash loses at most the batch in flight, and a line is never
-- half there. Whatever is still pending when the process ends normally is written
-- then. Without audit.open (no `audit_log` setting), event() and flush() do nothing.
--
-- Never secrets: a field whose key contains password, secret or token is dropped at
-- any depth; a secret value of the configuration is written as "********"; and when
-- opened with the environment table, the plain text of its secrets is masked
-- wherever it would appear (say, inside an error message).
local config = require "rtbackup.config"
local errors = require "rtbackup.error"
local host = require "rtbackup.host"
local log = require "rtbackup.log"
local cjson = require("cjson").new() -- our own instance: its settings stay private

cjson.encode_sparse_array(true) -- a params list with an odbc.NULL hole stays a list
cjson.encode_invalid_numbers("null")

local audit = {}

-- The operations that touch patient data (issue #6); anything else is a bug in the
-- caller, not an event to record under a name nobody searches for.
audit.OPS = {["c-find"] = true, ["c-move"] = true, ["c-get"] = true, ["c-store"] = true,
             sql = true, restore = true, repl = true}

audit.MASK = "********"

-- Events kept in memory before flush() writes them anyway, so a long batch cannot
-- grow without bound.
audit.MAX_PENDING = 1000

-- Fields every line carries; an event cannot override them.
local RESERVED = {time = true, user = true, sudo_user = true, host = true, env = true}

local MAX_DEPTH = 6

-- ---- facts about this process ----------------------------------------------------------

local function command_output(cmd)
    local p = io.popen(cmd .. " 2>/dev/null")
    if not p then return nil end
    local out = p:read("l")
    p:close()
    if out and out ~= "" then return out end
    return nil
end

local function quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The account the OS runs us as. `id -un` (the effective uid) comes first: $USER is
-- whatever the caller's environment says, and an audit trail should not take a
-- process's word for who it is. $USER/$LOGNAME are the fallback (no passwd entry,
-- as in some containers).
local function os_user()
    return command_output("id -un") or os.getenv("USER") or os.getenv("LOGNAME") or
           command_output("id -u") or "unknown"
end

local function host_name()
    local f = io.open("/proc/sys/kernel/hostname", "r")
    if f then
        local name = f:read("l")
        f:close()
        if name and name ~= "" then return name end
    end
    return command_output("uname -n") or os.getenv("HOSTNAME") or "unknown"
end

-- Wall-clock seconds with a fraction. Lua's os.time() has whole seconds only; until
-- the host offers host.now() (clock_gettime), read the wall clock once from date(1)
-- and advance it with the monotonic clock, which never jumps.
local clock_base
local function now()
    if host.now then return host.now() end
    if not clock_base then
        local wall = tonumber(command_output("date +%s.%N") or "") or os.time()
        clock_base = {wall = wall, mono = host.monotonic()}
    end
    return clock_base.wall + (host.monotonic() - clock_base.mono)
end

--- "2026-11-21T02:00:00.123Z" for seconds since the epoch.
function audit.iso_time(t)
    local whole = math.floor(t)
    local ms = math.floor((t - whole) * 1000 + 0.5)
    if ms >= 1000 then whole, ms = whole + 1, ms - 1000 end
    return os.date("!%Y-%m-%dT%H:%M:%S", whole) .. string.format(".%03dZ", ms)
end

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

local default -- the log the module-level functions use

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

--- Opens (creating it if needed, mode 0640) the audit log at `path`, and makes it the
-- log audit.event and audit.flush use. opts.env: the environment (table, whose
-- secrets are then masked everywhere) or its name.
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
    self:create()
    default = self
    return self
end

--- Opens the environment's audit log (setting `audit_log`), or returns nil when the
-- environment keeps none.
function audit.for_env(env)
    local path = env.settings and env.settings.audit_log
    if not path then return nil end
    return audit.open(path, {env = env})
end

-- A new log file gets mode 0640 (it names patients; the umask may allow more), and
-- its directory is synced so that the file itself survives a crash.
function Log:create()
    local f, _, errno = io.open(self.path, "r")
    if f then f:close() end
    if errno ~= 2 then return end -- it exists (ENOENT is 2): its mode is the operator's choice
    local made, err = io.open(self.path, "a")
    if not made then
        errors.raise{kind = "io", message = "cannot create the audit log: " .. tostring(err)}
    end
    made:close()
    os.execute("chmod 0640 " .. quote(self.path))
    local dir = self.path:match("^(.*)/[^/]*$") or "."
    self:sync(dir ~= "" and dir or "/")
end

-- fsync(2) of a file or directory. Lua has no fsync; host.fsync_append does it in C
-- when the host has it, otherwise coreutils' `sync FILE` fsyncs the file it names.
function Log:sync(path)
    local ok = os.execute("sync -- " .. quote(path))
    if not ok and not self.warned_sync then
        self.warned_sync = true
        log.warn("audit log: could not fsync; events are written but may not survive a power loss",
                 {path = path})
    end
end

--- Records one event (kept in memory until flush). Required: op (one of audit.OPS).
-- outcome defaults to "failed" when error is given, else "ok".
function Log:event(e)
    if type(e) ~= "table" or not audit.OPS[e.op] then
        errors.raise{kind = "invalid", message = "audit.event: op must be one of c-find, c-move, c-get, " ..
                     "c-store, sql, restore, repl (got " .. tostring(type(e) == "table" and e.op or e) .. ")"}
    end
    local record = {}
    for k, v in pairs(e) do
        if type(k) == "string" and not RESERVED[k] and not is_secret_key(k) then
            record[k] = clean(self, v, 1, {})
        end
    end
    record.outcome = record.outcome or (e.error ~= nil and "failed" or "ok")
    record.time = audit.iso_time(now())
    record.user, record.sudo_user, record.host, record.env = self.user, self.sudo_user, self.host, self.env
    self.pending[#self.pending + 1] = cjson.encode(record)
    if #self.pending >= audit.MAX_PENDING then self:flush() end
end

--- Appends the pending events with one write and fsyncs the file. On failure they
-- stay pending (the next flush tries again) and an {kind = "io"} error is raised:
-- a caller that must not touch patient data without an audit trail stops there.
function Log:flush()
    if #self.pending == 0 then return 0 end
    local text = table.concat(self.pending, "\n") .. "\n"
    local n = #self.pending
    if host.fsync_append then
        local ok, err = pcall(host.fsync_append, self.path, text)
        if not ok then
            errors.raise{kind = "io", message = "cannot append to the audit log " .. self.path .. ": " .. tostring(err)}
        end
    else
        local f, err = io.open(self.path, "a") -- O_APPEND: concurrent runs never overwrite each other
        if not f then
            errors.raise{kind = "io", message = "cannot append to the audit log: " .. tostring(err)}
        end
        f:setvbuf("no") -- the whole batch in one write(2), not in buffer-sized pieces
        local ok, werr = f:write(text)
        local closed, cerr = f:close()
        if not ok or not closed then
            errors.raise{kind = "io", message = "cannot append to the audit log " .. self.path .. ": " ..
                         tostring(werr or cerr)}
        end
        self:sync(self.path)
    end
    self.pending = {}
    return n
end

--- Flushes and stops being the default log.
function Log:close()
    self:flush()
    if default == self then default = nil end
end

-- ---- module-level: the default log --------------------------------------------------------

--- Records an event in the default log; does nothing when no audit log is open.
function audit.event(e)
    if default then default:event(e) end
end

--- Writes and fsyncs the default log's pending events; returns how many.
function audit.flush()
    if default then return default:flush() end
    return 0
end

function audit.close()
    if default then default:close() end
end

--- The default log (nil when none is open).
function audit.current()
    return default
end

-- A safety net, not the mechanism: events still pending when the Lua state closes
-- (the end of any command that forgot audit.flush) are written then. A finalizer
-- must not raise, so a failure here is only logged.
audit._at_exit = setmetatable({}, {__gc = function()
    if default and #default.pending > 0 then
        local ok, err = pcall(default.flush, default)
        if not ok then io.stderr:write("rtbackup: audit log: ", tostring(err), "\n") end
    end
end})

return audit
