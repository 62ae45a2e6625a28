--- write a day's RT Beams Treatment Records from Mosaiq as files (to inspect them)
local cli = require "rtbackup.cli"
local clock = require "rtbackup.clock"
local errors = require "rtbackup.error"
local mosaiq_backup = require "rtbackup.mosaiq_backup"
local backup = require "rtbackup.backup"
local site = require "rtbackup.site"

local parser = cli.parser("rtrecord", [[
Builds the RT Beams Treatment Records of a day's delivered treatments from a Mosaiq
source, exactly as `rtbackup backup` would, and writes them to --out as
<SOPInstanceUID>.dcm without sending anything. Useful to inspect records (dcmdump,
dciodvfy) before a backup.
  rtbackup rtrecord TJU --date 2026-11-20 --out /tmp/records]],
    "0 every record built, 1 some deliveries could not be turned into records (listed), " ..
    "2 usage or configuration error, 4 the database unreachable")
parser:argument("env", "environment")
parser:argument("source", "Mosaiq source alias (default: default_source, else the first mosaiq source)"):args("?")
parser:option("--date", "treatment date, YYYY-MM-DD (default: today in the site's time zone)")
parser:option("--out", "directory for the records (created)")
local args = cli.parse(parser, {...})
if not args.out then errors.raise{kind = "usage", message = "--out DIR is required\n" .. parser:get_usage()} end

local env = cli.load_env(args.env)
local alias = args.source
if not alias then
    if env.sources[env.default_source] and env.sources[env.default_source].type == "mosaiq" then
        alias = env.default_source
    else
        local names = {}
        for name, s in pairs(env.sources) do if s.type == "mosaiq" then names[#names + 1] = name end end
        table.sort(names)
        alias = names[1]
    end
end
if not alias or not env.sources[alias] or env.sources[alias].type ~= "mosaiq" then
    errors.raise{kind = "config", message = env.name .. ": no Mosaiq source " .. tostring(alias or "")}
end
local date = args.date and clock.check_date(args.date, "--date")

-- The site's record choices come from its backup script: it calls backup.mosaiq(run,
-- choices); capture those choices without running a backup.
local choices = {}
local real = backup.mosaiq
backup.mosaiq = function(_, c) choices = c or {} return {}, 0 end
site.load(env, "backup")()({env = env, source_alias = alias, source_cfg = env.sources[alias], opts = {}})
backup.mosaiq = real

local run = {env = env, source_alias = alias, source_cfg = env.sources[alias],
             opts = {since = date, ["until"] = date}}
local ok, built = pcall(mosaiq_backup.build, run, choices, backup.setting)
if not ok then
    io.stderr:write("rtbackup rtrecord: ", tostring(built), "\n")
    return require("rtbackup.qr_backup").is_unreachable(built) and 4 or 1
end
os.execute("mkdir -p '" .. args.out:gsub("'", "'\\''") .. "'")
for _, r in ipairs(built.records) do r.ds:save(args.out .. "/" .. r.key .. ".dcm") end
for _, f in ipairs(built.failures) do io.stderr:write("not built: ", f.key, ": ", f.error, "\n") end
io.stdout:write(string.format("%d records written to %s; %d deliveries could not be turned into records\n",
                              #built.records, args.out, #built.failures))
return #built.failures == 0 and cli.EXIT.ok or cli.EXIT.failure
