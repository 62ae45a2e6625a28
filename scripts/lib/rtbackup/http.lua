--- rtbackup.http: an HTTP server for probes, metrics and status pages, and an HTTP
-- client for webhooks.
--
--   local server = http.serve{host = "127.0.0.1", port = 9110, handler = function(req)
--       return {status = 200, headers = {["Content-Type"] = "text/plain"}, body = "ok\n"}
--   end}
--   server:port(); server:stop()
--   local r = http.post(url, json, {headers = {["Content-Type"] = "application/json"}})
--
-- The server is libmicrohttpd on its own thread (TLS through its GnuTLS). Each request
-- runs the handler in a task of its own on the loop, so a handler may call anything
-- that yields (DICOM, SQL, task.sleep) and several requests are answered at once. A
-- request is
--   {method, path, query = {k = v}, headers = {["lower-case-name"] = v}, body,
--    remote = "ip:port", user =, password =}   -- user/password: HTTP basic auth, if sent
-- and the handler returns {status = 200, headers = {...}, body = "..."}. A handler that
-- fails (or returns something unusable) is logged and the client gets a plain 500.
--
-- A running server does not keep a finished script alive: when the main task ends, the
-- host stops it. SIGINT/SIGTERM do not stop it by themselves: a command serves until
-- task.stopping(), then calls server:stop() (see scripts/cli/listen.lua for the shape).
local core = require "rtbackup.http.core"
local task = require "rtbackup.task"
local log = require "rtbackup.log"
local errors = require "rtbackup.error"

local http = {}

local INTERNAL_ERROR = {status = 500, headers = {["Content-Type"] = "text/plain; charset=utf-8"},
                        body = "internal server error\n"}

local with_traceback = task.traceback

local function read_file(path, what)
    local f, err = io.open(path, "rb")
    if not f then
        errors.raise{kind = "config", message = "cannot read the TLS " .. what .. ": " .. tostring(err)}
    end
    local data = f:read("a")
    f:close()
    return data
end

local Server = {}
Server.__index = Server

--- The port it listens on (useful with port = 0).
function Server:port() return self.core:port() end

--- "http://host:port" (or https), for logs and tests.
function Server:url()
    local host = self.host:find(":", 1, true) and "[" .. self.host .. "]" or self.host
    return (self.tls and "https" or "http") .. "://" .. host .. ":" .. self.core:port()
end

--- Stops accepting connections, lets running handlers finish and their answers go out
-- (at most opts.grace seconds, default 5; what is still running then gets a 503), and
-- stops the server thread. Called from inside a handler, the stop happens in a task of
-- its own once that handler has answered.
function Server:stop(opts)
    if self.stopped then return end
    local me = task.current()
    if me and self.handler_tasks[me] then
        task.spawn(function() self:stop(opts) end)
        return
    end
    self.stopped = true
    self.core:close()
    local grace_ms = ((opts and opts.grace) or 5) * 1000
    local waited = 0
    while self.core:unfinished() > 0 and waited < grace_ms do
        task.sleep(10)
        waited = waited + 10
    end
    self.core:stop()
end

--- Starts serving: http.serve{host = "127.0.0.1" (default: loopback only), port = 0
-- (any free port), handler = function(req) return response end, tls = {cert = path,
-- key = path}, max_body = 65536 (bigger bodies get 413), idle_timeout = 10 (seconds
-- before an idle connection is closed), max_connections = 64, max_per_ip = 16}.
function http.serve(opts)
    if type(opts) ~= "table" or type(opts.handler) ~= "function" then
        errors.raise{kind = "config", message = "http.serve: expected {handler = function(req) ... end, ...}"}
    end
    local cert_pem, key_pem
    if opts.tls then
        if not (opts.tls.cert and opts.tls.key) then
            errors.raise{kind = "config", message = "http.serve: tls needs {cert = path, key = path}"}
        end
        cert_pem = read_file(opts.tls.cert, "certificate")
        key_pem = read_file(opts.tls.key, "key")
    end
    local handler = opts.handler
    local self = setmetatable({host = opts.host or "127.0.0.1", tls = opts.tls ~= nil,
                               handler_tasks = setmetatable({}, {__mode = "k"})}, Server)

    -- Runs in a task of its own for every request (spawned by the C side).
    local function dispatch(server, req, id)
        local me = task.current()
        self.handler_tasks[me] = true
        local ok, res = xpcall(handler, with_traceback, req)
        if ok then
            local sent, err = pcall(server.respond, server, id, res)
            if sent then
                self.handler_tasks[me] = nil
                return
            end
            res = err
        end
        log.error("http: handler failed", {method = req.method, path = req.path, error = tostring(res),
                                           traceback = type(res) == "table" and res.traceback or nil})
        server:respond(id, INTERNAL_ERROR)
        self.handler_tasks[me] = nil
    end

    self.core = core.serve{
        host = self.host, port = opts.port, max_body = opts.max_body,
        idle_timeout = opts.idle_timeout, max_connections = opts.max_connections,
        max_per_ip = opts.max_per_ip, cert_pem = cert_pem, key_pem = key_pem,
        dispatch = dispatch, spawn = task.spawn,
    }
    return self
end

--- http.request(method, url, {body, headers = {...}, timeout = 10 (seconds), cafile,
-- redirects = 0, max_response = 1 MiB}) -> {status, body, headers}. Runs on the thread
-- pool (the calling task yields). Any status is returned, 4xx/5xx too; raises
-- {kind = "timeout" | "connect_failed" | "tls" | "http" | "config", message, peer} when
-- no answer came. The URL and header values may be secrets. TLS peers are verified
-- (cafile: a private CA or a self-signed certificate to trust).
function http.request(method, url, opts)
    return core.request(method, url, opts)
end

--- http.post(url, body, opts): the body is sent as given; set its Content-Type in
-- opts.headers. Retries are the caller's: one call, one exchange.
function http.post(url, body, opts)
    if type(body) ~= "string" then
        errors.raise{kind = "config", message = "http.post: the body must be a string"}
    end
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.body = body
    return core.request("POST", url, o)
end

function http.get(url, opts)
    return core.request("GET", url, opts)
end

--- "pbkdf2-sha256$<iterations>$<salt>$<hash>" of a password (a random salt each time);
-- opts.iterations (default 600000, about a third of a second here). Runs on the pool.
function http.hash_password(plain, opts)
    return core.hash_password(plain, opts and opts.iterations)
end

--- Whether plain is the password stored (as made by hash_password; may be a secret).
-- Constant-time comparison; runs on the pool. Raises {kind = "config"} for a stored
-- value of another shape.
function http.verify_password(stored, plain)
    return core.verify_password(stored, plain)
end

return http
