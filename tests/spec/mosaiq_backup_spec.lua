-- requires: testbed
-- The staged Mosaiq backup against the testbed: a synthetic Mosaiq on SQLite (through
-- its ODBC driver), Orthanc "staging" as the staging SCP, Orthanc "main" as the archive.
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local main, staging = h.orthanc(tb.MAIN_HTTP_URL), h.orthanc(tb.STAGING_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local DAYS = {"--since", "2026-11-02", "--until", "2026-11-06"}

local function write_env(staging_port, main_aet)
    h.write_file(dir .. "/mq.toml", string.format([[
[MQ]
description = "Mosaiq on the testbed"
default_source = "MOSAIQ"
default_backup = "MAIN"
script_ae = { aet = "%s", port = %s }
[MQ.sources.MOSAIQ]
type = "mosaiq"
odbc_driver = "SQLite3"
db_server = "localhost"
db_database = "%s/mosaiq.db"
db_username = "test"
db_password = ""
staging_target_alias = "STAGING"
[MQ.backup_targets.MAIN]
type = "orthanc"
aet = "%s"
ip = "%s"
port = %s
[MQ.backup_targets.STAGING]
type = "dicom_scp"
aet = "%s"
ip = "%s"
port = %s
[MQ.settings]
state_dir = "%s"
]], tb.SCU_AET, tb.TEST_SCP_PORT, dir, main_aet or tb.MAIN_AET, tb.HOST, tb.MAIN_PORT,
    tb.STAGING_AET, tb.HOST, staging_port or tb.STAGING_PORT, state))
end

local function rtb(args)
    local full = {"--config", dir .. "/mq.toml"}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full)
end
local function backup()
    local r = rtb{"backup", "MQ", table.unpack(DAYS)}
    local f = io.open(state .. "/MQ-MOSAIQ-last-run.json")
    r.summary = f and cjson.decode(f:read("a")) or {}
    if f then f:close() end
    return r
end
local function records_in(orthanc)
    local n = 0
    for _, id in ipairs(orthanc:get("/series")) do
        local s = orthanc:get("/series/" .. id)
        if s.MainDicomTags.Modality == "RTRECORD" then n = n + #s.Instances end
    end
    return n
end

setup(function()
    write_env()
    local r = rtb{"mosaiq-db", "create", "MQ", "--patients", "6", "--from", "2026-11-02", "--days", "5",
                  "--leaf-encoding", "float32_mm"}
    assert.are.equal(0, r.code, r.output)
end)
before_each(function()
    main:wipe()
    staging:wipe()
    os.execute("rm -rf " .. h.quote(state))
    write_env()
end)
teardown(function()
    staging:wipe()
    os.execute("rm -rf " .. h.quote(dir))
end)

describe("the Mosaiq backup", function()
    it("builds the days' records, stages them, moves them to the archive and verifies them", function()
        local r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.is_true(r.summary.records_built > 0)
        assert.are.equal(r.summary.records_built, r.summary.verified)
        assert.are.equal(r.summary.records_built, records_in(main))
        assert.are.equal(r.summary.records_built, records_in(staging))

        -- a rerun sends nothing: the same records (same UIDs) were verified
        local again = backup()
        assert.are.equal(0, again.code, again.output)
        assert.are.equal(0, again.summary.moved)
        assert.are.equal(r.summary.records_built, again.summary.already_present)
        assert.are.equal(r.summary.records_built, records_in(main))
    end)

    it("exits 4 when staging is down, keeps the records queued, and the next run completes", function()
        write_env(tb.CLOSED_PORT)
        local r = backup()
        assert.are.equal(4, r.code, r.output)
        assert.are.equal(0, records_in(main))
        write_env()
        r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(r.summary.records_built, records_in(main))
    end)

    it("reports a failure when the archive's AE title is wrong (staging cannot send to it, it rejects us)", function()
        write_env(nil, "NOT_KNOWN") -- staging knows no such destination: the C-MOVE fails
        local r = backup()
        -- the move is refused, the verification's association rejected: the records stay
        -- queued for a run with the right configuration
        assert.are.equal(4, r.code, r.output)
        assert.matches("Called AE Title Not Recognized", r.stdout, 1, true)
        assert.are.equal(0, records_in(main))
        assert.is_true(#r.summary.errors > 0)
    end)

    it("writes the day's records as files with rtbackup rtrecord", function()
        local out = dir .. "/records"
        local r = rtb{"rtrecord", "MQ", "--date", "2026-11-03", "--out", out}
        assert.are.equal(0, r.code, r.output)
        local n = tonumber(r.stdout:match("(%d+) records written"))
        assert.is_true(n > 0)
        local p = io.popen("ls " .. h.quote(out) .. " | wc -l")
        assert.are.equal(n, tonumber(p:read("l")))
        p:close()
    end)
end)
