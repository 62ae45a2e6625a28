--- rtbackup.serve.routes: what `rtbackup serve` answers.
--
--   GET /                       the status page (HTML); ?env=NAME one environment,
--                               ?days=N the last N days (1..3660)
--   GET /metrics                Prometheus text format (rtbackup.serve.metrics)
--   GET /healthz                liveness: "ok" while the process answers (no auth)
--   GET /readyz                 the health checks (cached), JSON; 200 when every check
--                               passed, else 503. Without credentials where auth is on:
--                               {"ready": bool} only
--   GET /api                    this list, as JSON
--   GET /api/status[/ENV[/SOURCE]]   rtbackup status as JSON (?days=N)
--   GET /api/health[/ENV]       the health checks, JSON
--   GET /api/runs/ENV/SOURCE    the last runs (?limit=N, at most 200)
-- Anything else is 404; methods other than GET and HEAD get 405. With serve_user set,
-- everything but /healthz (and the bare /readyz verdict) needs HTTP basic auth.
--
-- Every answer says: no caching (the page names patients), no framing, no sniffing,
-- no referrer, and a content security policy that allows nothing but the page's own
-- inline style.
local cjson_mod = require "cjson"
local http = require "rtbackup.http"
local log = require "rtbackup.log"
local page = require "rtbackup.serve.page"
local exposition = require "rtbackup.serve.metrics"

local routes = {MAX_DAYS = 3660}

local cjson = cjson_mod.new()
cjson.encode_sparse_array(true)
cjson.encode_invalid_numbers("null")

local SECURITY = {
    ["Cache-Control"] = "no-store",
    ["X-Content-Type-Options"] = "nosniff",
    ["X-Frame-Options"] = "DENY",
    ["Referrer-Policy"] = "no-referrer",
    ["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; " ..
                                  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}

local function respond(status, content_type, body, extra)
    local headers = {["Content-Type"] = content_type}
    for k, v in pairs(SECURITY) do headers[k] = v end
    for k, v in pairs(extra or {}) do headers[k] = v end
    return {status = status, headers = headers, body = body}
end

local function json(status, value)
    return respond(status, "application/json", cjson.encode(value) .. "\n")
end

local function text(status, body, extra)
    return respond(status, "text/plain; charset=utf-8", body, extra)
end

local function not_found(what)
    return json(404, {error = "not found", what = what})
end

-- ---- authentication ------------------------------------------------------------------------

-- Verified credentials, so a browser's every request does not cost a PBKDF2 round
-- (about a third of a second): kept for 10 minutes, at most 16. A wrong password always
-- pays the full price, which is what slows guessing down.
local REMEMBER_SECONDS, REMEMBER_MAX = 600, 16

local function authorized(app, req)
    local s = app.settings
    if not s.serve_user then return true end
    if req.user == nil or req.password == nil then return false end
    local key = req.user .. "\0" .. req.password
    local now = require("rtbackup.host").monotonic()
    app.remembered = app.remembered or {}
    local seen = app.remembered[key]
    if seen and now - seen < REMEMBER_SECONDS then return true end
    local user_ok = req.user == s.serve_user
    local ok, good = pcall(http.verify_password, s.serve_password_hash, req.password)
    if not ok then
        log.error("serve: cannot check the password (serve_password_hash)", {error = tostring(good)})
        return false
    end
    if good and user_ok then
        local n = 0
        for k, t in pairs(app.remembered) do
            if now - t >= REMEMBER_SECONDS then app.remembered[k] = nil else n = n + 1 end
        end
        if n >= REMEMBER_MAX then app.remembered = {} end
        app.remembered[key] = now
        return true
    end
    log.warn("serve: wrong user name or password", {remote = req.remote, user = req.user})
    return false
end

local function unauthorized()
    return text(401, "authentication required\n", {["WWW-Authenticate"] = 'Basic realm="rtbackup", charset="UTF-8"'})
end

-- ---- the models ----------------------------------------------------------------------------

local function days_of(app, req)
    local d = req.query and req.query.days
    if d == nil or d == "" then return app.days end
    local n = math.tointeger(tonumber(d))
    if not n or n < 1 or n > routes.MAX_DAYS then return nil end
    return n
end

local function envs_of(app, name)
    if name == nil or name == "" then return app.envs end
    local env = app.by_name[name]
    return env and {env} or nil
end

-- Status and health of every environment listed, gathered at once. with_health:
-- "fresh" waits for health checks that are not too old, true takes the last ones.
local function gather(app, envs, days, with_health, no_status)
    local list = {}
    local task = require "rtbackup.task"
    task.map(envs, function(env, i)
        list[i] = {name = env.name, status = not no_status and app:status_of(env, days) or nil,
                   health = with_health and app:health_of(env, with_health == "fresh") or nil}
    end, {concurrency = #envs > 0 and #envs or 1})
    return list
end

local function health_json(app, envs)
    local out, ready = {}, true
    for _, e in ipairs(gather(app, envs, app.days, "fresh", true)) do
        local healthy = e.health.error == nil
        local checks = {}
        for i, r in ipairs(e.health.rows or {}) do
            healthy = healthy and r.ok
            checks[i] = {check = r.check, target = r.target, ok = r.ok, status = r.status, seconds = r.seconds,
                         detail = r.detail, error_kind = r.error_kind}
        end
        ready = ready and healthy
        out[#out + 1] = {env = e.name, healthy = healthy, checked_at = e.health.checked_at, error = e.health.error,
                         checks = checks}
    end
    return {ready = ready, environments = out}
end

-- ---- the routes ----------------------------------------------------------------------------

local function status_page(app, req)
    local days = days_of(app, req)
    if not days then return text(400, "days: expected a whole number from 1 to " .. routes.MAX_DAYS .. "\n") end
    local envs = envs_of(app, req.query.env)
    if not envs then return not_found("environment " .. tostring(req.query.env)) end
    local model = {generated_at = require("rtbackup.clock").iso_utc(), host = app.host, version = app.version,
                   days = days, hide_patients = app.hide_patients, envs = gather(app, envs, days, true)}
    return respond(200, "text/html; charset=utf-8", page.render(model))
end

local function metrics(app)
    local model = {envs = gather(app, app.envs, app.days, true), requests = app.requests, started = app.started,
                   version = app.version}
    return respond(200, "text/plain; version=0.0.4; charset=utf-8", exposition.render(model))
end

local function readyz(app, req, authed)
    local h = health_json(app, app.envs)
    local code = h.ready and 200 or 503
    if not authed then return json(code, {ready = h.ready}) end
    return json(code, h)
end

local API = {
    {path = "/api/status", what = "rtbackup status of every environment (?days=N)"},
    {path = "/api/status/ENV", what = "one environment"},
    {path = "/api/status/ENV/SOURCE", what = "one source"},
    {path = "/api/health", what = "the health checks of every environment (cached)"},
    {path = "/api/health/ENV", what = "one environment's"},
    {path = "/api/runs/ENV/SOURCE", what = "the last runs of a source (?limit=N, at most 200)"},
}

local function api(app, req, parts)
    local what = parts[2]
    if what == nil then return json(200, {endpoints = API}) end
    if what == "status" then
        local days = days_of(app, req)
        if not days then return text(400, "days: expected a whole number from 1 to " .. routes.MAX_DAYS .. "\n") end
        local envs = envs_of(app, parts[3])
        if not envs then return not_found("environment " .. parts[3]) end
        local list = gather(app, envs, days, false)
        if parts[3] == nil then
            local all = {}
            for i, e in ipairs(list) do all[i] = e.status end
            return json(200, {environments = all})
        end
        local st = list[1].status
        if parts[4] == nil then return json(200, st) end
        for _, src in ipairs(st.sources) do
            if src.alias == parts[4] then
                local one = {}
                for k, v in pairs(st) do one[k] = v end
                one.sources = nil
                one.source = src
                return json(200, one)
            end
        end
        return not_found("source " .. parts[4])
    elseif what == "health" then
        local envs = envs_of(app, parts[3])
        if not envs then return not_found("environment " .. parts[3]) end
        local h = health_json(app, envs)
        return json(h.ready and 200 or 503, h)
    elseif what == "runs" and parts[3] and parts[4] then
        local env = app.by_name[parts[3]]
        if not env then return not_found("environment " .. parts[3]) end
        if not (env.sources or {})[parts[4]] then return not_found("source " .. parts[4]) end
        local limit = math.tointeger(tonumber(req.query.limit or "20"))
        if not limit or limit < 1 or limit > 200 then return text(400, "limit: expected 1 to 200\n") end
        return json(200, {env = env.name, source = parts[4], runs = require("rtbackup.status").runs(env, parts[4], limit)})
    end
    return not_found(req.path)
end

-- The route name for the request counter (never the raw path: a scanner must not
-- create a series per URL it tries).
local function route_name(parts)
    if #parts == 0 then return "/" end
    local first = parts[1]
    if first == "metrics" or first == "healthz" or first == "readyz" then return "/" .. first end
    if first == "api" then return parts[2] and ("/api/" .. parts[2]) or "/api" end
    return "other"
end
routes.route_name = route_name

local function split(path)
    local parts = {}
    for p in path:gmatch("[^/]+") do parts[#parts + 1] = p end
    return parts
end

local function dispatch(app, req, parts)
    if req.method ~= "GET" and req.method ~= "HEAD" then
        return text(405, "method not allowed\n", {Allow = "GET, HEAD"})
    end
    local first = parts[1]
    if first == "healthz" and #parts == 1 then return text(200, "ok\n") end
    local authed = authorized(app, req)
    if first == "readyz" and #parts == 1 then return readyz(app, req, authed and true or false) end
    if not authed then return unauthorized() end
    if #parts == 0 then return status_page(app, req) end
    if first == "metrics" and #parts == 1 then return metrics(app) end
    if first == "api" then return api(app, req, parts) end
    return not_found(req.path)
end

--- The handler of http.serve for app (rtbackup.serve.app).
function routes.handler(app)
    return function(req)
        req.query = req.query or {}
        local parts = split(req.path or "/")
        local ok, res = pcall(dispatch, app, req, parts)
        if not ok then
            log.error("serve: request failed", {path = req.path, error = tostring(res)})
            res = json(500, {error = "internal error; see the log"})
        end
        app:count(route_name(parts), res.status)
        return res
    end
end

return routes
