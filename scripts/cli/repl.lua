--- interactive Lua console with an environment and the modules loaded
local cli = require "rtbackup.cli"
local repl = require "rtbackup.repl"

local parser = cli.parser("repl", [[
Opens a Lua console. With ENV, `env` is that environment (secrets masked when
printed). Preloaded: env, ctx, config, log, task, errors, pretty, dicom. Input may span lines;
expressions print their value. Reads plain lines when stdin is not a terminal, so
`echo 'print(env.description)' | rtbackup repl UCLA` works.]],
    "0 success (piped input: every chunk ran), 1 a piped chunk failed, 2 usage or configuration error")
parser:argument("env", "environment to load"):args("?")
local args = cli.parse(parser, {...})

local globals = {
    config = require "rtbackup.config",
    log = require "rtbackup.log",
    task = require "rtbackup.task",
    errors = require "rtbackup.error",
    pretty = require "rtbackup.pretty",
    dicom = require "rtbackup.dicom",
}
if args.env then globals.env = cli.load_env(args.env) end

-- An operator's session can reach any patient's data: its start and end are in the
-- audit log, and every operation in between is audited through the session's context
-- (dicom.peer(env, alias) and ctx:peer(alias) both use it).
local ctx = require("rtbackup.context").new(globals.env, {command = "repl"})
globals.ctx = ctx
ctx:event{op = "repl", action = "start", interactive = require("rtbackup.host").isatty(0)}
ctx:flush()

local info = require("rtbackup.host").info()
local result = repl.run(globals, {
    name = args.env or "rtbackup",
    banner = string.format("rtbackup %s REPL%s. Preloaded: env, ctx, config, log, task, errors, pretty, dicom. Ctrl-D exits.",
                           info.version, args.env and (" on " .. args.env) or ""),
})
ctx:event{op = "repl", action = "end"}
ctx:flush()
return result
