--- C-GET: retrieve instances into a directory
local cli = require "rtbackup.cli"
local dc = require "rtbackup.dicom_cli"

local parser = cli.parser("get", [[
Retrieves matching instances over our own association (C-GET, with SCP role
selection for the storage classes) into --out-dir as <SOPInstanceUID>.dcm. The level
is the most specific UID given unless --query-level says otherwise. Compressed
instances arrive in the transfer syntax the peer stores them in, or are reported
failed, never decompressed: a C-FIND first asks what is there, and each SOP class is
offered in each syntax (in rounds for peers that send on the first context accepted).
A peer whose C-FIND does not say how it stores an instance (dcmqrscp) may still send
uncompressed data in another uncompressed syntax (values unchanged); "transcoded"
counts only what the peer said it stores otherwise. Exit 1 when any instance failed.
  rtbackup get --env UCLA --peer ORTHANC_MAIN --study-uid 1.2.3 --out-dir /tmp/restore]],
    dc.EXIT_CODES)
dc.add_peer_options(parser)
dc.add_query_options(parser, nil)
parser:option("--out-dir", "directory for the instances (created)")
dc.add_format_option(parser)
local args = cli.parse(parser, dc.dcmtk_args({...}))
if not args.out_dir then
    require("rtbackup.error").raise{kind = "usage", message = "--out-dir is required\n" .. parser:get_usage()}
end
args.query_level = args.query_level or (args.sop_instance_uid and "IMAGE")
    or (args.series_uid and "SERIES") or (args.study_uid and "STUDY") or "PATIENT"

return dc.run(function()
    local peer = dc.peer(args)
    -- The instances name patients: a directory it creates is the owner's only (0700);
    -- one that exists keeps the mode the operator gave it.
    require("rtbackup.files").private_dir(args.out_dir)
    local r = peer:get(dc.query(args), args.out_dir)
    if r.message then io.stderr:write("failed: ", r.message, "\n") end
    for _, uid in ipairs(r.failed_uids or {}) do io.stderr:write("not retrieved: ", uid, "\n") end
    dc.print_rows({r}, {"status", "completed", "failed", "warning", "received", "transcoded", "associations"},
                  args.format)
    -- A failure status (0xA..., 0xC...: the peer retrieved nothing it could, an
    -- unknown study) fails the command even when no sub-operation is counted failed.
    local status = tonumber(r.status) or 0
    local refused = status ~= 0 and (status & 0xF000) ~= 0xB000 and status ~= 0xFE00
    return (r.failed == 0 and not refused) and cli.EXIT.ok or cli.EXIT.failure
end)
