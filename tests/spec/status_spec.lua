-- requires: testbed
-- rtbackup status: its numbers, per source and day, equal what Orthanc "main" holds
-- after real backups — of ODIL_QR (a Q/R SCP on another DICOM stack; made to drop the
-- RTDOSE instances, or capped by max_uids_per_run, for days that are not complete)
-- and of a synthetic Mosaiq on SQLite (records staged through Orthanc "staging").
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local main, staging = h.orthanc(tb.MAIN_HTTP_URL), h.orthanc(tb.STAGING_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local ALL = {"--since", "1900-01-01", "--until", "2100-01-01"}
local PER_STUDY = tonumber(tb.SYNTH_CT_SLICES) + 3 -- CT slices, structure set, plan, dose
local MOSAIQ_DAYS = {"--since", "2026-11-02", "--until", "2026-11-06"}

local function quirks(q) h.write_file(tb.ODIL_QUIRKS, cjson.encode(q or {})) end

local function write_env(extra)
    h.write_file(dir .. "/st.toml", h.env_toml(tb, "ST", {
        default_source = "ODIL", default_backup = "MAIN",
        sources = {{alias = "ODIL", type = "mim", peer = "ODIL"},
                   {alias = "MOSAIQ", type = "mosaiq", odbc_driver = "SQLite3", db_server = "localhost",
                    db_database = dir .. "/mosaiq.db", db_username = "test", db_password = "",
                    staging_target_alias = "STAGING"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"},
                   {alias = "STAGING", type = "dicom_scp", peer = "STAGING"}},
        settings = {state_dir = state, retry_backoff_ms = 10, max_retries = 1}, extra = extra}))
end

local function rtb(args)
    local full = {"--config", dir .. "/st.toml"}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full)
end

local function status(extra)
    local args = {"status", "ST", "--format", "json"}
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local r = rtb(args)
    assert(r.stdout:sub(1, 1) == "{", r.output)
    r.json = cjson.decode(r.stdout)
    r.source = {}
    for _, s in ipairs(r.json.sources) do r.source[s.alias] = s end
    return r
end

local function by_day(src)
    local t = {}
    for _, d in ipairs(src.days) do t[d.day] = d end
    return t
end

-- What Orthanc holds of ODIL's patients, per study date: {["2026-01-17"] = n}.
local function orthanc_odil_days()
    local days = {}
    for _, id in ipairs(main:get("/studies")) do
        local s = main:get("/studies/" .. id)
        if s.PatientMainDicomTags.PatientID:match("^RTB1%d%d$") then
            local d = s.MainDicomTags.StudyDate
            local day = d:sub(1, 4) .. "-" .. d:sub(5, 6) .. "-" .. d:sub(7, 8)
            days[day] = (days[day] or 0) + #main:get("/studies/" .. id .. "/instances")
        end
    end
    return days
end

local function forget_odil_patients()
    for _, id in ipairs(main:get("/patients")) do
        local p = main:get("/patients/" .. id)
        if p.MainDicomTags.PatientID:match("^RTB1%d%d$") then main:delete("/patients/" .. id) end
    end
end

setup(function()
    write_env()
    -- five patients: no HDR course (one comes with six), whose sessions a status would count as not built
    local r = rtb{"mosaiq-db", "create", "ST", "--patients", "5", "--from", "2026-11-02", "--days", "5",
                  "--leaf-encoding", "float32_mm"}
    assert.are.equal(0, r.code, r.output)
end)
before_each(function()
    forget_odil_patients()
    os.execute("rm -rf " .. h.quote(state))
    quirks()
    write_env()
end)
after_each(function() quirks(); forget_odil_patients() end)
teardown(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("rtbackup status of a DICOM source", function()
    it("says, day by day, what Orthanc holds: verified, failed (the dropped instances), nothing pending", function()
        quirks{drop = {modalities = {"RTDOSE"}}} -- each study's dose never arrives
        local b = rtb{"backup", "ST", "ODIL", table.unpack(ALL)}
        assert.are.equal(1, b.code, b.output)

        local r = status{"ODIL", "--since", "2026-01-01"}
        assert.are.equal(1, r.code, r.output) -- open failures
        local src = r.source.ODIL
        local held = orthanc_odil_days()
        local days = by_day(src)
        assert.are.equal(tonumber(tb.ODIL_PATIENTS), #src.days)
        for day, n in pairs(held) do
            local d = days[day]
            assert.is_table(d, "no status for " .. day)
            assert.are.equal(n, d.verified, day)
            assert.are.equal(PER_STUDY, d.known, day)
            assert.are.equal(PER_STUDY - n, d.failed, day)
            assert.are.equal(0, d.pending, day)
            assert.is_true(math.abs(n / PER_STUDY - d.coverage) < 1e-9)
        end
        assert.are.equal(tonumber(tb.ODIL_PATIENTS), src.totals.failed)
        -- each failure named, with its patient, day and last error
        assert.are.equal(tonumber(tb.ODIL_PATIENTS), #src.failures)
        for _, f in ipairs(src.failures) do
            assert.matches("^RTB1%d%d$", f.patient)
            assert.are.equal("RTDOSE", f.modality)
            assert.is_table(days[f.day])
            assert.matches("1 of 1 instances not in MAIN", f.last_error)
        end
        -- the run, as the summary says it
        assert.are.equal(1, #src.runs)
        assert.are.equal(1, src.runs[1].exit_code)
        assert.are.equal("partial", src.runs[1].status)
        assert.are.equal(tonumber(tb.ODIL_PATIENTS), src.runs[1].failed)

        -- the table for people says the same, and --hide-patient-ids hides them
        local t = rtb{"status", "ST", "ODIL", "--since", "2026-01-01", "--format", "table"}
        assert.matches("total%s+" .. 3 * PER_STUDY .. "%s+" .. 3 * (PER_STUDY - 1) .. "%s+3%s+0%s+92%.3%%", t.stdout)
        assert.matches("open failures %(3%)", t.stdout)
        assert.matches("RTB101", t.stdout)
        local hidden = status{"ODIL", "--since", "2026-01-01", "--hide-patient-ids"}
        assert.is_nil(hidden.stdout:find("RTB1", 1, true))
    end)

    it("counts what max_uids_per_run left for later as pending, and exits 0 with nothing failed", function()
        write_env("max_uids_per_run = " .. PER_STUDY) -- one study per run
        local b = rtb{"backup", "ST", "ODIL", table.unpack(ALL)}
        assert.are.equal(0, b.code, b.output)
        local r = status{"ODIL", "--since", "2026-01-01"}
        assert.are.equal(0, r.code, r.output)
        local held = orthanc_odil_days()
        local verified, pending = 0, 0
        for _, d in ipairs(r.source.ODIL.days) do
            assert.are.equal(held[d.day] or 0, d.verified, d.day)
            assert.are.equal(PER_STUDY, d.verified + d.pending)
            verified, pending = verified + d.verified, pending + d.pending
        end
        assert.are.equal(PER_STUDY, verified)
        assert.are.equal(2 * PER_STUDY, pending)
    end)

    it("--refresh counts on the peers what the journal cannot know: instances deleted from the archive", function()
        assert.are.equal(0, rtb{"backup", "ST", "ODIL", table.unpack(ALL)}.code)
        local ids = {}
        for _, id in ipairs(main:get("/instances")) do
            local t = main:get("/instances/" .. id .. "/simplified-tags")
            if t.PatientID == "RTB102" then ids[#ids + 1] = id end
        end
        main:delete("/instances/" .. ids[1])
        main:delete("/instances/" .. ids[2])
        local journal_view = status{"ODIL", "--since", "2026-01-01"}
        assert.are.equal(3 * PER_STUDY, journal_view.source.ODIL.totals.verified) -- the journal does not know
        local r = status{"ODIL", "--since", "2026-01-01", "--refresh"}
        assert.is_true(r.source.ODIL.refreshed)
        local held = orthanc_odil_days()
        for _, d in ipairs(r.source.ODIL.days) do
            assert.are.equal(held[d.day], d.verified, d.day)
            assert.are.equal(PER_STUDY, d.known)
        end
        assert.are.equal(3 * PER_STUDY - 2, r.source.ODIL.totals.verified)
        assert.are.equal(2, r.source.ODIL.totals.pending)
    end)

    it("--refresh with the archive down says so on stdout and exits 4", function()
        assert.are.equal(0, rtb{"backup", "ST", "ODIL", table.unpack(ALL)}.code)
        local text = h.read_file(dir .. "/st.toml")
        h.write_file(dir .. "/st.toml", (text:gsub("port = " .. tb.MAIN_PORT, "port = " .. tb.CLOSED_PORT, 1)))
        local r = rtb{"status", "ST", "ODIL", "--since", "2026-01-01", "--refresh"}
        write_env()
        assert.are.equal(4, r.code, r.output)
        assert.matches("status: could not count on the peers: " .. tb.MAIN_AET .. "@", r.stdout, 1, true)
        assert.matches("cannot open association", r.stdout, 1, true)
    end)

    it("keeps run_history_days of runs and lists them newest first", function()
        for _ = 1, 3 do assert.are.equal(0, rtb{"backup", "ST", "ODIL", table.unpack(ALL)}.code) end
        -- the second run (it moved nothing, no unit names it) started long ago
        local p = io.popen("/usr/bin/python3 -c " .. h.quote(
            "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\n" ..
            "db.execute(\"UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z' WHERE id = 2\")\ndb.commit()") ..
            " " .. h.quote(state .. "/ST.journal.sqlite") .. " 2>&1")
        local out = p:read("a")
        assert.is_true(p:close(), out)
        write_env("run_history_days = 30")
        assert.are.equal(0, rtb{"backup", "ST", "ODIL", table.unpack(ALL)}.code)
        local runs = status{"ODIL", "--since", "2026-01-01"}.source.ODIL.runs
        local ids = {}
        for i, run in ipairs(runs) do ids[i] = run.id end
        assert.are.same({4, 3, 1}, ids)
        assert.are.equal(3 * PER_STUDY, runs[#runs].moved)
        assert.are.equal(0, runs[1].moved)
    end)
end)

describe("rtbackup status of a damaged journal", function()
    it("shows what it can, and exits 2 with the way out", function()
        os.execute("mkdir -p " .. h.quote(state))
        h.write_file(state .. "/ST.journal.sqlite", string.rep("not a journal\n", 400))
        local r = rtb{"status", "ST", "--format", "json"}
        assert.are.equal(2, r.code, r.output)
        assert.matches("ST.journal.sqlite cannot be used", r.stderr, 1, true)
        assert.matches("mv ", r.stderr, 1, true)
        assert.are.equal("{", r.stdout:sub(1, 1), r.output) -- the page is still printed
    end)
end)

describe("rtbackup status of Mosaiq", function()
    it("counts records per treatment date as the archive holds them", function()
        main:wipe()
        staging:wipe()
        local b = rtb{"backup", "ST", "MOSAIQ", table.unpack(MOSAIQ_DAYS)}
        assert.are.equal(0, b.code, b.output)
        local records = 0
        for _, id in ipairs(main:get("/series")) do
            local s = main:get("/series/" .. id)
            if s.MainDicomTags.Modality == "RTRECORD" then records = records + #s.Instances end
        end
        assert.is_true(records > 0)
        local r = status{"MOSAIQ", table.unpack(MOSAIQ_DAYS)}
        local src = r.source.MOSAIQ
        assert.are.equal("records", src.unit)
        assert.are.equal(records, src.totals.verified)
        assert.are.equal(records, src.totals.known)
        assert.are.equal(5, #src.days)
        for _, d in ipairs(src.days) do assert.are.equal(1, d.coverage) end

        -- counted again from Mosaiq and the archive: the same
        local again = status{"MOSAIQ", "--refresh", table.unpack(MOSAIQ_DAYS)}.source.MOSAIQ
        assert.are.same(src.totals.verified, again.totals.verified)
        assert.are.same(src.totals.known, again.totals.known)
        for i, d in ipairs(again.days) do assert.are.equal(src.days[i].verified, d.verified) end
        main:wipe()
        staging:wipe()
    end)
end)

describe("rtbackup status without any run", function()
    it("shows empty sources and exits 0; an unknown source is a usage error", function()
        local r = status()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(0, #r.json.journals)
        assert.are.equal(2, #r.json.sources)
        assert.are.equal(2, rtb{"status", "ST", "NOPE"}.code)
        assert.are.equal(2, rtb{"status", "ST", "--days", "0"}.code)
    end)
end)
