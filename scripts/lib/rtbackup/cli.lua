--- rtbackup.cli: what every command file shares: argument parsing with
-- lua-argparse, the exit codes, and loading the environment.
local argparse = require "argparse"
local config = require "rtbackup.config"
local errors = require "rtbackup.error"

local cli = {}

-- Exit codes every command uses; commands document any of their own.
cli.EXIT = {ok = 0, failure = 1, usage = 2}

--- A parser for `rtbackup <name>`, with the exit codes appended to --help.
function cli.parser(name, description, exit_codes)
    local epilog = "exit codes: " .. (exit_codes or
        "0 success, 1 failure, 2 usage or configuration error, 130/143 stopped by SIGINT/SIGTERM")
    return argparse("rtbackup " .. name, description, epilog)
end

--- Parses args; a mistake raises a usage error (exit 2) showing the usage line.
function cli.parse(parser, args)
    local ok, result = parser:pparse(args)
    if not ok then
        errors.raise{kind = "usage", message = result .. "\n" .. parser:get_usage()}
    end
    return result
end

--- The named environment, validated and with secrets resolved; a configuration
-- error (exit 2) lists every problem.
function cli.load_env(name)
    return config.load(name)
end

return cli
