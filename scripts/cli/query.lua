--- query a source archive by patient, dates and modality
local cli = require "rtbackup.cli"
local clock = require "rtbackup.clock"
local dc = require "rtbackup.dicom_cli"
local site = require "rtbackup.site"

local parser = cli.parser("query", [[
Lists what a source archive holds for a patient, a study date or a treatment date,
at STUDY, SERIES or IMAGE level (default: the environment's dicom_query_level; IMAGE
when --treatment-date is given, since RT records carry it per instance).
  rtbackup query UCLA --mrn 12345678 --level SERIES
  rtbackup query UCLA ARIA --treatment-date 2026-11-21 --modality RTRECORD --format csv]],
    dc.EXIT_CODES)
parser:argument("env", "environment")
parser:argument("source", "source alias (default: default_source)"):args("?")
parser:option("--mrn", "PatientID")
parser:option("--study-date", "YYYY-MM-DD, or a range FROM..TO")
parser:option("--treatment-date", "YYYY-MM-DD (RT records)")
parser:option("--modality", "e.g. RTRECORD, RTPLAN, CT (default: the environment's modality_to_query)")
parser:option("--level", "STUDY, SERIES or IMAGE"):choices{"STUDY", "SERIES", "IMAGE", "study", "series", "image"}
dc.add_format_option(parser)
local args = cli.parse(parser, {...})

local env = cli.load_env(args.env)
local source = args.source or env.default_source
local settings = env.settings or {}
local function dicom_range(text)
    local from, to = text:match("^(.-)%.%.(.*)$")
    if from then
        return clock.dicom_date(clock.check_date(from, "--study-date")) .. "-" ..
               clock.dicom_date(clock.check_date(to, "--study-date"))
    end
    return clock.dicom_date(clock.check_date(text, "--study-date"))
end
local level = (args.level or (args.treatment_date and "IMAGE") or settings.dicom_query_level or "STUDY"):upper()

return dc.run(function()
    local rows, columns = site.load(env, "query")()({
        env = env, source = source, level = level, mrn = args.mrn,
        study_date = args.study_date and dicom_range(args.study_date),
        treatment_date = args.treatment_date and clock.dicom_date(clock.check_date(args.treatment_date, "--treatment-date")),
        modality = args.modality or ((args.treatment_date or level ~= "STUDY") and settings.modality_to_query) or nil,
    })
    dc.print_rows(rows, columns, args.format)
    return cli.EXIT.ok
end)
