--- C-MOVE: have an archive send instances to a destination AE
local cli = require "rtbackup.cli"
local dc = require "rtbackup.dicom_cli"

local parser = cli.parser("move", [[
Asks an archive to send matching instances to a destination (C-MOVE). At SERIES
and IMAGE level the Study (and Series) Instance UIDs are required.
  rtbackup move --env UCLA --peer ARIA --move-dest-aet ORTHANC_UCLA --study-uid 1.2.3
  rtbackup move -aet ME -aec ARIA -aem ORTHANC_UCLA -k StudyInstanceUID=1.2.3 10.0.0.5 104]],
    dc.EXIT_CODES)
dc.add_peer_options(parser)
dc.add_query_options(parser, "STUDY")
parser:option("--move-dest-aet", "AE title the instances are sent to; DCMTK: -aem, --move"):args(1)
dc.add_format_option(parser)
local args = cli.parse(parser, dc.dcmtk_args({...}))
if not args.move_dest_aet then
    require("rtbackup.error").raise{kind = "usage", message = "--move-dest-aet is required\n" .. parser:get_usage()}
end

return dc.run(function()
    local peer = dc.peer(args)
    local query = dc.query(args)
    query.destination = args.move_dest_aet
    local r = peer:move(query)
    dc.print_rows({r}, {"status", "completed", "failed", "warning"}, args.format)
    for _, uid in ipairs(r.failed_uids or {}) do io.stderr:write("failed: ", uid, "\n") end
    return r.failed == 0 and cli.EXIT.ok or cli.EXIT.failure
end)
