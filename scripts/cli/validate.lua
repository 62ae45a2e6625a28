--- compare a source with the backup archive, instance by instance
local cli = require "rtbackup.cli"

local parser = cli.parser("validate", [[
Lists the instances of the source that are missing in the backup archive, and the
ones only the backup has, over the selected studies (default: those of the source's lookback_days, 90, to today).
--deep also retrieves every instance from both sides (C-GET, as stored) and compares
their content digests.
  rtbackup validate UCLA                        # default_source against default_backup
  rtbackup validate UCLA MIM ORTHANC_UCLA --since 2026-01-01 --deep]],
    "0 no discrepancy, 1 discrepancies found (listed), 2 usage or configuration error, " ..
    "4 a peer unreachable, 130/143 interrupted")
parser:argument("env", "environment")
parser:argument("source", "source alias (default: default_source)"):args("?")
parser:argument("backup", "backup target alias (default: default_backup)"):args("?")
parser:option("--since", "first study date, YYYY-MM-DD (default: lookback_days before --until, 90)")
parser:option("--until", "last study date, YYYY-MM-DD (default: today)")
parser:option("--patient", "only this patient (PatientID)")
      :convert(cli.patient_id("--patient"))
parser:option("--study", "only this StudyInstanceUID")
      :convert(cli.uid("--study"))
parser:flag("--deep", "also compare the instances' content (digests), through C-GET")
parser:option("--metrics-file", "write the result as Prometheus metrics (node_exporter textfile collector)")
cli.add_format_option(parser)
local args = cli.parse(parser, {...})

local env = cli.load_env(args.env)
local since, till = cli.period(args.since, args["until"])
local alias = args.source or env.default_source
local src = (env.sources or {})[alias]
if not src then cli.usage(env.name .. " has no source " .. tostring(alias)) end
if src.type == "mosaiq" then
    -- Mosaiq is a database, not an archive to compare instance by instance.
    cli.usage(alias .. " is a Mosaiq source: validate compares a DICOM archive with the backup; for Mosaiq, " ..
              "`rtbackup drill " .. env.name .. " " .. alias .. "` compares archived records with records built " ..
              "again, and `rtbackup status " .. env.name .. " " .. alias .. " --refresh` counts them")
end
return require("rtbackup.validate").run(env, alias, args.backup or env.default_backup, {
    since = since, ["until"] = till, patient = args.patient, study = args.study, deep = args.deep,
    metrics_file = args.metrics_file, format = args.format,
})
