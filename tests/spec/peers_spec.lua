-- requires: testbed
-- `rtbackup config peers ENV` prints what each peer must be told. Proved end to end on
-- the testbed: an environment whose calling AE title Orthanc "main" does not know fails
-- `health --deep` at the archive; running the curl commands `config peers` printed for
-- that Orthanc (its http_url) makes the same check pass. The modalities it adds have
-- names of this spec's own and are removed afterwards.
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local dir = h.tmpdir()
local config = h.write_file(dir .. "/peers.toml", h.env_toml(tb, "PT", {
    description = "config peers spec", default_source = "PEERSRC", default_backup = "PEERSMAIN",
    script_ae = {aet = "PEERS_SCU", port = tb.TEST_SCP_PORT},
    sources = {{alias = "PEERSRC", type = "aria", peer = "ARIA"},
               {alias = "MOSAIQ", type = "mosaiq", odbc_driver = "SQLite3", db_server = "localhost",
                db_database = dir .. "/none.db", db_username = "peers",
                db_password_env_var = "PEERS_SPEC_UNSET_PASSWORD", staging_target_alias = "PEERSSTAGE"}},
    targets = {{alias = "PEERSMAIN", type = "orthanc", peer = "MAIN", http_url = tb.MAIN_HTTP_URL},
               {alias = "PEERSSTAGE", type = "dicom_scp", aet = "PEERS_STAGE", ip = tb.HOST, port = tb.CLOSED_PORT}},
    settings = {state_dir = dir .. "/state"}}))

local main = h.orthanc(tb.MAIN_HTTP_URL)

teardown(function()
    for _, name in ipairs{"peersrc", "peersstage", "rtbackup"} do
        if name ~= "rtbackup" then main:delete("/modalities/" .. name) end
    end
    main:delete("/modalities/rtbackup")
    os.execute("rm -rf " .. h.quote(dir))
end)

local function peers(args)
    local full = {"--config", config, "config", "peers", "PT"}
    for _, a in ipairs(args or {}) do full[#full + 1] = a end
    return h.run(full)
end

describe("config peers", function()
    it("tells ARIA/MIM our AE title (query, move) and the archive's AE as the move destination, without secrets", function()
        local r = peers({"--host", "127.0.0.1"})
        assert.are.equal(0, r.code, r.output)
        local aria = r.stdout:match("## PEERSRC.-\n\n") or r.stdout:match("## PEERSRC.*")
        assert.matches("PEERS_SCU%s+127%.0%.0%.1%s+" .. tb.TEST_SCP_PORT .. "%s+C%-ECHO, C%-FIND, C%-MOVE", aria)
        assert.matches(tb.MAIN_AET .. "%s+127%.0%.0%.1%s+" .. tb.MAIN_PORT .. "%s+C%-STORE: the C%-MOVE destination", aria)
        assert.matches("never a C%-MOVE destination of a backup", r.stdout)
    end)

    it("gives Orthanc DicomModalities entries as JSON: the sources and staging may store, we may do everything", function()
        local r = peers({"--format", "json", "--host", "127.0.0.1"})
        assert.are.equal(0, r.code, r.output)
        local doc = cjson.decode(r.stdout)
        local archive
        for _, p in ipairs(doc.peers) do if p.alias == "PEERSMAIN" then archive = p end end
        local m = archive.DicomModalities
        assert.are.same({AET = tb.ARIA_AET, Host = tb.HOST, Port = tonumber(tb.ARIA_PORT), AllowEcho = true,
                         AllowFind = false, AllowMove = false, AllowGet = false, AllowStore = true}, m.peersrc)
        assert.are.equal("PEERS_STAGE", m.peersstage.AET)
        assert.is_true(m.peersstage.AllowStore)
        assert.are.same({AET = "PEERS_SCU", Host = "127.0.0.1", Port = tonumber(tb.TEST_SCP_PORT), AllowEcho = true,
                         AllowFind = true, AllowMove = true, AllowGet = true, AllowStore = true}, m.rtbackup)
    end)

    it("prints curl commands for an Orthanc with http_url that make a failing health --deep pass", function()
        local function deep()
            local r = h.run({"--config", config, "health", "PT", "--deep", "--format", "json"},
                            {env = {PEERS_SPEC_UNSET_PASSWORD = "unused"}})
            local by = {}
            for _, c in ipairs(cjson.decode(r.stdout).checks) do by[c.check .. " " .. c.target] = c end
            return by
        end
        main:delete("/modalities/rtbackup")
        assert.are.equal("failed", deep()["c-find PEERSMAIN"].status)

        local r = peers({"--host", tb.HOST})
        assert.are.equal(0, r.code, r.output)
        local ran = 0
        for line in r.stdout:gmatch("[^\n]+") do
            local cmd = line:match("^%s*(curl %-X PUT .*)$")
            if cmd then
                assert.is_true(os.execute(cmd .. " -s -o /dev/null"), cmd)
                ran = ran + 1
            end
        end
        assert.are.equal(3, ran, r.stdout)
        local by = deep()
        assert.are.equal("ok", by["c-find PEERSMAIN"].status, by["c-find PEERSMAIN"].detail)
        assert.are.equal("ok", by["c-move PEERSRC->PEERSMAIN"].status)
    end)

    it("says which environments exist when the name is wrong", function()
        local r = h.run({"--config", config, "config", "peers", "NOPE"})
        assert.are.equal(2, r.code)
        assert.matches("no environment NOPE", r.stderr)
    end)
end)
