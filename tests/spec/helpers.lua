-- Shared by the specs: run the rtbackup executable as a user would and capture
-- everything it says.
local helpers = {}

helpers.bin = os.getenv("RTBACKUP_BIN") or "rtbackup"
helpers.source = os.getenv("RTBACKUP_SOURCE") or "."

local function quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.quote = quote

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    os.remove(path)
    return data
end

function helpers.read_file(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    return data
end

--- The events of an audit log (rtbackup.audit: one JSON object a line), decoded, in order.
function helpers.audit_events(path)
    local cjson = require "cjson"
    local events = {}
    for line in io.lines(path) do events[#events + 1] = cjson.decode(line) end
    return events
end

function helpers.write_file(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    return path
end

function helpers.tmpdir()
    local p = io.popen("mktemp -d")
    local dir = p:read("l")
    p:close()
    return dir
end

--- A TCP port nothing listens on (below the ephemeral range, like the testbed's).
function helpers.free_port()
    for _ = 1, 200 do
        local port = math.random(20000, 32000)
        local p = io.popen("ss -Htln 'sport = :" .. port .. "'")
        local busy = p:read("a")
        p:close()
        if busy == "" then return port end
    end
    error("no free port")
end

--- Runs rtbackup with `args` (a list); opts.env = {NAME = value} adds variables,
-- opts.stdin = text. Returns {code =, stdout =, stderr =, output = stdout..stderr}.
function helpers.run(args, opts)
    opts = opts or {}
    -- opts.timeout: seconds after which the command is killed (exit code 137)
    local parts = opts.timeout and {"timeout", "-s", "KILL", tostring(opts.timeout), "env"} or {"env"}
    for k, v in pairs(opts.env or {}) do parts[#parts + 1] = quote(k .. "=" .. v) end
    parts[#parts + 1] = quote(helpers.bin)
    for _, a in ipairs(args) do parts[#parts + 1] = quote(a) end
    local out, err = os.tmpname(), os.tmpname()
    local stdin = "/dev/null"
    if opts.stdin then stdin = helpers.write_file(os.tmpname(), opts.stdin) end
    local cmd = string.format("cd %s && %s <%s >%s 2>%s", quote(opts.cwd or helpers.source),
                              table.concat(parts, " "), stdin, out, err)
    local _, _, code = os.execute(cmd)
    if opts.stdin then os.remove(stdin) end
    local r = {code = code, stdout = slurp(out), stderr = slurp(err)}
    r.output = r.stdout .. r.stderr
    return r
end

--- Calls fn(...), which must raise an rtbackup error; returns that error.
function helpers.failure(fn, ...)
    local assert = require "luassert" -- busted gives it to spec files, not to modules
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, "expected an error")
    assert.is_true(require("rtbackup.error").is(err), "expected an rtbackup error, got " .. tostring(err))
    return err
end

--- The testbed's peers (tests/testbed/testbed.sh writes $RTB_TESTBED_ENV): a table of
-- its KEY=VALUE lines (ports, AE titles, HTTP URLs, data paths).
function helpers.testbed()
    local path = os.getenv("RTB_TESTBED_ENV") or error("RTB_TESTBED_ENV is not set")
    local tb = {}
    for line in io.lines(path) do
        local k, v = line:match("^([%w_]+)=(.*)$")
        if k then tb[k] = v end
    end
    return tb
end

-- A TOML value: strings quoted (escaped), numbers and booleans bare, a list as an
-- array, any other table as an inline table (keys sorted).
local toml_value
local function toml_key(k)
    return k:match("^[%w_-]+$") and k or toml_value(k)
end
function toml_value(v)
    local t = type(v)
    if t == "string" then
        return '"' .. v:gsub('[%c"\\]', function(c)
            return (c == '"' or c == "\\") and "\\" .. c or string.format("\\u%04X", c:byte())
        end) .. '"'
    elseif t == "number" or t == "boolean" then
        return tostring(v)
    elseif t == "table" and (#v > 0 or next(v) == nil) then
        local items = {}
        for i, x in ipairs(v) do items[i] = toml_value(x) end
        return "[" .. table.concat(items, ", ") .. "]"
    elseif t == "table" then
        local keys = {}
        for k in pairs(v) do keys[#keys + 1] = k end
        table.sort(keys)
        for i, k in ipairs(keys) do keys[i] = toml_key(k) .. " = " .. toml_value(v[k]) end
        return "{ " .. table.concat(keys, ", ") .. " }"
    end
    error("no TOML for a " .. t)
end

local function port_number(v)
    return math.tointeger(tonumber(v)) or error("port: not an integer: " .. tostring(v))
end

-- `key = value` lines for t's fields: those named in `first`, in that order, then the
-- others sorted. A port is written as an integer even when given as a string.
local function toml_lines(t, first)
    local keys, named, rest = {}, {}, {}
    for _, k in ipairs(first) do
        if t[k] ~= nil then keys[#keys + 1] = k end
        named[k] = true
    end
    for k in pairs(t) do
        if not named[k] then rest[#rest + 1] = k end
    end
    table.sort(rest)
    table.move(rest, 1, #rest, #keys + 1, keys)
    for i, k in ipairs(keys) do
        local v = t[k]
        if k == "port" then v = port_number(v) end
        keys[i] = toml_key(k) .. " = " .. toml_value(v) .. "\n"
    end
    return table.concat(keys)
end

local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
end

--- The TOML text of environment `name`, for --config. tb: helpers.testbed() (nil does
-- when nothing below needs it). spec:
--   description, default_source, default_backup: written when given;
--   script_ae: {aet =, port =} as given; left out, {aet = tb.SCU_AET, port =
--     tb.TEST_SCP_PORT}; false, none;
--   sources, targets: lists of {alias =, type =, peer =, other fields...}, each a
--     [name.sources.ALIAS] / [name.backup_targets.ALIAS] table, in the list's order;
--     peer = "ARIA" stands for aet = tb.ARIA_AET, ip = tb.HOST, port = tb.ARIA_PORT,
--     and an aet, ip or port given beside it wins;
--   settings: a table of fields, or raw TOML lines, under [name.settings];
--   extra: raw TOML appended at the very end (so in [name.settings] if there is one);
--   any other field: a key of [name] itself (scripts = "site").
-- Fields are written sorted, after type, aet, ip and port in a peer's table. A port
-- may be a string, as the testbed's are: it is written as an integer.
function helpers.env_toml(tb, name, spec)
    local env = toml_key(name)
    local top = copy(spec)
    top.sources, top.targets, top.settings, top.extra = nil, nil, nil, nil
    local ae = spec.script_ae
    if ae == nil then ae = {aet = tb.SCU_AET, port = tb.TEST_SCP_PORT} end
    top.script_ae = ae and {aet = ae.aet, port = ae.port and port_number(ae.port)} or nil
    local out = {"[" .. env .. "]\n", toml_lines(top, {"description", "default_source", "default_backup", "script_ae"})}
    for _, list in ipairs{{"sources", spec.sources}, {"backup_targets", spec.targets}} do
        for _, p in ipairs(list[2] or {}) do
            local fields = copy(p)
            fields.alias, fields.peer = nil, nil
            if p.peer then
                fields.aet = p.aet or tb[p.peer .. "_AET"] or error("the testbed has no peer " .. p.peer)
                fields.ip = p.ip or tb.HOST
                fields.port = p.port or tb[p.peer .. "_PORT"]
            end
            out[#out + 1] = string.format("[%s.%s.%s]\n", env, list[1], toml_key(p.alias))
            out[#out + 1] = toml_lines(fields, {"type", "aet", "ip", "port"})
        end
    end
    local settings = spec.settings
    if settings then
        out[#out + 1] = "[" .. env .. ".settings]\n" ..
                        (type(settings) == "table" and toml_lines(settings, {}) or settings .. "\n")
    end
    out[#out + 1] = spec.extra and spec.extra .. "\n" or ""
    return table.concat(out)
end

--- Orthanc's REST API, through curl: o:get(path) (decoded JSON), o:post(path, body),
-- o:put(path, body), o:delete(path), o:lookup(uid), o:wipe() (every patient), o:count() (instances),
-- o:count_of(pattern) (the instances of the patients whose PatientID matches the Lua pattern).
function helpers.orthanc(url)
    local cjson = require "cjson"
    local o = {}
    local function call(method, path, data)
        local p = io.popen(string.format("curl -s -X %s %s %s", method,
                                         data and ("--data-binary " .. quote(data)) or "", quote(url .. path)))
        local body = p:read("a")
        p:close()
        return body
    end
    function o.get(_, path) return cjson.decode(call("GET", path)) end
    function o.post(_, path, data) return cjson.decode(call("POST", path, data)) end
    function o.put(_, path, data) call("PUT", path, data) end
    --- The Orthanc resources with this DICOM UID: {{ID, Type, Path}, ...}.
    function o.lookup(self, uid) return self:post("/tools/lookup", uid) end
    function o.delete(_, path) call("DELETE", path) end
    function o.wipe(self) for _, id in ipairs(self:get("/patients")) do self:delete("/patients/" .. id) end end
    function o.count(self) return #self:get("/instances") end
    function o.count_of(self, pattern)
        local n = 0
        for _, id in ipairs(self:get("/patients")) do
            if self:get("/patients/" .. id).MainDicomTags.PatientID:match(pattern) then
                n = n + #self:get("/patients/" .. id .. "/instances")
            end
        end
        return n
    end
    return o
end

--- tests/bench/delay_relay.py in front of host:port: adds opts.delay_ms (default 5)
-- each way and counts the DICOM associations open at once; opts.max_associations
-- makes it refuse (A-ASSOCIATE-RJ, transient) a connection beyond that many, as an
-- archive at its limit does; opts.serve_at_once leaves a connection beyond that many
-- waiting, unanswered, until one has ended, as a single-process archive does. Returns
-- {port, stats() -> {associations, peak, refused, queued, ...}, stop()}.
function helpers.relay(host, port, opts)
    opts = opts or {}
    local dir = helpers.tmpdir()
    os.execute(string.format("/usr/bin/python3 %s --target %s:%s --delay-ms %s --max-associations %d --serve-at-once %d --stats %s >%s 2>%s & echo $! >%s",
                             quote(helpers.source .. "/tests/bench/delay_relay.py"), host, port,
                             opts.delay_ms or 5, opts.max_associations or 0, opts.serve_at_once or 0,
                             quote(dir .. "/stats.json"),
                             quote(dir .. "/port"), quote(dir .. "/relay.log"), quote(dir .. "/pid")))
    local listening
    for _ = 1, 100 do
        local f = io.open(dir .. "/port")
        listening = f and f:read("l")
        if f then f:close() end
        if listening then break end
        os.execute("sleep 0.05")
    end
    assert(listening, "the relay did not start: " .. (io.open(dir .. "/relay.log"):read("a")))
    local pid = io.open(dir .. "/pid"):read("l")
    return {
        port = listening,
        stats = function() return require("cjson").decode(io.open(dir .. "/stats.json"):read("a")) end,
        stop = function() os.execute("kill " .. pid) end,
    }
end

--- Runs `count` tasks that each call hold(busy): busy() counts itself as running for
-- `ms`. Returns the most that ran at once (what a limiter or a pace under test let in).
function helpers.most_at_once(count, ms, hold)
    local task = require "rtbackup.task"
    local now, most = 0, 0
    local function busy()
        now = now + 1
        most = math.max(most, now)
        task.sleep(ms)
        now = now - 1
    end
    local tasks = {}
    for i = 1, count do tasks[i] = task.spawn(hold, busy) end
    for _, t in ipairs(tasks) do task.wait(t) end
    return most
end

return helpers
