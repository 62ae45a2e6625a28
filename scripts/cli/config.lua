--- check or show the environments configuration
local cli = require "rtbackup.cli"
local config = require "rtbackup.config"
local pretty = require "rtbackup.pretty"

local parser = cli.parser("config", [[
Checks the environments (TOML) for every problem at once, shows one environment
with its secrets masked, lists every setting (docs/settings.md is this list), or
prints what each peer must be told about the others (`config peers ENV`: Orthanc's
DicomModalities entries; the AE titles, hosts and ports ARIA's and MIM's DICOM
daemons need).
The configuration is --config PATH (a file or a directory of *.toml), else
/etc/rtbackup (<prefix>/etc/rtbackup when installed under a prefix other than /usr
or /usr/local; in a build tree ./environments, else /etc/rtbackup).]],
    "0 no errors (warnings allowed), 2 usage error or any configuration error")
parser:command_target("command")
local check = parser:command("check", "report every problem (secrets are resolved only with ENV)")
check:argument("env", "check only this environment, including its secrets"):args("?")
local show = parser:command("show", "print one environment, secrets masked")
show:argument("env", "environment to show")
parser:command("settings", "print every setting: type, default, where it may be set, what it does (Markdown)")
local peers_cmd = parser:command("peers", "print what each peer must be told: Orthanc DicomModalities entries, "
                                 .. "AE title, host and port for ARIA/MIM")
peers_cmd:argument("env", "environment")
peers_cmd:option("--host", "the address rtbackup runs on, as the peers see it (default: the placeholder RTBACKUP_HOST)")
peers_cmd:option("--format", "text or json"):choices{"text", "json"}
local args = cli.parse(parser, {...})

if args.command == "settings" then
    io.stdout:write(require("rtbackup.settings").markdown())
    return cli.EXIT.ok
end

if args.command == "peers" then
    local peers = require "rtbackup.peers"
    -- Addresses and AE titles only: no secret is needed (nor resolved) for this.
    local env = config.raw(args.env)
    if not env then cli.usage("no environment " .. args.env .. " in " .. config.path()) end
    env.name = args.env
    local plan = peers.plan(env, {host = args.host})
    plan.our_host = args.host
    if args.format == "json" then
        local cjson = require "cjson"
        local out = {}
        for i, p in ipairs(plan) do
            out[i] = {alias = p.alias, type = p.type, aet = p.aet, host = p.host, port = p.port, entries = p.entries,
                      DicomModalities = p.type == "orthanc" and peers.orthanc_modalities(p) or nil}
        end
        io.stdout:write(cjson.encode({env = env.name, peers = out}), "\n")
    else
        io.stdout:write(peers.text(env, plan))
    end
    return cli.EXIT.ok
end

if args.command == "show" then
    local env = cli.load_env(args.env)
    env.name = nil
    io.stdout:write("# ", args.env, " from ", config.path(), "\n")
    io.stdout:write("[", args.env, "]\n", table.concat(pretty.toml(env, args.env), "\n"), "\n")
    return cli.EXIT.ok
end

local problems = config.problems(args.env)
local errors, warnings = 0, 0
for _, p in ipairs(problems) do
    if p.severity == "error" then errors = errors + 1 else warnings = warnings + 1 end
    io.stdout:write(p.severity, ": ", p.text, "\n")
end
local checked = args.env and 1 or #config.environments()
io.stdout:write(string.format("%s: %d environment%s checked, %d error%s, %d warning%s\n",
    config.path(), checked, checked == 1 and "" or "s", errors, errors == 1 and "" or "s",
    warnings, warnings == 1 and "" or "s"))
return errors == 0 and cli.EXIT.ok or cli.EXIT.usage
