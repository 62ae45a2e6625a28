-- The RT Beams Treatment Record builder (rtbackup.rtrecord): required fields,
-- the standard's terms, VR limits, value formatting, and the IOD self-check.
local errors = require "rtbackup.error"
local rtrecord = require "rtbackup.rtrecord"
local map = require "rtbackup.mosaiq.map"
local groups = require "rtrecord_groups"
local support = require "rtrecord_support"

local options = support.options

describe("rtrecord.beams_treatment_record", function()
    local function minimal()
        return {
            sop_instance_uid = "2.25.1", plan_uid = "2.25.2", primary_dosimeter_unit = "MU",
            study = {instance_uid = "2.25.3"}, series = {instance_uid = "2.25.4"},
            beams = {
                {beam_type = "STATIC", radiation_type = "PHOTON", termination_status = "NORMAL",
                 control_points = {{index = 0, datetime = "2025-06-12T09:52:10", delivered_meterset = 0,
                                    gantry_angle = 0, gantry_direction = "NONE", collimator_angle = 0,
                                    collimator_direction = "NONE", couch_angle = 0, couch_direction = "NONE",
                                    table_top_eccentric_angle = 0, table_top_eccentric_direction = "NONE",
                                    jaw_x = {-50, 50}}}},
            },
        }
    end
    local function fails(input, pattern)
        local ok, err = pcall(rtrecord.beams_treatment_record, input)
        assert.is_false(ok, "expected an error matching " .. pattern)
        assert.is_true(errors.is(err, "invalid"), tostring(err))
        assert.matches(pattern, err.message, 1, true)
        return err
    end

    it("builds a minimal record that passes its own check", function()
        local ds = rtrecord.beams_treatment_record(minimal())
        assert.are.same({}, rtrecord.check(ds))
    end)

    it("names the missing field", function()
        local input = minimal()
        input.beams[2] = minimal().beams[1]
        input.beams[2].control_points[1].gantry_angle = nil
        local err = fails(input, "beams[2].control_points[1].gantry_angle is required")
        assert.are.equal("beams[2].control_points[1].gantry_angle", err.field)
        input = minimal()
        input.sop_instance_uid = nil
        fails(input, "sop_instance_uid is required")
        input = minimal()
        input.beams[1].control_points[1].jaw_x = nil
        fails(input, "beams[1].control_points have no jaw or MLC positions")
        input = minimal()
        input.beams[1].control_points[1].datetime = "2025-06-12"
        fails(input, "beams[1].control_points[1].datetime needs a time of day")
        input = minimal()
        input.treatment_datetime = "2025-02-30T10:00:00"
        fails(input, "treatment_datetime is not a date/time")
    end)

    it("rejects unknown fields and wrong types", function()
        local input = minimal()
        input.beams[1].control_points[1].gantry_angel = 5
        fails(input, "beams[1].control_points[1]: unknown field 'gantry_angel'")
        input = minimal()
        input.beams[1].control_points[1].gantry_angle = "ninety"
        fails(input, "beams[1].control_points[1].gantry_angle must be a number")
    end)

    it("keeps to the standard's terms", function()
        local input = minimal()
        input.beams[1].beam_type = "ARC"
        fails(input, "beams[1].beam_type 'ARC' is not one of STATIC, DYNAMIC")
        input = minimal()
        input.beams[1].verification_status = "MAYBE"
        input.beams[1].fluence_mode = "VMAT"
        input.beams[1].control_points[1].energy, input.beams[1].control_points[1].energy_unit = 250, "KV"
        input.patient = {sex = "X"}
        local ds = rtrecord.beams_treatment_record(input)
        local b = ds.TreatmentSessionBeamSequence[1]
        assert.are.equal("", b.TreatmentVerificationStatus)
        assert.is_nil(b.PrimaryFluenceModeSequence)
        assert.is_nil(b.ControlPointDeliverySequence[1].NominalBeamEnergy)
        assert.are.equal("", ds.PatientSex)
        input = minimal()
        input.primary_dosimeter_unit = "NP" -- ion records only
        fails(input, "primary_dosimeter_unit 'NP' is not one of MU, MINUTE")
    end)

    it("fits every value to its VR", function()
        local input = minimal()
        input.beams[1].control_points[1].gantry_angle = 1 / 3
        input.beams[1].specified_meterset = 1e-20
        input.beams[1].delivered_meterset = 123456789012.25
        input.study.description = string.rep("é", 70) -- 140 bytes: cut to 64 characters, and said
        -- DICOM counts a text VR's length in characters (PS3.5 6.2): 24 CJK characters
        -- (72 bytes) are a legal PN component group and SH holds 16 accented letters.
        input.patient = {name = {family = string.rep("山", 24)}, id = "P1"}
        input.beams[1].name = string.rep("ü", 64)
        input.beams[1].wedges = {{id = string.rep("Ö", 16), type = "STANDARD", angle = 15, orientation = 0}}
        local ds, notes = rtrecord.beams_treatment_record(input)
        assert.are.equal(string.rep("山", 24), ds.PatientName)
        assert.are.equal(string.rep("ü", 64), ds.TreatmentSessionBeamSequence[1].BeamName)
        assert.are.equal(string.rep("Ö", 16), ds.TreatmentSessionBeamSequence[1].RecordedWedgeSequence[1].WedgeID)
        assert.are.same({"study.description is 70 characters long; LO allows 64: cut ('" .. string.rep("é", 40)
                         .. "...')"}, notes)
        assert.are.same({}, rtrecord.check(ds))
        local b = ds.TreatmentSessionBeamSequence[1]
        assert.are.equal(0.33333333333333, b.ControlPointDeliverySequence[1].GantryAngle)
        assert.matches("DS [0.33333333333333]", ds:dump(), 1, true) -- 16 characters, DS's limit
        assert.are.equal(1e-20, b.SpecifiedPrimaryMeterset)
        assert.are.equal(123456789012.25, b.DeliveredPrimaryMeterset)
        assert.are.equal(string.rep("é", 64), ds.StudyDescription)
        assert.are.equal("ISO_IR 192", ds.SpecificCharacterSet)
        input = minimal()
        input.patient = {id = string.rep("7", 65)}
        fails(input, "patient.id is 65 characters long; LO allows 64")
        input = minimal()
        input.patient = {name = {family = string.rep("山", 65)}}
        fails(input, "patient.name is 65 characters long; a PN component group allows 64: '" ..
              string.rep("山", 40) .. "...'")
        input = minimal()
        input.patient = {name = {family = "Bad\255"}}
        fails(input, "patient.name.family is not valid UTF-8")
        input = minimal()
        input.patient = {name = {family = "A^B"}}
        fails(input, "patient.name.family contains '^'")
    end)
end)

describe("rtrecord values", function()
    local function with_cp(fields)
        local input = {
            sop_instance_uid = "2.25.1", plan_uid = "2.25.2", primary_dosimeter_unit = "MU",
            study = {instance_uid = "2.25.3"}, series = {instance_uid = "2.25.4"},
            beams = {{beam_type = "STATIC", radiation_type = "PHOTON", termination_status = "NORMAL",
                      control_points = {{index = 0, datetime = "2025-06-12T09:52:10", delivered_meterset = 0,
                                         gantry_angle = 0, gantry_direction = "NONE", collimator_angle = 0,
                                         collimator_direction = "NONE", couch_angle = 0, couch_direction = "NONE",
                                         table_top_eccentric_angle = 0, table_top_eccentric_direction = "NONE",
                                         jaw_x = {-50, 50}}}}},
        }
        for k, v in pairs(fields) do input.beams[1].control_points[1][k] = v end
        return rtrecord.beams_treatment_record(input).TreatmentSessionBeamSequence[1].ControlPointDeliverySequence[1]
    end

    it("writes numbers as DS of at most 16 characters that read back as the number", function()
        for _, v in ipairs{0, -0.0, 152.3, -20.55, 0.05, 1e-7, 600, 1234567.125, -98.1, 1/3, 2/3 * 1e9,
                           1e20, -1e-300, 0.1 + 0.2, 359.99999999} do
            local cp = with_cp{table_top_lateral = v}
            local back = cp.TableTopLateralPosition
            assert.is_number(back)
            local rel = math.abs(back - v) / math.max(math.abs(v), 1e-300)
            assert.is_true(rel < 1e-11, string.format("%.17g read back as %.17g", v, back))
            if v == 152.3 or v == -20.55 or v == 0.05 or v == 600 or v == 1234567.125 then
                assert.are.equal(v, back) -- short decimals are exact
            end
        end
        assert.are.same({}, rtrecord.check(rtrecord.beams_treatment_record{
            sop_instance_uid = "2.25.1", plan_uid = "2.25.2", primary_dosimeter_unit = "MU",
            study = {instance_uid = "2.25.3"}, series = {instance_uid = "2.25.4"},
            beams = {{beam_type = "STATIC", radiation_type = "PHOTON", termination_status = "NORMAL",
                      sad = 1/7, specified_meterset = 1e300, delivered_meterset = -123.456789012345,
                      control_points = {{index = 0, datetime = "2025-06-12T09:52:10", delivered_meterset = 1/3,
                                         gantry_angle = 1/9, gantry_direction = "NONE", collimator_angle = 0,
                                         collimator_direction = "NONE", couch_angle = 0, couch_direction = "NONE",
                                         table_top_eccentric_angle = 0, table_top_eccentric_direction = "NONE",
                                         jaw_x = {-1/3, 2/3}}}}}}))
        local ok, err = pcall(with_cp, {table_top_lateral = 0/0})
        assert.is_false(ok)
        assert.matches("control_points[1].table_top_lateral must be a finite number", err.message, 1, true)
    end)

    it("reads ISO and DICOM date/times", function()
        local cases = {
            ["2025-06-12T09:52:10"] = {"20250612", "095210"},
            ["2025-06-12 09:52:10.123456789"] = {"20250612", "095210.123456"},
            ["2025-06-12T09:52:10.500"] = {"20250612", "095210.5"},
            ["2025-06-12T09:52:10.000"] = {"20250612", "095210"},
            ["2025-06-12T09:52"] = {"20250612", "095200"},
            ["20250612095210.25"] = {"20250612", "095210.25"},
            ["2024-02-29T23:59:60"] = {"20240229", "235960"},
        }
        for text, want in pairs(cases) do
            local cp = with_cp{datetime = text}
            assert.are.same(want, {cp.TreatmentControlPointDate, cp.TreatmentControlPointTime}, text)
        end
        for _, bad in ipairs{"2025-13-01T00:00:00", "2023-02-29T10:00:00", "2025-06-12T24:00:00",
                             "2025-06-12T09:52:10Z", "12/06/2025 09:52", "2025-06-12T09:52:10."} do
            local ok, err = pcall(with_cp, {datetime = bad})
            assert.is_false(ok, bad)
            assert.matches("is not a date/time", err.message, 1, true)
        end
    end)
end)

describe("rtrecord.check", function()
    it("finds what a record lacks", function()
        local ds = map.build(groups.two_beam_static(), options())
        assert.are.same({}, rtrecord.check(ds))
        ds.TreatmentSessionBeamSequence[1].BeamType = nil
        ds.TreatmentSessionBeamSequence[2].TreatmentTerminationStatus = "DONE"
        ds.PrimaryDosimeterUnit = nil
        local problems = rtrecord.check(ds)
        table.sort(problems)
        assert.are.same({
            "PrimaryDosimeterUnit (300A,00B3) is missing (Type 1)",
            "TreatmentSessionBeamSequence[1]: BeamType (300A,00C4) is missing (Type 1)",
            "TreatmentSessionBeamSequence[2]: TreatmentTerminationStatus (3008,002A) 'DONE' is not a defined term",
        }, problems)
    end)
end)
