--- C-ECHO a DICOM peer
local cli = require "rtbackup.cli"
local dc = require "rtbackup.dicom_cli"

local parser = cli.parser("echo", [[
Verifies that a DICOM peer answers (C-ECHO).
  rtbackup echo --aet ME --aec ARIA --host 10.0.0.5 --port 104
  rtbackup echo --env UCLA --peer ARIA
  rtbackup echo -aet ME -aec ARIA -to 5 10.0.0.5 104      # as echoscu]], dc.EXIT_CODES)
dc.add_peer_options(parser)
local args = cli.parse(parser, dc.dcmtk_args({...}))

return dc.run(function()
    local peer = dc.peer(args)
    local seconds = peer:echo()
    io.stdout:write(string.format("C-ECHO %s@%s:%d ok in %.1f ms\n", peer.aet, peer.host, peer.port,
                                  seconds * 1000))
    return cli.EXIT.ok
end)
