--- query a source archive by patient, dates and modality
local cli = require "rtbackup.cli"

local parser = cli.parser("query", [[
Lists what a source archive holds for a patient, a study date or a treatment date,
at STUDY, SERIES or IMAGE level (default: the environment's dicom_query_level; IMAGE
when --treatment-date is given, since RT records carry it per instance).
  rtbackup query UCLA --mrn 12345678 --level SERIES
  rtbackup query UCLA ARIA --treatment-date 2026-11-21 --modality RTRECORD --format csv]],
    "0 success, 1 DICOM failure (refused, unreachable), 2 usage or configuration error")
parser:argument("env", "environment")
parser:argument("source", "source alias (default: default_source)"):args("?")
parser:option("--mrn", "PatientID")
parser:option("--study-date", "YYYY-MM-DD, or a range FROM..TO")
parser:option("--treatment-date", "YYYY-MM-DD (RT records)")
parser:option("--modality", "e.g. RTRECORD, RTPLAN, CT (default: the environment's modality_to_query)")
parser:option("--level", "STUDY, SERIES or IMAGE"):choices{"STUDY", "SERIES", "IMAGE", "study", "series", "image"}
cli.add_format_option(parser)
local args = cli.parse(parser, {...})

local env = cli.load_env(args.env)
return require("rtbackup.query").run(env, args.source or env.default_source, {
    mrn = args.mrn, study_date = args.study_date, treatment_date = args.treatment_date,
    modality = args.modality, level = args.level and args.level:upper(), format = args.format,
})
