-- The Mosaiq mapping (rtbackup.mosaiq.map): synthetic delivery groups become RT
-- Beams Treatment Records that pass dciodvfy (dicom3tools), read back as their
-- input through rtbackup.dicom, and come out byte-identical when regenerated.
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local rtrecord = require "rtbackup.rtrecord"
local map = require "rtbackup.mosaiq.map"
local helpers = require "helpers"
local groups = require "rtrecord_groups"
local support = require "rtrecord_support"

local options, VMAT, read_file = support.options, support.VMAT, support.read_file
local dciodvfy, ACCEPTED_EMPTY_STUDY = support.dciodvfy, support.ACCEPTED_EMPTY_STUDY
local read_back, expected_of, assert_subset = support.read_back, support.expected_of, support.assert_subset
local build_and_save = support.build_and_save

describe("Mosaiq delivery groups -> RT Beams Treatment Records", function()
    local dir
    setup(function()
        dir = helpers.tmpdir()
        assert.is_true(os.execute("command -v dciodvfy >/dev/null 2>&1") == true, "dciodvfy (dicom3tools) is needed")
    end)
    teardown(function() os.execute("rm -rf " .. helpers.quote(dir)) end)

    local cases = {
        {name = "two_beam_static", opts = {private_block = support.TJU_BLOCK}},
        {name = "vmat", opts = VMAT},
        {name = "null_heavy", opts = {}, accepted = ACCEPTED_EMPTY_STUDY},
        {name = "non_ascii", opts = {private_block = support.TJU_BLOCK}},
    }
    for _, case in ipairs(cases) do
        it(case.name .. " passes dciodvfy and reads back as its input", function()
            local group = groups[case.name]()
            local input = map.record(group, options(case.opts))
            local ds, path = build_and_save(group, options(case.opts), dir, case.name)
            local problems, out = dciodvfy(path, case.accepted)
            assert.are.same({}, problems, out)
            assert.matches("RTBeamsTreatmentRecord", out)
            assert.are.same({}, rtrecord.check(dicom.read(path)))
            assert_subset(expected_of(input), read_back(dicom.read(path)))
        end)
    end

    it("writes the 2-beam fixture as the reference expects (§9.2)", function()
        local ds = dicom.read(select(2, build_and_save(groups.two_beam_static(), options{private_block = support.TJU_BLOCK}, dir, "ref")))
        assert.are.equal(rtrecord.SOP_CLASS, ds.SOPClassUID)
        assert.are.equal("RTRECORD", ds.Modality)
        assert.are.equal("DOE^JANE^Q", ds.PatientName)
        assert.are.equal("MRN0012345", ds.PatientID)
        assert.are.equal("19610412", ds.PatientBirthDate)
        assert.are.equal("F", ds.PatientSex)
        assert.are.equal("20250612", ds.TreatmentDate)
        assert.are.equal("095210", ds.TreatmentTime)
        assert.are.equal(28, ds.NumberOfFractionsPlanned)
        assert.are.equal(12, ds.InstanceNumber)
        assert.are.equal("LINAC1", ds.TreatmentMachineSequence[1].TreatmentMachineName)
        assert.are.equal("1.2.826.0.1.3680043.8.498.1003", ds.ReferencedRTPlanSequence[1].ReferencedSOPInstanceUID)
        assert.are.equal("1.2.826.0.1.3680043.8.498.1001", ds.StudyInstanceUID)
        assert.are_not.equal(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert.is_nil(ds.SpecificCharacterSet) -- all ASCII
        local b1, b2 = ds.TreatmentSessionBeamSequence[1], ds.TreatmentSessionBeamSequence[2]
        assert.are.same({1, "G180", "NORMAL", "VERIFIED", 12}, {b1.ReferencedBeamNumber, b1.BeamName,
            b1.TreatmentTerminationStatus, b1.TreatmentVerificationStatus, b1.CurrentFractionNumber})
        assert.are.same({2, "G000", "OPERATOR"}, {b2.ReferencedBeamNumber, b2.BeamName, b2.TreatmentTerminationStatus})
        assert.are.equal(152.3, b1.DeliveredPrimaryMeterset) -- Dose_Hst.Meterset
        assert.are.equal(98.6, b2.DeliveredPrimaryMeterset)  -- stopped by the operator: what it gave
        assert.are.equal(147.9, b2.SpecifiedPrimaryMeterset)
        local last2 = b2.ControlPointDeliverySequence[2]
        assert.are.same({147.9, 98.6}, {last2.SpecifiedMeterset, last2.DeliveredMeterset})
        assert.are.equal(1000.0, b1.SourceAxisDistance)       -- 100 cm
        local cp0 = b1.ControlPointDeliverySequence[1]
        assert.are.same({"MV", 6.0, 180.0, -124.0, 981.0, 3.0}, {cp0.NominalBeamEnergyUnit, cp0.NominalBeamEnergy,
            cp0.GantryAngle, cp0.TableTopVerticalPosition, cp0.TableTopLongitudinalPosition, cp0.TableTopLateralPosition})
        local devices = {}
        for _, d in ipairs(cp0.BeamLimitingDevicePositionSequence) do devices[d.RTBeamLimitingDeviceType] = d.LeafJawPositions end
        assert.are.same({-50.0, 50.0}, devices.ASYMY)
        assert.are.equal(120, #devices.MLCX)
        assert.are.same({-20.55, 20.55}, {devices.MLCX[1], devices.MLCX[61]})
        assert.are.equal("PROSTATE", ds["3261,1001"])
        assert.are.equal("Knee sponge; full bladder", ds["3261,1002"])
        assert.are.equal("Tx Delivery IMRT", ds["3261,1003"])
        assert.are.equal("PROS_IMRT", ds["3261,1004"])
    end)

    it("gives a VMAT arc every changing value at every control point", function()
        local ds = map.build(groups.vmat(), options(VMAT))
        local arc1, arc2 = ds.TreatmentSessionBeamSequence[1], ds.TreatmentSessionBeamSequence[2]
        assert.are.equal("DYNAMIC", arc1.BeamType)
        assert.are.equal(178, arc1.NumberOfControlPoints)
        local cps = arc1.ControlPointDeliverySequence
        assert.are.equal(178, #cps)
        for k = 1, 178 do
            assert.is_number(cps[k].GantryAngle)
            local devices = {}
            for _, d in ipairs(cps[k].BeamLimitingDevicePositionSequence) do
                devices[d.RTBeamLimitingDeviceType] = d.LeafJawPositions
            end
            assert.are.equal(120, #devices.MLCX)
            -- jaws do not move: their positions are in the first item only
            assert.are.equal(k == 1, devices.ASYMX ~= nil)
        end
        assert.are.equal("CW", cps[1].GantryRotationDirection)
        assert.are.equal("CC", arc2.ControlPointDeliverySequence[1].GantryRotationDirection)
        assert.is_nil(cps[2].BeamLimitingDeviceAngle) -- constant collimator: first item only
        assert.are.equal("101502.25", arc1.ControlPointDeliverySequence[1].TreatmentControlPointTime)
        assert.are.equal(256.7, cps[178].DeliveredMeterset)
    end)

    it("builds the same UIDs and the same bytes when a day is generated again", function()
        local _, p1 = build_and_save(groups.vmat(), options(VMAT), dir, "again1")
        local _, p2 = build_and_save(groups.vmat(), options(VMAT), dir, "again2")
        assert.is_true(read_file(p1) == read_file(p2), "the two files differ")
        local a = map.build(groups.two_beam_static(12), options())
        local b = map.build(groups.two_beam_static(12), options())
        local c = map.build(groups.two_beam_static(13), options())
        assert.are.equal(a.SOPInstanceUID, b.SOPInstanceUID)
        assert.are.equal(a:digest(), b:digest())
        assert.are_not.equal(a.SOPInstanceUID, c.SOPInstanceUID) -- another fraction, another record
        assert.are.equal(a.SeriesInstanceUID, c.SeriesInstanceUID) -- the plan's record series
        local d = map.build(groups.two_beam_static(12), options{uid_scope = "OTHER/MOSAIQ"})
        assert.are_not.equal(a.SOPInstanceUID, d.SOPInstanceUID) -- another clinic's database
        -- names are hashed whole: bytes after a NUL count (the record UID is hashed from
        -- a binary canonical form)
        assert.are_not.equal(dicom.uid("scope", "a\0b"), dicom.uid("scope", "a\0c"))
    end)

    it("converts cm to mm without binary floating-point residue", function()
        local g = groups.two_beam_static()
        g.fields[1].points[1].actual.Couch_Vrt, g.fields[1].points[1].actual.Couch_Lat = 12.34, -0.07
        g.fields[1].Sad = 100.05
        local b1 = map.build(g, options()).TreatmentSessionBeamSequence[1]
        local cp0 = b1.ControlPointDeliverySequence[1]
        assert.are.same({123.4, -0.7, 1000.5}, {cp0.TableTopVerticalPosition, cp0.TableTopLateralPosition,
                                                b1.SourceAxisDistance})
    end)

    it("writes NULL-heavy rows as empty Type 2 values and infers what Type 1 needs", function()
        local ds = map.build(groups.null_heavy(), options())
        assert.are.equal("DOE^JANE", ds.PatientName)
        assert.are.same({"", "", "", ""}, {ds.PatientSex, ds.PatientBirthDate, ds.StudyDate, ds.NumberOfFractionsPlanned})
        local b1 = ds.TreatmentSessionBeamSequence[1]
        assert.are.equal("STATIC", b1.BeamType)           -- Beam_Type_Flag NULL: nothing moves
        assert.are.equal("UNKNOWN", b1.TreatmentTerminationStatus)
        assert.are.equal("", b1.TreatmentVerificationStatus)
        assert.is_nil(b1.SourceAxisDistance)
        local cp0 = b1.ControlPointDeliverySequence[1]
        assert.are.equal("NONE", cp0.GantryRotationDirection) -- from the angles: no rotation
        assert.are.same({"", "", ""}, {cp0.TableTopVerticalPosition, cp0.DoseRateSet, cp0.DoseRateDelivered})
        assert.is_nil(cp0.NominalBeamEnergy)               -- no unit, no energy
    end)

    it("declares UTF-8 for non-ASCII names", function()
        local ds = map.build(groups.non_ascii(), options{private_block = support.TJU_BLOCK})
        assert.are.equal("ISO_IR 192", ds.SpecificCharacterSet)
        assert.are.equal("Müller-Øster^José^Ł", ds.PatientName)
        assert.are.equal("G180°", ds.TreatmentSessionBeamSequence[1].BeamName)
        assert.are.equal("Linac-Süd", ds.TreatmentMachineSequence[1].TreatmentMachineName)
    end)

    it("fails one bad group with a clear error and still builds the rest of the day", function()
        local bad_modality = groups.two_beam_static()
        bad_modality.fields[2].Modality_Enum = 7
        local no_gantry = groups.two_beam_static()
        no_gantry.fields[1].points[1].Gantry_Ang = groups.NULL
        local no_study = groups.two_beam_static()
        no_study.plan.StudyInstanceUID = groups.NULL
        local day = {groups.two_beam_static(), bad_modality, groups.vmat(), no_gantry, no_study}
        local built, failed = {}, {}
        for i, g in ipairs(day) do
            local ok, res = pcall(map.build, g, options(g.fields[1].Beam_Type_Flag == 2 and VMAT or nil))
            if ok then built[#built + 1] = i else failed[i] = res end
        end
        assert.are.same({1, 3}, built)
        for _, err in pairs(failed) do
            assert.is_true(errors.is(err, "invalid"))
            assert.matches("Mosaiq record for patient MRN0012345, plan 1.2.826.0.1.3680043.8.498.1003, fraction 12", err.message, 1, true)
        end
        assert.matches("field G000 (FLD_ID 60002): Modality_Enum 7 has no DICOM radiation type", failed[2].message, 1, true)
        assert.matches("field G180: beams[1].control_points[1].gantry_angle is required", failed[4].message, 1, true)
        assert.are.equal("beams[1].control_points[1].gantry_angle", failed[4].field)
        assert.matches("the RT Plan's StudyInstanceUID is missing", failed[5].message, 1, true)
    end)

    it("writes an unknown enum value as an empty value, never as an invented term", function()
        local g = groups.two_beam_static()
        g.patient.Gender = "UNSPECIFIED"
        g.fields[1].dose.Termination_Verify_Status_Enum = 9
        g.fields[1].dose.Termination_Status_Enum = 9
        for _, p in ipairs(g.fields[1].points) do p.Gantry_Dir_Enum, p.Energy_Unit_Enum = 7, 1 end
        local ds, warnings = map.build(g, options())
        local b1 = ds.TreatmentSessionBeamSequence[1]
        assert.are.equal("", ds.PatientSex)
        local said = {}
        for _, w in ipairs(warnings) do
            said[#said + 1] = w.message
            assert.are.same({"MRN0012345", "1.2.826.0.1.3680043.8.498.1003", 12},
                            {w.patient, w.plan, w.fraction})
        end
        said = table.concat(said, "\n")
        for _, raw in ipairs{'Admin.Gender = "UNSPECIFIED"', "Termination_Verify_Status_Enum = 9",
                             "Termination_Status_Enum = 9", "Gantry_Dir_Enum = 7"} do
            assert.matches(raw, said, 1, true)
        end
        assert.are.equal("", b1.TreatmentVerificationStatus)
        assert.are.equal("UNKNOWN", b1.TreatmentTerminationStatus) -- the standard's own term
        assert.are.equal("NONE", b1.ControlPointDeliverySequence[1].GantryRotationDirection) -- from the angles
        assert.is_nil(b1.ControlPointDeliverySequence[1].NominalBeamEnergy) -- KV is not a DICOM unit
    end)

    it("reads Energy_Unit_Enum by the site's convention", function()
        local g = groups.two_beam_static()
        for _, f in ipairs(g.fields) do for _, p in ipairs(f.points) do p.Energy_Unit_Enum = 1 end end
        local ds = map.build(g, options{energy_unit_enum = "kv0_mv1_mev2"})
        assert.are.equal("MV", ds.TreatmentSessionBeamSequence[1].ControlPointDeliverySequence[1].NominalBeamEnergyUnit)
        assert.has_error(function() map.build(g, options{energy_unit_enum = "mev"}) end)
    end)

    it("requires the site's MLC encoding and a UID scope", function()
        local ok, err = pcall(map.build, groups.two_beam_static(), options{mlc = {}})
        assert.is_false(ok)
        assert.matches("mlc.encoding is not set", err.message, 1, true)
        ok, err = pcall(map.build, groups.two_beam_static(), options{uid_scope = false})
        assert.is_false(ok)
        assert.are.equal("config", err.kind)
    end)
end)

describe("what a Mosaiq record says was delivered", function()
    local function beam(ds, i) return ds.TreatmentSessionBeamSequence[i or 1] end

    it("continues an interrupted beam from where it stopped, referencing the interrupted record", function()
        local first = groups.two_beam_static() -- beam 2 stopped by the operator after 98.6 of 147.9 MU
        local first_ds = map.build(first, options())
        local rest = groups.two_beam_static()
        table.remove(rest.fields, 1)
        rest.session = 2
        rest.fields[1].dose = groups.dose(80023, 12, "2025-06-12T10:05:00", 49.3, {MetersetPrevDelivered = 98.6})
        rest.referenced_records = {first_ds.SOPInstanceUID}
        local ds = map.build(rest, options())
        local b = beam(ds)
        assert.are.same({"CONTINUATION", "NORMAL", 49.3, 147.9}, {b.TreatmentDeliveryType,
            b.TreatmentTerminationStatus, b.DeliveredPrimaryMeterset, b.SpecifiedPrimaryMeterset})
        local cps = b.ControlPointDeliverySequence
        assert.are.same({98.6, 147.9}, {cps[1].DeliveredMeterset, cps[2].DeliveredMeterset})
        assert.are.equal(first_ds.SOPInstanceUID, ds.ReferencedTreatmentRecordSequence[1].ReferencedSOPInstanceUID)
        assert.are.equal(rtrecord.SOP_CLASS, ds.ReferencedTreatmentRecordSequence[1].ReferencedSOPClassUID)
        -- the two records of the fraction add up to the beam once
        assert.is_true(math.abs(147.9 - (beam(first_ds, 2).DeliveredPrimaryMeterset + b.DeliveredPrimaryMeterset)) < 1e-9)
    end)

    it("refuses a beam that did not end normally when Mosaiq has no delivered meterset", function()
        local g = groups.two_beam_static()
        g.fields[2].dose.Meterset = groups.NULL
        local ok, err = pcall(map.build, g, options())
        assert.is_false(ok)
        assert.matches("field G000 %(FLD_ID 60002%): the delivery ended OPERATOR and Mosaiq recorded no delivered " ..
                       "meterset", err.message)
        -- a normal termination gives the rest of the plan, and says so
        g = groups.two_beam_static()
        g.fields[1].dose.Meterset = groups.NULL
        local ds, warnings = map.build(g, options())
        assert.are.equal(152.3, beam(ds).DeliveredPrimaryMeterset)
        assert.matches("Dose_Hst.Meterset is empty", warnings[1].message, 1, true)
    end)

    local function deep_copy(t)
        if type(t) ~= "table" or getmetatable(t) then return t end -- groups.NULL stays itself
        local c = {}
        for k, v in pairs(t) do c[k] = deep_copy(v) end
        return c
    end

    -- What the warnings of one build say, one line each.
    local function said(warnings)
        local lines = {}
        for _, w in ipairs(warnings) do lines[#lines + 1] = (w.field or "") .. ": " .. w.message end
        return table.concat(lines, "\n")
    end

    it("says what was given, not what was planned, at the edges of a delivery", function()
        -- An over-delivery: the last control point carries it, not the planned value.
        local g = groups.two_beam_static()
        g.fields[1].dose.Meterset = 165
        local ds, warnings = map.build(g, options())
        local cps = beam(ds).ControlPointDeliverySequence
        assert.are.same({165, 152.3}, {beam(ds).DeliveredPrimaryMeterset, cps[#cps].SpecifiedMeterset})
        assert.are.equal(165, cps[#cps].DeliveredMeterset)
        assert.matches("delivered 165 MU (+0 before) exceeds the planned 152.3 MU", said(warnings), 1, true)
        -- Partially treated without a delivered meterset: nothing may be claimed.
        g = groups.two_beam_static()
        g.fields[1].dose.PartiallyTreated, g.fields[1].dose.Meterset = 1, groups.NULL
        local ok, err = pcall(map.build, g, options())
        assert.is_false(ok)
        assert.matches("field G180 (FLD_ID 60001): Mosaiq marks the delivery partially treated", err.message, 1, true)
        -- Short of the plan with a NORMAL termination: recorded as given, and said.
        g = groups.two_beam_static()
        g.fields[1].dose.PartiallyTreated, g.fields[1].dose.Meterset = 1, 100
        ds, warnings = map.build(g, options())
        assert.are.same({100, "NORMAL"}, {beam(ds).DeliveredPrimaryMeterset, beam(ds).TreatmentTerminationStatus})
        assert.matches("delivered 100 MU (+0 before) of the planned 152.3 MU, yet the termination is NORMAL " ..
                       "(Mosaiq marks it partially treated)", said(warnings), 1, true)
        -- The same field given twice in one fraction, beyond its plan: said.
        g = groups.two_beam_static()
        g.fields[2] = deep_copy(g.fields[1])
        g.fields[2].dose.DHS_ID, g.fields[2].dose.Tx_DtTm = 80013, "2025-06-12T09:58:00"
        ds, warnings = map.build(g, options())
        assert.are.same({1, 1}, {beam(ds, 1).ReferencedBeamNumber, beam(ds, 2).ReferencedBeamNumber})
        assert.matches("beam 1: given 2 times in this record, 304.6 MU in all of the planned 152.3 MU",
                       said(warnings), 1, true)
        -- An interruption and its continuation add up to the plan: nothing to say.
        g = groups.two_beam_static()
        g.fields[2].dose.Meterset = 147.9 - 98.6
        g.fields[2].dose.MetersetPrevDelivered = 98.6
        g.fields[3] = deep_copy(g.fields[2])
        g.fields[3].dose.Meterset, g.fields[3].dose.MetersetPrevDelivered = 98.6, 0
        g.fields[3].dose.Tx_DtTm = "2025-06-12T09:53:00"
        ds, warnings = map.build(g, options())
        assert.is_nil(said(warnings):find("given 2 times", 1, true))
    end)

    it("records setup and imaging fields without losing the fraction's treatment beams", function()
        -- A setup field with no MU (every Index 0): recorded, SETUP, nothing specified.
        local g = groups.two_beam_static()
        local setup = deep_copy(g.fields[1])
        setup.OriginalBeamNumber, setup.OriginalBeamName, setup.Type_Enum, setup.Meterset = 99, "SETUP AP", 3, 0
        setup.points[2].Index, setup.dose.Meterset, setup.dose.Tx_DtTm = 0, 0, "2025-06-12T09:50:00"
        setup.points[1].Index, setup.points[2].Index = groups.NULL, groups.NULL
        table.insert(g.fields, setup)
        local ds = map.build(g, options())
        assert.are.same({"SETUP AP", "SETUP", 0, 0}, {beam(ds, 1).BeamName, beam(ds, 1).TreatmentDeliveryType,
                                                      beam(ds, 1).SpecifiedPrimaryMeterset,
                                                      beam(ds, 1).DeliveredPrimaryMeterset})
        assert.are.equal(3, #ds.TreatmentSessionBeamSequence)
        -- A field of a kind no radiation type names, which gave no MU: left out, and said.
        setup.Modality_Enum, setup.Type_Enum = 4, 1
        local warnings
        ds, warnings = map.build(g, options())
        assert.are.same({"G180", "G000"}, {beam(ds, 1).BeamName, beam(ds, 2).BeamName})
        assert.matches("field SETUP AP (FLD_ID 60001): Modality_Enum 4 has no DICOM radiation type and the field " ..
                       "gave no MU: left out of the record", said(warnings), 1, true)
        -- ... but one that gave MU refuses the record: its dose cannot be described.
        setup.dose.Meterset, setup.Meterset = 5, 5
        setup.points[1].Index, setup.points[2].Index = 0, 100
        local ok, err = pcall(map.build, g, options())
        assert.is_false(ok)
        assert.matches("Modality_Enum 4 has no DICOM radiation type", err.message, 1, true)
    end)

    it("carries a control point's unrecorded angle and time from the one before", function()
        local g = groups.vmat(6)
        local f = g.fields[1]
        f.points[3].Gantry_Ang = groups.NULL
        for k, p in ipairs(f.points) do p.actual = {Tx_DtTm = k == 4 and "2025-06-12T10:15:09" or nil} end
        local ds = map.build(g, options(VMAT))
        local cps = beam(ds).ControlPointDeliverySequence
        assert.are.equal(cps[2].GantryAngle, cps[3].GantryAngle)
        local times = {}
        for k = 1, #cps do times[k] = cps[k].TreatmentControlPointTime end
        assert.are.same({"101502.25", "101502.25", "101502.25", "101509", "101509", "101509"}, times)
    end)

    it("records an electron beam's applicator and cutout as the IOD has them", function()
        local g = groups.two_beam_static()
        g.fields[2] = nil
        local f = g.fields[1]
        f.Modality_Enum, f.dose.Modality_Enum = 2, 2
        f.delivered.Wdg_Appl, f.delivered.Block = "A10", "CUTOUT-7"
        for _, p in ipairs(f.points) do p.Energy, p.Energy_Unit_Enum = 9, 3 end
        local ds, warnings = map.build(g, options())
        local b = beam(ds)
        assert.are.same({"ELECTRON", 0, 1}, {b.RadiationType, b.NumberOfWedges, b.NumberOfBlocks})
        assert.are.same({"A10", "ELECTRON_SQUARE"}, {b.ApplicatorSequence[1].ApplicatorID,
                                                     b.ApplicatorSequence[1].ApplicatorType})
        assert.are.same({"CUTOUT-7"}, {b.RecordedBlockSequence[1].BlockName, b.RecordedBlockSequence[1].BlockTrayID})
        local path = helpers.tmpdir() .. "/electron.dcm"
        ds:save(path)
        local problems, out = dciodvfy(path)
        assert.are.same({}, problems, out)
        assert.are.same({}, rtrecord.check(dicom.read(path)))
        assert.are.equal("", said(warnings))
        -- Rectangular cones by their size; a name that tells nothing refuses the record,
        -- unless the site's table names its shape.
        f.delivered.Wdg_Appl = "6x10"
        assert.are.equal("ELECTRON_RECT", beam((map.build(g, options()))).ApplicatorSequence[1].ApplicatorType)
        f.delivered.Wdg_Appl = "CONE-3"
        local ok, err = pcall(map.build, g, options())
        assert.is_false(ok)
        assert.matches('the electron applicator "CONE%-3" is of a shape rtbackup cannot tell', err.message)
        local typed = beam((map.build(g, options{applicator_types = {["CONE-3"] = "ELECTRON_CIRC"}})))
        assert.are.equal("ELECTRON_CIRC", typed.ApplicatorSequence[1].ApplicatorType)
    end)

    it("says what it cut to fit, and counts characters, not bytes", function()
        local g = groups.two_beam_static()
        g.machine.Last_Name = "VERSA HD MAIN BUNKER 3"
        g.fields[1].OriginalBeamName = string.rep("B", 80)
        g.patient.Last_Name = string.rep("山", 24) -- 72 bytes, 24 characters: a legal name
        local ds, warnings = map.build(g, options())
        assert.are.equal("VERSA HD MAIN BU", ds.TreatmentMachineSequence[1].TreatmentMachineName)
        assert.are.equal(string.rep("山", 24) .. "^JANE^Q", ds.PatientName)
        local text = said(warnings)
        assert.matches('the machine "VERSA HD MAIN BUNKER 3" is recorded as "VERSA HD MAIN BU"', text, 1, true)
        assert.matches("beams[1].name is 80 characters long; LO allows 64: cut", text, 1, true)
        -- the site names a machine for the record
        ds, warnings = map.build(g, options{machines = {["VERSA HD MAIN BUNKER 3"] = {name = "BUNKER3"}}})
        assert.are.equal("BUNKER3", ds.TreatmentMachineSequence[1].TreatmentMachineName)
        assert.is_nil(said(warnings):find("is recorded as", 1, true))
    end)

    it("maps wedges, compensators, boli and blocks, with the counts matching the sequences", function()
        local g = groups.two_beam_static()
        g.fields[1].devices = {
            {Device_Enum = 1, Device_ID = "W30IN", Wedge_Angle = 30, Wedge_Orientation = 90, Barcode_String = "WDG-30"},
            {Device_Enum = 2, Device_ID = "TRAY7", Description = "Cerrobend"},
            {Device_Enum = 3, Device_ID = "COMP1"},
        }
        g.fields[1].delivered.Bolus = "1.0 cm bolus"
        g.fields[2].delivered.Dyn_Wedge = "EDW60"
        local ds = map.build(g, options())
        local b1, b2 = beam(ds, 1), beam(ds, 2)
        assert.are.same({1, 1, 1, 1}, {b1.NumberOfWedges, b1.NumberOfBlocks, b1.NumberOfCompensators, b1.NumberOfBoli})
        local w = b1.RecordedWedgeSequence[1]
        assert.are.same({"W30IN", 30, 90, "STANDARD", "WDG-30"}, {w.WedgeID, w.WedgeAngle, w.WedgeOrientation,
                                                                  w.WedgeType, w.AccessoryCode})
        assert.are.same({"TRAY7", "Cerrobend"}, {b1.RecordedBlockSequence[1].BlockTrayID,
                                                 b1.RecordedBlockSequence[1].BlockName})
        assert.are.equal("COMP1", b1.RecordedCompensatorSequence[1].CompensatorID)
        assert.are.equal("1.0 cm bolus", b1.ReferencedBolusSequence[1].BolusID)
        assert.are.same({1, "DYNAMIC", "EDW60"}, {b2.NumberOfWedges, b2.RecordedWedgeSequence[1].WedgeType,
                                                  b2.RecordedWedgeSequence[1].WedgeID})
        assert.are.same({0, 0, 0}, {b2.NumberOfBlocks, b2.NumberOfCompensators, b2.NumberOfBoli})
        local path = helpers.tmpdir() .. "/accessories.dcm"
        ds:save(path)
        local problems, out = dciodvfy(path)
        assert.are.same({}, problems, out)
        assert.are.same({}, rtrecord.check(dicom.read(path)))
        -- a device of a kind the tables do not know is refused, not dropped
        g.fields[1].devices[1].Device_Enum = 9
        local ok, err = pcall(map.build, g, options())
        assert.is_false(ok)
        assert.matches("Device_Enum = 9 (device W30IN)", err.message, 1, true)
    end)

    it("warns about implausible values, naming patient, plan, fraction, field and value", function()
        local g = groups.two_beam_static()
        g.fields[1].Sad = 0
        g.fields[1].points[1].Gantry_Ang = 720
        g.fields[1].points[1].actual.Couch_Vrt = 1e9
        g.fields[2].points[1].Index = 100
        g.fields[2].points[2].Index = 50
        g.fields[2].dose.Meterset = -5
        local ds, warnings = map.build(g, options())
        assert.is_truthy(ds)
        local text = {}
        for _, w in ipairs(warnings) do
            assert.are.same({"MRN0012345", "1.2.826.0.1.3680043.8.498.1003", 12}, {w.patient, w.plan, w.fraction})
            text[#text + 1] = (w.field or "") .. ": " .. w.message
        end
        text = table.concat(text, "\n")
        for _, expected in ipairs{"field G180 (FLD_ID 60001): Sad = 0.0 mm is outside 500..1500 mm",
                                  "control point 0: Gantry_Ang = 720", "Couch_Vrt = 10000000000",
                                  "the cumulative meterset decreases", "Dose_Hst.Meterset = -5 is negative"} do
            assert.matches(expected, text, 1, true)
        end
    end)

    it("reads leaf order, bank order and sign per machine as the site folder says", function()
        local g = groups.two_beam_static()
        local leaves = {}
        for i = 1, 60 do leaves[i] = i / 10 end -- 0.1 .. 6.0 mm: leaf 1 is the smallest
        for _, f in ipairs(g.fields) do
            for _, p in ipairs(f.points) do
                p.A_Leaf_Set = groups.float32_leaves(leaves)
                p.B_Leaf_Set = groups.float32_leaves(leaves)
            end
        end
        local function mlc(opts)
            local cp0 = beam((map.build(g, options(opts)))).ControlPointDeliverySequence[1]
            for _, d in ipairs(cp0.BeamLimitingDevicePositionSequence) do
                if d.RTBeamLimitingDeviceType == "MLCX" then return d.LeafJawPositions end
            end
        end
        local plain = mlc{}
        assert.are.same({0.1, 6.0, 0.1}, {plain[1], plain[60], plain[61]})
        local reversed = mlc{mlc = {encoding = "float32_mm", leaf_order = "reversed", negate_first_bank = true}}
        assert.are.same({-6.0, -0.1, 6.0}, {reversed[1], reversed[60], reversed[61]})
        -- a machine's own convention wins over the site's
        local per_machine = mlc{machines = {LINAC1 = {mlc = {leaf_order = "reversed"}}}}
        assert.are.same({6.0, 0.1}, {per_machine[1], per_machine[60]})
        local ok, err = pcall(mlc, {mlc = {encoding = "float32_mm", leaf_order = "backwards"}})
        assert.is_false(ok)
        assert.matches('leaf_order must be "as_stored" or "reversed"', err.message, 1, true)
    end)

    it("identifies equipment, department and creation from Mosaiq, deterministically", function()
        local g = groups.two_beam_static()
        g.fields[2].dose.Edit_DtTm = "2025-06-13T08:30:00" -- reviewed the next morning
        local ds = map.build(g, options{machines = {LINAC1 = {manufacturer = "Elekta", serial_number = "151234"}},
                                        institution_name = "Example Cancer Centre"})
        local m = ds.TreatmentMachineSequence[1]
        assert.are.same({"LINAC1", "Elekta", "Versa HD", "151234", "Example Cancer Centre", "Radiation Oncology"},
                        {m.TreatmentMachineName, m.Manufacturer, m.ManufacturerModelName, m.DeviceSerialNumber,
                         m.InstitutionName, m.InstitutionalDepartmentName})
        assert.are.same({"Elekta", "Versa HD", "Radiation Oncology"}, {ds.Manufacturer, ds.ManufacturerModelName,
                                                                       ds.InstitutionalDepartmentName})
        assert.are.same({"20250613", "083000"}, {ds.InstanceCreationDate, ds.InstanceCreationTime})
        assert.are.same({"20250612", "095210"}, {ds.TreatmentDate, ds.TreatmentTime})
        assert.are.equal(15.24, beam(ds).DeliveredTreatmentTime) -- FLD_HST: 0.254 min
        assert.are.equal(598, beam(ds).ControlPointDeliverySequence[1].DoseRateDelivered)
        -- the same rows give the same record; a corrected row another one
        local again = map.build(g, options{machines = {LINAC1 = {manufacturer = "Elekta", serial_number = "151234"}},
                                           institution_name = "Example Cancer Centre"})
        assert.are.equal(ds:digest(), again:digest())
        g.fields[2].dose.Termination_Verify_Status_Enum = 2
        local corrected = map.build(g, options{machines = {LINAC1 = {manufacturer = "Elekta", serial_number = "151234"}},
                                               institution_name = "Example Cancer Centre"})
        assert.are_not.equal(ds.SOPInstanceUID, corrected.SOPInstanceUID)
        assert.are.equal(ds.SeriesInstanceUID, corrected.SeriesInstanceUID)
    end)
end)

describe("MLC leaf sets", function()
    it("decodes float32 mm, keeping the decimals the float stood for", function()
        local bytes = groups.float32_leaves{-20.55, 0, 12.5, 0.1}
        assert.are.same({-20.55, 0, 12.5, 0.1}, map.decode_leaf_set(bytes, "float32_mm"))
        local _, err = map.decode_leaf_set(bytes .. "x", "float32_mm")
        assert.matches("17 bytes is not a whole number of float32 leaves", err, 1, true)
    end)

    it("decodes int16 in 0.01 cm, and a record whose trailing zero byte was dropped", function()
        local bytes = string.pack("<i2i2i2", 1234, -205, 256) -- 256 = 00 01: last byte 0x01
        assert.are.same({123.4, -20.5, 25.6}, map.decode_leaf_set(bytes, "int16_0.01cm"))
        local stripped = string.pack("<i2i2i2", 1234, -205, 1):sub(1, 5) -- 01 00 -> 01
        assert.are.same({123.4, -20.5, 0.1}, map.decode_leaf_set(stripped, "int16_0.01cm"))
        assert.are.same({123.4, -20.5}, map.decode_leaf_set(bytes, "int16_0.01cm", 2))
        local _, err = map.decode_leaf_set(bytes, "int16_0.01cm", 5)
        assert.matches("3 leaves decoded, 5 expected", err, 1, true)
        assert.is_nil((map.decode_leaf_set(bytes, "int8")))
    end)

    -- Before: float32 leaf sets read as int16 built records (with warnings) whose
    -- leaves stood at -1274.9 mm; int16 ones read as float32 failed on "30 leaves
    -- decoded, 60 expected" without saying why.
    it("refuses a record read in the wrong encoding, naming the site choice, both ways", function()
        local leaves = {}
        for i = 1, 60 do leaves[i] = -50 + i * 1.25 end -- -48.75 .. 25 mm
        local function with(bytes_of, encoding)
            local g = groups.two_beam_static()
            for _, f in ipairs(g.fields) do
                for _, p in ipairs(f.points) do p.A_Leaf_Set, p.B_Leaf_Set = bytes_of(leaves), bytes_of(leaves) end
            end
            return pcall(map.build, g, options{mlc = {encoding = encoding}})
        end
        local function int16(values)
            local parts = {}
            for i, v in ipairs(values) do parts[i] = string.pack("<i2", math.floor(v * 10 + 0.5)) end
            return table.concat(parts)
        end
        assert.is_true((with(groups.float32_leaves, "float32_mm")))
        assert.is_true((with(int16, "int16_0.01cm")))
        local ok, err = with(groups.float32_leaves, "int16_0.01cm")
        assert.is_false(ok)
        assert.matches("read as int16_0.01cm, and all within reach read as float32_mm: is the site choice " ..
                       "mosaiq.mlc.encoding right?", err.message, 1, true)
        ok, err = with(int16, "float32_mm")
        assert.is_false(ok)
        assert.matches("30 leaves decoded, 60 expected (read as int16_0.01cm, the 120 bytes hold 60: is the " ..
                       "site choice mosaiq.mlc.encoding right?)", err.message, 1, true)
    end)

    it("lays the banks out in DICOM order as the site says", function()
        local g = groups.two_beam_static()
        local ds = map.build(g, options{mlc = {encoding = "float32_mm", first_bank = "B", negate_first_bank = true}})
        local cp0 = ds.TreatmentSessionBeamSequence[1].ControlPointDeliverySequence[1]
        local mlc
        for _, d in ipairs(cp0.BeamLimitingDevicePositionSequence) do
            if d.RTBeamLimitingDeviceType == "MLCX" then mlc = d.LeafJawPositions end
        end
        assert.are.same({-20.55, -20.55}, {mlc[1], mlc[61]}) -- -B first, then A
    end)
end)

