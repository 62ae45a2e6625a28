--- C-FIND: query a DICOM archive
local cli = require "rtbackup.cli"
local dc = require "rtbackup.dicom_cli"

local parser = cli.parser("find", [[
Queries a DICOM archive (C-FIND; Patient Root at PATIENT level, else Study Root).
Matches print as a table on a terminal, as CSV otherwise, or as --format json.
  rtbackup find --env UCLA --peer ARIA --query-level SERIES --study-uid 1.2.3
  rtbackup find ... -k StudyDate=20261101-20261121 -k Modality=RTPLAN -k SeriesDescription=]],
    dc.EXIT_CODES)
dc.add_peer_options(parser)
dc.add_query_options(parser, "STUDY")
dc.add_format_option(parser)
local args = cli.parse(parser, dc.dcmtk_args({...}))

-- Keys asked back at each level (what an operator wants to see).
local RETURN_KEYS = {
    PATIENT = {"PatientID", "PatientName", "PatientBirthDate", "NumberOfPatientRelatedStudies"},
    STUDY = {"PatientID", "PatientName", "StudyDate", "StudyDescription", "StudyInstanceUID",
             "ModalitiesInStudy", "NumberOfStudyRelatedInstances"},
    SERIES = {"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
              "SeriesDescription", "NumberOfSeriesRelatedInstances"},
    IMAGE = {"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
             "InstanceNumber"},
}

return dc.run(function()
    local peer = dc.peer(args)
    local level = args.query_level:upper()
    local returns = RETURN_KEYS[level]
    local query = dc.query(args, returns)
    local rows = peer:find(query)
    -- Show the standard columns plus any -k key the user asked about.
    local columns, seen = {}, {}
    for _, k in ipairs(returns) do columns[#columns + 1] = k; seen[k] = true end
    for _, kv in ipairs(args.key or {}) do
        local k = kv:match("^([%w,]+)=")
        if k and not seen[k] then columns[#columns + 1] = k; seen[k] = true end
    end
    dc.print_rows(rows, columns, args.format)
    return cli.EXIT.ok
end)
