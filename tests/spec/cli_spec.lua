-- The command line as cron and operators meet it: help, exit codes, `run`.
local h = require "helpers"

describe("rtbackup", function()
    it("lists the commands and the exit codes in --help", function()
        local r = h.run{"--help"}
        assert.are.equal(0, r.code)
        for _, cmd in ipairs{"config", "repl", "run"} do
            assert.matches("\n  " .. cmd .. " ", r.stdout)
        end
        assert.matches("exit codes:", r.stdout)
    end)

    it("prints its version", function()
        local r = h.run{"--version"}
        assert.are.equal(0, r.code)
        assert.matches("^rtbackup %d+%.%d+%.%d+", r.stdout)
    end)

    it("rejects an unknown command with exit 2 and lists the commands", function()
        local r = h.run{"frobnicate"}
        assert.are.equal(2, r.code)
        assert.matches("unknown command 'frobnicate'", r.stderr)
        assert.matches("repl", r.stderr)
    end)

    it("rejects a command name that is a path", function()
        assert.are.equal(2, h.run{"../cli/run"}.code)
    end)

    it("exits 2 without a command", function()
        local r = h.run{}
        assert.are.equal(2, r.code)
        assert.matches("usage:", r.stderr)
    end)

    it("rejects a bad --log-level and --log-format", function()
        assert.are.equal(2, h.run{"--log-level", "loud", "config", "check"}.code)
        assert.are.equal(2, h.run{"--log-format", "xml", "config", "check"}.code)
    end)

    it("shows a command's help with its exit codes", function()
        local r = h.run{"config", "--help"}
        assert.are.equal(0, r.code)
        assert.matches("exit codes:", r.stdout)
    end)

    it("gives a usage error (exit 2) for bad command arguments", function()
        local r = h.run{"config", "explode"}
        assert.are.equal(2, r.code)
        assert.matches("Usage:", r.stderr)
    end)

    it("says a global option given after the command goes before it", function()
        local r = h.run{"find", "-c", "/etc/rtbackup"}
        assert.are.equal(2, r.code)
        assert.matches("-c is a global option: it goes before the command", r.stderr, 1, true)
    end)

    -- Each command's numbers are checked by the same converters before anything is
    -- loaded or contacted (no environment is needed to be refused).
    it("refuses a number that is not one, or out of range, naming the option and what it got (exit 2)", function()
        local cases = {
            {{"drill", "X", "--sample", "three"}, "--sample: expected a whole number of at least 1, got 'three'"},
            {{"drill", "X", "--seed", "1.5"}, "--seed: expected a whole number, got '1.5'"},
            {{"status", "X", "--days", "0"}, "--days: expected a whole number of at least 1, got '0'"},
            {{"status", "X", "--days", "-7"}, "--days: expected a whole number of at least 1, got '-7'"},
            {{"health", "X", "--min-free-mb", "-1"}, "--min-free-mb: expected a whole number of at least 0, got '-1'"},
            {{"status", "X", "--runs", "ten"}, "--runs: expected a whole number of at least 1, got 'ten'"},
            {{"health", "X", "--timeout", "0"}, "--timeout: expected a positive number of seconds, got '0'"},
            {{"health", "X", "--min-free-mb", "lots"}, "--min-free-mb: expected a whole number of at least 0, got 'lots'"},
            {{"serve", "--port", "65536"}, "--port: expected a whole number from 0 to 65535, got '65536'"},
            {{"listen", "--port", "http"}, "--port: expected a whole number from 0 to 65535, got 'http'"},
            {{"listen", "--max-per-host", "0"}, "--max-per-host: expected a whole number of at least 1, got '0'"},
            {{"echo", "--port", "x"}, "--port: expected a whole number from 1 to 65535, got 'x'"},
            {{"echo", "--aet", "A", "--aec", "B", "127.0.0.1", "0"}, "port: expected a whole number from 1 to 65535, got '0'"},
            {{"find", "--dimse-timeout", "nan"}, "--dimse-timeout: expected a positive number of seconds, got 'nan'"},
            {{"mosaiq-db", "create", "X", "--patients", "-"}, "--patients: expected a whole number of at least 1, got '-'"},
            -- an empty ID or UID would match every patient or study in a C-FIND or C-MOVE
            {{"restore", "X", "--to", "Y", "--patient", " "}, "--patient: expected one patient's ID (not blank"},
            {{"restore", "X", "--to", "Y", "--patient", "A\\B"}, "--patient: expected one patient's ID"},
            {{"restore", "X", "--to", "Y", "--study", ""}, "--study: expected a UID (digits and dots, at most 64 characters), got ''"},
            {{"backup", "X", "--study", "1.2.*"}, "--study: expected a UID"},
            {{"validate", "X", "--patient", ""}, "--patient: expected one patient's ID"},
            {{"drill", "X", "--study", "1..2"}, "--study: expected a UID"},
            {{"refs", "X", "--ack", "1.2.3", "--ack", ""}, "--ack: expected a UID (digits and dots, at most 64 characters), got ''"},
        }
        for _, case in ipairs(cases) do
            local r = h.run(case[1])
            local line = table.concat(case[1], " ")
            assert.are.equal(2, r.code, line .. ": " .. r.stderr)
            assert.matches(case[2], r.stderr, 1, true)
        end
    end)
end)

describe("rtbackup run", function()
    local dir
    before_each(function() dir = h.tmpdir() end)
    after_each(function() os.execute("rm -rf " .. h.quote(dir)) end)

    it("passes arguments in arg and ... and exits with the returned integer", function()
        local script = h.write_file(dir .. "/s.lua", [[
            local a, b = ...
            print(arg[0]:match("s%.lua$") and "arg0 ok", arg[1], arg[2], a, b, #arg)
            return 7
        ]])
        local r = h.run{"run", script, "one", "--two"}
        assert.are.equal(7, r.code)
        assert.matches("arg0 ok\tone\t%-%-two\tone\t%-%-two\t2", r.stdout)
    end)

    it("exits 1 with the traceback when the script raises", function()
        local script = h.write_file(dir .. "/bad.lua", "local function f() error('kaput') end\nf()\n")
        local r = h.run{"run", script}
        assert.are.equal(1, r.code)
        assert.matches("bad.lua:1: kaput", r.stderr)
        assert.matches("stack traceback", r.stderr)
    end)

    it("maps true/false/nothing to 0/1/0", function()
        assert.are.equal(0, h.run{"run", h.write_file(dir .. "/t.lua", "return true")}.code)
        assert.are.equal(1, h.run{"run", h.write_file(dir .. "/f.lua", "return false")}.code)
        assert.are.equal(0, h.run{"run", h.write_file(dir .. "/n.lua", "local x = 1")}.code)
    end)

    it("exits 2 for a missing script", function()
        local r = h.run{"run", dir .. "/nope.lua"}
        assert.are.equal(2, r.code)
        assert.matches("nope.lua", r.stderr)
    end)

    it("reports a failure of a task nobody waited for", function()
        local script = h.write_file(dir .. "/orphan.lua", [[
            local task = require "rtbackup.task"
            task.spawn(function() error("orphan failed") end)
        ]])
        local r = h.run{"run", script}
        assert.matches("nobody waited for it: .*orphan failed", r.stderr)
    end)

    it("stops starting new work on SIGTERM, finishes what runs, exits 143", function()
        local script = h.write_file(dir .. "/long.lua", [[
            local task = require "rtbackup.task"
            local done = 0
            local results, failures = task.map({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, function()
                task.pool_sleep(300)
                done = done + 1
            end, {concurrency = 2, errors = "return"})
            local stopped = 0
            for _, e in pairs(failures) do if e.kind == "stopped" then stopped = stopped + 1 end end
            print("done", done, "stopped", stopped)
        ]])
        local out = os.tmpname()
        local cmd = string.format("%s run %s >%s 2>&1 & pid=$!; sleep 0.5; kill -TERM $pid; wait $pid; echo \"exit=$?\" >>%s",
            h.quote(h.bin), h.quote(script), out, out)
        os.execute(cmd)
        local text = io.open(out):read("a")
        os.remove(out)
        assert.matches("exit=143", text)
        local done, stopped = text:match("done\t(%d+)\tstopped\t(%d+)")
        assert.is_truthy(done, text)
        assert.are.equal(10, tonumber(done) + tonumber(stopped))
        assert.is_true(tonumber(stopped) >= 4, text)
        assert.matches("SIGTERM received", text)
    end)
end)

describe("logging", function()
    local cjson = require "cjson"
    local dir
    before_each(function() dir = h.tmpdir() end)
    after_each(function() os.execute("rm -rf " .. h.quote(dir)) end)

    local script = [[
        local log = require "rtbackup.log"
        log.debug("debug line", {n = 1})
        log.info("copied", {series = "1.2.3", count = 12, ok = true})
        log.warn("slow peer", {peer = "ARIA@10.0.0.1:104"})
    ]]

    it("writes JSON lines with an ISO-8601 UTC time, level, message and fields", function()
        local r = h.run{"--log-format", "json", "run", h.write_file(dir .. "/l.lua", script)}
        assert.are.equal(0, r.code, r.output)
        local lines = {}
        for line in r.stderr:gmatch("[^\n]+") do lines[#lines + 1] = cjson.decode(line) end
        assert.are.equal(2, #lines) -- debug is below the default level
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", lines[1].time)
        assert.are.equal("info", lines[1].level)
        assert.are.equal("copied", lines[1].message)
        assert.are.equal(12, lines[1].count)
        assert.are.equal(true, lines[1].ok)
        assert.are.equal("1.2.3", lines[1].series)
        assert.are.equal("warn", lines[2].level)
    end)

    it("honours LOG_LEVEL, and --log-level over it", function()
        local file = h.write_file(dir .. "/l.lua", script)
        local r = h.run({"run", file}, {env = {LOG_LEVEL = "debug"}})
        assert.matches("DEBUG debug line n=1", r.stderr)
        r = h.run({"--log-level", "warn", "run", file}, {env = {LOG_LEVEL = "debug"}})
        assert.is_nil(r.stderr:find("copied", 1, true))
        assert.matches("WARN  slow peer peer=ARIA@10.0.0.1:104", r.stderr)
    end)
end)
