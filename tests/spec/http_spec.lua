-- rtbackup.http. The server (libmicrohttpd) runs in a child rtbackup process started
-- from here, so curl can query it while this spec blocks in io.popen; a Python socket
-- does what curl cannot (hold a connection open and silent). The client (libcurl) is
-- checked against the server itself, in this process: both yield, so the loop answers.
local h = require "helpers"
local cjson = require "cjson"
local http = require "rtbackup.http"
local task = require "rtbackup.task"
local errors = require "rtbackup.error"

local dir = h.tmpdir()
local q = h.quote
local PYTHON = "/usr/bin/python3"

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local data = f:read("a")
    f:close()
    return data
end

-- The child's script: serves a few routes until SIGINT/SIGTERM, then stops.
h.write_file(dir .. "/server.lua", [==[
local http = require "rtbackup.http"
local task = require "rtbackup.task"
local cjson = require "cjson"
local portfile, opts_json = ...
local opts = cjson.decode(opts_json)
local arrived = {}

opts.handler = function(req)
    if req.path == "/echo" then
        return {status = 200, body = cjson.encode(req),
                headers = {["Content-Type"] = "application/json", ["X-Served-By"] = "rtbackup"}}
    elseif req.path == "/boom" then
        error("handler exploded on purpose")
    elseif req.path == "/barrier" then
        -- Answers once n requests of group g are in the handler at the same time (after
        -- 10 s otherwise), saying how many there were: only concurrent handling gives n.
        local g, n = req.query.g, tonumber(req.query.n)
        arrived[g] = (arrived[g] or 0) + 1
        for _ = 1, 1000 do
            if arrived[g] >= n then break end
            task.sleep(10)
        end
        return {body = "together " .. arrived[g] .. "\n"}
    elseif req.path == "/slow" then
        io.stderr:write("slow request started\n")
        task.sleep(tonumber(req.query.ms))
        return {body = "slow done\n"}
    end
    return {status = 404, headers = {["Content-Type"] = "text/plain"}, body = "no such page\n"}
end
local server = http.serve(opts)
local f = assert(io.open(portfile .. ".tmp", "w"))
f:write(server:port(), "\n")
f:close()
os.rename(portfile .. ".tmp", portfile)
while not task.stopping() do task.sleep(20) end
io.stderr:write("stopping\n")
server:stop()
io.stderr:write("stopped\n")
]==])

-- Runs the server script in the background; records its pid and, when it ends, its
-- exit code.
h.write_file(dir .. "/launch.sh", [[
"$RTB" run "$DIR/server.lua" "$DIR/$1.port" "$2" > "$DIR/$1.log" 2>&1 &
echo $! > "$DIR/$1.pid"
wait $!
echo $? > "$DIR/$1.rc"
]])

local function start_server(name, opts)
    for _, ext in ipairs{".port", ".pid", ".rc", ".log"} do os.remove(dir .. "/" .. name .. ext) end
    os.execute(string.format("DIR=%s RTB=%s sh %s %s %s </dev/null >/dev/null 2>&1 &", q(dir), q(h.bin),
                             q(dir .. "/launch.sh"), q(name), q(cjson.encode(opts))))
    local srv = {name = name}
    for _ = 1, 400 do
        local port = slurp(dir .. "/" .. name .. ".port")
        if port then
            srv.port = tonumber(port)
            srv.pid = tonumber(slurp(dir .. "/" .. name .. ".pid"))
            return srv
        end
        if slurp(dir .. "/" .. name .. ".rc") then break end
        task.sleep(25)
    end
    error("the server did not start:\n" .. tostring(slurp(dir .. "/" .. name .. ".log")))
end

local function log_of(srv) return slurp(dir .. "/" .. srv.name .. ".log") or "" end

-- Sends a signal and waits for the child to end; returns its exit code.
local function signal_and_wait(srv, sig)
    os.execute("kill -" .. sig .. " " .. srv.pid)
    for _ = 1, 800 do
        local rc = slurp(dir .. "/" .. srv.name .. ".rc")
        if rc then return tonumber(rc) end
        task.sleep(25)
    end
    error("the server did not stop:\n" .. log_of(srv))
end

-- curl with the given arguments (a list); returns {exit, status, body, headers}.
local function curl(args)
    local parts = {}
    for i, a in ipairs(args) do parts[i] = q(a) end
    local body, headers = dir .. "/curl.body", dir .. "/curl.headers"
    os.remove(body)
    os.remove(headers)
    local p = io.popen(string.format("curl -s -m 20 -o %s -D %s -w '%%{http_code}' %s 2>/dev/null",
                                     q(body), q(headers), table.concat(parts, " ")))
    local status = p:read("a")
    local _, _, code = p:close()
    return {exit = code, status = tonumber(status), body = slurp(body) or "", headers = slurp(headers) or ""}
end

local function base(srv, scheme) return (scheme or "http") .. "://127.0.0.1:" .. srv.port end

teardown(function() os.execute("rm -rf " .. q(dir)) end)

describe("http.serve, queried by curl", function()
    local srv
    setup(function() srv = start_server("main", {port = 0, idle_timeout = 1, max_per_ip = 8}) end)
    teardown(function() if srv then signal_and_wait(srv, "KILL") end end)

    it("hands the handler the method, path, decoded query, lower-cased headers and remote address", function()
        local r = curl{"-H", "X-Custom-Thing: Some Value", base(srv) .. "/echo?a=1&b=two%20words&a=3"}
        assert.are.equal(200, r.status)
        assert.matches("X%-Served%-By: rtbackup", r.headers)
        assert.matches("Content%-Type: application/json", r.headers)
        local req = cjson.decode(r.body)
        assert.are.equal("GET", req.method)
        assert.are.equal("/echo", req.path)
        assert.are.same({a = "1", b = "two words"}, req.query) -- a repeated key: the first counts
        assert.are.equal("Some Value", req.headers["x-custom-thing"])
        assert.are.equal("127.0.0.1:" .. srv.port, req.headers.host)
        assert.matches("^127%.0%.0%.1:%d+$", req.remote)
        assert.are.equal("", req.body)
        assert.is_nil(req.user)
    end)

    it("passes a POST body byte for byte", function()
        local body = '{"run": "nightly", "failed": 0}\n\tline two é\n'
        h.write_file(dir .. "/post.json", body)
        local r = curl{"--data-binary", "@" .. dir .. "/post.json", "-H", "Content-Type: application/json",
                       base(srv) .. "/echo"}
        assert.are.equal(200, r.status)
        local req = cjson.decode(r.body)
        assert.are.equal("POST", req.method)
        assert.are.equal(body, req.body)
        assert.are.equal("application/json", req.headers["content-type"])
    end)

    it("refuses a body over max_body with 413, declared or chunked", function()
        h.write_file(dir .. "/big.bin", string.rep("x", 65537))
        local r = curl{"--data-binary", "@" .. dir .. "/big.bin", base(srv) .. "/echo"}
        assert.are.equal(413, r.status)
        r = curl{"--data-binary", "@" .. dir .. "/big.bin", "-H", "Transfer-Encoding: chunked", base(srv) .. "/echo"}
        assert.are.equal(413, r.status)
        h.write_file(dir .. "/fits.bin", string.rep("y", 65536))
        r = curl{"--data-binary", "@" .. dir .. "/fits.bin", base(srv) .. "/echo"}
        assert.are.equal(200, r.status)
        assert.are.equal(65536, #cjson.decode(r.body).body)
    end)

    it("sends the handler's 404, and a short 500 when the handler fails, and goes on serving", function()
        local r = curl{base(srv) .. "/nothing-here"}
        assert.are.equal(404, r.status)
        assert.are.equal("no such page\n", r.body)
        r = curl{base(srv) .. "/boom"}
        assert.are.equal(500, r.status)
        assert.are.equal("internal server error\n", r.body) -- no message, no traceback
        assert.matches("handler exploded on purpose", log_of(srv)) -- but the log has it
        assert.matches("stack traceback", log_of(srv))
        assert.are.equal(200, curl{base(srv) .. "/echo"}.status)
    end)

    it("gives the handler the user and password of HTTP basic auth", function()
        local r = curl{"-u", "alice:pa:ss word", base(srv) .. "/echo"}
        local req = cjson.decode(r.body)
        assert.are.equal("alice", req.user)
        assert.are.equal("pa:ss word", req.password)
    end)

    it("answers concurrent requests while their handlers sleep", function()
        local cmd = {}
        for i = 1, 5 do
            cmd[#cmd + 1] = string.format("curl -s -m 30 %s > %s &", q(base(srv) .. "/barrier?g=five&n=5"),
                                          q(dir .. "/barrier" .. i))
        end
        cmd[#cmd + 1] = "wait"
        os.execute(table.concat(cmd, " "))
        for i = 1, 5 do
            assert.are.equal("together 5\n", slurp(dir .. "/barrier" .. i))
        end
    end)

    it("closes a connection that stays silent longer than idle_timeout", function()
        local p = io.popen(PYTHON .. " -c " .. q(string.format([[
import socket
s = socket.create_connection(("127.0.0.1", %d))
s.settimeout(30)
s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # headers never finished
try:
    print("closed" if s.recv(1) == b"" else "answered")
except socket.timeout:
    print("still open")
]], srv.port)))
        local out = p:read("a")
        p:close()
        assert.are.equal("closed\n", out)
    end)
end)

describe("http.serve limits", function()
    it("refuses a connection over max_per_ip and accepts again once one closes", function()
        local srv = start_server("per_ip", {port = 0, idle_timeout = 60, max_per_ip = 2})
        local p = io.popen(PYTHON .. " -c " .. q(string.format([[
import socket, subprocess
url = "http://127.0.0.1:%d/echo"
def curl():
    return subprocess.run(["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%%{http_code}", url],
                          capture_output=True, text=True).stdout
held = [socket.create_connection(("127.0.0.1", %d)) for _ in range(2)]
print("while two are held:", curl())
held[0].close()
print("after one closed:", curl())
]], srv.port, srv.port)))
        local out = p:read("a")
        p:close()
        signal_and_wait(srv, "KILL")
        assert.matches("while two are held: 000", out)
        assert.matches("after one closed: 200", out)
    end)
end)

describe("http.serve over TLS", function()
    local srv
    setup(function()
        assert.is_true(os.execute(string.format(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost " ..
            "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s -out %s 2>/dev/null",
            q(dir .. "/key.pem"), q(dir .. "/cert.pem"))))
        srv = start_server("tls", {port = 0, tls = {cert = dir .. "/cert.pem", key = dir .. "/key.pem"}})
    end)
    teardown(function() if srv then signal_and_wait(srv, "KILL") end end)

    it("serves HTTPS to a client that trusts the certificate", function()
        local r = curl{"--cacert", dir .. "/cert.pem", "-u", "bob:secret", base(srv, "https") .. "/echo?x=1"}
        assert.are.equal(0, r.exit)
        assert.are.equal(200, r.status)
        local req = cjson.decode(r.body)
        assert.are.equal("1", req.query.x)
        assert.are.equal("bob", req.user)
    end)

    it("is refused by a client that does not trust it, and speaks no plain HTTP", function()
        assert.are.equal(60, curl{base(srv, "https") .. "/echo"}.exit) -- peer certificate not trusted
        assert.is_not.equal(200, curl{base(srv, "http") .. "/echo"}.status)
    end)

    it("verifies the server in http.get (libcurl), trusting only what cafile names", function()
        local r = http.get(base(srv, "https") .. "/echo", {cafile = dir .. "/cert.pem"})
        assert.are.equal(200, r.status)
        local err = h.failure(http.get, base(srv, "https") .. "/echo")
        assert.are.equal("tls", err.kind)
    end)
end)

describe("http.serve stopping", function()
    it("on SIGTERM, finishes the request in flight, then stops and exits 143", function()
        local srv = start_server("sigterm", {port = 0})
        os.execute(string.format("curl -s -m 30 %s > %s 2>&1 &", q(base(srv) .. "/slow?ms=1500"),
                                 q(dir .. "/slow.out")))
        for _ = 1, 400 do
            if log_of(srv):find("slow request started", 1, true) then break end
            task.sleep(25)
        end
        assert.are.equal(143, signal_and_wait(srv, "TERM"))
        assert.matches("stopping\nstopped\n", log_of(srv))
        for _ = 1, 400 do -- curl may still be writing its output
            if slurp(dir .. "/slow.out") == "slow done\n" then break end
            task.sleep(25)
        end
        assert.are.equal("slow done\n", slurp(dir .. "/slow.out"))
        assert.are.equal(7, curl{base(srv) .. "/echo"}.exit) -- nobody listens any more
    end)

    it("server:stop() closes the port, and a script that ends without stopping exits", function()
        local server = http.serve{handler = function() return {body = "ok"} end}
        local url = server:url()
        assert.are.equal("ok", http.get(url).body)
        server:stop()
        assert.are.equal("connect_failed", h.failure(http.get, url).kind)
        server:stop() -- twice is harmless

        h.write_file(dir .. "/forgets.lua", [[
local server = require("rtbackup.http").serve{handler = function() return {body = "ok"} end}
print(server:port())
]])
        local r = h.run({"run", dir .. "/forgets.lua"})
        assert.are.equal(0, r.code, r.output)
        assert.matches("^%d+\n$", r.stdout)
    end)

    it("server:stop() called inside a handler answers that request first", function()
        local server
        server = http.serve{handler = function()
            server:stop()
            return {body = "bye"}
        end}
        local url = server:url()
        assert.are.equal("bye", http.get(url).body)
        for _ = 1, 400 do
            if not pcall(http.get, url, {timeout = 2}) then break end
            task.sleep(25)
        end
        assert.are.equal("connect_failed", h.failure(http.get, url).kind)
    end)
end)

describe("http.post (libcurl) to a webhook receiver", function()
    local received, receiver
    setup(function()
        received = {}
        receiver = http.serve{handler = function(req)
            received[#received + 1] = req
            if req.path == "/slow" then task.sleep(3000) end
            return {status = 202, headers = {["X-Receipt"] = "r-" .. #received}, body = "accepted"}
        end}
    end)
    teardown(function() receiver:stop{grace = 0} end)

    it("delivers the body and headers as given and returns the answer", function()
        local summary = cjson.encode{run = "nightly", failed = 2, source = "ARIA"}
        local r = http.post(receiver:url() .. "/hook?token=abc", summary,
                            {headers = {["Content-Type"] = "application/json", ["X-Alert"] = "backup"},
                             timeout = 5})
        assert.are.equal(202, r.status)
        assert.are.equal("accepted", r.body)
        assert.are.equal("r-" .. #received, r.headers["x-receipt"])
        local req = received[#received]
        assert.are.equal("POST", req.method)
        assert.are.equal("/hook", req.path)
        assert.are.equal("abc", req.query.token)
        assert.are.equal(summary, req.body)
        assert.are.equal("application/json", req.headers["content-type"])
        assert.are.equal("backup", req.headers["x-alert"])
        assert.is_nil(req.headers.expect) -- no 100-continue round trip
    end)

    it("sends no Content-Type the caller did not set", function()
        http.post(receiver:url() .. "/plain", "raw bytes")
        assert.is_nil(received[#received].headers["content-type"])
        assert.are.equal("raw bytes", received[#received].body)
    end)

    it("raises connect_failed for a port nobody listens on, naming only the origin", function()
        local gone = http.serve{handler = function() return {} end}
        local port = gone:port()
        gone:stop()
        local err = h.failure(http.post, "http://127.0.0.1:" .. port .. "/hooks/SECRET-TOKEN?key=K", "{}")
        assert.are.equal("connect_failed", err.kind)
        assert.are.equal("http://127.0.0.1:" .. port, err.peer)
        assert.is_nil(tostring(err):find("SECRET", 1, true))
    end)

    it("raises timeout when the receiver is slower than the timeout", function()
        local err = h.failure(http.post, receiver:url() .. "/slow", "{}", {timeout = 0.5})
        assert.are.equal("timeout", err.kind)
    end)

    it("refuses URLs that are not http or https", function()
        assert.are.equal("config", h.failure(http.post, "file:///etc/passwd", "x").kind)
        assert.are.equal("config", h.failure(http.post, receiver:url(), "x",
                                             {headers = {["X-Bad"] = "a\r\nInjected: yes"}}).kind)
    end)
end)

describe("password hashing", function()
    it("verifies the password it hashed and refuses another", function()
        local stored = http.hash_password("correct horse", {iterations = 2000})
        assert.matches("^pbkdf2%-sha256%$2000%$[%w+/=]+%$[%w+/=]+$", stored)
        assert.is_true(http.verify_password(stored, "correct horse"))
        assert.is_false(http.verify_password(stored, "correct horsE"))
        assert.is_false(http.verify_password(stored, ""))
    end)

    it("salts every hash, and uses 600000 iterations by default", function()
        local a = http.hash_password("same")
        local b = http.hash_password("same")
        assert.is_not.equal(a, b)
        assert.matches("^pbkdf2%-sha256%$600000%$", a)
        assert.is_true(http.verify_password(b, "same"))
    end)

    it("raises a config error for a stored value of another shape", function()
        local err = h.failure(http.verify_password, "md5$abc", "x")
        assert.are.equal("config", err.kind)
        assert.is_true(errors.is(err, "config"))
    end)
end)
