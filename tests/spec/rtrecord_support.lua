-- Shared by the RT record specs: options for the Mosaiq mapping, dciodvfy with
-- the list of what it may still say (and why that is acceptable), and a reader
-- that turns a record back into the builder's input shape.
local assert = require "luassert" -- a module outside the spec: busted's assert is not global here
local map = require "rtbackup.mosaiq.map"
local helpers = require "helpers"
local groups = require "rtrecord_groups"

local support = {}

local function options(extra)
    local o = {uid_scope = "SPEC/MOSAIQ", null = groups.NULL, mlc = {encoding = "float32_mm"}}
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
end
local VMAT = {mlc = {encoding = "int16_0.01cm"}}

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    return data
end

-- ---- dciodvfy ---------------------------------------------------------------

-- What dciodvfy may still say about a record, and why that is acceptable.
local ACCEPTED = {
    {pattern = "^%(0x3261,0x10%x%x%)%s+%?%s+%- Warning %- Unrecognized tag %- assuming explicit value representation OK$",
     why = "the TJU private block (3261,10xx): no public dictionary names private elements; "
           .. "they are written with an explicit VR (LT)"},
    {pattern = "^Error %- Unrecognized enumerated value <VERIFIED> for value 1 of attribute <Treatment Verification Status>$",
     why = "dicom3tools 1.00~20220618 spells the enumerated values VERIFED / NOT_VERIFED (a typo in its "
           .. "strval/rt.tpl); PS3.3 C.8.8.21 defines VERIFIED, VERIFIED_OVR, NOT_VERIFIED"},
    {pattern = "^Error %- Unrecognized enumerated value <NOT_VERIFIED> for value 1 of attribute <Treatment Verification Status>$",
     why = "same dicom3tools typo as above"},
}
-- Only for records whose source has no study date/time/ID (NULL in Mosaiq):
-- these are Type 2, empty is conformant; only building a DICOMDIR would want them.
local ACCEPTED_EMPTY_STUDY = {
    {pattern = "^Warning %- Missing attribute or value that would be needed to build DICOMDIR %- Study [DTI]%a*$",
     why = "Study Date/Time/ID are Type 2 and empty because the source has no value"},
}

local function dciodvfy(path, extra_accepted)
    local p = io.popen("dciodvfy " .. helpers.quote(path) .. " 2>&1")
    local out = p:read("a")
    p:close()
    local problems = {}
    for line in out:gmatch("[^\n]+") do
        if line:find("Error") or line:find("Warning") or line:find("Abort") then
            local ok = false
            for _, list in ipairs{ACCEPTED, extra_accepted or {}} do
                for _, a in ipairs(list) do ok = ok or line:find(a.pattern) ~= nil end
            end
            if not ok then problems[#problems + 1] = line end
        end
    end
    return problems, out
end

-- ---- reading a record back into the builder's input shape ---------------------

local function dicom_datetime(text)
    if text == nil then return nil end
    local y, mo, d, rest = text:match("^(%d%d%d%d)%-?(%d%d)%-?(%d%d)(.*)$")
    local h, mi, s, frac = rest:match("^[T ]?(%d%d):?(%d%d):?(%d?%d?)%.?(%d*)$")
    local tm = h and (h .. mi .. (s ~= "" and s or "00")) or ""
    frac = (frac or ""):sub(1, 6):gsub("0+$", "")
    if frac ~= "" then tm = tm .. "." .. frac end
    return y .. mo .. d .. tm
end

local function blank(v) if v == "" then return nil end return v end

local function joined(ds, da, tm)
    local d = blank(ds[da])
    if not d then return nil end
    return d .. (tm and blank(ds[tm]) or "")
end

local function name_of(pn)
    pn = blank(pn)
    if not pn then return nil end
    local parts, out = {}, {}
    for part in (pn .. "^"):gmatch("([^^]*)%^") do parts[#parts + 1] = part end
    for i, key in ipairs{"family", "given", "middle", "prefix", "suffix"} do out[key] = blank(parts[i]) end
    return out
end

local function list(v) if type(v) == "table" then return v end return {v} end

local CP_CARRIED = {
    {"GantryAngle", "gantry_angle"}, {"GantryRotationDirection", "gantry_direction"},
    {"BeamLimitingDeviceAngle", "collimator_angle"},
    {"BeamLimitingDeviceRotationDirection", "collimator_direction"},
    {"PatientSupportAngle", "couch_angle"}, {"PatientSupportRotationDirection", "couch_direction"},
    {"TableTopEccentricAxisDistance", "table_top_eccentric_distance"},
    {"TableTopEccentricAngle", "table_top_eccentric_angle"},
    {"TableTopEccentricRotationDirection", "table_top_eccentric_direction"},
    {"TableTopVerticalPosition", "table_top_vertical"},
    {"TableTopLongitudinalPosition", "table_top_longitudinal"},
    {"TableTopLateralPosition", "table_top_lateral"},
    {"TableTopPitchAngle", "table_top_pitch_angle"}, {"TableTopPitchRotationDirection", "table_top_pitch_direction"},
    {"TableTopRollAngle", "table_top_roll_angle"}, {"TableTopRollRotationDirection", "table_top_roll_direction"},
    {"NominalBeamEnergy", "energy"}, {"NominalBeamEnergyUnit", "energy_unit"},
}

-- The builder input a record stands for; control point values written only where
-- they change are carried forward, as a reader of the standard would.
local function read_back(ds)
    local machine = ds.TreatmentMachineSequence[1]
    local out = {
        sop_instance_uid = ds.SOPInstanceUID,
        creation_datetime = joined(ds, "InstanceCreationDate", "InstanceCreationTime"),
        instance_number = ds.InstanceNumber,
        patient = {name = name_of(ds.PatientName), id = blank(ds.PatientID),
                   birth_date = blank(ds.PatientBirthDate), sex = blank(ds.PatientSex)},
        study = {instance_uid = ds.StudyInstanceUID, id = blank(ds.StudyID),
                 datetime = joined(ds, "StudyDate", "StudyTime"), description = ds.StudyDescription},
        series = {instance_uid = ds.SeriesInstanceUID, number = blank(ds.SeriesNumber),
                  description = ds.SeriesDescription},
        treatment_datetime = joined(ds, "TreatmentDate", "TreatmentTime"),
        plan_uid = ds.ReferencedRTPlanSequence[1].ReferencedSOPInstanceUID,
        machine = {name = blank(machine.TreatmentMachineName), model_name = blank(machine.ManufacturerModelName),
                   manufacturer = blank(machine.Manufacturer), serial_number = blank(machine.DeviceSerialNumber),
                   institution_name = blank(machine.InstitutionName),
                   department_name = blank(machine.InstitutionalDepartmentName)},
        fractions_planned = blank(ds.NumberOfFractionsPlanned),
        primary_dosimeter_unit = ds.PrimaryDosimeterUnit,
        beams = {},
    }
    if ds["3261,0010"] then
        out.private_block = {creator = ds["3261,0010"], group = 0x3261, elements = {}}
        for e = 1, 4 do
            out.private_block.elements[e] = {element = e, vr = "LT", value = blank(ds[string.format("3261,10%02X", e)])}
        end
    end
    if ds.ReferencedTreatmentRecordSequence then
        out.referenced_records = {}
        for i, r in ipairs(ds.ReferencedTreatmentRecordSequence) do
            out.referenced_records[i] = r.ReferencedSOPInstanceUID
        end
    end
    for i, b in ipairs(ds.TreatmentSessionBeamSequence) do
        local pairs_ = 0
        for _, d in ipairs(b.BeamLimitingDeviceLeafPairsSequence) do
            if d.RTBeamLimitingDeviceType == "MLCX" then pairs_ = d.NumberOfLeafJawPairs end
        end
        local beam = {
            number = b.ReferencedBeamNumber, name = b.BeamName, description = b.BeamDescription,
            beam_type = b.BeamType, radiation_type = b.RadiationType,
            termination_status = b.TreatmentTerminationStatus, termination_code = b.TreatmentTerminationCode,
            verification_status = blank(b.TreatmentVerificationStatus),
            current_fraction = blank(b.CurrentFractionNumber),
            specified_meterset = b.SpecifiedPrimaryMeterset, delivered_meterset = b.DeliveredPrimaryMeterset,
            sad = b.SourceAxisDistance, n_leaf_pairs = pairs_, control_points = {},
            delivery_type = b.TreatmentDeliveryType, delivered_time = b.DeliveredTreatmentTime,
            wedges = {}, compensators = {}, boli = {}, blocks = {},
        }
        for k, w in ipairs(b.RecordedWedgeSequence or {}) do
            beam.wedges[k] = {id = blank(w.WedgeID), type = blank(w.WedgeType), angle = w.WedgeAngle,
                              orientation = w.WedgeOrientation, accessory_code = blank(w.AccessoryCode)}
        end
        for k, c in ipairs(b.RecordedCompensatorSequence or {}) do
            beam.compensators[k] = {id = blank(c.CompensatorID), type = blank(c.CompensatorType),
                                    accessory_code = blank(c.AccessoryCode)}
        end
        for k, o in ipairs(b.ReferencedBolusSequence or {}) do
            beam.boli[k] = {id = blank(o.BolusID), accessory_code = blank(o.AccessoryCode)}
        end
        for k, o in ipairs(b.RecordedBlockSequence or {}) do
            beam.blocks[k] = {id = blank(o.BlockTrayID), name = blank(o.BlockName),
                              accessory_code = blank(o.AccessoryCode)}
        end
        assert.are.same({#beam.wedges, #beam.compensators, #beam.boli, #beam.blocks},
                        {b.NumberOfWedges, b.NumberOfCompensators, b.NumberOfBoli, b.NumberOfBlocks})
        assert.are.equal(#b.ControlPointDeliverySequence, b.NumberOfControlPoints)
        local carried = {}
        for k, c in ipairs(b.ControlPointDeliverySequence) do
            local cp = {index = c.ReferencedControlPointIndex,
                        datetime = joined(c, "TreatmentControlPointDate", "TreatmentControlPointTime"),
                        specified_meterset = blank(c.SpecifiedMeterset), delivered_meterset = c.DeliveredMeterset,
                        dose_rate_set = blank(c.DoseRateSet), dose_rate_delivered = blank(c.DoseRateDelivered)}
            for _, kv in ipairs(CP_CARRIED) do
                local v = c[kv[1]]
                if v ~= nil then carried[kv[2]] = blank(v) end
                cp[kv[2]] = carried[kv[2]]
            end
            for _, d in ipairs(c.BeamLimitingDevicePositionSequence or {}) do
                local key = ({ASYMX = "jaw_x", ASYMY = "jaw_y", MLCX = "mlc"})[d.RTBeamLimitingDeviceType]
                carried[key] = list(d.LeafJawPositions)
            end
            cp.jaw_x, cp.jaw_y, cp.mlc = carried.jaw_x, carried.jaw_y, carried.mlc
            beam.control_points[k] = cp
        end
        out.beams[i] = beam
    end
    return out
end

-- The input as the record must give it back: dates in DICOM form, energies
-- without a DICOM unit left out (that is the rule), absent keys absent.
local function expected_of(input)
    local e = {}
    for k, v in pairs(input) do e[k] = v end
    local function copy(t)
        if type(t) ~= "table" then return t end
        local c = {}
        for k, v in pairs(t) do c[k] = copy(v) end
        return c
    end
    e = copy(e)
    e.creation_datetime = dicom_datetime(e.creation_datetime)
    e.treatment_datetime = dicom_datetime(e.treatment_datetime)
    e.study.datetime = dicom_datetime(e.study.datetime)
    e.patient.birth_date = e.patient.birth_date and dicom_datetime(e.patient.birth_date):sub(1, 8)
    e.equipment = nil
    for _, b in ipairs(e.beams) do
        for _, cp in ipairs(b.control_points) do
            cp.datetime = dicom_datetime(cp.datetime)
            if cp.energy_unit ~= "MV" and cp.energy_unit ~= "MEV" then cp.energy, cp.energy_unit = nil, nil end
        end
    end
    return e
end

-- Every key of expected (recursively) equals the same key of actual.
local function assert_subset(expected, actual, path)
    path = path or "record"
    if type(expected) ~= "table" then
        assert(expected == actual, string.format("%s: expected %s, got %s", path, tostring(expected), tostring(actual)))
        return
    end
    assert(type(actual) == "table", path .. ": expected a table, got " .. tostring(actual))
    for k, v in pairs(expected) do assert_subset(v, actual[k], path .. "." .. tostring(k)) end
end

local function build_and_save(group, opts, dir, name)
    local ds = map.build(group, opts)
    local path = dir .. "/" .. name .. ".dcm"
    ds:save(path)
    return ds, path
end

support.options, support.VMAT, support.read_file = options, VMAT, read_file
support.ACCEPTED, support.ACCEPTED_EMPTY_STUDY, support.dciodvfy = ACCEPTED, ACCEPTED_EMPTY_STUDY, dciodvfy
support.read_back, support.expected_of, support.assert_subset = read_back, expected_of, assert_subset
support.build_and_save = build_and_save
-- TJU's private block, as its site folder chooses it (scripts/tju/site.lua).
support.TJU_BLOCK = dofile(helpers.source .. "/scripts/tju/site.lua").mosaiq.private_block

return support
