--- rtbackup.cli: what every command file shares: argument parsing with
-- lua-argparse, loading the environment, and the checks of the common options.
-- Exit codes are rtbackup.exit's.
local argparse = require "argparse"
local clock = require "rtbackup.clock"
local config = require "rtbackup.config"
local errors = require "rtbackup.error"
local exit = require "rtbackup.exit"

local cli = {}

-- Exit codes every command uses; commands document any of their own.
cli.EXIT = {ok = exit.ok, failure = exit.partial, usage = exit.usage}

local function usage(message)
    errors.raise{kind = "usage", message = message}
end
cli.usage = usage

--- A parser for `rtbackup <name>`, with the exit codes appended to --help.
function cli.parser(name, description, exit_codes)
    return argparse("rtbackup " .. name, description, "exit codes: " .. (exit_codes or exit.HELP.common))
end

--- Parses args; a mistake raises a usage error (exit 2) showing the usage line.
function cli.parse(parser, args)
    local ok, result = parser:pparse(args)
    if not ok then usage(result .. "\n" .. parser:get_usage()) end
    return result
end

--- The named environment, validated and with secrets resolved; a configuration
-- error (exit 2) lists every problem.
function cli.load_env(name)
    return config.load(name)
end

--- --format: `choices` (default table, json, csv).
function cli.add_format_option(parser, choices)
    choices = choices or {"table", "json", "csv"}
    parser:option("--format", table.concat(choices, ", ")):choices(choices)
end

--- An option's converter (parser:option(...):convert(...)): a whole number of at least
-- `min`, else a usage error naming the option and what was given.
function cli.whole_number(option, min)
    return function(text)
        local n = math.tointeger(tonumber(text))
        if n == nil or n < min then
            return nil, string.format("%s: expected a whole number of at least %d, got '%s'", option, min, text)
        end
        return n
    end
end

--- --since/--until: real dates, the first not after the last.
function cli.period(since, till)
    return clock.check_period(since, till, "--since", "--until")
end

--- The sources a command works on: the one named, every one with `all`, else the
-- environment's default_source.
function cli.sources(env, alias, all)
    local list = {}
    if all then
        for name in pairs(env.sources or {}) do list[#list + 1] = name end
        table.sort(list)
    else
        list[1] = alias or env.default_source
    end
    if #list == 0 or not list[1] then usage(env.name .. " has no default_source: name a source") end
    return list
end

--- "I/N" -> {index = I, count = N}, or a usage error.
function cli.shard(text)
    local i, n = tostring(text):match("^(%d+)/(%d+)$")
    i, n = math.tointeger(tonumber(i)), math.tointeger(tonumber(n))
    if not i or not n or n < 1 or i < 1 or i > n or n > 1000000 then
        usage("--shard: expected I/N with 1 <= I <= N <= 1000000, got " .. tostring(text))
    end
    return {index = i, count = n}
end

return cli
