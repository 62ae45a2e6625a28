-- deploy/: the files that run rtbackup unattended (systemd, cron, logrotate, Docker,
-- Kubernetes) are checked with the tools Debian has for each — yamllint,
-- systemd-analyze, logrotate, apt-cache — and their promises (exit codes documented,
-- secrets from a Secret, an audit log never deleted) are checked in their content.
-- A check whose tool is missing is marked pending, saying which package to install.
local h = require "helpers"
local cjson = require "cjson"

local deploy = h.source .. "/deploy"
local bin = os.getenv("RTBACKUP_BIN") or error("RTBACKUP_BIN is not set")

local function sh(cmd)
    local p = io.popen("(" .. cmd .. ") 2>&1")
    local out = p:read("a")
    local _, _, code = p:close()
    return code, out
end

local function have(tool)
    return sh("command -v " .. tool) == 0
end

local function read(path)
    local f = assert(io.open(path), path)
    local text = f:read("a")
    f:close()
    return text
end

local function files(pattern)
    local _, out = sh("cd " .. h.quote(deploy) .. " && find . -path " .. h.quote(pattern) .. " -type f | sort")
    local list = {}
    for line in out:gmatch("[^\n]+") do list[#list + 1] = deploy .. "/" .. line:gsub("^%./", "") end
    return list
end

-- A YAML document as a Lua table, through python3-yaml (yamllint's own parser).
local function yaml(path)
    local code, out = sh("python3 -c 'import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))' "
                         .. h.quote(path))
    assert(code == 0, out)
    local docs = cjson.decode(out)
    for _, d in ipairs(docs) do if d ~= cjson.null then return d end end
end

local function have_yaml_parser()
    return sh("python3 -c 'import yaml'") == 0
end

local tmp
before_each(function() tmp = h.tmpdir() end)
after_each(function() os.execute("rm -rf " .. h.quote(tmp)) end)

describe("deploy/ YAML", function()
    it("passes yamllint (relaxed rules, warnings count as failures)", function()
        if not have("yamllint") then return pending("yamllint is not installed (Debian package yamllint)") end
        local yamls = files("*.yaml")
        assert.is_true(#yamls >= 4, "expected the Kubernetes manifests, found " .. #yamls)
        local quoted = {}
        for i, f in ipairs(yamls) do quoted[i] = h.quote(f) end
        local code, out = sh("yamllint --strict -d relaxed " .. table.concat(quoted, " "))
        assert.are.equal(0, code, out)
    end)
end)

describe("the Kubernetes CronJob", function()
    it("forbids overlapping runs, takes secrets from a Secret and runs as non-root", function()
        if not have_yaml_parser() then return pending("python3-yaml is not installed (comes with yamllint)") end
        local cron = yaml(deploy .. "/kubernetes/cronjob.yaml")
        assert.are.equal("CronJob", cron.kind)
        assert.are.equal("batch/v1", cron.apiVersion)
        assert.are.equal("Forbid", cron.spec.concurrencyPolicy)
        local pod = cron.spec.jobTemplate.spec.template.spec
        assert.are.equal("Never", pod.restartPolicy)
        assert.is_true(pod.securityContext.runAsNonRoot)
        assert.is_true(pod.securityContext.runAsUser > 0)
        local c = pod.containers[1]
        assert.are.equal("backup", c.args[5])
        local from_secret = 0
        for _, e in ipairs(c.env) do
            assert.is_nil(e.value and e.name:find("PASSWORD"), "a password as a literal value: " .. e.name)
            if e.valueFrom and e.valueFrom.secretKeyRef then from_secret = from_secret + 1 end
        end
        assert.is_true(from_secret > 0)
        assert.is_false(c.securityContext.allowPrivilegeEscalation)
        -- configuration errors (2) and "outside the window" (5) are not retried
        local rule = cron.spec.jobTemplate.spec.podFailurePolicy.rules[1]
        assert.are.equal("FailJob", rule.action)
        assert.are.same({2, 5}, rule.onExitCodes.values)
    end)

    it("documents every exit code of rtbackup backup in its comments", function()
        local text = read(deploy .. "/kubernetes/cronjob.yaml")
        for _, line in ipairs{"#   0 ", "#   1 ", "#   2 ", "#   3 ", "#   4 ", "#   5 ", "#   143 "} do
            assert.is_truthy(text:find(line, 1, true), "exit code not documented: " .. line)
        end
    end)
end)

describe("the Kubernetes Indexed Job", function()
    it("gives pod i the shard i+1 of N, with N the Job's completions", function()
        if not have_yaml_parser() then return pending("python3-yaml is not installed (comes with yamllint)") end
        local job = yaml(deploy .. "/kubernetes/indexed-job.yaml")
        assert.are.equal("Indexed", job.spec.completionMode)
        local n = job.spec.completions
        local c = job.spec.template.spec.containers[1]
        local shards
        for _, e in ipairs(c.env) do if e.name == "SHARDS" then shards = tonumber(e.value) end end
        assert.are.equal(n, shards)
        -- Run the container's command with a stand-in rtbackup that prints its arguments.
        h.write_file(tmp .. "/rtbackup", '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
        os.execute("chmod +x " .. h.quote(tmp .. "/rtbackup"))
        local seen = {}
        for index = 0, n - 1 do
            local cmd = {}
            for _, part in ipairs(c.command) do cmd[#cmd + 1] = h.quote(part) end
            for _, part in ipairs(c.args) do cmd[#cmd + 1] = h.quote(part) end
            local code, out = sh(string.format("PATH=%s:$PATH JOB_COMPLETION_INDEX=%d SHARDS=%d %s",
                                               h.quote(tmp), index, shards, table.concat(cmd, " ")))
            assert.are.equal(0, code, out)
            local shard = out:match("\n%-%-shard\n([^\n]+)\n")
            assert.are.equal(string.format("%d/%d", index + 1, n), shard)
            assert.is_nil(seen[shard])
            seen[shard] = true
            assert.matches("\nbackup\nUCLA\n", out)
        end
    end)
end)

describe("the systemd units", function()
    local units = {"rtbackup-backup@.service", "rtbackup-backup@.timer", "rtbackup-health@.service",
                   "rtbackup-health@.timer"}

    -- The units as instances for environment DEMO, ExecStart pointing at the built
    -- binary (systemd-analyze checks that the program exists).
    local function instances()
        local paths = {}
        for _, u in ipairs(units) do
            local text = read(deploy .. "/systemd/" .. u):gsub("/usr/local/bin/rtbackup", bin)
            paths[#paths + 1] = h.write_file(tmp .. "/" .. u:gsub("@", "@DEMO"), text)
        end
        return paths
    end

    it("pass systemd-analyze verify without a single complaint", function()
        if not have("systemd-analyze") then return pending("systemd-analyze is not installed (Debian package systemd)") end
        local quoted = {}
        for i, p in ipairs(instances()) do quoted[i] = h.quote(p) end
        local code, out = sh("cd " .. h.quote(tmp) .. " && systemd-analyze verify " .. table.concat(quoted, " "))
        assert.are.equal(0, code, out)
        -- verify exits 0 even for unknown keys and bad values: it only prints them
        assert.are.equal("", out)
    end)

    it("are hardened: systemd-analyze security rates the services' exposure low", function()
        if not have("systemd-analyze") then return pending("systemd-analyze is not installed (Debian package systemd)") end
        instances()
        for _, service in ipairs{"rtbackup-backup@DEMO.service", "rtbackup-health@DEMO.service"} do
            -- exposure on systemd's 0..10 scale, times 10: 25 is "OK" territory
            local code, out = sh("cd " .. h.quote(tmp) .. " && systemd-analyze security --offline=true --threshold=25 "
                                 .. h.quote(tmp .. "/" .. service))
            assert.are.equal(0, code, out)
        end
    end)

    it("run as the rtbackup user with the documented sandbox and secrets from a file", function()
        for _, u in ipairs{"rtbackup-backup@.service", "rtbackup-health@.service"} do
            local text = read(deploy .. "/systemd/" .. u)
            for _, line in ipairs{"User=rtbackup", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes",
                                  "ReadWritePaths=/var/lib/rtbackup /var/log/rtbackup",
                                  "EnvironmentFile=/etc/rtbackup/secrets.env"} do
                assert.is_truthy(text:find("\n" .. line .. "\n", 1, true), u .. " lacks " .. line)
            end
        end
    end)
end)

describe("the logrotate configuration", function()
    it("rotates the audit log by renaming it and creating a new one, deleting nothing", function()
        if not have("logrotate") then return pending("logrotate is not installed (Debian package logrotate)") end
        local _, user = sh("id -un")
        local _, group = sh("id -gn")
        user, group = user:gsub("%s+$", ""), group:gsub("%s+$", "")
        local logdir = tmp .. "/log"
        os.execute("mkdir -p " .. h.quote(logdir))
        local conf = read(deploy .. "/logrotate/rtbackup"):gsub("/var/log/rtbackup", logdir)
                                                          :gsub("rtbackup rtbackup", user .. " " .. group)
        h.write_file(tmp .. "/logrotate.conf", conf)
        h.write_file(logdir .. "/audit.jsonl", '{"op":"c-move"}\n')
        local code, out = sh("logrotate --force --verbose --state " .. h.quote(tmp .. "/state") .. " "
                             .. h.quote(tmp .. "/logrotate.conf"))
        assert.are.equal(0, code, out)
        assert.is_nil(out:find("error", 1, true), out)
        local _, listing = sh("ls " .. h.quote(logdir))
        local rotated = listing:match("(audit%.jsonl%-%d+)\n")
        assert.is_not_nil(rotated, "no rotated file in:\n" .. listing)
        assert.are.equal('{"op":"c-move"}\n', read(logdir .. "/" .. rotated)) -- delaycompress: still plain
        assert.are.equal("", read(logdir .. "/audit.jsonl"))
        local _, mode = sh("stat -c %a " .. h.quote(logdir .. "/audit.jsonl"))
        assert.are.equal("640\n", mode)
    end)

    it("never truncates in place and keeps the audit log practically forever", function()
        local text = read(deploy .. "/logrotate/rtbackup")
        local stanza = text:match("/var/log/rtbackup/audit%.jsonl%s*(%b{})")
        assert.is_not_nil(stanza)
        assert.is_nil(stanza:gsub("#[^\n]*", ""):match("%f[%w]copytruncate"))
        assert.is_nil(stanza:gsub("#[^\n]*", ""):match("maxage"))
        assert.is_true(tonumber(stanza:match("\n%s*rotate%s+(%d+)")) >= 10000)
        assert.matches("\n%s*create%s", stanza)
    end)
end)

describe("the Dockerfile", function()
    local dockerfile = deploy .. "/docker/Dockerfile"

    -- Instructions with their continuation lines joined, comments dropped.
    local function instructions()
        local list, current = {}, nil
        for line in read(dockerfile):gmatch("[^\n]*") do
            if not line:match("^%s*#") and line:match("%S") then
                current = (current and current .. " " or "") .. line:gsub("\\%s*$", "")
                if not line:match("\\%s*$") then
                    list[#list + 1] = current
                    current = nil
                end
            end
        end
        return list
    end

    it("builds and runs in separate Debian 12 stages, as a non-root user, with a health check", function()
        local stages, user, healthcheck = {}, nil, nil
        local known = {FROM = true, RUN = true, COPY = true, WORKDIR = true, USER = true, ENV = true,
                       HEALTHCHECK = true, ENTRYPOINT = true, CMD = true, VOLUME = true, ARG = true,
                       LABEL = true, EXPOSE = true}
        for _, ins in ipairs(instructions()) do
            local word = ins:match("^(%u+)%s")
            assert.is_true(known[word] == true, "not a Dockerfile instruction: " .. ins)
            if word == "FROM" then stages[#stages + 1] = ins end
            if word == "USER" then user = ins:match("^USER%s+(%S+)") end
            if word == "HEALTHCHECK" then healthcheck = ins end
        end
        assert.is_true(#stages >= 2, "not multi-stage")
        for _, from in ipairs(stages) do assert.matches("^FROM debian:12", from) end
        assert.is_not_nil(user)
        assert.is_false(user == "0" or user:match("^root") ~= nil or user:match("^0:") ~= nil, "runs as root: " .. user)
        assert.matches("CMD rtbackup health ", healthcheck)
    end)

    -- The packages each stage names: {[1] = the build stage's, [2] = the runtime
    -- stage's}, each a list and a set.
    local function stage_packages()
        local stages, stage = {}, 0
        for _, ins in ipairs(instructions()) do
            if ins:match("^FROM%s") then
                stage = stage + 1
                stages[stage] = {list = {}, set = {}}
            end
            local list = ins:match("apt%-get install (.-)%s*&&")
            for pkg in (list or ""):gmatch("%S+") do
                if not pkg:match("^%-") then
                    table.insert(stages[stage].list, pkg)
                    stages[stage].set[pkg] = true
                end
            end
        end
        return stages
    end

    local function apt_lists() return sh("apt-cache show cmake >/dev/null") == 0 end

    -- Package names as shell words, for one apt-cache call over them all (each call
    -- reads the whole package cache).
    local function quoted(list)
        local words = {}
        for i, pkg in ipairs(list) do words[i] = h.quote(pkg) end
        return table.concat(words, " ")
    end

    -- The packages `list` brings onto a machine: those and their dependencies, as
    -- apt-get installs them (a set).
    local function with_dependencies(list)
        local code, out = sh("apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks"
                             .. " --no-replaces --no-enhances " .. quoted(list))
        assert.are.equal(0, code, out)
        local set = {}
        for name in out:gmatch("[^\n]+") do
            if not name:match("^%s") then set[name:match("^<?([^>]+)>?$")] = true end
        end
        return set
    end

    -- The Debian package that holds `path` (dpkg -S), trying the /usr-merged
    -- spelling too; nil when none does.
    local function package_of(path)
        for _, p in ipairs{path, (path:gsub("^/usr/lib/", "/lib/")), (path:gsub("^/lib/", "/usr/lib/"))} do
            local code, out = sh("dpkg -S " .. h.quote(p))
            if code == 0 then return out:match("^([^:,]+)") end
        end
    end

    it("installs only packages Debian knows, building with those of tools/deps.sh", function()
        if not apt_lists() then return pending("apt-cache has no package lists (apt-get update)") end
        local deps = read(h.source .. "/tools/deps.sh")
        local wanted = {}
        for i, stage in ipairs(stage_packages()) do
            for _, pkg in ipairs(stage.list) do
                wanted[#wanted + 1] = pkg
                if i == 1 then -- the build stage
                    assert.is_truthy(deps:find("%f[%w%-]" .. pkg:gsub("%p", "%%%0") .. "%f[^%w%-%.]"),
                                     pkg .. " is not in tools/deps.sh")
                end
            end
        end
        assert.is_true(#wanted > 10)
        local _, out = sh("apt-cache show --no-all-versions " .. quoted(wanted))
        local known = {}
        for name in ("\n" .. out):gmatch("\nPackage: (%S+)") do known[name] = true end
        for _, pkg in ipairs(wanted) do assert.is_true(known[pkg] == true, "apt does not know " .. pkg) end
    end)

    -- The image builds with -DBUILD_TESTING=OFF: every pkg-config module the
    -- product's CMake files require (and those they require in turn) must come from
    -- a package of the build stage, or cmake stops there.
    it("builds with a package for every library the product's CMake files require", function()
        if not apt_lists() then return pending("apt-cache has no package lists (apt-get update)") end
        local build = with_dependencies(stage_packages()[1].list)
        local _, lists = sh("cd " .. h.quote(h.source) .. " && find . -name CMakeLists.txt -not -path './tests/*'"
                            .. " -not -path './build*' | xargs cat")
        local modules, seen = {}, {}
        for args in lists:gmatch("pkg_check_modules%(([^)]*)%)") do
            for word in args:gmatch("%S+") do
                if word:match("^[%l%d][%w%.%-+]*$") then modules[#modules + 1] = word end
            end
        end
        assert.is_true(#modules >= 8, "pkg_check_modules not found in the CMake files")
        while #modules > 0 do
            local mod = table.remove(modules)
            if not seen[mod] then
                seen[mod] = true
                local code, dir = sh("pkg-config --variable=pcfiledir " .. h.quote(mod))
                assert.are.equal(0, code, "pkg-config does not know " .. mod .. " (tools/deps.sh)")
                local pkg = package_of(dir:gsub("%s+$", "") .. "/" .. mod .. ".pc")
                assert.is_truthy(pkg, mod .. ".pc belongs to no package")
                assert.is_true(build[pkg] == true, pkg .. " (" .. mod .. ".pc) is not installed by the Dockerfile's build stage")
                local _, req = sh("pkg-config --print-requires --print-requires-private " .. h.quote(mod))
                for dep in req:gmatch("[^\n]+") do modules[#modules + 1] = dep:match("^(%S+)") end
            end
        end
    end)

    -- Every shared library the built binary needs must be in the runtime stage, or
    -- the image's rtbackup does not start ("error while loading shared libraries").
    it("runs with a package for every shared library the binary needs", function()
        if not apt_lists() then return pending("apt-cache has no package lists (apt-get update)") end
        local runtime = with_dependencies(stage_packages()[2].list)
        local code, needed = sh("readelf -d " .. h.quote(bin))
        assert.are.equal(0, code, needed)
        local n = 0
        for lib in needed:gmatch("%(NEEDED%)%s+Shared library: %[([^%]]+)%]") do
            local _, where = sh("ldconfig -p | awk -v l=" .. h.quote(lib) .. " '$1 == l { print $NF; exit }'")
            where = where:gsub("%s+$", "")
            assert.is_true(where ~= "", "ldconfig does not know " .. lib)
            local _, real = sh("readlink -f " .. h.quote(where))
            local pkg = package_of(where) or package_of((real:gsub("%s+$", "")))
            assert.is_truthy(pkg, lib .. " belongs to no package")
            assert.is_true(runtime[pkg] == true, pkg .. " (" .. lib .. ") is not installed by the Dockerfile's runtime stage")
            n = n + 1
        end
        assert.is_true(n >= 10, "readelf listed " .. n .. " libraries")
    end)
end)

describe("the sample crontab", function()
    it("has well-formed /etc/cron.d lines running rtbackup as the rtbackup user", function()
        local jobs = 0
        for line in read(deploy .. "/cron/rtbackup.crontab"):gmatch("[^\n]+") do
            if not line:match("^%s*#") and not line:match("^%s*[%u_]+=") then
                local m, hr, dom, mon, dow, user, cmd = line:match("^(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(.+)$")
                assert.is_not_nil(m, "not a cron line: " .. line)
                for _, field in ipairs{m, hr, dom, mon, dow} do assert.matches("^[%d%*/,%-]+$", field) end
                assert.are.equal("rtbackup", user)
                assert.matches("rtbackup %-%-config /etc/rtbackup ", cmd)
                -- cron turns % into a newline
                assert.is_nil(cmd:find("%", 1, true), line)
                jobs = jobs + 1
            end
        end
        assert.is_true(jobs >= 2)
    end)
end)
