-- requires: testbed
-- rtbackup.dicom against real peers started by the testbed on loopback: Orthanc
-- (main, staging), DCMTK's dcmqrscp (playing ARIA) and storescp.
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local task = require "rtbackup.task"
local h = require "helpers"

local tb = h.testbed()
local SCU = tb.SCU_AET

local function peer(aet, port, extra)
    local spec = {aet = aet, host = tb.HOST, port = tonumber(port), calling_aet = SCU, alias = aet}
    for k, v in pairs(extra or {}) do spec[k] = v end
    return dicom.peer(spec)
end

local main = peer(tb.MAIN_AET, tb.MAIN_PORT)
local aria = peer(tb.ARIA_AET, tb.ARIA_PORT)
local storescp = peer(tb.STORESCP_AET, tb.STORESCP_PORT)
local qr_peers = {{"Orthanc", main}, {"dcmqrscp", aria}}

-- The synthetic files the testbed generated (and loaded into dcmqrscp).
local synthetic = {}
for line in io.lines(tb.SYNTH_DIR .. "/index.txt") do
    local pid, modality, path = line:match("^(%S+) (%S+) (%S+)$")
    if pid then synthetic[#synthetic + 1] = {patient = pid, modality = modality, path = path} end
end
local function files_of(patient)
    local out = {}
    for _, s in ipairs(synthetic) do if s.patient == patient then out[#out + 1] = s.path end end
    return out
end

local function expect_error(kind, fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, "expected a " .. kind .. " error")
    assert.is_true(errors.is(err), "not an rtbackup error: " .. tostring(err))
    assert.are.equal(kind, err.kind, tostring(err))
    return err
end

-- Orthanc main gets one synthetic patient by C-STORE before the queries run.
local PATIENT = synthetic[1].patient
setup(function()
    local r = main:store(files_of(PATIENT))
    assert.are.equal(#files_of(PATIENT), r.stored)
end)

describe("echo", function()
    it("answers from Orthanc, dcmqrscp and storescp", function()
        for _, p in ipairs{main, aria, storescp} do
            assert.is_true(p:echo() < 5)
        end
    end)

    it("fails fast with connect_failed when the peer is down", function()
        local down = peer("NOBODY", tb.CLOSED_PORT)
        local err = expect_error("connect_failed", down.echo, down)
        assert.matches(tb.CLOSED_PORT, err.peer)
    end)

    it("is rejected, with the reason, when the called AE title is wrong", function()
        local wrong = peer("NOT_ORTHANC", tb.MAIN_PORT)
        local err = expect_error("rejected", wrong.echo, wrong)
        assert.is_number(err.reason)
    end)

    it("times out within the bound when the peer accepts TCP and never answers", function()
        local port = tostring(math.tointeger(tb.CLOSED_PORT) + 0)
        -- A listener that accepts and then says nothing (perl is part of Debian's base).
        local pidfile = os.tmpname()
        os.execute(string.format([[perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => %s, Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { push @keep, $c }' >/dev/null 2>&1 & echo $! > %s]],
            port, pidfile))
        local pid = io.open(pidfile):read("l")
        os.remove(pidfile)
        -- until it listens (perl may take a while to start on a busy machine)
        os.execute(string.format("for i in $(seq 100); do ss -ltn 'sport = :%s' | grep -q LISTEN && break; sleep 0.05; done", port))
        local silent = peer("SILENT", port, {acse_timeout = 1, connect_timeout = 2})
        local t0 = os.time()
        local ok, err = pcall(silent.echo, silent)
        local elapsed = os.time() - t0
        os.execute("kill " .. pid)
        assert.is_false(ok)
        assert.are.equal("timeout", err.kind, tostring(err))
        assert.is_true(elapsed <= 5, "took " .. elapsed .. " s")
    end)
end)

describe("find", function()
    for _, case in ipairs(qr_peers) do
        local name, p = case[1], case[2]

        it("matches at PATIENT, STUDY, SERIES and IMAGE level on " .. name, function()
            local patients = p:find{level = "PATIENT", PatientID = PATIENT, PatientName = ""}
            assert.are.equal(1, #patients)
            assert.are.equal(PATIENT, patients[1].PatientID)

            local studies = p:find{level = "STUDY", PatientID = PATIENT, StudyInstanceUID = ""}
            assert.are.equal(1, #studies)
            local study = studies[1].StudyInstanceUID
            assert.is_true(dicom.uid_valid(study))

            local series = p:find{level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = "",
                                  Modality = ""}
            assert.is_true(#series >= 2) -- CT plus the RT objects
            local ct
            for _, s in ipairs(series) do if s.Modality == "CT" then ct = s end end
            assert.is_truthy(ct)

            local images = p:find{level = "IMAGE", StudyInstanceUID = study,
                                  SeriesInstanceUID = ct.SeriesInstanceUID, SOPInstanceUID = ""}
            assert.are.equal(tonumber(tb.SYNTH_CT_SLICES), #images)
        end)

        it("returns an empty list for zero matches on " .. name, function()
            assert.are.same({}, p:find{level = "STUDY", PatientID = "NO_SUCH_PATIENT", StudyInstanceUID = ""})
        end)

        it("streams matches to a callback on " .. name, function()
            local seen = 0
            local n = p:find({level = "STUDY", PatientID = "*", StudyInstanceUID = ""},
                             function(m) seen = seen + 1 assert.is_string(m.StudyInstanceUID) end)
            assert.are.equal(seen, n)
            assert.is_true(n >= 1)
        end)
    end

    it("rejects an unknown keyword instead of dropping it", function()
        local err = expect_error("invalid", main.find, main, {level = "STUDY", PatientIdentifier = "X"})
        assert.matches("PatientIdentifier", err.message)
    end)
end)

describe("move", function()
    it("moves a series from dcmqrscp to Orthanc, where every instance is then found", function()
        local patient = synthetic[#synthetic].patient
        local study = aria:find{level = "STUDY", PatientID = patient, StudyInstanceUID = ""}[1].StudyInstanceUID
        local series = aria:find{level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = "",
                                 Modality = "CT", NumberOfSeriesRelatedInstances = ""}[1]
        local r = aria:move{level = "SERIES", StudyInstanceUID = study,
                            SeriesInstanceUID = series.SeriesInstanceUID, destination = tb.MAIN_AET}
        assert.are.equal(tonumber(tb.SYNTH_CT_SLICES), r.completed)
        assert.are.equal(0, r.failed)
        local there = main:find{level = "IMAGE", StudyInstanceUID = study,
                                SeriesInstanceUID = series.SeriesInstanceUID, SOPInstanceUID = ""}
        assert.are.equal(tonumber(tb.SYNTH_CT_SLICES), #there)
    end)

    it("surfaces the failure status for an unknown destination", function()
        local study = aria:find{level = "STUDY", PatientID = PATIENT, StudyInstanceUID = ""}[1].StudyInstanceUID
        local err = expect_error("status", aria.move, aria,
                                 {level = "STUDY", StudyInstanceUID = study, destination = "NOWHERE"})
        assert.is_true(err.status >= 0xA000, string.format("status 0x%04X", err.status))
    end)

    it("refuses wildcards above the retrieve level", function()
        expect_error("invalid", aria.move, aria, {level = "SERIES", StudyInstanceUID = "*",
                                                   SeriesInstanceUID = "1.2.3", destination = tb.MAIN_AET})
    end)
end)

describe("get", function()
    it("retrieves with SCP role selection from Orthanc, bytes-equal content", function()
        local dir = h.tmpdir()
        local study = main:find{level = "STUDY", PatientID = PATIENT, StudyInstanceUID = ""}[1].StudyInstanceUID
        local r = main:get({level = "STUDY", StudyInstanceUID = study}, dir)
        assert.are.equal(#files_of(PATIENT), r.completed)
        assert.are.equal(0, r.failed)
        for _, path in ipairs(files_of(PATIENT)) do
            local original = dicom.read(path)
            local copy = dicom.read(dir .. "/" .. original.SOPInstanceUID .. ".dcm")
            assert.are.equal(original:digest(), copy:digest())
        end
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("hands instances to a callback as datasets (from dcmqrscp)", function()
        local study = aria:find{level = "STUDY", PatientID = PATIENT, StudyInstanceUID = ""}[1].StudyInstanceUID
        local seen = {}
        local r = aria:get({level = "STUDY", StudyInstanceUID = study}, function(ds)
            seen[#seen + 1] = ds.SOPInstanceUID
            assert.are.equal(PATIENT, ds.PatientID)
        end)
        assert.are.equal(#files_of(PATIENT), #seen)
        assert.are.equal(#seen, r.completed)
    end)
end)

describe("store", function()
    it("stores good files and datasets, and reports a corrupt file alone", function()
        local dir = h.tmpdir()
        local bad = h.write_file(dir .. "/corrupt.dcm", string.rep("\0", 128) .. "DICM" .. "garbage")
        local ds = dicom.dataset{SOPClassUID = "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID = dicom.uid(),
                                 PatientID = "RTB_STORE", PatientName = "TEST^STORE", Modality = "OT",
                                 StudyInstanceUID = dicom.uid(), SeriesInstanceUID = dicom.uid()}
        local files = files_of(PATIENT)
        local r = storescp:store{files[1], bad, ds, files[2]}
        assert.are.equal(3, r.stored)
        assert.are.equal(1, r.failed)
        assert.is_false(r.items[2].ok)
        assert.is_true(r.items[1].ok and r.items[3].ok and r.items[4].ok)
        assert.matches("corrupt.dcm", tostring(r.items[2].error) .. (r.items[2].path or ""))
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("lends a dataset to the store instead of copying it: other tasks are refused it meanwhile", function()
        local ds = dicom.read(files_of(PATIENT)[1])
        -- a new instance of a patient of its own, so that what Orthanc holds is this store's
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "RTB_LEND", dicom.uid(), dicom.uid()
        ds.SOPInstanceUID = dicom.uid()
        local digest = ds:digest()
        -- The sender lends ds (listed twice: sent twice), then waits for the peer; the
        -- other tasks run while it waits.
        local sender = task.spawn(function() return main:store{ds, ds} end)
        local read = task.spawn(function() return pcall(function() return ds.PatientID end) end)
        local again = task.spawn(function() return pcall(main.store, main, {ds}) end)
        local r = task.wait(sender)
        local read_ok, read_err = task.wait(read)
        local again_ok, again_err = task.wait(again)
        assert.is_false(read_ok)
        assert.matches("the dataset is being sent", tostring(read_err))
        assert.is_false(again_ok)
        assert.matches("the dataset is being sent", tostring(again_err))
        assert.are.same({2, 0}, {r.stored, r.failed})
        -- given back whole: usable, unchanged, and what the archive holds
        assert.are.equal(digest, ds:digest())
        local held
        main:get({level = "IMAGE", StudyInstanceUID = ds.StudyInstanceUID, SeriesInstanceUID = ds.SeriesInstanceUID,
                  SOPInstanceUID = ds.SOPInstanceUID}, function(got)
            held = got:digest()
            got:free()
        end)
        assert.are.equal(digest, held)
        ds:free()
    end)
end)

describe("listen", function()
    it("receives C-MOVE results from Orthanc and rejects an unknown calling AE", function()
        local dir = h.tmpdir()
        local events = {}
        local scp = dicom.listen{aet = tb.TEST_SCP_AET, port = tonumber(tb.TEST_SCP_PORT), dir = dir,
                                 allow = {tb.MAIN_AET, SCU}, on_store = function(e) events[#events + 1] = e end}
        local study = main:find{level = "STUDY", PatientID = PATIENT, StudyInstanceUID = ""}[1].StudyInstanceUID
        local r = main:move{level = "STUDY", StudyInstanceUID = study, destination = tb.TEST_SCP_AET}
        assert.are.equal(#files_of(PATIENT), r.completed)

        local stranger = dicom.peer{aet = tb.TEST_SCP_AET, host = tb.HOST, port = tonumber(tb.TEST_SCP_PORT),
                                    calling_aet = "STRANGER"}
        expect_error("rejected", stranger.echo, stranger)

        scp:stop()
        assert.are.equal(#files_of(PATIENT), #events)
        for _, e in ipairs(events) do
            assert.are.equal(tb.MAIN_AET, e.calling_aet)
            assert.are.equal(e.sop_instance_uid, dicom.read(e.path).SOPInstanceUID)
        end
        os.execute("rm -rf " .. h.quote(dir))
    end)
end)

describe("datasets", function()
    it("have the same digest stored implicit and explicit, a different one after one pixel changes", function()
        local dir = h.tmpdir()
        local ds = dicom.read(files_of(PATIENT)[1])
        ds:save(dir .. "/i.dcm", {transfer_syntax = "implicit"})
        ds:save(dir .. "/e.dcm", {transfer_syntax = "explicit"})
        local di, de = dicom.read(dir .. "/i.dcm"):digest(), dicom.read(dir .. "/e.dcm"):digest()
        assert.are.equal(di, de)
        local pixels = ds.PixelData
        ds.PixelData = string.char((pixels:byte(1) + 1) % 256) .. pixels:sub(2)
        assert.are_not.equal(di, ds:digest())
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("build from tables, with sequences, and round-trip through a file", function()
        local dir = h.tmpdir()
        local plan = dicom.uid("plan", 1)
        local ds = dicom.dataset{SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.4", SOPInstanceUID = dicom.uid("rec", 1),
                                 PatientName = "Müller^Jürgen", SpecificCharacterSet = "ISO_IR 192",
                                 ImageType = {"ORIGINAL", "PRIMARY"}, InstanceNumber = 7,
                                 ReferencedRTPlanSequence = {{ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5",
                                                              ReferencedSOPInstanceUID = plan}}}
        ds:save(dir .. "/r.dcm")
        local back = dicom.read(dir .. "/r.dcm")
        assert.are.equal("Müller^Jürgen", back.PatientName)
        assert.are.same({"ORIGINAL", "PRIMARY"}, back.ImageType)
        assert.are.equal(7, back.InstanceNumber)
        assert.are.equal(plan, back.ReferencedRTPlanSequence[1].ReferencedSOPInstanceUID)
        assert.are.equal(plan, back:totable().ReferencedRTPlanSequence[1].ReferencedSOPInstanceUID)
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("make deterministic UIDs from names", function()
        assert.are.equal(dicom.uid("mosaiq", 12, "plan"), dicom.uid("mosaiq", 12, "plan"))
        assert.are_not.equal(dicom.uid("a", "bc"), dicom.uid("ab", "c"))
        assert.is_true(#dicom.uid() <= 64 and dicom.uid_valid(dicom.uid()))
    end)
end)

describe("concurrency", function()
    it("runs several associations at once through task.map", function()
        local results = task.map({1, 2, 3, 4, 5, 6}, function()
            return #main:find{level = "STUDY", PatientID = PATIENT, StudyInstanceUID = ""}
        end, {concurrency = 6})
        assert.are.same({1, 1, 1, 1, 1, 1}, results)
    end)
end)
