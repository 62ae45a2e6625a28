-- Writes N synthetic CT instances of 256x256 16-bit pixels (128 KiB of pixel data
-- each) into DIR, through the rtbackup dataset API. Usage: rtbackup run make_ct.lua DIR N
local dicom = require "rtbackup.dicom"
local dir, n = arg[1], tonumber(arg[2] or "1000")
local study, series = dicom.uid("bench", "study"), dicom.uid("bench", "series")
local rows, cols = 256, 256
for i = 1, n do
    -- A different gradient per slice, so no two instances are alike.
    local row = {}
    for x = 0, cols - 1 do row[#row + 1] = string.pack("<I2", (x * 16 + i) % 4096) end
    local pixels = string.rep(table.concat(row), rows)
    local ds = dicom.dataset{
        SOPClassUID = "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID = dicom.uid("bench", "ct", i),
        PatientID = "BENCH001", PatientName = "BENCH^PATIENT", Modality = "CT",
        StudyInstanceUID = study, SeriesInstanceUID = series, SeriesNumber = 1, InstanceNumber = i,
        StudyDate = "20261101", StudyTime = "120000", AccessionNumber = "", ReferringPhysicianName = "",
        StudyID = "1", PatientBirthDate = "", PatientSex = "O", Manufacturer = "rtbackup",
        ImageType = {"ORIGINAL", "PRIMARY", "AXIAL"}, ImagePositionPatient = {0, 0, i * 2.5},
        ImageOrientationPatient = {1, 0, 0, 0, 1, 0}, PixelSpacing = {1, 1}, SliceThickness = 2.5,
        FrameOfReferenceUID = dicom.uid("bench", "for"), PositionReferenceIndicator = "",
        SamplesPerPixel = 1, PhotometricInterpretation = "MONOCHROME2", Rows = rows, Columns = cols,
        BitsAllocated = 16, BitsStored = 12, HighBit = 11, PixelRepresentation = 0,
        RescaleIntercept = -1024, RescaleSlope = 1, KVP = 120,
        PixelData = pixels,
    }
    ds:save(string.format("%s/ct%04d.dcm", dir, i))
end
