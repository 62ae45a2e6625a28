--- run a Lua script with the rtbackup modules (like `lua SCRIPT args`)
local cli = require "rtbackup.cli"
local errors = require "rtbackup.error"

local parser = cli.parser("run", [[
Runs a Lua script inside rtbackup: `require "rtbackup.<module>"` works, blocking
calls run on the thread pool, and the script's arguments are in `arg` and `...`.
The exit code is the script's: return an integer, true (0) or false (1).]])
parser:argument("script", "Lua file to run")
parser:argument("args", "arguments for the script"):args("*")

local argv = {...}
-- Options after the script belong to the script, so only look for run's own
-- options (--help) before it.
if argv[1] == nil or argv[1]:sub(1, 1) == "-" then
    cli.parse(parser, argv)
end
local script = argv[1]
local chunk, err = loadfile(script)
if not chunk then
    errors.raise{kind = "usage", message = "cannot load " .. script .. ": " .. err}
end
local script_args = {[0] = script, table.unpack(argv, 2)}
arg = script_args
return chunk(table.unpack(script_args, 1, #argv - 1))
