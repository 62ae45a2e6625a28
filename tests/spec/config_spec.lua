-- `rtbackup config` and the environments as scripts see them.
local h = require "helpers"

local BROKEN = [[
[SITE]
description = "broken on purpose"
default_source = "NOPE"
default_backup = "MAIN"

[SITE.script_ae]
aet = "THIS_AE_TITLE_IS_TOO_LONG"

[SITE.sources.ARIA]
type = "aria"
aet = "ARIA"
ip = "10.0.0.1"
port = 70000

[SITE.sources.PACS]
type = "pacs"

[SITE.backup_targets.MAIN]
type = "orthanc"
aet = "MAIN"
ip = "10.0.0.2"
port = "4242"
]]

describe("rtbackup config check", function()
    it("passes on the shipped environments", function()
        local r = h.run{"--config", h.source .. "/environments", "config", "check"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("0 errors", r.stdout)
    end)

    it("lists every problem of a broken file at once and exits 2", function()
        local dir = h.tmpdir()
        local file = h.write_file(dir .. "/site.toml", BROKEN)
        local r = h.run{"--config", file, "config", "check"}
        os.execute("rm -rf " .. h.quote(dir))
        assert.are.equal(2, r.code, r.output)
        -- file:line: ENV: key: message, one line each
        assert.matches("site.toml:%d+: SITE: default_source: [^\n]*NOPE", r.stdout)
        assert.matches("site.toml:%d+: SITE: script_ae.aet: [^\n]*16", r.stdout)
        assert.matches("site.toml:%d+: SITE: sources.ARIA.port: [^\n]*70000", r.stdout)
        assert.matches("site.toml:%d+: SITE: sources.PACS.type: [^\n]*pacs", r.stdout)
        assert.matches("site.toml:%d+: SITE: backup_targets.MAIN.port: [^\n]*integer", r.stdout)
        local errors = tonumber(r.stdout:match("(%d+) errors"))
        assert.is_true(errors >= 5, r.stdout)
    end)

    -- Before, such a backup found everything "already present" and exited 0.
    it("refuses a source that is the archive it is backed up into; the same peer as a restore destination is fine", function()
        local dir = h.tmpdir()
        local function env(target_port, source_ip)
            return h.write_file(dir .. "/same.toml", string.format([[
[S]
description = "one peer twice"
default_source = "ARIA"
default_backup = "MAIN"
[S.script_ae]
aet = "RTB"
[S.sources.ARIA]
type = "aria"
aet = "ARIA"
ip = "%s"
port = 104
[S.backup_targets.MAIN]
type = "orthanc"
aet = "ARIA"
ip = "127.0.0.1"
port = %d
[S.backup_targets.BACK_TO_ARIA]
type = "dicom_scp"
aet = "ARIA"
ip = "127.0.0.1"
port = 104
]], source_ip or "127.0.0.1", target_port))
        end
        local r = h.run{"--config", env(104), "config", "check"}
        -- "localhost" is the same machine as "127.0.0.1"
        local by_name = h.run{"--config", env(104, "localhost"), "config", "check"}
        local fine = h.run{"--config", env(4242), "config", "check"}
        os.execute("rm -rf " .. h.quote(dir))
        assert.are.equal(2, r.code, r.output)
        assert.matches("same.toml:%d+: S: sources.ARIA: source ARIA is the archive it is backed up into " ..
                       "%(default_backup MAIN, ARIA@127.0.0.1:104%)", r.stdout)
        assert.are.equal(2, by_name.code, by_name.output)
        assert.matches("source ARIA is the archive it is backed up into", by_name.stdout, 1, true)
        assert.are.equal(0, fine.code, fine.output)
    end)

    it("refuses an archive http_url that is not an http(s) URL", function()
        local dir = h.tmpdir()
        local function env(url)
            return h.write_file(dir .. "/url.toml", string.format([[
[U]
description = "url"
default_backup = "MAIN"
[U.script_ae]
aet = "RTB"
[U.backup_targets.MAIN]
type = "orthanc"
aet = "MAIN"
ip = "10.0.0.2"
port = 4242
http_url = "%s"
]], url))
        end
        local bad = h.run{"--config", env("htp://10.0.0.2:8042"), "config", "check"}
        local good = h.run{"--config", env("https://user:pw@archive.example:8042/orthanc"), "config", "check"}
        os.execute("rm -rf " .. h.quote(dir))
        assert.are.equal(2, bad.code, bad.output)
        assert.matches('url.toml:%d+: U: backup_targets.MAIN.http_url: "htp://10.0.0.2:8042" is not an http:// or ' ..
                       'https:// URL with a host', bad.stdout)
        assert.are.equal(0, good.code, good.output)
    end)

    it("reports a TOML syntax error with file and line", function()
        local dir = h.tmpdir()
        local file = h.write_file(dir .. "/bad.toml", "[A]\ndescription = \"x\"\nport = = 3\n")
        local r = h.run{"--config", file, "config", "check"}
        os.execute("rm -rf " .. h.quote(dir))
        assert.are.equal(2, r.code)
        assert.matches("bad.toml:3", r.stdout)
    end)

    it("reports an environment defined in two files", function()
        local dir = h.tmpdir()
        h.write_file(dir .. "/a.toml", "[DUP]\ndescription = \"one\"\n")
        h.write_file(dir .. "/b.toml", "[DUP]\ndescription = \"two\"\n")
        local r = h.run{"--config", dir, "config", "check"}
        os.execute("rm -rf " .. h.quote(dir))
        assert.are.equal(2, r.code)
        assert.matches("DUP", r.stdout)
        assert.matches("a.toml", r.stdout)
        assert.matches("b.toml", r.stdout)
    end)

    it("names the missing variable when checking one environment's secrets", function()
        local r = h.run({"--config", h.source .. "/environments", "config", "check", "UCLA"},
                        {env = {UCLA_MOSAIQ_DB_PASSWORD = ""}})
        -- set but empty counts as set
        assert.are.equal(0, r.code, r.output)
        r = h.run{"--config", h.source .. "/environments", "config", "check", "TJU"}
        assert.are.equal(2, r.code)
        assert.matches("TJU_MOSAIQ_DB_PASSWORD", r.stdout)
    end)
end)

describe("rtbackup config show", function()
    it("prints the environment with the secret masked", function()
        local r = h.run({"--config", h.source .. "/environments", "config", "show", "UCLA"},
                        {env = {UCLA_MOSAIQ_DB_PASSWORD = "s3cr3t-UCLA-value"}})
        assert.are.equal(0, r.code, r.output)
        assert.matches("%[UCLA%.sources%.", r.stdout)
        assert.matches('db_password = "%*%*%*%*%*%*%*%*"', r.stdout)
        assert.is_nil(r.output:find("s3cr3t-UCLA-value", 1, true))
        -- and the text is TOML again (Python's tomllib reads it)
        local path = h.write_file(h.tmpdir() .. "/shown.toml", r.stdout)
        assert.is_true(os.execute("python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], \"rb\"))' " ..
                                  h.quote(path)))
    end)

    it("is a config error (exit 2) for an undefined environment", function()
        local r = h.run{"--config", h.source .. "/environments", "config", "show", "MARS"}
        assert.are.equal(2, r.code)
        assert.matches("MARS is not defined", r.stderr)
    end)

    it("does not need another environment's secrets", function()
        -- TJU's password is not set; UCLA still loads.
        local r = h.run({"--config", h.source .. "/environments", "config", "show", "UCLA"},
                        {env = {UCLA_MOSAIQ_DB_PASSWORD = "x"}})
        assert.are.equal(0, r.code, r.output)
    end)
end)
