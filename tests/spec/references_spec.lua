-- requires: testbed
-- Referential completeness with RT objects laid out as clinics lay them out: the
-- planning CT and structure set in an older study, plan and dose in another, the
-- treatment record in the backup window; a record of one patient referencing the plan
-- of another; a reference to nothing; an archive that refuses to send RT objects back;
-- a referenced series deleted from the archive after it was verified. Orthanc
-- "staging" plays the source (what a test adds to it can be taken away again),
-- Orthanc "main" the archive.
local h = require "helpers"
local cjson = require "cjson"
local dicom = require "rtbackup.dicom"

local tb = h.testbed()
local main, source = h.orthanc(tb.MAIN_HTTP_URL), h.orthanc(tb.STAGING_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local WINDOW = {"--since", "2026-11-20", "--until", "2026-11-20"}

local CLASS = {CT = "1.2.840.10008.5.1.4.1.1.2", RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3",
               RTPLAN = "1.2.840.10008.5.1.4.1.1.481.5", RTDOSE = "1.2.840.10008.5.1.4.1.1.481.2",
               RTRECORD = "1.2.840.10008.5.1.4.1.1.481.4"}

local function write_env(aet, extra)
    h.write_file(dir .. "/refs.toml", h.env_toml(tb, "REFS", {
        default_source = "SRC", default_backup = "MAIN", script_ae = {aet = aet or tb.SCU_AET},
        sources = {{alias = "SRC", type = "aria", peer = "STAGING"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
        settings = {state_dir = state, retry_backoff_ms = 10}, extra = extra}))
end

local function rtb(args)
    local full = {"--config", dir .. "/refs.toml"}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full)
end

local function backup()
    local r = rtb{"backup", "REFS", "--format", "json", table.unpack(WINDOW)}
    r.summary = r.stdout:match("^%s*{") and cjson.decode(r.stdout) or {}
    return r
end

-- ---- a clinic's RT objects, synthetic -------------------------------------------------

local function study(patient, date)
    return {patient = patient, uid = dicom.uid(), date = date}
end

local function base(st, class, modality, series)
    return {SOPClassUID = CLASS[class], SOPInstanceUID = dicom.uid(), StudyInstanceUID = st.uid,
            SeriesInstanceUID = series or dicom.uid(), PatientID = st.patient, PatientName = "REF^" .. st.patient,
            StudyDate = st.date, Modality = modality, SeriesNumber = 1, InstanceNumber = 1}
end

local function ct(st, n)
    local series, list = dicom.uid(), {}
    local frame = dicom.uid()
    for i = 1, n do
        local d = base(st, "CT", "CT", series)
        d.InstanceNumber, d.FrameOfReferenceUID = i, frame
        list[i] = d
    end
    return {series = series, frame = frame, instances = list, study = st}
end

local function structure_set(st, images)
    local d = base(st, "RTSTRUCT", "RTSTRUCT")
    local contour_images = {}
    for i, img in ipairs(images.instances) do
        contour_images[i] = {ReferencedSOPClassUID = CLASS.CT, ReferencedSOPInstanceUID = img.SOPInstanceUID}
    end
    d.StructureSetLabel = "PLANNING"
    d.ReferencedFrameOfReferenceSequence = {{
        FrameOfReferenceUID = images.frame,
        RTReferencedStudySequence = {{
            ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID = images.study.uid,
            RTReferencedSeriesSequence = {{SeriesInstanceUID = images.series, ContourImageSequence = contour_images}},
        }},
    }}
    d.ROIContourSequence = {{ReferencedROINumber = 1, ContourSequence = {{ContourImageSequence = {contour_images[1]}}}}}
    return d
end

local function plan(st, struct_uid, dose_uid)
    local d = base(st, "RTPLAN", "RTPLAN")
    d.RTPlanLabel = "PLAN"
    d.ReferencedStructureSetSequence = {{ReferencedSOPClassUID = CLASS.RTSTRUCT, ReferencedSOPInstanceUID = struct_uid}}
    if dose_uid then
        d.ReferencedDoseSequence = {{ReferencedSOPClassUID = CLASS.RTDOSE, ReferencedSOPInstanceUID = dose_uid}}
    end
    return d
end

local function dose(st)
    return base(st, "RTDOSE", "RTDOSE")
end

local function record(st, plan_uid)
    local d = base(st, "RTRECORD", "RTRECORD")
    d.ReferencedRTPlanSequence = {{ReferencedSOPClassUID = CLASS.RTPLAN, ReferencedSOPInstanceUID = plan_uid}}
    return d
end

local function store(list)
    local peer = dicom.peer{aet = tb.STAGING_AET, host = tb.HOST, port = tonumber(tb.STAGING_PORT),
                            calling_aet = tb.SCU_AET}
    local datasets = {}
    for i, t in ipairs(list) do datasets[i] = dicom.dataset(t) end
    local r = peer:store(datasets)
    assert.are.equal(#list, r.stored, "the source did not take the test objects")
end

-- Patient REF001: CT and structure set acquired in January, plan and its dose in June,
-- the treatment record in the backup window. Returns what was made.
local function clinic_layout()
    local old, mid, new = study("REF001", "20260105"), study("REF001", "20260601"), study("REF001", "20261120")
    local images = ct(old, 3)
    local rs = structure_set(old, images)
    local rd = dose(mid)
    local rp = plan(mid, rs.SOPInstanceUID, rd.SOPInstanceUID)
    local rr = record(new, rp.SOPInstanceUID)
    local all = {rs, rd, rp, rr}
    for _, i in ipairs(images.instances) do all[#all + 1] = i end
    store(all)
    return {images = images, rs = rs, rd = rd, rp = rp, rr = rr, count = #all}
end

before_each(function()
    main:wipe()
    source:wipe()
    os.execute("rm -rf " .. h.quote(state))
    write_env()
end)
teardown(function()
    main:wipe()
    source:wipe()
    os.execute("rm -rf " .. h.quote(dir))
end)

describe("the references pass", function()
    it("follows a record to its plan, the plan's dose and structure set, and the images, across studies", function()
        local c = clinic_layout()
        local r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(c.count, main:count())
        assert.are.equal(4, r.summary.references_moved_series) -- plan, dose, structure set, CT
        assert.are.equal(0, r.summary.references_unresolved)
        assert.are.equal(c.count, r.summary.moved)
        assert.are.equal(c.count, r.summary.verified)
    end)

    it("follows a record to the plan of another patient", function()
        local c = clinic_layout()
        -- REF002's record references REF001's plan (a plan copied under a new MRN)
        local other = study("REF002", "20261120")
        store{record(other, c.rp.SOPInstanceUID)}
        source:delete("/instances/" .. source:lookup(c.rr.SOPInstanceUID)[1].ID) -- only REF002's record in the window
        local r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(c.count, main:count()) -- REF002's record + REF001's plan, dose, structure set, CT
        assert.are.equal(0, r.summary.references_unresolved)
    end)

    it("counts a reference to nothing, names it, keeps it open until acknowledged", function()
        local st = study("REF003", "20261120")
        local missing = dicom.uid()
        store{plan(st, missing)}
        local r = backup()
        assert.are.equal(1, r.code, r.output)
        assert.are.equal(1, r.summary.references_unresolved)
        assert.are.equal(missing, r.summary.unresolved[1].uid)
        local text = rtb{"backup", "REFS", table.unpack(WINDOW)}
        assert.are.equal(1, text.code, text.output)
        assert.matches(missing, text.stdout, 1, true) -- the next run still names it
        local list = rtb{"refs", "REFS", "--format", "json"}
        assert.are.equal(0, list.code, list.output)
        assert.are.equal(missing, cjson.decode(list.stdout)[1].to)
        assert.are.equal(0, rtb{"refs", "REFS", "--ack", missing}.code)
        r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(0, r.summary.references_unresolved)
    end)

    it("brings back a referenced series deleted from the archive after it was verified", function()
        local c = clinic_layout()
        assert.are.equal(0, backup().code)
        local ct_series = main:lookup(c.images.series)[1].ID
        main:delete("/series/" .. ct_series)
        assert.are.equal(c.count - 3, main:count())
        local r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(c.count, main:count())
    end)

    it("is a failure when the archive refuses to send the RT objects back (C-GET)", function()
        clinic_layout()
        write_env("NOGET_SCU")
        local r = backup()
        -- Orthanc aborts the association it will not serve: a failure (1) or a peer
        -- that would not talk (4), never a success.
        assert.is_true(r.code == 1 or r.code == 4, r.output)
        local named = false
        for _, e in ipairs(r.summary.errors) do
            named = named or (e.kind == "references" and e.error:find("cannot read the RT objects back", 1, true) ~= nil)
        end
        assert.is_true(named, r.stdout)
    end)
end)

describe("a course's objects added to the study of its planning CT", function()
    -- The default run looks back lookback_days (90 for a DICOM source) by StudyDate, the
    -- only date a Q/R archive is asked by: a plan made today in the study of a CT taken
    -- weeks ago carries that CT's date. A run that looked at yesterday and today only
    -- (lookback_days = 1) never saw it.
    local function day(days_ago) return os.date("%Y%m%d", os.time() - days_ago * 86400) end
    local function default_run()
        local r = rtb{"backup", "REFS", "--format", "json"}
        r.summary = r.stdout:match("^%s*{") and cjson.decode(r.stdout) or {}
        return r
    end

    it("are found by the default run, which looks back 90 days", function()
        local sim = study("REF004", day(30))
        local images = ct(sim, 3)
        store(images.instances)
        local r = default_run()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(3, main:count())

        -- Planning, weeks later: structure set and plan go into the CT's study.
        local rs = structure_set(sim, images)
        store{rs, plan(sim, rs.SOPInstanceUID)}
        write_env(nil, "lookback_days = 1")
        r = default_run()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(0, r.summary.found or 0, r.output) -- yesterday and today: not seen
        assert.are.equal(3, main:count())

        write_env()
        r = default_run()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(5, main:count())
        assert.are.equal(2, r.summary.moved)
        assert.are.equal(3, r.summary.already_present)
    end)
end)

describe("a study the source changed after it was backed up", function()
    -- The archive keeps what the source deleted, so it may hold as many instances of a
    -- study as the source while lacking the source's newest: counts alone do not show it.
    local function run_once()
        local r = rtb{"backup", "REFS", "--format", "json", table.unpack(WINDOW)}
        r.summary = r.stdout:match("^%s*{") and cjson.decode(r.stdout) or {}
        return r
    end
    local function has(uid) return #main:lookup(uid) > 0 end

    it("has its replacement plan found, though the study's count did not change", function()
        local st = study("REF005", "20261120")
        local images = ct(st, 3)
        local rs = structure_set(st, images)
        local first = plan(st, rs.SOPInstanceUID)
        store(images.instances)
        store{rs, first}
        assert.are.equal(0, run_once().code)
        assert.are.equal(5, main:count())

        -- Replanned: the first plan deleted at the source, a new one made in its place.
        source:delete("/instances/" .. source:lookup(first.SOPInstanceUID)[1].ID)
        local second = plan(st, rs.SOPInstanceUID)
        store{second}
        local r = run_once()
        assert.are.equal(0, r.code, r.output)
        assert.is_true(has(second.SOPInstanceUID), r.output)
        assert.are.equal(6, main:count())
        assert.are.equal(1, r.summary.moved)
    end)

    it("has an instance found that the source added after deleting more of the same series", function()
        local st = study("REF006", "20261120")
        local images = ct(st, 3)
        store(images.instances)
        assert.are.equal(0, run_once().code)
        -- Two slices deleted at the source and one added: the archive holds 3 of the
        -- series, the source lists 2, and one of those is new.
        for k = 1, 2 do
            source:delete("/instances/" .. source:lookup(images.instances[k].SOPInstanceUID)[1].ID)
        end
        local late = base(st, "CT", "CT", images.series)
        late.InstanceNumber, late.FrameOfReferenceUID = 4, images.frame
        store{late}
        local r = run_once()
        assert.are.equal(0, r.code, r.output)
        assert.is_true(has(late.SOPInstanceUID), r.output)
        assert.are.equal(4, main:count())
    end)
end)
