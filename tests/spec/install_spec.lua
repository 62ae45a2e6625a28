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
local main = h.orthanc(tb.MAIN_HTTP_URL)
local cjson = require "cjson"

-- The prefix as the binary sees it (/proc/self/exe is a resolved path).
local function resolved(path)
    local p = io.popen("cd " .. h.quote(path) .. " && pwd -P")
    local dir = p:read("l")
    p:close()
    return dir
end

-- An environment on the testbed: ARIA (dcmqrscp) backed up into MAIN (Orthanc);
-- extra: more lines for [TB.settings].
local function tb_env(extra)
    return h.env_toml(tb, "TB", {
        description = "testbed", default_source = "ARIA", default_backup = "MAIN",
        sources = {{alias = "ARIA", type = "aria", peer = "ARIA"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
        settings = extra or ""})
end

local function mode_of(path)
    local st = require("rtbackup.sys").stat(path)
    return st and st.mode
end

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    os.remove(path)
    return text
end

-- Runs a command line from `work`, without RTBACKUP_SCRIPTS and RTBACKUP_STATE_DIR
-- (which would point the installed binary elsewhere); returns {code, stdout, stderr,
-- output}.
local function run(cmd, stdin) -- cmd: a shell command line (a pipeline is fine)
    local out, err = os.tmpname(), os.tmpname()
    local input = "/dev/null"
    if stdin then input = h.write_file(os.tmpname(), stdin) end
    local _, _, code = os.execute(string.format("cd %s && (unset RTBACKUP_SCRIPTS RTBACKUP_STATE_DIR; %s) <%s >%s 2>%s",
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
        for _, path in ipairs{"/share/rtbackup/deploy/systemd/rtbackup-backup@.service",
                              "/share/doc/rtbackup/operations.md", "/share/rtbackup/deploy/docker/Dockerfile",
                              "/share/rtbackup/deploy/kubernetes/cronjob.yaml"} do
            local g = io.open(prefix .. path)
            assert.is_not_nil(g, prefix .. path .. " was not installed")
            g:close()
        end
        -- a prefix other than /usr or /usr/local keeps them under the prefix
        for _, dir in ipairs{"/etc/rtbackup", "/var/lib/rtbackup"} do
            assert.are.equal(0, run("test -d " .. h.quote(prefix .. dir)).code, prefix .. dir .. " is missing")
        end
        -- the state names patients: the owner's only, as rtbackup would create it
        assert.are.equal(tonumber("700", 8), mode_of(prefix .. "/var/lib/rtbackup"))
        -- the alert example is a script to run as it is
        assert.are.equal(0, run("test -x " .. h.quote(prefix .. "/share/rtbackup/deploy/alerts/alert-mail.sh")).code)
    end)

    it("says in --help where its environments are, as README does", function()
        local r = rtbackup{"--help"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("default /etc/rtbackup, or <prefix>/etc/rtbackup when", r.stdout, 1, true)
        local readme = assert(io.open(h.source .. "/README.md")):read("a")
        assert.matches("<prefix>/etc/rtbackup", readme, 1, true)
        assert.matches("<prefix>/var/lib/rtbackup", readme, 1, true)
    end)

    it("reads its environments from <prefix>/etc/rtbackup, never from ./environments", function()
        h.write_file(prefix .. "/etc/rtbackup/tb.toml", tb_env())
        -- A decoy where a build tree keeps its environments: an installed rtbackup's
        -- working directory must not choose what it backs up.
        assert(os.execute("mkdir -p " .. h.quote(work .. "/environments")))
        h.write_file(work .. "/environments/decoy.toml", '[DECOY]\ndescription = "not this one"\n')

        local r = rtbackup({"repl"}, "print(require('rtbackup.host').info().config_path)\n")
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(resolved(prefix) .. "/etc/rtbackup", r.stdout:match("[^\n]+"))

        r = rtbackup{"echo", "--env", "TB", "--peer", "ARIA"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("C%-ECHO ARIA@", r.stdout)

        r = rtbackup{"config", "check"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("1 environment checked, 0 errors", r.stdout, 1, true)
    end)

    it("keeps its state in <prefix>/var/lib/rtbackup unless state_dir says otherwise", function()
        h.write_file(prefix .. "/etc/rtbackup/tb.toml", tb_env())
        local state = resolved(prefix) .. "/var/lib/rtbackup"

        -- health checks the state dir it would use
        local function checked_state_dir(r)
            assert.are.equal(0, r.code, r.output)
            for _, c in ipairs(cjson.decode(r.stdout).checks) do
                if c.check == "state-dir" then return c.target end
            end
        end
        assert.are.equal(state, checked_state_dir(rtbackup{"health", "TB", "--format", "json"}))

        -- A real run against the testbed: one patient from ARIA into MAIN, journaled there.
        main:wipe()
        r = rtbackup{"backup", "TB", "ARIA", "--patient", "RTB001", "--since", "1900-01-01",
                     "--until", "2100-01-01", "--format", "json"}
        main:wipe()
        assert.are.equal(0, r.code, r.output)
        local s = cjson.decode(r.stdout)
        assert.is_true(s.verified > 0 and s.verified == s.found, r.stdout)
        local f = io.open(state .. "/TB-ARIA-last-run.json")
        assert.is_not_nil(f, "no summary in " .. state)
        assert.are.equal(s.verified, cjson.decode(f:read("a")).verified)
        f:close()
        assert.are.equal(tonumber("700", 8), mode_of(state))

        -- The setting state_dir, else RTBACKUP_STATE_DIR, wins over the default.
        local elsewhere = work .. "/elsewhere"
        assert.are.equal(elsewhere, checked_state_dir(run(string.format(
            "RTBACKUP_STATE_DIR=%s %s health TB --format json", h.quote(elsewhere), h.quote(installed)))))
        h.write_file(prefix .. "/etc/rtbackup/tb.toml", tb_env(string.format('state_dir = "%s/setting"', work)))
        assert.are.equal(work .. "/setting", checked_state_dir(run(string.format(
            "RTBACKUP_STATE_DIR=%s %s health TB --format json", h.quote(elsewhere), h.quote(installed)))))
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
        h.write_file(work .. "/tb.toml", tb_env(string.format('state_dir = "%s/state"', work)))
        local r = rtbackup{"--config", work .. "/tb.toml", "health", "TB", "--json"}
        assert.are.equal(0, r.code, r.output)
        local doc = require("cjson").decode(r.stdout)
        assert.is_true(doc.healthy)
        assert.are.equal(4, #doc.checks)
    end)
end)
