--- back up a source (or --all) into the environment's backup archive, verified
local cli = require "rtbackup.cli"
local exit = require "rtbackup.exit"

local parser = cli.parser("backup", [[
Backs up one source of an environment (default: its default_source), or every source
with --all, into its default_backup, and verifies every instance arrived. Work is
journaled in the state dir: a run that is interrupted is finished by the next one.
  rtbackup backup UCLA                      # ARIA: studies of the last lookback_days (90)
  rtbackup backup UCLA MIM --since 2026-11-01 --until 2026-11-21
  rtbackup backup UCLA --all --dry-run
  rtbackup backup TJU Mosaiq --format json  # the run's summary as JSON on stdout]], exit.HELP.backup)
parser:argument("env", "environment")
parser:argument("source", "source alias (default: the environment's default_source)"):args("?")
parser:flag("--all", "every source of the environment, one after the other")
parser:option("--since", "first day, YYYY-MM-DD (default: lookback_days before --until: 90 for ARIA/MIM by study date, 7 for Mosaiq)")
parser:option("--until", "last day, YYYY-MM-DD (default: today)")
parser:option("--patient", "only this patient (MRN / PatientID); ARIA/MIM without --since/--until: every study of theirs")
      :convert(cli.patient_id("--patient"))
parser:option("--study", "only this StudyInstanceUID")
      :convert(cli.uid("--study"))
parser:option("--shard", "I/N: only the studies (Mosaiq: patients) of shard I of N")
parser:flag("--dry-run", "print the plan, move nothing")
parser:flag("--ignore-window", "run even outside the source's time window")
parser:option("--metrics-file", "write the run's Prometheus metrics to this file (node_exporter textfile collector)")
cli.add_format_option(parser, {"text", "json"})
local args = cli.parse(parser, {...})

local env = cli.load_env(args.env)
local since, till = cli.period(args.since, args["until"])
local aliases = cli.sources(env, args.source, args.all)
return require("rtbackup.run").backup(env, aliases, {
    since = since, ["until"] = till, patient = args.patient, study = args.study,
    shard = args.shard and cli.shard(args.shard), dry_run = args.dry_run, ignore_window = args.ignore_window,
    metrics_file = args.metrics_file, format = args.format,
})
