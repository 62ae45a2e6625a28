-- requires: testbed
-- `rtbackup health ENV --deep` against real peers: the testbed's dcmqrscp "ARIA" and
-- Orthanc "staging" as sources, Orthanc "main" as the archive. The failures a first
-- day at a site meets are made for real: a dcmqrscp of this spec's own whose host
-- table lacks the archive (NODEST: a wrong or missing move destination), the same
-- dcmqrscp refusing our calling AE title (STRICT), and Orthanc refusing an AE title it
-- does not know (C-FIND refused at the source and at the archive). Every failure must
-- name the side whose configuration to fix.
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local dir = h.tmpdir()
local qr_port, dead_port = h.free_port(), h.free_port()
local qr_pid, dead_pid

local function write_env(name, fields)
    return h.write_file(dir .. "/" .. name .. ".toml", h.env_toml(tb, "TB", {
        description = "testbed", default_source = "SRC", default_backup = "MAIN",
        script_ae = {aet = fields.calling or tb.SCU_AET, port = tb.TEST_SCP_PORT},
        sources = {{alias = "SRC", type = "aria", aet = fields.aet, ip = tb.HOST, port = fields.port}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
        settings = {state_dir = dir .. "/state"}}))
end

local function deep(config)
    local r = h.run({"--config", config, "health", "TB", "--deep", "--format", "json", "--timeout", "10"})
    local ok, doc = pcall(cjson.decode, r.stdout)
    assert.is_true(ok, "not JSON:\n" .. r.output)
    local by = {}
    for _, c in ipairs(doc.checks) do by[c.check .. " " .. c.target] = c end
    return r, by
end

setup(function()
    -- Two AEs in one dcmqrscp, each over a copy of ARIA's storage (with its index).
    for _, name in ipairs{"nodest", "strict"} do
        assert.is_true(os.execute(string.format("cp -r %s %s", h.quote(tb.RTB_TESTBED_DIR .. "/aria/storage"),
                                                h.quote(dir .. "/" .. name))))
    end
    h.write_file(dir .. "/qr.cfg", string.format([[
NetworkTCPPort  = %d
MaxPDUSize      = 116794
MaxAssociations = 16
HostTable BEGIN
other = (SOMEONE_ELSE, 127.0.0.1, 1)
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
NODEST  %s/nodest  R (500, 1024mb) ANY
STRICT  %s/strict  R (500, 1024mb) other
AETable END
]], qr_port, dir, dir))
    -- A third AE in a dcmqrscp of its own, whose host table sends ORTHANC_MAIN's stores
    -- to a closed port: it answers the C-MOVE 0xA702 (its stores to the destination failed).
    assert.is_true(os.execute(string.format("cp -r %s %s", h.quote(tb.RTB_TESTBED_DIR .. "/aria/storage"),
                                            h.quote(dir .. "/deaddest"))))
    h.write_file(dir .. "/dead.cfg", string.format([[
NetworkTCPPort  = %d
MaxPDUSize      = 116794
MaxAssociations = 16
HostTable BEGIN
main = (%s, 127.0.0.1, %s)
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
DEADDEST  %s/deaddest  R (500, 1024mb) ANY
AETable END
]], dead_port, tb.MAIN_AET, tb.CLOSED_PORT, dir))
    local function start(cfg)
        local p = io.popen(string.format("TCP_NODELAY=1 dcmqrscp -c %s >%s 2>&1 & echo $!", h.quote(dir .. "/" .. cfg),
                                         h.quote(dir .. "/" .. cfg .. ".log")))
        local pid = p:read("l")
        p:close()
        return pid
    end
    qr_pid, dead_pid = start("qr.cfg"), start("dead.cfg")
    for _ = 1, 100 do
        if os.execute(string.format("echoscu -to 2 -aet PROBE -aec NODEST %s %d >/dev/null 2>&1", tb.HOST, qr_port))
           and os.execute(string.format("echoscu -to 2 -aet PROBE -aec DEADDEST %s %d >/dev/null 2>&1", tb.HOST,
                                        dead_port)) then
            return
        end
        os.execute("sleep 0.1")
    end
    error("the spec's dcmqrscp did not start")
end)

teardown(function()
    for _, pid in ipairs{qr_pid or "", dead_pid or ""} do
        if pid ~= "" then os.execute("kill " .. pid .. " 2>/dev/null") end
    end
    os.execute("rm -rf " .. h.quote(dir))
end)

describe("health --deep", function()
    it("passes when the source queries, moves one instance into the archive and the archive queries", function()
        local r, by = deep(write_env("good", {aet = tb.ARIA_AET, port = tb.ARIA_PORT}))
        assert.are.equal(0, r.code, r.output)
        assert.are.equal("ok", by["c-find SRC"].status)
        assert.are.equal("ok", by["c-move SRC->MAIN"].status)
        assert.matches("C%-MOVE of one instance to ORTHANC_MAIN: sent.*seen in the archive", by["c-move SRC->MAIN"].detail)
        assert.are.equal("ok", by["c-find MAIN"].status)
    end)

    it("sends again an instance the archive already holds, so a second probe changes nothing", function()
        local config = write_env("good", {aet = tb.ARIA_AET, port = tb.ARIA_PORT})
        deep(config)
        local main = h.orthanc(tb.MAIN_HTTP_URL)
        local before = main:count()
        local r, by = deep(config)
        assert.are.equal(0, r.code, r.output)
        assert.matches("sent again %(the archive already held it%)", by["c-move SRC->MAIN"].detail)
        assert.are.equal(before, main:count())
    end)

    it("names the source's configuration when it does not know the archive as a move destination (0xA801)", function()
        local r, by = deep(write_env("nodest", {aet = "NODEST", port = qr_port}))
        assert.are.equal(1, r.code, r.output)
        local c = by["c-move SRC->MAIN"]
        assert.are.equal("failed", c.status)
        assert.are.equal("SRC", c.fix)
        assert.matches("SRC does not know the move destination ORTHANC_MAIN: on SRC, add ORTHANC_MAIN at " ..
                       tb.HOST:gsub("%.", "%%.") .. " port " .. tb.MAIN_PORT, c.detail)
        assert.matches("rtbackup config peers TB", c.detail)
        assert.matches("0xA801", c.detail)
        local _, n = c.detail:gsub("0xA801", "")
        assert.are.equal(1, n, "the status is named once: " .. c.detail)
        assert.are.equal("ok", by["c-find SRC"].status)
    end)

    it("names both places when the source could not store at the archive (0xA702), never our AE title", function()
        local r, by = deep(write_env("deaddest", {aet = "DEADDEST", port = dead_port}))
        assert.are.equal(1, r.code, r.output)
        local c = by["c-move SRC->MAIN"]
        assert.are.equal("failed", c.status)
        assert.matches("SRC could not send an instance to ORTHANC_MAIN: on SRC, check that ORTHANC_MAIN is a known " ..
                       "destination", c.detail)
        assert.matches("on MAIN, that it accepts stores from DEADDEST", c.detail, 1, true)
        assert.matches("0xA702", c.detail, 1, true)
        assert.is_nil(c.detail:find("our AE title", 1, true), c.detail)
    end)

    it("names the source's configuration when it refuses our calling AE title", function()
        local r, by = deep(write_env("strict", {aet = "STRICT", port = qr_port}))
        assert.are.equal(1, r.code, r.output)
        local c = by["c-find SRC"]
        assert.are.equal("failed", c.status)
        assert.matches("it does not accept our AE title " .. tb.SCU_AET .. " %(on SRC, add it", c.detail)
        assert.are.equal("skipped", by["c-move SRC->MAIN"].status)
    end)

    it("names the archive's configuration when it refuses C-FIND from our AE title, and the source's when it does", function()
        -- Orthanc knows no STRANGER: it accepts C-ECHO from anyone and aborts the C-FIND.
        local r, by = deep(write_env("stranger", {aet = tb.STAGING_AET, port = tb.STAGING_PORT, calling = "STRANGER"}))
        assert.are.equal(1, r.code, r.output)
        assert.are.equal("ok", by["c-echo SRC"].status)
        assert.are.equal("MAIN", by["c-find MAIN"].fix)
        assert.matches("MAIN refuses C%-FIND from our AE title STRANGER: on MAIN, add STRANGER as a DICOM node allowed to query",
                       by["c-find MAIN"].detail)
        assert.are.equal("SRC", by["c-find SRC"].fix)
        assert.matches("SRC refuses C%-FIND from our AE title STRANGER", by["c-find SRC"].detail)
    end)

    it("moves and says it could not verify when only the archive refuses our AE title", function()
        -- dcmqrscp ARIA serves ANY calling AE; Orthanc main does not know STRANGER.
        local r, by = deep(write_env("aria-stranger", {aet = tb.ARIA_AET, port = tb.ARIA_PORT, calling = "STRANGER"}))
        assert.are.equal(1, r.code, r.output)
        assert.are.equal("ok", by["c-find SRC"].status)
        assert.matches("not verified %(the archive refuses C%-FIND%)", by["c-move SRC->MAIN"].detail)
        assert.are.equal("failed", by["c-find MAIN"].status)
    end)

    it("checks that a Mosaiq source's staging can move into the archive", function()
        local staging = h.orthanc(tb.STAGING_HTTP_URL)
        staging:wipe()
        local dicom = require "rtbackup.dicom"
        local stage = dicom.peer{aet = tb.STAGING_AET, host = tb.HOST, port = tonumber(tb.STAGING_PORT),
                                 calling_aet = tb.SCU_AET}
        assert.are.equal(1, stage:store{dicom.dataset{SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.4",
            SOPInstanceUID = dicom.uid(), StudyInstanceUID = dicom.uid(), SeriesInstanceUID = dicom.uid(),
            PatientID = "RTBHD1", Modality = "RTRECORD"}}.stored)
        h.write_file(dir .. "/mq.db", "")
        local config = h.write_file(dir .. "/mq.toml", h.env_toml(tb, "TB", {
            description = "testbed", default_source = "MQ", default_backup = "MAIN",
            script_ae = {aet = tb.SCU_AET, port = tb.TEST_SCP_PORT},
            sources = {{alias = "MQ", type = "mosaiq", odbc_driver = "SQLite3", db_server = "localhost",
                        db_database = dir .. "/mq.db", db_username = "t", db_password = "",
                        staging_target_alias = "STAGING"}},
            targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"},
                       {alias = "STAGING", type = "orthanc", peer = "STAGING"}},
            settings = {state_dir = dir .. "/state"}}))
        local r, by = deep(config)
        assert.are.equal("ok", by["c-move STAGING->MAIN"].status, r.output)
        -- staging no longer knows the archive: named
        local modalities = staging:get("/modalities?expand")
        staging:delete("/modalities/main")
        local ok, err = pcall(function()
            r, by = deep(config)
            assert.are.equal(1, r.code, r.output)
            assert.are.equal("failed", by["c-move STAGING->MAIN"].status)
            assert.matches("STAGING could not send an instance to " .. tb.MAIN_AET, by["c-move STAGING->MAIN"].detail,
                           1, true)
        end)
        staging:put("/modalities/main", cjson.encode(modalities.main))
        staging:wipe()
        assert(ok, err)
    end)

    it("is not run without --deep", function()
        local r = h.run({"--config", write_env("good", {aet = tb.ARIA_AET, port = tb.ARIA_PORT}), "health", "TB",
                         "--format", "json"})
        assert.are.equal(0, r.code, r.output)
        assert.is_nil(r.stdout:find('"c-move"', 1, true))
    end)
end)
