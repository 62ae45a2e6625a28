--- a restore drill: a sample of the backup restored to scratch space and compared with the source
local cli = require "rtbackup.cli"

local parser = cli.parser("drill", [[
Proves that the backup can be restored. Picks a random sample of what the journal has
as verified (studies of ARIA/MIM, records of Mosaiq), retrieves it from the backup
archive (C-GET) into a private scratch directory, and compares every instance's
content digest with the source's (ARIA/MIM: C-GET from the source; Mosaiq: the record
built again from the database). Each instance is equal or named. Nothing is moved
anywhere; the scratch directory is removed at the end. Recorded like a run (journal,
<state_dir>/<ENV>-<SOURCE>-last-drill.json, metrics, audit log, alerts).
  rtbackup drill UCLA                          # default_source, drill_sample studies (3)
  rtbackup drill UCLA ARIA --sample 10
  rtbackup drill UCLA --all                    # every source, one after the other
  rtbackup drill UCLA ARIA --study 1.2.840.113619.2.55.3.2831164357.781.1416903264.123
  rtbackup drill TJU Mosaiq --format json]],
    "0 every instance equal, 1 a mismatch (different or missing; listed) or nothing verified to drill, " ..
    "2 usage or configuration error, 4 a peer unreachable, 130/143 interrupted")
parser:argument("env", "environment")
parser:argument("source", "source alias (default: the environment's default_source)"):args("?")
parser:flag("--all", "every source of the environment, one after the other")
parser:option("--sample", "how many studies (Mosaiq: records) to drill (default: the setting drill_sample)")
      :convert(cli.whole_number("--sample", 1))
parser:option("--study", "drill this StudyInstanceUID (every verified series of it) instead of a sample")
      :convert(cli.uid("--study"))
parser:option("--seed", "seed of the random sample (to repeat a drill's choice)"):convert(cli.whole_number("--seed"))
parser:option("--metrics-file", "write the drill's Prometheus metrics to this file (command=\"drill\")")
cli.add_format_option(parser, {"text", "json"})
local args = cli.parse(parser, {...})

if args.sample and args.study then cli.usage("--sample and --study: give one") end
local env = cli.load_env(args.env)
return require("rtbackup.drill").sources(env, cli.sources(env, args.source, args.all), {
    sample = args.sample, study = args.study, seed = args.seed,
    metrics_file = args.metrics_file, format = args.format,
})
