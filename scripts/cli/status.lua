--- what the backup holds, per source and day, from the journal (no network)
local cli = require "rtbackup.cli"

local parser = cli.parser("status", [[
Shows, per source and per day (study date for ARIA/MIM, treatment date for Mosaiq),
the instances (Mosaiq: records) known in the source and, of those, verified in the
backup, failed and not yet attempted, with the coverage; the last runs; the open
failures with their last error; the last restore drill. Read from the journal: no
peer is contacted, unless --refresh counts the days again on the source and the
backup (C-FIND; Mosaiq: the day's deliveries rebuilt).
  rtbackup status UCLA                       # every source, the last 30 days
  rtbackup status UCLA ARIA --days 7
  rtbackup status UCLA --since 2026-01-01 --format json]],
    "0 nothing failed, 1 open failures (or failed instances in the days shown), " ..
    "2 usage or configuration error, 4 --refresh: a peer unreachable")
parser:argument("env", "environment")
parser:argument("source", "source alias (default: every source)"):args("?")
parser:option("--days", "the last N days, today included (default: the setting serve_days, 30)")
      :convert(cli.whole_number("--days", 1))
parser:option("--since", "first day, YYYY-MM-DD (instead of --days)")
parser:option("--until", "last day, YYYY-MM-DD (default: today)")
parser:option("--runs", "how many of the last runs to list", "10"):convert(cli.whole_number("--runs", 1))
parser:flag("--refresh", "count the days again on the peers (C-FIND; Mosaiq: rebuild the day's records)")
parser:flag("--hide-patient-ids", "leave patient IDs out")
cli.add_format_option(parser, {"table", "json"})
local args = cli.parse(parser, {...})

if args.days and args.since then cli.usage("--days and --since: give one") end
local env = cli.load_env(args.env)
if args.source and not (env.sources or {})[args.source] then cli.usage(env.name .. " has no source " .. args.source) end
local since, till = cli.period(args.since, args["until"])
local status = require "rtbackup.status"
return status.run(env, {source = args.source, days = args.days, since = since, ["until"] = till,
                        runs = args.runs, refresh = args.refresh,
                        hide_patients = args.hide_patient_ids, format = args.format})
