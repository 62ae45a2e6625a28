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

-- argparse takes "-1" for an option: "--days -1" would say "unknown option '-1'".
-- Joined as "--days=-1", the value reaches the option's converter, which names
-- the option and what it expects.
local function join_negative_values(args)
    local out, i = {}, 1
    while i <= #args do
        local a, nxt = args[i], args[i + 1]
        if type(a) == "string" and a:match("^%-%-[%w-]+$") and type(nxt) == "string" and nxt:match("^%-[%d.]") then
            out[#out + 1] = a .. "=" .. nxt
            i = i + 2
        else
            out[#out + 1] = a
            i = i + 1
        end
    end
    return out
end

--- Parses args; a mistake raises a usage error (exit 2) showing the usage line.
-- The global options (rtbackup --help), which go before the command.
local GLOBAL = {["-c"] = true, ["--config"] = true, ["-l"] = true, ["--log-level"] = true, ["--log-format"] = true}

function cli.parse(parser, args)
    local ok, result = parser:pparse(join_negative_values(args))
    if not ok then
        local option = tostring(result):match("^unknown option '([^'=]+)")
        if option and GLOBAL[option] then
            result = string.format("%s\n%s is a global option: it goes before the command " ..
                                   "(rtbackup %s ... COMMAND ...)", result, option, option)
        end
        usage(result .. "\n" .. parser:get_usage())
    end
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
-- `min` (nil: any) and at most `max` (nil: no bound), else a usage error naming the
-- option, what it expects and what was given ("--port: expected a whole number from
-- 1 to 65535, got 'x'"; argparse alone says only "malformed argument 'x'").
function cli.whole_number(option, min, max)
    local expected = "a whole number"
    if min and max then expected = string.format("a whole number from %d to %d", min, max)
    elseif min then expected = string.format("a whole number of at least %d", min) end
    return function(text)
        local n = math.tointeger(tonumber(text))
        if n == nil or (min and n < min) or (max and n > max) then
            return nil, string.format("%s: expected %s, got '%s'", option, expected, text)
        end
        return n
    end
end

--- An option's converter: a positive number of seconds (fractions allowed).
function cli.seconds(option)
    return function(text)
        local n = tonumber(text)
        if n == nil or n <= 0 or n ~= n or n == math.huge then
            return nil, string.format("%s: expected a positive number of seconds, got '%s'", option, text)
        end
        return n
    end
end

--- An option's converter: a TCP port, 1 to 65535 (0 too where `any` says "any free port").
function cli.port(option, any)
    return cli.whole_number(option, any and 0 or 1, 65535)
end

--- An option's converter: one UID (rtbackup.dicom.names_one_uid).
function cli.uid(option)
    return function(text)
        if not require("rtbackup.dicom").names_one_uid(text) then
            return nil, string.format("%s: expected a UID (digits and dots, at most 64 characters), got '%s'",
                                      option, text)
        end
        return text
    end
end

--- An option's converter: one patient's ID (rtbackup.dicom.names_one_patient), without
-- its padding.
function cli.patient_id(option)
    return function(text)
        if not require("rtbackup.dicom").names_one_patient(text) then
            return nil, string.format("%s: expected one patient's ID (not blank, no \\, at most 64 characters), " ..
                                      "got '%s'", option, text)
        end
        return text:match("^%s*(.-)%s*$") -- LO: padding is not significant
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
