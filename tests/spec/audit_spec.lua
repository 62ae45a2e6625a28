-- rtbackup.audit: the append-only JSON-lines audit trail. Each test runs a small
-- script in a child rtbackup with an environment whose Mosaiq password comes from a
-- process variable, as in production, and reads the file it leaves.
local h = require "helpers"
local cjson = require "cjson"

local SECRET = "Audit-Spec-S3cret;value"
local dir

local function sh(cmd)
    local p = io.popen(cmd .. " 2>/dev/null")
    local out = p:read("a")
    p:close()
    return (out:gsub("%s+$", ""))
end

local function write_env(settings)
    return h.write_file(dir .. "/env.toml", h.env_toml(nil, "AUD", {
        description = "audit spec", script_ae = {aet = "AUD_SCU", port = 11113},
        sources = {{alias = "MOSAIQ", type = "mosaiq", odbc_driver = "SQLite3", db_server = "localhost",
                    db_database = "mosaiq.db", db_username = "aud", db_password_env_var = "AUD_MOSAIQ_DB_PASSWORD"}},
        settings = settings or {audit_log = dir .. "/audit.jsonl"}}))
end

-- Runs `body` as a script (env = the AUD environment, audit = rtbackup.audit).
local function script(body)
    h.write_file(dir .. "/script.lua", [[
local audit = require "rtbackup.audit"
local config = require "rtbackup.config"
local env = config.load("AUD")
]] .. body)
    return h.run({"--config", dir .. "/env.toml", "run", dir .. "/script.lua"},
                 {env = {AUD_MOSAIQ_DB_PASSWORD = SECRET}})
end

local function lines()
    local f = io.open(dir .. "/audit.jsonl")
    if not f then return {}, "" end
    local text = f:read("a")
    f:close()
    local list = {}
    for line in text:gmatch("[^\n]+") do list[#list + 1] = line end
    return list, text
end

before_each(function()
    dir = h.tmpdir()
    write_env()
end)
after_each(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("rtbackup.audit", function()
    it("writes one JSON object per line with time, user, host, environment, op and outcome", function()
        local r = script([[
local log = audit.for_env(env)
log:event{op = "c-find", peer = "ARIA", keys = {PatientID = "RTB001", StudyDate = "20261121-"}, count = 3}
log:event{op = "c-move", peer = "ARIA", patient_id = "RTB001", study_uid = "1.2.3", series_uid = "1.2.3.4",
            count = 10, destination = "ORTHANC_MAIN"}
log:event{op = "sql", peer = "MOSAIQ", query_name = "treatments_of_day", params = {"2026-11-21", 3}, rows = 12}
log:event{op = "c-store", peer = "STAGING", patient_id = "RTB002", count = 1,
            error = require("rtbackup.error").new{kind = "rejected", message = "association rejected"}}
log:flush()
]])
        assert.are.equal(0, r.code, r.output)
        local list = lines()
        assert.are.equal(4, #list)
        local events = {}
        for i, line in ipairs(list) do
            local ok, e = pcall(cjson.decode, line)
            assert.is_true(ok, "not JSON: " .. line)
            events[i] = e
            assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", e.time)
            assert.are.equal(sh("id -un"), e.user)
            assert.are.equal(sh("cat /proc/sys/kernel/hostname"), e.host)
            assert.are.equal("AUD", e.env)
        end
        -- UTC: the date part is today's UTC date (or, just past midnight, yesterday's)
        local today, yesterday = os.date("!%Y-%m-%d"), os.date("!%Y-%m-%d", os.time() - 60)
        assert.is_true(events[1].time:sub(1, 10) == today or events[1].time:sub(1, 10) == yesterday)
        assert.are.equal("c-find", events[1].op)
        assert.are.same({PatientID = "RTB001", StudyDate = "20261121-"}, events[1].keys)
        assert.are.equal("ok", events[1].outcome)
        assert.are.equal("c-move", events[2].op)
        assert.are.equal("RTB001", events[2].patient_id)
        assert.are.equal("1.2.3.4", events[2].series_uid)
        assert.are.equal(10, events[2].count)
        assert.are.equal("treatments_of_day", events[3].query_name)
        assert.are.same({"2026-11-21", 3}, events[3].params)
        assert.are.equal(12, events[3].rows)
        assert.are.equal("failed", events[4].outcome)
        assert.are.equal("rejected", events[4].error.kind)
    end)

    it("never writes a secret: not as a value, not under a secret-looking key, not inside a message", function()
        local r = script([[
local pw = env.sources.MOSAIQ.db_password
local log = audit.for_env(env)
log:event{op = "sql", peer = "MOSAIQ", query_name = "login", params = {"2026-11-21", pw, 7},
            db_password = pw, api_token = "tok-123456", nested = {client_secret = "cs-abcdef", fine = "kept"},
            error = require("rtbackup.error").new{kind = "sql",
                    message = "driver said: password " .. config.reveal(pw) .. " rejected"}}
log:event{op = "repl", action = "start", note = "typed " .. config.reveal(pw)}
log:flush()
]])
        assert.are.equal(0, r.code, r.output)
        local list, text = lines()
        assert.are.equal(2, #list)
        assert.is_nil(text:find(SECRET, 1, true), "secret in the audit log:\n" .. text)
        assert.is_nil(text:find("tok-123456", 1, true))
        assert.is_nil(text:find("cs-abcdef", 1, true))
        assert.is_nil(r.output:find(SECRET, 1, true))
        local e = cjson.decode(list[1])
        assert.are.same({"2026-11-21", "********", 7}, e.params) -- the position stays, the value does not
        assert.is_nil(e.db_password)
        assert.is_nil(e.api_token)
        assert.are.same({fine = "kept"}, e.nested)
        assert.matches("password %*%*%*%*%*%*%*%* rejected", e.error.message)
        assert.matches("typed %*%*%*%*%*%*%*%*", cjson.decode(list[2]).note)
    end)

    it("writes nothing until flush, then appends: earlier lines and other writers' lines stay", function()
        local r = script([[
local log = audit.for_env(env)
log:event{op = "restore", peer = "ORTHANC_MAIN", patient_id = "RTB001", count = 5}
local f = io.open(env.settings.audit_log)
local before = f and f:read("a") or ""
if f then f:close() end
assert(before == "", "written before flush: " .. before)
assert(log:flush() == 1)
]])
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(1, #lines())
        r = script([[
local log = audit.for_env(env)
log:event{op = "c-get", peer = "ORTHANC_MAIN", patient_id = "RTB002", count = 2}
log:flush()
]])
        assert.are.equal(0, r.code, r.output)
        local list = lines()
        assert.are.equal(2, #list)
        assert.are.equal("restore", cjson.decode(list[1]).op)
        assert.are.equal("c-get", cjson.decode(list[2]).op)
    end)

    it("writes events still pending when the process ends without a flush", function()
        local r = script([[
local log = audit.for_env(env)
log:event{op = "c-find", peer = "ARIA", keys = {PatientID = "RTB003"}, count = 1}
]])
        assert.are.equal(0, r.code, r.output)
        local list = lines()
        assert.are.equal(1, #list)
        assert.are.equal("RTB003", cjson.decode(list[1]).keys.PatientID)
    end)

    it("creates a new log readable by its owner only, whatever the umask", function()
        local r = script([[
local log = audit.for_env(env)
log:event{op = "c-find", peer = "ARIA", keys = {PatientID = "RTB003"}, count = 1}
log:flush()
]])
        assert.are.equal(0, r.code, r.output)
        assert.are.equal("600", sh("stat -c %a " .. h.quote(dir .. "/audit.jsonl")))
    end)

    it("refuses an operation that is not one of the audited kinds", function()
        local r = script([[
local log = audit.for_env(env)
local ok, err = pcall(log.event, log, {op = "c-echo", peer = "ARIA"})
assert(not ok and err.kind == "invalid", tostring(err))
]])
        assert.are.equal(0, r.code, r.output)
    end)

    it("keeps every line valid UTF-8 JSON when a value is not UTF-8 (a Latin-1 database column)", function()
        local r = script([[
local log = audit.for_env(env)
log:event{op = "c-find", peer = "ARIA", patient_id = "M\252LLER", keys = {PatientName = "M\252ller^Zo\235"}}
log:flush()
]])
        assert.are.equal(0, r.code, r.output)
        -- Python's json reads the file as UTF-8, as strict readers do.
        local check = io.popen("python3 -c 'import json,sys; [print(json.loads(l)[\"patient_id\"]) " ..
                               "for l in open(sys.argv[1], encoding=\"utf-8\")]' " .. h.quote(dir .. "/audit.jsonl") ..
                               " 2>&1")
        local out = check:read("a")
        assert.is_true(check:close(), out)
        assert.are.equal("M\u{FFFD}LLER\n", out)
        local e = cjson.decode(lines()[1])
        assert.are.equal("M\u{FFFD}ller^Zo\u{FFFD}", e.keys.PatientName)
    end)

    it("records a database connection that failed, as a failed sql event", function()
        local r = script([[
local ctx = require("rtbackup.context").new(env)
local ok = pcall(require("rtbackup.odbc").connect, {odbc_driver = "No Such Driver", db_server = "x",
                 db_database = "y", db_username = "u", db_password = "pw-" .. os.time()}, nil,
                 {alias = "MOSAIQ", ctx = ctx})
assert(not ok)
ctx:flush()
]])
        assert.are.equal(0, r.code, r.output)
        local e = cjson.decode(lines()[1])
        assert.are.same({"sql", "MOSAIQ", "connect", "failed"}, {e.op, e.peer, e.query_name, e.outcome})
    end)

    it("does nothing when the environment keeps no audit log", function()
        write_env("max_uids_per_run = 10")
        local r = script([[
assert(audit.for_env(env) == nil)
local ctx = require("rtbackup.context").new(env)
ctx:event{op = "c-find", peer = "ARIA"}
ctx:flush()
]])
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(0, #lines())
    end)
end)
