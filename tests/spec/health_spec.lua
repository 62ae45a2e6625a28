-- requires: testbed
-- `rtbackup health` against the testbed: dcmqrscp "ARIA" and Orthanc "main" answer
-- C-ECHO, a SQLite file plays Mosaiq over ODBC, and the state dir is a temp dir.
-- Broken peers are a closed port (refused at once) and a socket that accepts but
-- never answers (only the timeout ends that check).
local h = require "helpers"
local cjson = require "cjson"
local host = require "rtbackup.host"

local tb = h.testbed()
local dir = h.tmpdir()
local SECRET = "health-spec-Pa55word"

local function write_env(extra)
    h.write_file(dir .. "/mosaiq.db", "") -- SQLite reads an empty file as an empty database
    return h.write_file(dir .. "/tb.toml", h.env_toml(tb, "TB", {
        description = "testbed", default_source = "ARIA", default_backup = "MAIN",
        sources = {{alias = "ARIA", type = "aria", peer = "ARIA"},
                   {alias = "MOSAIQ", type = "mosaiq", odbc_driver = "SQLite3", db_server = "localhost",
                    db_database = dir .. "/mosaiq.db", db_username = "health",
                    db_password_env_var = "TB_HEALTH_DB_PASSWORD"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
        settings = {state_dir = dir .. "/state"}, extra = extra}))
end

local function health(args)
    local full = {"--config", dir .. "/tb.toml", "health", "TB"}
    for _, a in ipairs(args or {}) do full[#full + 1] = a end
    return h.run(full, {env = {TB_HEALTH_DB_PASSWORD = SECRET}})
end

local function checks_of(r)
    local ok, doc = pcall(cjson.decode, r.stdout)
    assert.is_true(ok, "not JSON:\n" .. r.output)
    local by = {}
    for _, c in ipairs(doc.checks) do by[c.check .. " " .. c.target] = c end
    return doc, by
end

-- A TCP socket that accepts connections (the kernel does, from the backlog) and never
-- says a word: a peer that hangs. Returns its port and the pid to kill.
local function silent_listener()
    local portfile = dir .. "/silent.port"
    os.remove(portfile)
    local p = io.popen("python3 -c '" ..
        "import socket, sys, time\n" ..
        "s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(8)\n" ..
        "open(sys.argv[1], \"w\").write(str(s.getsockname()[1]))\n" ..
        "time.sleep(120)' " .. h.quote(portfile) .. " >/dev/null 2>&1 & echo $!")
    local pid = p:read("l")
    p:close()
    for _ = 1, 100 do
        local f = io.open(portfile)
        local port = f and f:read("l")
        if f then f:close() end
        if port and port ~= "" then return port, pid end
        os.execute("sleep 0.05")
    end
    error("the silent listener did not start")
end

before_each(function() write_env() end)
teardown(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("rtbackup health", function()
    it("exits 0 on a healthy testbed and lists every check as ok", function()
        local r = health{"--json"}
        assert.are.equal(0, r.code, r.output)
        local doc, by = checks_of(r)
        assert.is_true(doc.healthy)
        assert.are.equal("TB", doc.env)
        for _, name in ipairs{"c-echo ARIA", "c-echo MAIN", "odbc MOSAIQ", "state-dir " .. dir .. "/state",
                              "free-space " .. dir .. "/state"} do
            assert.is_table(by[name], "missing check " .. name .. " in:\n" .. r.stdout)
            assert.are.equal("ok", by[name].status, name .. ": " .. tostring(by[name].detail))
            assert.is_true(by[name].ok)
            assert.is_number(by[name].seconds)
        end
        assert.are.equal(5, #doc.checks)
        assert.is_true(by["free-space " .. dir .. "/state"].free_bytes > 0)
        -- the state-dir probe file is gone again
        local p = io.popen("ls -A " .. h.quote(dir .. "/state"))
        assert.are.equal("", p:read("a"))
        p:close()
        assert.is_nil(r.output:find(SECRET, 1, true))
    end)

    it("exits 1 naming a peer on a closed port, and still reports the others ok", function()
        write_env(string.format('[TB.sources.DEAD]\ntype = "mim"\naet = "DEAD"\nip = "%s"\nport = %s\n',
                                tb.HOST, tb.CLOSED_PORT))
        local r = health{"--json"}
        assert.are.equal(1, r.code, r.output)
        local doc, by = checks_of(r)
        assert.is_false(doc.healthy)
        assert.are.equal("failed", by["c-echo DEAD"].status)
        assert.is_false(by["c-echo DEAD"].ok)
        assert.are.equal("connect_failed", by["c-echo DEAD"].error_kind)
        for _, name in ipairs{"c-echo ARIA", "c-echo MAIN", "odbc MOSAIQ"} do
            assert.are.equal("ok", by[name].status, name)
        end
    end)

    it("checks an Orthanc target's http_url answers as that archive", function()
        local function target(alias, url)
            return string.format('[TB.backup_targets.%s]\ntype = "orthanc"\naet = "%s"\nip = "%s"\nport = %s\n' ..
                                 'http_url = "%s"\n', alias, tb.MAIN_AET, tb.HOST, tb.MAIN_PORT, url)
        end
        write_env(target("REST_OK", tb.MAIN_HTTP_URL) .. target("REST_OTHER", tb.STAGING_HTTP_URL) ..
                  target("REST_DEAD", "http://" .. tb.HOST .. ":" .. tb.CLOSED_PORT))
        local r = health{"--json"}
        assert.are.equal(1, r.code, r.output)
        local _, by = checks_of(r)
        assert.are.equal("ok", by["rest REST_OK"].status, by["rest REST_OK"].detail)
        assert.matches("another Orthanc than its DICOM settings name (its DicomAet is " .. tb.STAGING_AET,
                       by["rest REST_OTHER"].detail, 1, true)
        assert.matches("gave no answer to GET /system", by["rest REST_DEAD"].detail, 1, true)
        assert.matches("fix http_url of REST_DEAD", by["rest REST_DEAD"].detail, 1, true)
        assert.is_nil(by["rest MAIN"]) -- no http_url: nothing to check
    end)

    it("ends a check on a peer that never answers after --timeout, without hiding the others", function()
        local port, pid = silent_listener()
        finally(function() os.execute("kill " .. pid) end)
        write_env(string.format('[TB.backup_targets.HUNG]\ntype = "dicom_scp"\naet = "HUNG"\nip = "127.0.0.1"\nport = %s\n',
                                port))
        local started = host.monotonic()
        local r = health{"--json", "--timeout", "2"}
        local took = host.monotonic() - started
        assert.are.equal(1, r.code, r.output)
        local _, by = checks_of(r)
        assert.are.equal("failed", by["c-echo HUNG"].status)
        assert.is_true(by["c-echo HUNG"].seconds >= 1.5, "ended before the timeout: " .. by["c-echo HUNG"].seconds)
        assert.is_true(took < 8, "health took " .. took .. " s with --timeout 2")
        assert.are.equal("ok", by["c-echo ARIA"].status)
        assert.are.equal("ok", by["c-echo MAIN"].status)
    end)

    it("fails the SQL check of a Mosaiq database that is not there", function()
        os.remove(dir .. "/mosaiq.db")
        local r = health{"--json"}
        assert.are.equal(1, r.code, r.output)
        local _, by = checks_of(r)
        assert.are.equal("failed", by["odbc MOSAIQ"].status)
        assert.matches("does not exist", by["odbc MOSAIQ"].detail)
        assert.are.equal("ok", by["c-echo ARIA"].status)
    end)

    it("fails free space below --min-free-mb", function()
        local r = health{"--json", "--min-free-mb", "1000000000"}
        assert.are.equal(1, r.code, r.output)
        local _, by = checks_of(r)
        assert.are.equal("failed", by["free-space " .. dir .. "/state"].status)
        assert.matches("below %-%-min%-free%-mb", by["free-space " .. dir .. "/state"].detail)
    end)

    it("prints a CSV table with a row per check when not on a terminal", function()
        local r = health()
        assert.are.equal(0, r.code, r.output)
        local lines = {}
        for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
        assert.are.equal("check,target,status,ms,detail", lines[1])
        assert.are.equal(6, #lines)
        assert.matches("^c%-echo,ARIA,ok,", r.stdout:match("\n(c%-echo,ARIA[^\n]*)"))
    end)

    it("writes the results as Prometheus metrics with --metrics-file", function()
        local r = health{"--metrics-file", dir .. "/health.prom"}
        assert.are.equal(0, r.code, r.output)
        local text = assert(io.open(dir .. "/health.prom")):read("a")
        assert.matches('rtbackup_health_check_up{env="TB",check="c%-echo",target="ARIA"} 1\n', text)
        assert.matches('rtbackup_health_check_up{env="TB",check="odbc",target="MOSAIQ"} 1\n', text)
    end)

    it("is a usage error (exit 2) for a bad --timeout and states its exit codes in --help", function()
        assert.are.equal(2, health{"--timeout", "0"}.code)
        local r = health{"--help"}
        assert.are.equal(0, r.code)
        assert.matches("exit codes: 0 every check passed, 1 any check failed, 2 usage", r.stdout)
    end)

    it("is a configuration error (exit 2) for an unknown environment", function()
        local r = h.run({"--config", dir .. "/tb.toml", "health", "NOWHERE"})
        assert.are.equal(2, r.code, r.output)
    end)
end)
