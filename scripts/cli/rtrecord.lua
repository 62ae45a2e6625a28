--- write a day's RT Beams Treatment Records from Mosaiq as files (to inspect them)
local cli = require "rtbackup.cli"
local clock = require "rtbackup.clock"
local context = require "rtbackup.context"
local files = require "rtbackup.files"
local flow = require "rtbackup.mosaiq.flow"
local journal = require "rtbackup.journal"
local mcli = require "rtbackup.mosaiq.cli"
local site = require "rtbackup.site"

local parser = cli.parser("rtrecord", [[
Builds the RT Beams Treatment Records of a day's delivered treatments from a Mosaiq
source, exactly as `rtbackup backup` would (same site choices, same UIDs), and writes
them to --out as <SOPInstanceUID>.dcm (a directory created 0700: records name
patients) without sending anything. Useful to inspect records (dcmdump, dciodvfy)
before a backup.
  rtbackup rtrecord TJU --date 2026-11-20 --out /tmp/records]],
    "0 every record built, 1 some deliveries not turned into records (listed; kinds the site's " ..
    "mosaiq.accepted_skips lists do not count), " ..
    "2 usage or configuration error, 4 the database unreachable")
parser:argument("env", "environment")
parser:argument("source", "Mosaiq source alias (default: default_source, else the first mosaiq source)"):args("?")
parser:option("--date", "treatment date, YYYY-MM-DD (default: today in the site's time zone)")
parser:option("--out", "directory for the records (created)")
local args = cli.parse(parser, {...})
if not args.out then cli.usage("--out DIR is required\n" .. parser:get_usage()) end

local env = cli.load_env(args.env)
local _, alias = mcli.source(env, args.source)
local date = args.date and clock.check_date(args.date, "--date")
    or clock.today(require("rtbackup.settings").get(env, "timezone"), 0)
local ctx = context.new(env, {command = "rtrecord", source = alias})
-- The journal keeps the UID namespace a backup uses: the same records, the same UIDs.
local j = journal.open(string.format("%s/%s.journal.sqlite", require("rtbackup.run").state_dir(env), env.name))
local ok, built = pcall(flow.build, ctx, env, alias, site.choices(env), date, date, {journal = j})
j:close()
ctx:flush()
if not ok then
    io.stderr:write("rtbackup rtrecord: ", tostring(built), "\n")
    return require("rtbackup.exit").of_error(built)
end
files.private_dir(args.out)
for _, r in ipairs(built.records) do r.ds:save(args.out .. "/" .. r.uid .. ".dcm") end
for _, f in ipairs(built.skipped) do
    io.stderr:write(string.format("not built (%s): %s fraction %s: %s\n", f.kind or "?", f.patient or "?",
                                  tostring(f.fraction or "?"), f.reason or "?"))
end
io.stdout:write(string.format("%d records written to %s; %d deliveries not turned into records\n",
                              #built.records, args.out, #built.skipped))
return flow.makes_partial(site.choices(env), built.skipped) and cli.EXIT.failure or cli.EXIT.ok
