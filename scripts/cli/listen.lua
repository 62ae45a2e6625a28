--- run a storage SCP that writes received instances to a directory
local cli = require "rtbackup.cli"
local log = require "rtbackup.log"
local task = require "rtbackup.task"
local dicom = require "rtbackup.dicom"

local parser = cli.parser("listen", [[
Receives instances (C-STORE, C-ECHO) and writes them to --out-dir as
<SOPInstanceUID>.dcm, until SIGINT or SIGTERM.
  rtbackup listen --env UCLA --out-dir /var/spool/rtbackup --allow ARIA_UCLA]],
    "130/143 stopped by SIGINT/SIGTERM (the normal end), 1 cannot listen, 2 usage or configuration error")
parser:option("--env", "environment: our AE title and port from its script_ae")
parser:option("--aet", "our AE title")
parser:option("--port", "port to listen on (0: any free port)"):convert(tonumber)
parser:option("--out-dir", "where instances are written (created)")
parser:option("--allow", "calling AE title to accept (repeatable; default: any)"):count("*")
local args = cli.parse(parser, {...})

local env = args.env and cli.load_env(args.env)
local aet = args.aet or (env and env.script_ae.aet)
local port = args.port or (env and env.script_ae.port)
if not aet or not port or not args.out_dir then
    require("rtbackup.error").raise{kind = "usage", message = "give --aet, --port (or --env) and --out-dir\n" .. parser:get_usage()}
end
os.execute("mkdir -p '" .. args.out_dir:gsub("'", "'\\''") .. "'")
local scp = dicom.listen{
    aet = aet, port = port, dir = args.out_dir,
    allow = #args.allow > 0 and args.allow or nil,
    on_store = function(e)
        log.info("stored", {sop_instance_uid = e.sop_instance_uid, from = e.calling_aet, path = e.path})
    end,
}
log.info("listening", {aet = aet, port = scp:port(), dir = args.out_dir})
while not task.stopping() do task.sleep(200) end
scp:stop()
log.info("stopped", {stored = scp:stored()})
