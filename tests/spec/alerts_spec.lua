-- requires: testbed
-- Alerts: alert_command (no shell; the run's JSON summary on stdin) and alert_webhook
-- (POSTed with libcurl, retried, never failing the run), fired by real backups of
-- ODIL_QR (a Q/R SCP on another DICOM stack, made to drop the RTDOSE instances for a
-- partial run) into Orthanc "main". The webhook receiver is our own HTTP server in a
-- child process (this spec blocks while rtbackup runs), answering as each test asks.
local h = require "helpers"
local cjson = require "cjson"
local task = require "rtbackup.task"

local tb = h.testbed()
local main = h.orthanc(tb.MAIN_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local ALL = {"--since", "1900-01-01", "--until", "2100-01-01"}
local PATIENTS = tonumber(tb.ODIL_PATIENTS)

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local data = f:read("a")
    f:close()
    return data
end

local function quirks(q) h.write_file(tb.ODIL_QUIRKS, cjson.encode(q or {})) end

local function write_env(extra)
    h.write_file(dir .. "/alerts.toml", h.env_toml(tb, "AL", {
        default_source = "ODIL", default_backup = "MAIN", script_ae = {aet = tb.SCU_AET},
        sources = {{alias = "ODIL", type = "mim", peer = "ODIL"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
        settings = {state_dir = state, retry_backoff_ms = 10, max_retries = 1}, extra = extra}))
end

local function rtb(args, opts)
    local full = {"--config", dir .. "/alerts.toml"}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full, opts)
end

local function backup(opts)
    return rtb({"backup", "AL", table.unpack(ALL)}, opts)
end

-- The command the alerts run: its arguments one per line, its stdin, both to files.
h.write_file(dir .. "/capture.sh", [[
out=$1; shift
printf '%s\n' "$@" > "$out.args"
cat > "$out.stdin"
]])
local CAPTURE = "sh " .. dir .. "/capture.sh " .. dir .. "/cmd"

-- The webhook receiver: answers the statuses in `answers` ("503,200") in turn, then
-- 200; logs every request as a JSON line.
h.write_file(dir .. "/receiver.lua", [==[
local http = require "rtbackup.http"
local task = require "rtbackup.task"
local cjson = require "cjson"
local portfile, logfile, answers = ...
local plan, n = {}, 0
for code in answers:gmatch("%d+") do plan[#plan + 1] = tonumber(code) end
local server = http.serve{port = 0, handler = function(req)
    n = n + 1
    local f = assert(io.open(logfile, "a"))
    f:write(cjson.encode{method = req.method, path = req.path, content_type = req.headers["content-type"],
                         body = req.body}, "\n")
    f:close()
    return {status = plan[n] or 200, body = "thanks\n"}
end}
local f = assert(io.open(portfile .. ".tmp", "w"))
f:write(server:port(), "\n")
f:close()
os.rename(portfile .. ".tmp", portfile)
while not task.stopping() do task.sleep(20) end
server:stop()
]==])

local receivers, started = {}, 0
local function receiver(answers)
    started = started + 1
    local name = "recv" .. started
    local port_file, log_file = dir .. "/" .. name .. ".port", dir .. "/" .. name .. ".log"
    os.execute(string.format("%s run %s %s %s %s </dev/null >%s 2>&1 & echo $! > %s", h.quote(h.bin),
                             h.quote(dir .. "/receiver.lua"), h.quote(port_file), h.quote(log_file),
                             h.quote(answers or ""), h.quote(dir .. "/" .. name .. ".out"),
                             h.quote(dir .. "/" .. name .. ".pid")))
    for _ = 1, 400 do
        local port = slurp(port_file)
        if port then
            local r = {url = "http://127.0.0.1:" .. tonumber(port) .. "/hooks/rtbackup",
                       pid = tonumber(slurp(dir .. "/" .. name .. ".pid"))}
            function r.requests()
                local list = {}
                for line in (slurp(log_file) or ""):gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
                return list
            end
            receivers[#receivers + 1] = r
            return r
        end
        task.sleep(25)
    end
    error("the webhook receiver did not start: " .. tostring(slurp(dir .. "/" .. name .. ".out")))
end

local function forget_odil_patients()
    for _, id in ipairs(main:get("/patients")) do
        local p = main:get("/patients/" .. id)
        if p.MainDicomTags.PatientID:match("^RTB1%d%d$") then main:delete("/patients/" .. id) end
    end
end

before_each(function()
    forget_odil_patients()
    os.execute("rm -rf " .. h.quote(state) .. " " .. h.quote(dir .. "/cmd.args") .. " " .. h.quote(dir .. "/cmd.stdin"))
    quirks()
end)
after_each(function()
    quirks()
    forget_odil_patients()
    for _, r in ipairs(receivers) do os.execute("kill " .. r.pid .. " 2>/dev/null") end
    receivers = {}
end)
teardown(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("a partial backup", function()
    it("runs alert_command with the summary on stdin and posts the same JSON to alert_webhook", function()
        local hook = receiver()
        write_env(string.format([[
alert_command = "%s '{env} {source}' {command} {status} {reason} {unknown}"
alert_webhook = "%s"
]], CAPTURE, hook.url))
        quirks{drop = {modalities = {"RTDOSE"}}} -- one RTDOSE per patient never arrives
        local r = backup()
        assert.are.equal(1, r.code, r.output)

        local args = {}
        for line in (assert(slurp(dir .. "/cmd.args"), "the command did not run")):gmatch("[^\n]+") do
            args[#args + 1] = line
        end
        -- placeholders filled in inside each word; a blank in a value never splits it
        assert.are.same({"AL ODIL", "backup", "partial", "partial", "{unknown}"}, args)
        local sent = slurp(dir .. "/cmd.stdin")
        local alert = cjson.decode(sent)
        assert.are.equal("AL", alert.env)
        assert.are.equal("ODIL", alert.source)
        assert.are.equal("partial", alert.status)
        assert.are.equal(1, alert.exit_code)
        assert.are.equal(PATIENTS, alert.failed)
        assert.are.equal("partial", alert.alert.reason)
        assert.matches("^rtbackup AL ODIL backup: partial: %d+ verified, " .. PATIENTS .. " failed", alert.text)
        -- what the summary file says, the alert says
        local last = cjson.decode(slurp(state .. "/AL-ODIL-last-run.json"))
        for _, k in ipairs{"verified", "failed", "moved", "found", "started_at", "finished_at"} do
            assert.are.equal(last[k], alert[k], k)
        end

        local reqs = hook.requests()
        assert.are.equal(1, #reqs)
        assert.are.equal("POST", reqs[1].method)
        assert.are.equal("/hooks/rtbackup", reqs[1].path)
        assert.are.equal("application/json", reqs[1].content_type)
        assert.are.equal(sent, reqs[1].body) -- the same bytes on both channels
    end)
end)

describe("a successful backup", function()
    it("alerts nobody, unless alert_on_success asks for it", function()
        local hook = receiver()
        write_env(string.format('alert_command = "%s"\nalert_webhook = "%s"\n', CAPTURE, hook.url))
        local r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.is_nil(slurp(dir .. "/cmd.stdin"))
        assert.are.equal(0, #hook.requests())

        write_env(string.format('alert_command = "%s"\nalert_webhook = "%s"\nalert_on_success = true\n', CAPTURE,
                                hook.url))
        r = backup()
        assert.are.equal(0, r.code, r.output)
        local alert = cjson.decode(slurp(dir .. "/cmd.stdin"))
        assert.are.equal("success", alert.alert.reason)
        assert.are.equal("ok", alert.status)
        assert.are.equal(1, #hook.requests())
    end)
end)

describe("a failing alert channel", function()
    it("is tried again after a 503, three times in all", function()
        local hook = receiver("503,502,204")
        write_env(string.format('alert_webhook = "%s"\nalert_on_success = true\n', hook.url))
        local r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(3, #hook.requests())
        assert.matches("alert webhook delivered", r.stderr)
    end)

    it("never fails the backup: a webhook nobody answers, a refusing one, a command that fails", function()
        write_env(string.format('alert_webhook = "http://%s:%s/hook"\nalert_on_success = true\n' ..
                                'alert_command = "sh -c \'echo no mail today; exit 7\'"\n', tb.HOST, tb.CLOSED_PORT))
        local r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.matches("the alert command failed", r.stderr)
        assert.matches("exit 7", r.stderr)
        assert.matches("no mail today", r.stderr)
        assert.matches("the alert webhook failed", r.stderr)

        local hook = receiver("403")
        write_env(string.format('alert_webhook = "%s"\nalert_on_success = true\nalert_command = "/nonexistent/alert"\n',
                                hook.url))
        r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(1, #hook.requests()) -- a 4xx is not worth another try
        assert.matches("HTTP 403", r.stderr)
        assert.matches("cannot run /nonexistent/alert", r.stderr)
    end)
end)

describe("a backup locked out", function()
    -- Another process holds the source's lock (flock, as a run does); its record says
    -- when it started.
    local holder
    local function hold_lock(started)
        os.execute("mkdir -p " .. h.quote(state))
        local lock = state .. "/AL-ODIL.lock"
        h.write_file(lock, string.format("pid=999999\nstarted=%s\nhost=elsewhere\n", started))
        os.execute(string.format("/usr/bin/python3 -c %s %s %s </dev/null >/dev/null 2>&1 & echo $! > %s",
            h.quote("import fcntl, sys, time\nf = open(sys.argv[1], 'a')\nfcntl.flock(f, fcntl.LOCK_EX)\n" ..
                    "open(sys.argv[2], 'w').write('held')\ntime.sleep(60)"),
            h.quote(lock), h.quote(dir .. "/held"), h.quote(dir .. "/holder.pid")))
        for _ = 1, 200 do
            if slurp(dir .. "/held") then break end
            task.sleep(25)
        end
        holder = tonumber(slurp(dir .. "/holder.pid"))
    end
    after_each(function()
        if holder then os.execute("kill " .. holder) end
        holder = nil
        os.remove(dir .. "/held")
    end)

    it("alerts once the lock has been held longer than alert_locked_after_minutes, not before", function()
        write_env(string.format('alert_command = "%s"\nalert_locked_after_minutes = 60\n', CAPTURE))
        hold_lock(os.date("!%Y-%m-%dT%H:%M:%S.000Z", os.time() - 5 * 60)) -- five minutes: the last run finishing
        local r = backup()
        assert.are.equal(3, r.code, r.output)
        assert.is_nil(slurp(dir .. "/cmd.stdin"))
        os.execute("kill " .. holder)
        os.remove(dir .. "/held")

        hold_lock(os.date("!%Y-%m-%dT%H:%M:%S.000Z", os.time() - 7 * 3600)) -- seven hours: hung
        r = backup()
        assert.are.equal(3, r.code, r.output)
        local alert = cjson.decode((assert(slurp(dir .. "/cmd.stdin"), "no alert")))
        assert.are.equal("locked_too_long", alert.alert.reason)
        assert.are.equal("locked", alert.status)
        assert.are.equal(3, alert.exit_code)
        assert.are.equal(999999, alert.lock_holder_pid)
        assert.is_true(alert.lock_held_seconds >= 7 * 3600 - 60)
        assert.matches("locked out: another run %(PID 999999%) has held the lock for 4%d%d minutes", alert.text)
    end)
end)

describe("the mail example", function()
    it("deploy/alerts/alert-mail.sh hands sendmail a mail with the subject and the alert as its body", function()
        h.write_file(dir .. "/sendmail", '#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\ncat > "$0.mail"\n')
        os.execute("chmod +x " .. h.quote(dir .. "/sendmail"))
        write_env(string.format([[
alert_command = "sh %s/deploy/alerts/alert-mail.sh ops@clinic.example '{env} {source} {command}: {status} ({reason}) on {host}'"
alert_on_success = true
]], h.source))
        local r = backup{env = {SENDMAIL = dir .. "/sendmail"}}
        assert.are.equal(0, r.code, r.output)
        assert.are.equal("-oi\n--\nops@clinic.example\n", slurp(dir .. "/sendmail.args"))
        local mail = assert(slurp(dir .. "/sendmail.mail"))
        local headers, body = mail:match("^(.-)\n\n(.*)$")
        assert.matches("^To: ops@clinic%.example\n", headers)
        assert.matches("\nSubject: rtbackup: AL ODIL backup: ok %(success%) on [%w.-]+\n", headers)
        assert.are.equal("ok", cjson.decode(body).status)
    end)
end)

describe("alerts.reason", function()
    local alerts = require "rtbackup.alerts"
    local env = {name = "X", settings = {alert_locked_after_minutes = 10}}
    local cases = {
        {{status = "ok"}, nil},
        {{status = "partial"}, "partial"},
        {{status = "unreachable"}, "unreachable"},
        {{status = "interrupted"}, "interrupted"},
        {{status = "usage"}, "failed"},
        {{status = "outside_window"}, nil},
        {{status = "partial", dry_run = true}, nil},
        {{status = "locked", lock_held_seconds = 599}, nil},
        {{status = "locked", lock_held_seconds = 600}, "locked_too_long"},
        {{status = "locked"}, nil},
        {{status = "partial", command = "drill", different = 1}, "drill_mismatch"},
        {{status = "partial", command = "drill", missing = 2}, "drill_mismatch"},
        {{status = "unreachable", command = "drill"}, "unreachable"},
    }
    for _, c in ipairs(cases) do
        it(cjson.encode(c[1]) .. " -> " .. tostring(c[2]), function()
            assert.are.equal(c[2], alerts.reason(env, c[1]))
        end)
    end
    it("alert_on_success makes a success worth an alert", function()
        assert.are.equal("success", alerts.reason({settings = {alert_on_success = true}}, {status = "ok"}))
    end)
    it("splits a command line into words, quotes grouping, nothing interpreted", function()
        assert.are.same({"mail", "-s", "a b", "$HOME", "c'd", ""}, alerts.words([[mail -s 'a b' $HOME "c'd" '']]))
        assert.are.equal("config", h.failure(alerts.words, "mail 'open").kind)
    end)
end)
