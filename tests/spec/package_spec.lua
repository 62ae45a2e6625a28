-- The Debian package (packaging/debian.cmake): `cpack -G DEB` from this build gives a
-- .deb that clinic IT can install with apt: the binary, its scripts, the sample
-- environments as conffiles under /etc/rtbackup, the systemd units for /usr/bin, the
-- sysusers and tmpfiles entries, dependencies on Debian's packages only, and lintian
-- finds no error and no warning in it.
local h = require "helpers"

local bin = os.getenv("RTBACKUP_BIN") or error("RTBACKUP_BIN is not set")
-- RTBACKUP_BIN is <build>/bindings/rtbackup.
local build_dir = bin:match("^(.*)/[^/]+/[^/]+$") or error("cannot find the build dir from " .. bin)

local function sh(cmd)
    local out = os.tmpname()
    local _, _, code = os.execute("(" .. cmd .. ") >" .. out .. " 2>&1")
    local f = assert(io.open(out, "rb"))
    local text = f:read("a")
    f:close()
    os.remove(out)
    return text, code
end

local function read(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    return text
end

local missing = {}
for _, tool in ipairs{"cpack", "dpkg-deb", "dpkg-shlibdeps", "lintian", "help2man", "objdump"} do
    if select(2, sh("command -v " .. tool)) ~= 0 then missing[#missing + 1] = tool end
end

if #missing > 0 then
    describe("the Debian package", function()
        it("is built and checked", function()
            pending("skipped: " .. table.concat(missing, ", ") .. " missing (tools/deps.sh installs them: " ..
                    "cmake, dpkg-dev, lintian, help2man, binutils)")
        end)
    end)
    return
end

local out = h.tmpdir()
local root = out .. "/root"         -- the package's files, extracted
local control = out .. "/control"   -- its control area
local deb, fields, paths, cpack_log

setup(function()
    local code
    cpack_log, code = sh(string.format("cd %s && cpack -G DEB -B %s", h.quote(build_dir), h.quote(out)))
    assert(code == 0, "cpack failed:\n" .. cpack_log)
    deb = cpack_log:match("package: (%S+%.deb) generated") or error("no .deb in:\n" .. cpack_log)
    assert(select(2, sh(string.format("dpkg-deb -x %s %s && dpkg-deb -e %s %s", h.quote(deb), h.quote(root),
                                      h.quote(deb), h.quote(control)))) == 0)
    fields = {}
    local name
    for line in (read(control .. "/control") or ""):gmatch("[^\n]+") do
        local k, v = line:match("^([%w-]+):%s*(.*)$")
        if k then name = k; fields[k] = v elseif name then fields[name] = fields[name] .. "\n" .. line end
    end
    paths = {}
    local listing = sh("dpkg-deb -c " .. h.quote(deb))
    for path in listing:gmatch("%s%.(/%S*)\n") do paths[path] = true end
end)
teardown(function() os.execute("rm -rf " .. h.quote(out)) end)

local function depends()
    local list = {}
    for item in (fields.Depends or ""):gmatch("[^,]+") do
        for alt in item:gmatch("[^|]+") do list[#list + 1] = alt:match("^%s*([%w.+-]+)") end
    end
    return list
end

describe("the Debian package", function()
    it("is named and versioned like this build, for this machine's architecture", function()
        local version = sh(h.quote(bin) .. " --version"):match("^rtbackup (%S+)")
        assert.are.equal("rtbackup", fields.Package)
        assert.are.equal(version, fields.Version)
        assert.are.equal(sh("dpkg --print-architecture"):match("%S+"), fields.Architecture)
        assert.are.equal("admin", fields.Section)
        assert.matches("<.+@.+>", fields.Maintainer)
        assert.matches("rtbackup_" .. version:gsub("%p", "%%%0") .. "_%S+%.deb$", deb)
    end)

    it("depends on the Debian package of every shared library the binary links, and on the Lua modules", function()
        local deps = {}
        for _, d in ipairs(depends()) do deps[d] = true end
        local needed = sh("objdump -p " .. h.quote(root .. "/usr/bin/rtbackup"))
        local resolved = sh("ldd " .. h.quote(root .. "/usr/bin/rtbackup"))
        -- Where the binary finds each library on this machine, as a dpkg -S pattern
        -- (one dpkg -S for all: each call reads every package's file list).
        local patterns, libs = {}, {}
        for lib in needed:gmatch("NEEDED%s+(%S+)") do
            local name = lib:gsub("%p", "%%%0")
            local dir = resolved:match("\t" .. name .. " => %S*/([^/%s]+)/[^/%s]+ ")
                        or resolved:match("\t%S*/([^/%s]+)/" .. name .. " ") -- the dynamic loader
            assert.is_not_nil(dir, lib .. " is not resolved by ldd:\n" .. resolved)
            patterns[#patterns + 1] = h.quote("*/" .. dir .. "/" .. lib)
            libs[#libs + 1] = lib
        end
        assert.is_true(#libs >= 10, "the binary links " .. #libs .. " libraries?")
        local owners = "\n" .. sh("dpkg -S " .. table.concat(patterns, " ")) .. "\n" -- "pkg:arch: path" lines
        for _, lib in ipairs(libs) do
            local owner = owners:match("\n([%w.+-]+):[^\n]*/" .. lib:gsub("%p", "%%%0") .. "\n")
            assert.is_not_nil(owner, "no Debian package holds " .. lib .. ":\n" .. owners)
            assert.is_true(deps[owner] == true, lib .. " comes from " .. owner .. ", not in Depends: " .. fields.Depends)
        end
        for _, d in ipairs{"lua-argparse", "lua-cjson", "liblua5.4-0", "libdcmtk17", "libodbc2"} do
            assert.is_true(deps[d] == true, d .. " missing from Depends: " .. fields.Depends)
        end
        -- every dependency is a package Debian has (apt-cache fails naming any it does not know)
        local names = {}
        for d in pairs(deps) do names[#names + 1] = d end
        local log, code = sh("apt-cache show --no-all-versions " .. table.concat(names, " ") .. " >/dev/null")
        assert.are.equal(0, code, log)
        assert.matches("tdsodbc", fields.Recommends, 1, true)
    end)

    it("holds the binary, the scripts, the units, sysusers and tmpfiles, a manual page and the docs", function()
        for _, path in ipairs{"/usr/bin/rtbackup", "/usr/share/rtbackup/scripts/cli/backup.lua",
                              "/usr/share/rtbackup/scripts/lib/rtbackup/run.lua",
                              "/usr/share/rtbackup/environments/ucla.toml",
                              "/usr/share/rtbackup/deploy/systemd/secrets.env.example",
                              "/lib/systemd/system/rtbackup-backup@.service", "/lib/systemd/system/rtbackup-backup@.timer",
                              "/lib/systemd/system/rtbackup-health@.service", "/lib/systemd/system/rtbackup-health@.timer",
                              "/usr/lib/sysusers.d/rtbackup.conf", "/usr/lib/tmpfiles.d/rtbackup.conf",
                              "/etc/logrotate.d/rtbackup", "/usr/share/man/man1/rtbackup.1.gz",
                              "/usr/share/doc/rtbackup/copyright", "/usr/share/doc/rtbackup/changelog.gz",
                              "/usr/share/doc/rtbackup/operations.md"} do
            assert.is_true(paths[path] == true, path .. " is not in the package")
        end
        -- every unit of deploy/systemd is there
        for name in sh("ls " .. h.quote(h.source .. "/deploy/systemd")):gmatch("[^\n]+") do
            if name:match("%.service$") or name:match("%.timer$") then
                assert.is_true(paths["/lib/systemd/system/" .. name] == true, name .. " is not in the package")
            end
        end
        for path in pairs(paths) do
            assert.is_nil(path:match("^/usr/local"), path .. ": a package installs under /usr")
            -- /var/lib/rtbackup belongs to the rtbackup user: tmpfiles creates it, dpkg must not own it
            assert.is_nil(path:match("^/var"), path .. ": tmpfiles creates /var/lib/rtbackup, not the package")
        end
        assert.matches("^%.TH RTBACKUP", sh("zcat " .. h.quote(root .. "/usr/share/man/man1/rtbackup.1.gz") ..
                                           " | grep '^.TH'"))
    end)

    it("ships the sample environments and the logrotate file as conffiles, and every file in /etc is one", function()
        local conffiles = {}
        for line in (read(control .. "/conffiles") or ""):gmatch("[^\n]+") do conffiles[line] = true end
        for name in sh("ls " .. h.quote(h.source .. "/environments")):gmatch("[^\n]+") do
            if name:match("%.toml$") then
                local path = "/etc/rtbackup/" .. name
                assert.is_true(conffiles[path] == true, path .. " is not a conffile")
                assert.are.equal(read(h.source .. "/environments/" .. name), read(root .. path))
            end
        end
        assert.is_true(conffiles["/etc/logrotate.d/rtbackup"] == true)
        for path in pairs(conffiles) do assert.is_true(paths[path] == true, path .. ": conffile not in the package") end
        for path in pairs(paths) do
            if path:match("^/etc/.*[^/]$") then assert.is_true(conffiles[path] == true, path .. " is not a conffile") end
        end
    end)

    it("runs /usr/bin/rtbackup from its systemd units", function()
        local units = 0
        for name in sh("ls " .. h.quote(root .. "/lib/systemd/system")):gmatch("[^\n]+") do
            local text = read(root .. "/lib/systemd/system/" .. name)
            assert.is_nil(text:find("/usr/local", 1, true), name .. " still names /usr/local")
            if name:match("%.service$") then
                assert.matches("\nExecStart=/usr/bin/rtbackup ", text, 1, true)
            end
            units = units + 1
        end
        assert.is_true(units >= 6)
    end)

    it("creates the rtbackup user and a 0700 /var/lib/rtbackup the way its postinst does", function()
        local postinst = read(control .. "/postinst")
        assert.matches("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} rtbackup.conf", postinst, 1, true)
        assert.matches("systemd-tmpfiles --create rtbackup.conf", postinst, 1, true)
        for _, script in ipairs{"postinst", "prerm", "postrm"} do
            assert.are.equal(0, select(2, sh("sh -n " .. h.quote(control .. "/" .. script))), script)
            -- installing enables and starts nothing: the site chooses its environments' timers
            for line in read(control .. "/" .. script):gmatch("[^\n]+") do
                if not line:match("^%s*#") then
                    assert.is_nil(line:match("enable") or line:match(" start"), script .. ": " .. line)
                end
            end
        end
        if sh("id -u"):match("%d+") ~= "0" then
            return pending("creating the user and chowning the directory needs root")
        end
        -- What the postinst runs, against the extracted tree instead of /.
        local log, code = sh(string.format("systemd-sysusers --root=%s rtbackup.conf && " ..
                                           "systemd-tmpfiles --root=%s --create rtbackup.conf",
                                           h.quote(root), h.quote(root)))
        -- (the ACL line for node_exporter's directory is skipped with a warning here: the
        -- host resolving it does not know the user only the extracted tree has)
        assert.are.equal(0, code, log)
        local passwd = read(root .. "/etc/passwd") or ""
        local uid, home, shell
        for line in passwd:gmatch("[^\n]+") do
            local u, d, s = line:match("^rtbackup:x:(%d+):%d+:[^:]*:([^:]*):(.*)$")
            if u then uid, home, shell = u, d, s end
        end
        assert.is_not_nil(uid, "no rtbackup user in " .. passwd)
        assert.are.equal("/var/lib/rtbackup", home)
        assert.are.equal("/usr/sbin/nologin", shell)
        local st = require("rtbackup.sys").stat(root .. "/var/lib/rtbackup")
        assert.are.equal(tonumber("700", 8), st.mode)
        assert.are.equal(tonumber(uid), st.uid)
        assert.are.equal(tonumber(uid), require("rtbackup.sys").stat(root .. "/var/log/rtbackup").uid)
    end)

    it("runs from its own files: the packaged binary checks the packaged environments", function()
        local r, code = sh(string.format("cd / && %s --config %s config check", h.quote(root .. "/usr/bin/rtbackup"),
                                         h.quote(root .. "/etc/rtbackup")))
        assert.are.equal(0, code, r)
        assert.matches("0 errors", r, 1, true)
        -- and uses the packaged scripts (found from the binary's own place)
        r = sh(string.format("echo 'print(require(\"rtbackup.host\").info().scripts_dir)' | %s --config %s repl",
                             h.quote(root .. "/usr/bin/rtbackup"), h.quote(root .. "/etc/rtbackup")))
        assert.matches(root .. "/usr/bin/../share/rtbackup/scripts", r, 1, true)
    end)

    it("has no lintian errors or warnings", function()
        -- A new warning needs a fix, or an override with its reason in the package.
        local log, code = sh("lintian --fail-on error,warning " .. h.quote(deb))
        local problems = {}
        for line in log:gmatch("[^\n]+") do
            if line:match("^[EW]: ") then problems[#problems + 1] = line end
        end
        assert.are.same({}, problems)
        assert.are.equal(0, code, log)
    end)
end)
