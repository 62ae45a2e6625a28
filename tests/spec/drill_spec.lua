-- requires: testbed
-- Restore drills against the testbed: ARIA (dcmqrscp) backed up into Orthanc "main",
-- then a sample restored from "main" into scratch space and compared with ARIA; one
-- instance corrupted in "main" (its bytes changed and re-stored through Orthanc's REST
-- API, under the same SOP Instance UID) must be named. Mosaiq records are compared
-- with the records built again from the synthetic Mosaiq (SQLite).
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local main, staging = h.orthanc(tb.MAIN_HTTP_URL), h.orthanc(tb.STAGING_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local scratch = dir .. "/scratch"
local ALL = {"--since", "1900-01-01", "--until", "2100-01-01"}
local MOSAIQ_DAYS = {"--since", "2026-11-02", "--until", "2026-11-04"}

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local data = f:read("a")
    f:close()
    return data
end

local function write_env(extra)
    h.write_file(dir .. "/dr.toml", h.env_toml(tb, "DR", {
        default_source = "ARIA", default_backup = "MAIN",
        sources = {{alias = "ARIA", type = "aria", peer = "ARIA"},
                   {alias = "MOSAIQ", type = "mosaiq", odbc_driver = "SQLite3", db_server = "localhost",
                    db_database = dir .. "/mosaiq.db", db_username = "test", db_password = "",
                    staging_target_alias = "STAGING"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"},
                   {alias = "STAGING", type = "dicom_scp", peer = "STAGING"}},
        settings = {state_dir = state, drill_scratch_dir = scratch, audit_log = dir .. "/audit.jsonl",
                    retry_backoff_ms = 10},
        extra = extra}))
end

local function rtb(args)
    local full = {"--config", dir .. "/dr.toml"}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full)
end

local function drill(args)
    local full = {"drill", "DR"}
    for _, a in ipairs(args or {}) do full[#full + 1] = a end
    full[#full + 1] = "--format"
    full[#full + 1] = "json"
    local r = rtb(full)
    r.json = r.stdout:sub(1, 1) == "{" and cjson.decode(r.stdout) or nil
    return r
end

-- The Orthanc ID of ARIA's instances in "main", by SOP Instance UID.
local function main_instances()
    local by = {}
    for _, id in ipairs(main:get("/instances")) do
        by[main:get("/instances/" .. id .. "/simplified-tags").SOPInstanceUID] = id
    end
    return by
end

-- Replaces an instance in "main" with a copy whose content is changed (the last byte
-- of its pixel data; an RT record has none: a comment is added): the same SOP Instance
-- UID, so every C-FIND still finds it.
local CORRUPT = [[
import sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
if "PixelData" in ds:
    b = bytearray(ds.PixelData)
    b[-1] ^= 0xFF
    ds.PixelData = bytes(b)
else:
    ds.ImageComments = "changed in the archive"
ds.save_as(sys.argv[1])
]]
local function corrupt(orthanc_id)
    local file = dir .. "/corrupt.dcm"
    assert(os.execute(string.format("curl -sf -o %s %s", h.quote(file),
                                    h.quote(tb.MAIN_HTTP_URL .. "/instances/" .. orthanc_id .. "/file"))))
    assert(os.execute("/usr/bin/python3 -c " .. h.quote(CORRUPT) .. " " .. h.quote(file)))
    main:delete("/instances/" .. orthanc_id)
    local p = io.popen(string.format("curl -sf -X POST --data-binary @%s %s", h.quote(file),
                                     h.quote(tb.MAIN_HTTP_URL .. "/instances")))
    local answer = cjson.decode(p:read("a"))
    p:close()
    assert.are.equal("Success", answer.Status)
end

local function files_under(path)
    local p = io.popen("find " .. h.quote(path) .. " -mindepth 1 2>/dev/null")
    local list = {}
    for line in p:lines() do list[#list + 1] = line end
    p:close()
    return list
end

setup(function()
    write_env()
    local r = rtb{"mosaiq-db", "create", "DR", "--patients", "4", "--from", "2026-11-02", "--days", "3",
                  "--leaf-encoding", "float32_mm"}
    assert.are.equal(0, r.code, r.output)
end)
before_each(function()
    main:wipe()
    staging:wipe()
    os.execute("rm -rf " .. h.quote(state) .. " " .. h.quote(scratch) .. " " .. h.quote(dir .. "/audit.jsonl"))
    write_env()
end)
teardown(function()
    main:wipe()
    staging:wipe()
    os.execute("rm -rf " .. h.quote(dir))
end)

describe("rtbackup drill of a DICOM source", function()
    it("restores every sampled study, finds every instance equal, and leaves no file behind", function()
        local b = rtb{"backup", "DR", "ARIA", table.unpack(ALL)}
        assert.are.equal(0, b.code, b.output)
        local held = main:count()
        local audited_before = #(slurp(dir .. "/audit.jsonl") or ""):gsub("[^\n]", "")
        local r = drill{"ARIA", "--sample", "2", "--metrics-file", dir .. "/drill.prom"}
        assert.are.equal(0, r.code, r.output)
        local s = r.json
        assert.are.equal("drill", s.command)
        assert.are.equal("ok", s.status)
        assert.are.equal(2, #s.items)
        assert.are.equal(0, s.different)
        assert.are.equal(0, s.missing)
        local per_study = 0
        for _, item in ipairs(s.items) do
            assert.matches("^RTB%d%d%d$", item.patient)
            assert.are.equal(item.compared, item.equal)
            per_study = item.compared
        end
        assert.are.equal(2 * per_study, s.compared)
        assert.is_true(per_study >= tonumber(tb.SYNTH_CT_SLICES))
        -- nothing left in the scratch space, nothing moved anywhere
        assert.are.same({}, files_under(scratch))
        assert.are.equal(held, main:count())
        assert.are.equal(0, staging:count())
        -- recorded like a run: last-drill.json, the journal, metrics, the audit log
        local last = cjson.decode(slurp(state .. "/DR-ARIA-last-drill.json"))
        assert.are.equal(s.compared, last.compared)
        local prom = slurp(dir .. "/drill.prom")
        assert.matches('rtbackup_drill_instances_compared{env="DR",source="ARIA",command="drill"} ' .. math.tointeger(s.compared), prom)
        assert.matches('rtbackup_last_run_exit_code{env="DR",source="ARIA",command="drill"} 0', prom)
        -- the drill's audit lines: retrievals only, each naming its patient
        local n, gets = 0, 0
        for line in io.lines(dir .. "/audit.jsonl") do
            n = n + 1
            if n > audited_before then
                local e = cjson.decode(line)
                assert.are.equal("c-get", e.op, line)
                assert.matches("^RTB%d%d%d$", e.patient_id)
                gets = gets + 1
            end
        end
        assert.is_true(gets >= 4) -- archive and source, for each series of two studies
        local st = cjson.decode(rtb{"status", "DR", "ARIA", "--since", "2026-01-01", "--format", "json"}.stdout)
        assert.are.equal(s.compared, st.sources[1].last_drill.compared)
        assert.are.equal("drill", st.sources[1].runs[1].command)
    end)

    it("names the one instance whose bytes changed in the archive, and exits 1", function()
        assert.are.equal(0, rtb{"backup", "DR", "ARIA", table.unpack(ALL)}.code)
        -- one CT slice of RTB002
        local target
        for uid, id in pairs(main_instances()) do
            local t = main:get("/instances/" .. id .. "/simplified-tags")
            if t.PatientID == "RTB002" and t.Modality == "CT" then target = {uid = uid, id = id, study = t.StudyInstanceUID} end
        end
        corrupt(target.id)
        local r = drill{"ARIA", "--study", target.study}
        assert.are.equal(1, r.code, r.output)
        local s = r.json
        assert.are.equal(1, s.different)
        assert.are.equal(0, s.missing)
        assert.are.equal(s.compared - 1, s.equal)
        assert.are.equal(1, #s.mismatches)
        assert.are.equal("different", s.mismatches[1].problem)
        assert.are.equal(target.uid, s.mismatches[1].sop_instance_uid)
        assert.are.equal("RTB002", s.mismatches[1].patient)
        assert.are.same({}, files_under(scratch))
        -- the text for people says it plainly
        local t = rtb{"drill", "DR", "ARIA", "--study", target.study}
        assert.are.equal(1, t.code)
        assert.matches("different: RTB002 [%d.]+ series [%d.]+ instance " .. target.uid:gsub("%.", "%%."), t.stdout)
        assert.matches("THE BACKUP DIFFERS FROM THE SOURCE", t.stdout)
    end)

    it("names an instance the archive lost as missing", function()
        assert.are.equal(0, rtb{"backup", "DR", "ARIA", table.unpack(ALL)}.code)
        local lost
        for uid, id in pairs(main_instances()) do
            local t = main:get("/instances/" .. id .. "/simplified-tags")
            if t.PatientID == "RTB001" and t.Modality == "RTPLAN" then
                lost = {uid = uid, study = t.StudyInstanceUID}
                main:delete("/instances/" .. id)
            end
        end
        local r = drill{"ARIA", "--study", lost.study}
        assert.are.equal(1, r.code, r.output)
        assert.are.equal(1, r.json.missing)
        assert.are.equal(lost.uid, r.json.mismatches[1].sop_instance_uid)
        assert.are.equal("missing", r.json.mismatches[1].problem)
    end)

    it("names the peer it could not reach, and exits 4", function()
        assert.are.equal(0, rtb{"backup", "DR", "ARIA", table.unpack(ALL)}.code)
        -- The archive moves to a closed port.
        local text = slurp(dir .. "/dr.toml"):gsub("port = " .. tb.MAIN_PORT, "port = " .. tb.CLOSED_PORT, 1)
        h.write_file(dir .. "/dr.toml", text)
        local r = rtb{"drill", "DR", "ARIA"}
        assert.are.equal(4, r.code, r.output)
        assert.matches("stopped while [%a ]+: MAIN %(" .. tb.MAIN_AET .. "@" .. tb.HOST:gsub("%.", "%%.") .. ":" ..
                       tb.CLOSED_PORT .. "%): cannot open association", r.stdout)
    end)

    it("exits 1 when nothing is verified yet, 2 for an unknown source, and alerts a mismatch", function()
        local r = drill{"ARIA"}
        assert.are.equal(1, r.code, r.output)
        assert.matches("back up ARIA first", r.json.error.message)
        assert.are.equal(2, rtb{"drill", "DR", "NOPE"}.code)
        assert.are.equal(2, rtb{"drill", "DR", "--sample", "0"}.code)

        assert.are.equal(0, rtb{"backup", "DR", "ARIA", table.unpack(ALL)}.code)
        local _, id = next(main_instances())
        local study = main:get("/instances/" .. id .. "/simplified-tags").StudyInstanceUID
        corrupt(id)
        h.write_file(dir .. "/alert.sh", 'cat > "$1"\n')
        write_env(string.format('alert_command = "sh %s/alert.sh %s/alert.json"', dir, dir))
        assert.are.equal(1, drill{"ARIA", "--study", study}.code)
        local alert = cjson.decode(slurp(dir .. "/alert.json"))
        assert.are.equal("drill_mismatch", alert.alert.reason)
        assert.matches("MISMATCH: 1 different, 0 missing", alert.text)
    end)
end)

describe("rtbackup drill of Mosaiq", function()
    it("compares archived records with the records built again from Mosaiq", function()
        local b = rtb{"backup", "DR", "MOSAIQ", table.unpack(MOSAIQ_DAYS)}
        assert.are.equal(0, b.code, b.output)
        local r = drill{"MOSAIQ", "--sample", "3"}
        assert.are.equal(0, r.code, r.output)
        assert.are.equal("records", r.json.unit)
        assert.are.equal(3, #r.json.items)
        assert.are.equal(3, r.json.compared)
        assert.are.equal(3, r.json.equal)

        -- a record changed in the archive is named
        local record = r.json.items[1].uid -- items name the record's identity and the UID archived
        local found = main:lookup(record)
        corrupt(found[1].ID)
        local again = rtb{"drill", "DR", "MOSAIQ", "--study", r.json.items[1].study, "--format", "json"}
        assert.are.equal(1, again.code, again.output)
        local s = cjson.decode(again.stdout)
        assert.are.equal(1, s.different)
        assert.are.equal(record, s.mismatches[1].sop_instance_uid)
        assert.are.same({}, files_under(scratch))
    end)
end)

describe("deploy/systemd/rtbackup-drill@", function()
    it("passes systemd-analyze verify and security, and runs `drill ENV --all` weekly", function()
        local have = os.execute("command -v systemd-analyze >/dev/null")
        if not have then return pending("systemd-analyze is not installed (Debian package systemd)") end
        local tmp = h.tmpdir()
        for _, u in ipairs{"rtbackup-drill@.service", "rtbackup-drill@.timer"} do
            local text = slurp(h.source .. "/deploy/systemd/" .. u):gsub("/usr/local/bin/rtbackup", h.bin)
            h.write_file(tmp .. "/" .. u:gsub("@", "@DEMO"), text)
        end
        local p = io.popen("cd " .. h.quote(tmp) .. " && systemd-analyze verify rtbackup-drill@DEMO.service " ..
                           "rtbackup-drill@DEMO.timer 2>&1 && systemd-analyze security --offline=true --threshold=25 " ..
                           "rtbackup-drill@DEMO.service >/dev/null 2>&1 && echo secure")
        local out = p:read("a")
        p:close()
        os.execute("rm -rf " .. h.quote(tmp))
        assert.are.equal("secure\n", out)
        local service = slurp(h.source .. "/deploy/systemd/rtbackup-drill@.service")
        assert.matches("\nExecStart=/usr/local/bin/rtbackup [^\n]* drill %%i %-%-all ", service)
        assert.matches("\nOnCalendar=Sun ", slurp(h.source .. "/deploy/systemd/rtbackup-drill@.timer"))
    end)
end)
