-- requires: testbed
-- `cmake --install` into a temporary prefix gives a working rtbackup: the installed
-- binary finds its installed scripts and sample environments (not the source tree's),
-- and runs a command against the testbed's peers.
local h = require "helpers"

local bin = os.getenv("RTBACKUP_BIN") or error("RTBACKUP_BIN is not set")
-- RTBACKUP_BIN is <build>/bindings/rtbackup.
local build_dir = bin:match("^(.*)/[^/]+/[^/]+$") or error("cannot find the build dir from " .. bin)
local prefix = h.tmpdir()
local installed = prefix .. "/bin/rtbackup"
local work = h.tmpdir() -- the working directory: no ./environments here to fall back on

local tb = h.testbed()

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    os.remove(path)
    return text
end

-- Runs a command line from `work`, without RTBACKUP_SCRIPTS (which would point the
-- installed binary elsewhere); returns {code, stdout, stderr, output}.
local function run(cmd, stdin) -- cmd: a shell command line (a pipeline is fine)
    local out, err = os.tmpname(), os.tmpname()
    local input = "/dev/null"
    if stdin then input = h.write_file(os.tmpname(), stdin) end
    local _, _, code = os.execute(string.format("cd %s && (unset RTBACKUP_SCRIPTS; %s) <%s >%s 2>%s",
                                                h.quote(work), cmd, input, out, err))
    if stdin then os.remove(input) end
    local r = {code = code, stdout = slurp(out), stderr = slurp(err)}
    r.output = r.stdout .. r.stderr
    return r
end

local function rtbackup(args, stdin)
    local parts = {h.quote(installed)}
    for _, a in ipairs(args) do parts[#parts + 1] = h.quote(a) end
    return run(table.concat(parts, " "), stdin)
end

setup(function()
    local r = run(string.format("cmake --install %s --prefix %s", h.quote(build_dir), h.quote(prefix)))
    assert(r.code == 0, "cmake --install failed:\n" .. r.output)
end)
teardown(function() os.execute("rm -rf " .. h.quote(prefix) .. " " .. h.quote(work)) end)

describe("an installed rtbackup", function()
    it("lays out the binary, the scripts and the sample environments under the prefix", function()
        for _, path in ipairs{"/bin/rtbackup", "/share/rtbackup/scripts/cli/backup.lua",
                              "/share/rtbackup/scripts/cli/health.lua",
                              "/share/rtbackup/scripts/lib/rtbackup/metrics.lua",
                              "/share/rtbackup/scripts/lib/rtbackup/audit.lua",
                              "/share/rtbackup/environments/demo.toml"} do
            local f = io.open(prefix .. path)
            assert.is_not_nil(f, prefix .. path .. " was not installed")
            f:close()
        end
    end)

    it("installs the deploy files, the operations guide and the etc and state directories", function()
        local f = io.open(prefix .. "/share/rtbackup/deploy/systemd/rtbackup-backup@.service")
        if not f then
            return pending("CMakeLists.txt does not install deploy/, docs/operations.md and the " ..
                           "etc/var directories yet (issue 6)")
        end
        f:close()
        for _, path in ipairs{"/share/doc/rtbackup/operations.md", "/share/rtbackup/deploy/docker/Dockerfile",
                              "/share/rtbackup/deploy/kubernetes/cronjob.yaml"} do
            local g = io.open(prefix .. path)
            assert.is_not_nil(g, prefix .. path .. " was not installed")
            g:close()
        end
        -- a prefix other than /usr or /usr/local keeps them under the prefix
        for _, dir in ipairs{"/etc/rtbackup", "/var/lib/rtbackup"} do
            assert.are.equal(0, run("test -d " .. h.quote(prefix .. dir)).code, prefix .. dir .. " is missing")
        end
    end)

    it("prints its version", function()
        local r = rtbackup{"--version"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("^rtbackup %d+%.%d+%.%d+", r.stdout)
    end)

    it("uses the installed scripts, not the source tree's", function()
        local r = rtbackup({"repl"}, "print(require('rtbackup.host').info().scripts_dir)\n")
        assert.are.equal(0, r.code, r.output)
        local dir = r.stdout:match("[^\n]+")
        -- the binary names it as <prefix>/bin/../share/rtbackup/scripts
        assert.are.equal(prefix .. "/bin/../share/rtbackup/scripts", dir)
    end)

    it("checks the installed sample environments without errors", function()
        local r = rtbackup{"--config", prefix .. "/share/rtbackup/environments", "config", "check"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("0 errors", r.stdout)
    end)

    it("opens the REPL on DEMO and prints its description from piped input", function()
        local r = run(string.format("echo 'print(env.description)' | %s --config %s repl DEMO", h.quote(installed),
                                    h.quote(prefix .. "/share/rtbackup/environments")))
        assert.are.equal(0, r.code, r.output)
        assert.matches("Local testbed on loopback", r.stdout)
    end)

    it("runs a health check against the testbed", function()
        h.write_file(work .. "/tb.toml", string.format([[
[TB]
description = "testbed"
script_ae = { aet = "%s", port = %s }
[TB.sources.ARIA]
type = "aria"
aet = "%s"
ip = "%s"
port = %s
[TB.backup_targets.MAIN]
type = "orthanc"
aet = "%s"
ip = "%s"
port = %s
[TB.settings]
state_dir = "%s/state"
]], tb.SCU_AET, tb.TEST_SCP_PORT, tb.ARIA_AET, tb.HOST, tb.ARIA_PORT, tb.MAIN_AET, tb.HOST, tb.MAIN_PORT, work))
        local r = rtbackup{"--config", work .. "/tb.toml", "health", "TB", "--json"}
        assert.are.equal(0, r.code, r.output)
        local doc = require("cjson").decode(r.stdout)
        assert.is_true(doc.healthy)
        assert.are.equal(4, #doc.checks)
    end)
end)
