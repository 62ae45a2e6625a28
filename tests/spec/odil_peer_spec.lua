-- requires: testbed
-- ODIL_QR, the testbed's Q/R SCP written on python3-odil (tests/testbed/odil_qr.py), a
-- DICOM stack that is not DCMTK: conformant C-FIND/C-MOVE into Orthanc main, and each
-- vendor quirk switched on in its quirks file (read at every association, no restart)
-- seen where it shows: on the wire (DCMTK's findscu/movescu print every response field),
-- in what rtbackup's find/move report, and in what Orthanc main holds.
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local main = h.orthanc(tb.MAIN_HTTP_URL)
local ODIL = {"--aet", tb.SCU_AET, "--aec", tb.ODIL_AET, "--host", tb.HOST, "--port", tb.ODIL_PORT}
local PATIENTS = tonumber(tb.ODIL_PATIENTS)
local SLICES = tonumber(tb.SYNTH_CT_SLICES)
local PER_STUDY = SLICES + 3 -- CT slices, RT Structure Set, Plan, Dose
local LOG = tb.RTB_TESTBED_DIR .. "/logs/odil.log"

local function quirks(q)
    h.write_file(tb.ODIL_QUIRKS, type(q) == "string" and q or cjson.encode(q))
end

--- rtbackup CMD ... against ODIL_QR with --format json; r.rows when it printed rows.
local function rtb(...)
    local args = {...}
    for _, a in ipairs(ODIL) do args[#args + 1] = a end
    args[#args + 1] = "--format"
    args[#args + 1] = "json"
    local r = h.run(args)
    if r.stdout:match("^%s*%[") then r.rows = cjson.decode(r.stdout) end
    return r
end

--- A DCMTK tool against ODIL_QR: its whole output (-v/-d print every response field).
local function dcmtk(tool, ...)
    local parts = {tool, "-aet", tb.SCU_AET, "-aec", tb.ODIL_AET}
    for _, a in ipairs{...} do parts[#parts + 1] = h.quote(a) end
    parts[#parts + 1] = tb.HOST
    parts[#parts + 1] = tb.ODIL_PORT
    local p = io.popen(table.concat(parts, " ") .. " 2>&1")
    local out = p:read("a")
    p:close()
    return out
end
-- findscu -v prints the request identifier first: only what follows is the answer.
local function findscu(...) return dcmtk("findscu", "-v", "-S", ...):match("Find Response.*$") or "" end
local function movescu(...) return dcmtk("movescu", "-d", "-S", "-aem", tb.MAIN_AET, ...) end

local function count(s, pattern)
    local n = 0
    for _ in s:gmatch(pattern) do n = n + 1 end
    return n
end

-- What Orthanc main holds of a study: SOPInstanceUID -> true, and how many.
local function in_main(study_uid)
    local set, n = {}, 0
    for _, s in ipairs(main:get("/studies?expand")) do
        if s.MainDicomTags.StudyInstanceUID == study_uid then
            for _, i in ipairs(main:get("/studies/" .. s.ID .. "/instances")) do
                set[i.MainDicomTags.SOPInstanceUID] = true
                n = n + 1
            end
        end
    end
    return set, n
end

-- ODIL_QR serves patients of its own (RTB101..); main forgets them before each test.
local odil_patient = {}
for k = 1, PATIENTS do odil_patient[string.format("RTB%03d", 100 + k)] = true end
local function forget_odil_patients()
    for _, p in ipairs(main:get("/patients?expand")) do
        if odil_patient[p.MainDicomTags.PatientID] then main:delete("/patients/" .. p.ID) end
    end
end

-- The first patient's study, its CT series and the CT instances, as ODIL_QR reports them.
local study, ct_series, dose_uid, ct = nil, nil, nil, {}
setup(function()
    quirks({})
    local r = rtb("find", "--query-level", "STUDY", "--patient-id", "RTB101")
    assert.are.equal(0, r.code, r.output)
    study = r.rows[1].StudyInstanceUID
    r = rtb("find", "--query-level", "SERIES", "--study-uid", study, "-k", "Modality=")
    assert.are.equal(0, r.code, r.output)
    for _, row in ipairs(r.rows) do if row.Modality == "CT" then ct_series = row.SeriesInstanceUID end end
    r = rtb("find", "--query-level", "IMAGE", "--study-uid", study, "--series-uid", ct_series)
    assert.are.equal(0, r.code, r.output)
    for _, row in ipairs(r.rows) do ct[#ct + 1] = row.SOPInstanceUID end
    table.sort(ct)
    r = rtb("find", "--query-level", "IMAGE", "--study-uid", study, "--modality", "RTDOSE")
    dose_uid = r.rows[1].SOPInstanceUID
end)
before_each(function()
    quirks({})
    forget_odil_patients()
end)
after_each(function() quirks({}) end)
teardown(function()
    quirks({})
    forget_odil_patients()
end)

describe("ODIL_QR without quirks", function()
    it("answers C-ECHO, and aborts an association called with another AE title", function()
        assert.are.equal(0, h.run{"echo", table.unpack(ODIL)}.code)
        local r = h.run{"echo", "--aet", tb.SCU_AET, "--aec", "NOT_ODIL", "--host", tb.HOST, "--port", tb.ODIL_PORT}
        assert.are.equal(1, r.code, r.output)
    end)

    it("finds studies with the requested keys and the computed counts", function()
        local r = rtb("find", "--query-level", "STUDY", "-k", "NumberOfStudyRelatedInstances=",
                      "-k", "NumberOfStudyRelatedSeries=", "-k", "ModalitiesInStudy=", "-k", "PatientID=RTB1*")
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(PATIENTS, #r.rows)
        for _, row in ipairs(r.rows) do
            assert.is_true(odil_patient[row.PatientID])
            assert.are.equal(PER_STUDY, tonumber(row.NumberOfStudyRelatedInstances))
            assert.are.equal(4, tonumber(row.NumberOfStudyRelatedSeries))
            assert.are.same({"CT", "RTDOSE", "RTPLAN", "RTSTRUCT"}, row.ModalitiesInStudy)
        end
    end)

    it("matches wildcards, date ranges and UID lists", function()
        local r = rtb("find", "--query-level", "STUDY", "-k", "PatientName=TEST^PATIENT1??", "-k", "StudyDate=")
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(PATIENTS, #r.rows)
        local date = r.rows[1].StudyDate
        r = rtb("find", "--query-level", "STUDY", "-k", "StudyDate=" .. date .. "-" .. date, "-k", "PatientID=RTB1*")
        assert.are.equal(0, r.code, r.output)
        assert.is_true(#r.rows >= 1)
        for _, row in ipairs(r.rows) do assert.are.equal(date, row.StudyDate) end
        r = rtb("find", "--query-level", "STUDY", "-k", "StudyDate=-19000101", "-k", "PatientID=RTB1*")
        assert.are.equal(0, #r.rows)
        r = rtb("find", "--query-level", "IMAGE", "--study-uid", study, "--series-uid", ct_series,
                "--sop-instance-uid", ct[1] .. "\\" .. ct[2])
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(2, #r.rows)
    end)

    it("answers Patient Root queries at PATIENT level", function()
        local out = dcmtk("findscu", "-v", "-P", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=RTB1*",
                          "-k", "NumberOfPatientRelatedInstances")
        assert.are.equal(PATIENTS, count(out, "%(0020,1204%) IS %[" .. PER_STUDY))
    end)

    it("moves a study into Orthanc main, with counts in every response", function()
        local r = rtb("move", "--study-uid", study, "--move-dest-aet", tb.MAIN_AET)
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(PER_STUDY, r.rows[1].completed)
        assert.are.equal(0, r.rows[1].failed)
        local set, n = in_main(study)
        assert.are.equal(PER_STUDY, n)
        for _, u in ipairs(ct) do assert.is_true(set[u], u) end

        local out = movescu("-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=" .. study,
                            "-k", "SeriesInstanceUID=" .. ct_series)
        assert.are.equal(SLICES - 1, count(out, "Pending: Sub%-operations are continuing"))
        assert.are.equal(SLICES - 1, count(out, "Remaining Suboperations%s*: %d"))
        assert.matches("Completed Suboperations%s*: " .. SLICES .. "\n", out)
        assert.matches("DIMSE Status%s*: 0x0000", out)
    end)

    it("moves a list of instances at IMAGE level", function()
        local out = movescu("-k", "QueryRetrieveLevel=IMAGE", "-k", "StudyInstanceUID=" .. study,
                            "-k", "SeriesInstanceUID=" .. ct_series, "-k", "SOPInstanceUID=" .. ct[1] .. "\\" .. ct[2])
        assert.matches("Completed Suboperations%s*: 2\n", out)
        local set, n = in_main(study)
        assert.are.equal(2, n)
        assert.is_true(set[ct[1]] and set[ct[2]])
    end)

    it("refuses an unknown move destination with 0xA801", function()
        local r = rtb("move", "--study-uid", study, "--move-dest-aet", "NOWHERE")
        assert.are.equal(1, r.code)
        assert.matches("0xA801", r.stderr)
    end)

    it("sees a file removed from or put back in its folder at the next association", function()
        local path = tb.ODIL_DIR .. "/" .. ct[1] .. ".dcm"
        local aside = tb.RTB_TESTBED_DIR .. "/odil-aside.dcm"
        assert.is_true(os.rename(path, aside))
        local ok, r = pcall(rtb, "find", "--query-level", "IMAGE", "--study-uid", study, "--series-uid", ct_series)
        assert.is_true(os.rename(aside, path))
        assert.is_true(ok, tostring(r))
        assert.are.equal(SLICES - 1, #r.rows)
        r = rtb("find", "--query-level", "IMAGE", "--study-uid", study, "--series-uid", ct_series)
        assert.are.equal(SLICES, #r.rows)
    end)

    it("logs every request with its outcome", function()
        rtb("find", "--query-level", "STUDY", "--patient-id", "RTB102")
        rtb("move", "--query-level", "IMAGE", "--study-uid", study, "--series-uid", ct_series,
            "--sop-instance-uid", ct[1], "--move-dest-aet", tb.MAIN_AET)
        local log = io.open(LOG):read("a")
        assert.matches("C%-FIND from " .. tb.SCU_AET .. " STUDY {[^\n]*PatientID=RTB102[^\n]*}: 1 match%(es%), 0x0000", log)
        assert.matches("C%-MOVE from " .. tb.SCU_AET .. " IMAGE {[^\n]*} %-> " .. tb.MAIN_AET ..
                       ": 1 sub%-op%(s%), completed 1 failed 0 warning 0, dropped 0, 0x0000", log)
    end)
end)

describe("ODIL_QR quirk", function()
    it("no_counts leaves NumberOf* out of C-FIND responses, even when asked", function()
        quirks({no_counts = true})
        local r = rtb("find", "--query-level", "STUDY", "--patient-id", "RTB101",
                      "-k", "NumberOfStudyRelatedInstances=", "-k", "NumberOfStudyRelatedSeries=", "-k", "ModalitiesInStudy=")
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(1, #r.rows)
        -- rtbackup find prints a requested key the response lacks as null
        assert.are.equal(cjson.null, r.rows[1].NumberOfStudyRelatedInstances)
        assert.are.equal(cjson.null, r.rows[1].NumberOfStudyRelatedSeries)
        assert.are.equal(4, #r.rows[1].ModalitiesInStudy)
        local out = findscu("-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=" .. study,
                            "-k", "NumberOfSeriesRelatedInstances", "-k", "SeriesInstanceUID")
        assert.are.equal(4, count(out, "%(0020,000e%) UI %["))
        assert.are.equal(0, count(out, "%(0020,1209%)"))

        quirks({no_counts = "empty"})
        r = rtb("find", "--query-level", "STUDY", "--patient-id", "RTB101", "-k", "NumberOfStudyRelatedInstances=")
        assert.are.equal("", r.rows[1].NumberOfStudyRelatedInstances)
        out = findscu("-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=" .. study,
                      "-k", "NumberOfSeriesRelatedInstances", "-k", "SeriesInstanceUID")
        assert.are.equal(4, count(out, "%(0020,1209%) IS %(no value available%)"))
    end)

    it("image_find_needs_series fails an IMAGE-level C-FIND without study and series (0xA900)", function()
        quirks({image_find_needs_series = true})
        local r = rtb("find", "--query-level", "IMAGE", "--study-uid", study)
        assert.are.equal(1, r.code)
        assert.matches("0xA900", r.stderr)
        assert.matches("needs StudyInstanceUID and SeriesInstanceUID", r.stderr)
        r = rtb("find", "--query-level", "IMAGE", "--study-uid", study, "--series-uid", ct_series)
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(SLICES, #r.rows)

        quirks({image_find_needs_series = 0xC000})
        r = rtb("find", "--query-level", "IMAGE", "--patient-id", "RTB101")
        assert.are.equal(1, r.code)
        assert.matches("0xC000", r.stderr)
    end)

    it("warning_status ends C-FIND and C-MOVE with 0xB000 while delivering everything", function()
        quirks({warning_status = true})
        local out = findscu("-k", "QueryRetrieveLevel=IMAGE", "-k", "StudyInstanceUID=" .. study,
                            "-k", "SeriesInstanceUID=" .. ct_series, "-k", "SOPInstanceUID")
        assert.are.equal(SLICES, count(out, "Find Response: %d+ %(Pending%)"))
        assert.matches("Final Find Response %(.*0xb000%)", out)
        out = movescu("-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=" .. study,
                      "-k", "SeriesInstanceUID=" .. ct_series)
        assert.matches("Completed Suboperations%s*: " .. SLICES .. "\n", out)
        assert.matches("Failed Suboperations%s*: 0\n", out)
        assert.matches("DIMSE Status%s*: 0xb000", out)
        local _, n = in_main(study)
        assert.are.equal(SLICES, n)
    end)

    it("move_responses_without_counts sends pending and final C-MOVE responses without counts", function()
        quirks({move_responses_without_counts = true})
        local out = movescu("-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=" .. study,
                            "-k", "SeriesInstanceUID=" .. ct_series)
        assert.are.equal(SLICES - 1, count(out, "Pending: Sub%-operations are continuing"))
        assert.are.equal(0, count(out, "Suboperations%s*: %d"))
        assert.are.equal(SLICES, count(out, "Completed Suboperations%s*: none"))
        assert.matches("DIMSE Status%s*: 0x0000", out)
        local _, n = in_main(study)
        assert.are.equal(SLICES, n)
    end)

    it("drop every_nth skips instances silently: success, self-consistent counts, instances missing", function()
        quirks({drop = {every_nth = 3}})
        local dropped = PER_STUDY // 3
        local r = rtb("move", "--study-uid", study, "--move-dest-aet", tb.MAIN_AET)
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(0, r.rows[1].status)
        assert.are.equal(0, r.rows[1].failed)
        assert.are.equal(PER_STUDY - dropped, r.rows[1].completed)
        local _, n = in_main(study)
        assert.are.equal(PER_STUDY - dropped, n)
    end)

    it("drop uids skips exactly those instances", function()
        quirks({drop = {uids = {ct[3]}}})
        local out = movescu("-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=" .. study,
                            "-k", "SeriesInstanceUID=" .. ct_series)
        assert.matches("Completed Suboperations%s*: " .. (SLICES - 1) .. "\n", out)
        assert.matches("Failed Suboperations%s*: 0\n", out)
        assert.matches("DIMSE Status%s*: 0x0000", out)
        local set, n = in_main(study)
        assert.are.equal(SLICES - 1, n)
        assert.is_nil(set[ct[3]])
    end)

    it("drop with drop_report = completed counts the skipped instances as completed", function()
        quirks({drop = {every_nth = 3}, drop_report = "completed"})
        local r = rtb("move", "--study-uid", study, "--move-dest-aet", tb.MAIN_AET)
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(PER_STUDY, r.rows[1].completed)
        local _, n = in_main(study)
        assert.are.equal(PER_STUDY - PER_STUDY // 3, n)
    end)

    it("refuse_uid_lists answers an IMAGE-level C-MOVE of several UIDs 0xA900 and moves nothing", function()
        quirks({refuse_uid_lists = true})
        local out = movescu("-k", "QueryRetrieveLevel=IMAGE", "-k", "StudyInstanceUID=" .. study,
                            "-k", "SeriesInstanceUID=" .. ct_series, "-k", "SOPInstanceUID=" .. ct[1] .. "\\" .. ct[2])
        assert.matches("DIMSE Status%s*: 0xa900", out)
        assert.matches("one SOPInstanceUID per C%-MOVE", out)
        local _, n = in_main(study)
        assert.are.equal(0, n)
        local r = rtb("move", "--query-level", "IMAGE", "--study-uid", study, "--series-uid", ct_series,
                      "--sop-instance-uid", ct[1], "--move-dest-aet", tb.MAIN_AET)
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(1, r.rows[1].completed)
    end)

    it("refuse_move_levels answers a STUDY-level C-MOVE 0xA900; SERIES level still works", function()
        quirks({refuse_move_levels = {"STUDY"}})
        local r = rtb("move", "--study-uid", study, "--move-dest-aet", tb.MAIN_AET)
        assert.are.equal(1, r.code)
        assert.matches("0xA900", r.stderr)
        r = rtb("move", "--query-level", "SERIES", "--study-uid", study, "--series-uid", ct_series,
                "--move-dest-aet", tb.MAIN_AET)
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(SLICES, r.rows[1].completed)
    end)

    it("fail makes sub-operations fail the conformant way: counted, listed, 0xB000", function()
        quirks({fail = {modalities = {"RTDOSE"}}})
        local r = rtb("move", "--study-uid", study, "--move-dest-aet", tb.MAIN_AET)
        assert.are.equal(1, r.code)
        assert.are.equal(0xB000, r.rows[1].status)
        assert.are.equal(1, r.rows[1].failed)
        assert.are.equal(PER_STUDY - 1, r.rows[1].completed)
        assert.matches("failed: " .. dose_uid, r.stderr, 1, true)
        local set, n = in_main(study)
        assert.are.equal(PER_STUDY - 1, n)
        assert.is_nil(set[dose_uid])
    end)

    it("find_limit truncates C-FIND results and still ends with success", function()
        quirks({find_limit = 2})
        local r = rtb("find", "--query-level", "IMAGE", "--study-uid", study, "--series-uid", ct_series)
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(2, #r.rows)
    end)

    it("move_abort_after aborts the requester's association mid-move", function()
        quirks({move_abort_after = 3})
        local r = rtb("move", "--query-level", "SERIES", "--study-uid", study, "--series-uid", ct_series,
                      "--move-dest-aet", tb.MAIN_AET)
        assert.are.equal(1, r.code)
        assert.matches("abort", r.stderr)
        local _, n = in_main(study)
        assert.are.equal(3, n)
    end)

    it("takes effect at the next association; an unknown quirk or a broken file is logged", function()
        quirks({bogus_quirk = true})
        assert.are.equal(0, h.run{"echo", table.unpack(ODIL)}.code)
        quirks("{not json")
        local r = rtb("find", "--query-level", "STUDY", "--patient-id", "RTB101", "-k", "NumberOfStudyRelatedInstances=")
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(PER_STUDY, tonumber(r.rows[1].NumberOfStudyRelatedInstances))
        local log = io.open(LOG):read("a")
        assert.matches("unknown quirks ignored: bogus_quirk", log, 1, true)
        assert.matches("unreadable", log, 1, true)
    end)
end)
