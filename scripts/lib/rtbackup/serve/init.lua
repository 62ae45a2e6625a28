--- rtbackup.serve: `rtbackup serve` — a long-running, read-only HTTP endpoint over
-- the environments' journals: the status page, /metrics for Prometheus, /healthz and
-- /readyz for probes, JSON under /api (routes: rtbackup.serve.routes). It never moves
-- data and never writes a journal; it reads them (SQLite WAL) while cron runs write.
--
--   local serve = require "rtbackup.serve"
--   return serve.run({env1, env2}, {address = "0.0.0.0", port = 9110})   -- until SIGINT/SIGTERM
--
-- Its settings (rtbackup.settings, serve_*) are the environments' [ENV.settings]: the
-- environments served must agree on each (an error names the difference); the
-- command line's --address and --port win over them.
--
-- Caches: the health checks of an environment (rtbackup.health) for
-- serve_health_cache_seconds — one check at a time, requests meanwhile wait for it —
-- and each status (rtbackup.status, the journals) for STATUS_SECONDS.
local clock = require "rtbackup.clock"
local config = require "rtbackup.config"
local errors = require "rtbackup.error"
local health = require "rtbackup.health"
local host = require "rtbackup.host"
local http = require "rtbackup.http"
local log = require "rtbackup.log"
local settings = require "rtbackup.settings"
local status = require "rtbackup.status"
local task = require "rtbackup.task"

local serve = {
    STATUS_SECONDS = 5,      -- a status read from the journals is reused this long
    HEALTH_TIMEOUT = 5,      -- seconds each health check may take
    HEALTH_MIN_FREE_MB = 1024,
}

local SETTINGS = {"serve_address", "serve_port", "serve_tls_cert", "serve_tls_key", "serve_user",
                  "serve_password_hash", "serve_hide_patient_ids", "serve_health_cache_seconds", "serve_days"}

local function plain(v)
    if config.is_secret(v) then return config.reveal(v) end
    return v
end

--- The serve_* settings of the environments, which must agree. Returns {name = value}.
function serve.settings(envs)
    local out = {}
    for _, name in ipairs(SETTINGS) do
        local first_env, first
        for _, env in ipairs(envs) do
            local v = settings.get(env, name)
            if first_env == nil then
                first_env, first = env, v
            elseif plain(v) ~= plain(first) then
                local shown = function(x) return config.is_secret(x) and "a secret" or tostring(x) end
                errors.raise{kind = "config", message = string.format(
                    "%s differs between %s (%s) and %s (%s): one `rtbackup serve` serves them with one value; " ..
                    "set it the same in both, or serve them separately", name, first_env.name, shown(first), env.name,
                    shown(v))}
            end
        end
        out[name] = first
    end
    if (out.serve_tls_cert == nil) ~= (out.serve_tls_key == nil) then
        errors.raise{kind = "config", message = "serve_tls_cert and serve_tls_key: set both (HTTPS) or neither (HTTP)"}
    end
    if (out.serve_user == nil) ~= (out.serve_password_hash == nil) then
        errors.raise{kind = "config", message = "serve_user and serve_password_hash: set both (HTTP basic auth) or " ..
                     "neither (no authentication); `rtbackup serve --hash-password` makes the hash"}
    end
    return out
end

-- ---- the application: environments and caches ------------------------------------------

local App = {}
App.__index = App

function serve.app(envs, opts)
    opts = opts or {}
    local s = serve.settings(envs)
    local app = setmetatable({envs = envs, by_name = {}, settings = s, requests = {}, started = clock.now(),
                              version = host.info().version, health = {}, statuses = {},
                              hide_patients = s.serve_hide_patient_ids, days = s.serve_days,
                              host = require("rtbackup.sys").hostname()}, App)
    for _, env in ipairs(envs) do app.by_name[env.name] = env end
    return app
end

local function check_health(c, env)
    c.running = true
    local ok, rows = pcall(health.check, env, {timeout = serve.HEALTH_TIMEOUT, min_free_mb = serve.HEALTH_MIN_FREE_MB})
    if ok then
        c.result = {rows = rows, checked_at = clock.iso_utc(), checked_unix = clock.now()}
    else
        log.error("serve: the health checks failed to run", {env = env.name, error = tostring(rows)})
        c.result = {error = tostring(rows), checked_at = clock.iso_utc(), checked_unix = clock.now()}
    end
    c.at, c.running = host.monotonic(), false
    return c.result
end

--- The cached health of env: {rows, checked_at, checked_unix} (or {error}), checked
-- again once older than serve_health_cache_seconds; one check at a time. `fresh`
-- (/readyz, /api/health): wait for a result that is not too old. Otherwise (the page,
-- /metrics) a stale result is returned at once while a check runs in the background,
-- so a peer that takes its whole timeout to fail never slows the page down.
function App:health_of(env, fresh)
    local c = self.health[env.name]
    if not c then
        c = {}
        self.health[env.name] = c
    end
    local stale = c.result == nil or host.monotonic() - c.at >= self.settings.serve_health_cache_seconds
    if not stale then return c.result end
    if c.result and not fresh then
        if not c.running then task.spawn(function() check_health(c, env) end) end
        return c.result
    end
    if c.running then
        while c.running do task.sleep(20) end
        return c.result
    end
    return check_health(c, env)
end

-- What the status of env is read from, as one string that changes when any of it
-- changes: the journals (and their WAL files), the last drill and validation files,
-- and today's date (the range ends today).
local function signature(env)
    local sys = require "rtbackup.sys"
    local parts = {clock.today(settings.get(env, "timezone"), 0)}
    local paths, dir = status.journal_paths(env)
    for _, p in ipairs(paths) do
        parts[#parts + 1] = p
        parts[#parts + 1] = p .. "-wal"
    end
    for alias in pairs(env.sources or {}) do
        parts[#parts + 1] = string.format("%s/%s-%s-last-drill.json", dir, env.name, alias)
        parts[#parts + 1] = string.format("%s/%s-%s-last-validate.json", dir, env.name, alias)
    end
    for i = 2, #parts do
        local st = sys.stat(parts[i])
        parts[i] = st and string.format("%s:%d:%.6f", parts[i], st.size, st.mtime) or (parts[i] .. ":-")
    end
    table.sort(parts)
    return table.concat(parts, "\n")
end

--- The status of env over `days`: read again from the journals only when they (or the
-- drill and validation files) changed; while a backup writes, at most every
-- STATUS_SECONDS. Reading costs about a second per 100,000 units of the journal; an
-- idle journal costs a few stat() calls.
function App:status_of(env, days)
    days = days or self.days
    local key = env.name .. "\0" .. days
    local c = self.statuses[key]
    local now = host.monotonic()
    if c and now - c.at < serve.STATUS_SECONDS then return c.status end
    local sig = signature(env)
    if c and c.signature == sig then
        c.at = now
        return c.status
    end
    local st = status.collect(env, {days = days, hide_patients = self.hide_patients})
    self.statuses[key] = {at = now, status = st, signature = sig}
    return st
end

--- Counts one answered request.
function App:count(route, code)
    local key = route .. "\0" .. tostring(code)
    self.requests[key] = (self.requests[key] or 0) + 1
end

-- ---- running -------------------------------------------------------------------------------

--- Serves until SIGINT/SIGTERM. opts: address, port (override the settings). Returns
-- the exit code (130/143).
function serve.run(envs, opts)
    opts = opts or {}
    local app = serve.app(envs, opts)
    local s = app.settings
    local routes = require "rtbackup.serve.routes"
    local address = opts.address or s.serve_address
    local port = opts.port or s.serve_port
    local tls = s.serve_tls_cert and {cert = s.serve_tls_cert, key = s.serve_tls_key} or nil
    local ok, server = pcall(http.serve, {host = address, port = port, tls = tls, handler = routes.handler(app),
                                          max_body = 4096})
    if not ok then
        -- A port taken or an address not ours: the configuration must change (exit 2).
        errors.raise{kind = "config", message = string.format(
            "cannot serve on %s port %s: %s", address, tostring(port), tostring(type(server) == "table" and
            server.message or server))}
    end
    local names = {}
    for _, env in ipairs(envs) do names[#names + 1] = env.name end
    log.info("serving", {url = server:url(), environments = table.concat(names, ","), tls = tls ~= nil,
                         auth = s.serve_user ~= nil, hide_patient_ids = app.hide_patients or nil})
    if opts.port_file then
        -- For tests and supervisors that start it on port 0.
        require("rtbackup.files").replace(opts.port_file, server:port() .. "\n", require("rtbackup.files").SHARED)
    end
    while not task.stopping() do task.sleep(100) end
    log.info("stopping", {url = server:url()})
    server:stop()
    return require("rtbackup.exit").stop_code() or 0
end

return serve
