-- Writes the dataset seeds of the fuzz corpus into DIR: small synthetic instances made
-- with the dataset API (a CT slice in both VR encodings, an object with nested
-- sequences, private elements). Usage: rtbackup run make_seeds.lua DIR
local dicom = require "rtbackup.dicom"
local dir = assert(arg[1], "usage: make_seeds.lua DIR")

local function uid(...) return dicom.uid("fuzz-seed", ...) end

-- A 8x8 16-bit CT slice: every module a CT needs, little pixel data.
local pixels = {}
for i = 0, 63 do pixels[#pixels + 1] = string.pack("<I2", i * 64) end
local ct = dicom.dataset{
    SOPClassUID = "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID = uid("ct"),
    PatientID = "FUZZ001", PatientName = "FUZZ^SEED", Modality = "CT",
    StudyInstanceUID = uid("study"), SeriesInstanceUID = uid("series"), SeriesNumber = 1,
    InstanceNumber = 1, StudyDate = "20260101", StudyTime = "120000", AccessionNumber = "",
    ReferringPhysicianName = "", StudyID = "1", PatientBirthDate = "", PatientSex = "O",
    ImageType = {"ORIGINAL", "PRIMARY", "AXIAL"}, ImagePositionPatient = {0, 0, 2.5},
    ImageOrientationPatient = {1, 0, 0, 0, 1, 0}, PixelSpacing = {1, 1}, SliceThickness = 2.5,
    FrameOfReferenceUID = uid("for"), SamplesPerPixel = 1,
    PhotometricInterpretation = "MONOCHROME2", Rows = 8, Columns = 8, BitsAllocated = 16,
    BitsStored = 12, HighBit = 11, PixelRepresentation = 0, RescaleIntercept = -1024,
    RescaleSlope = 1, PixelData = table.concat(pixels),
}
ct:save(dir .. "/ct_explicit.dcm", {transfer_syntax = "explicit"})
ct:save(dir .. "/ct_implicit.dcm", {transfer_syntax = "implicit"})

-- Nested sequences, as in RT objects: beams > control points > leaf positions.
local beams = {}
for b = 1, 2 do
    local cps = {}
    for c = 0, 1 do
        cps[#cps + 1] = {ControlPointIndex = c, GantryAngle = 180.0 + c,
                         BeamLimitingDevicePositionSequence = {
                             {RTBeamLimitingDeviceType = "ASYMX", LeafJawPositions = {-50, 50}},
                             {RTBeamLimitingDeviceType = "MLCX", LeafJawPositions = {-5, -5, 5, 5}}}}
    end
    beams[b] = {BeamNumber = b, BeamName = "B" .. b, ControlPointSequence = cps}
end
local plan = dicom.dataset{
    SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5", SOPInstanceUID = uid("plan"),
    PatientID = "FUZZ001", PatientName = "FUZZ^SEED", Modality = "RTPLAN",
    StudyInstanceUID = uid("study"), SeriesInstanceUID = uid("plan-series"),
    RTPlanLabel = "SEED", BeamSequence = beams,
    ReferencedStructureSetSequence = {{ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3",
                                       ReferencedSOPInstanceUID = uid("rtstruct")}},
}
plan:save(dir .. "/plan_nested.dcm", {transfer_syntax = "explicit"})

-- Private elements: a creator and an element the dictionary does not name.
local private = dicom.dataset{
    SOPClassUID = "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID = uid("private"),
    PatientID = "FUZZ001", Modality = "OT",
}
private["0011,0010"] = "RTBACKUP FUZZ"
private:save(dir .. "/private.dcm", {transfer_syntax = "implicit"})
