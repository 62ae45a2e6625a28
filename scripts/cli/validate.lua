--- compare a source with the backup archive, instance by instance
local cli = require "rtbackup.cli"
local backup = require "rtbackup.backup"
local clock = require "rtbackup.clock"
local dc = require "rtbackup.dicom_cli"
local site = require "rtbackup.site"

local parser = cli.parser("validate", [[
Lists the instances of the source that are missing in the backup archive, and the
ones only the backup has, over the selected studies (default: yesterday and today).
--deep also retrieves every instance from both sides (C-GET) and compares digests.
  rtbackup validate UCLA                        # default_source against default_backup
  rtbackup validate UCLA MIM ORTHANC_UCLA --since 2026-01-01 --deep]],
    "0 no discrepancy, 1 discrepancies found (listed), 2 usage or configuration error, " ..
    "4 a peer unreachable")
parser:argument("env", "environment")
parser:argument("source", "source alias (default: default_source)"):args("?")
parser:argument("backup", "backup target alias (default: default_backup)"):args("?")
parser:option("--since", "first study date, YYYY-MM-DD (default: yesterday)")
parser:option("--until", "last study date, YYYY-MM-DD (default: today)")
parser:option("--patient", "only this patient (PatientID)")
parser:option("--study", "only this StudyInstanceUID")
parser:flag("--deep", "also compare the instances' content (digests), through C-GET")
parser:option("--metrics-file", "write the result as Prometheus metrics (node_exporter textfile collector)")
dc.add_format_option(parser)
local args = cli.parse(parser, {...})

local env = cli.load_env(args.env)
local source = args.source or env.default_source
local target = args.backup or env.default_backup
local tz = backup.setting(env, nil, "timezone")
local since = args.since and clock.check_date(args.since, "--since") or clock.today(tz, -1)
local till = args["until"] and clock.check_date(args["until"], "--until") or clock.today(tz, 0)
local selection = {patient = args.patient, study = args.study,
                   keys = backup.setting(env, env.sources[source], "dicom_query_keys", {}),
                   study_dates = clock.dicom_date(since) .. "-" .. clock.dicom_date(till)}

local metrics = require "rtbackup.metrics"
local collector = args.metrics_file and metrics.new{env = env.name, source = source, command = "validate"}
local started_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
require("rtbackup.audit").for_env(env)
local ok, result = pcall(site.load(env, "validate")(), {env = env, source = source, target = target,
                                                       selection = selection, deep = args.deep})

-- The outcome as metrics: found = instances compared, failed = discrepancies.
local function write_metrics(code)
    if not collector then return end
    local failed = ok and (#result.missing + #result.extra + #result.different) or nil
    local wrote, err = pcall(collector.write, collector, args.metrics_file, {
        started_at = started_at, finished_at = os.date("!%Y-%m-%dT%H:%M:%SZ"), exit_code = code,
        found = ok and result.instances or nil, failed = failed})
    if not wrote then io.stderr:write("rtbackup validate: cannot write the metrics file: ", tostring(err), "\n") end
    metrics.deactivate()
end
if not ok then
    if require("rtbackup.qr_backup").is_unreachable(result) or require("rtbackup.error").is(result, "unreachable") then
        io.stderr:write("rtbackup validate: ", tostring(result), "\n")
        write_metrics(backup.EXIT.unreachable)
        return backup.EXIT.unreachable
    end
    error(result, 0)
end

local rows = {}
for _, kind in ipairs{"missing", "extra", "different"} do
    for _, item in ipairs(result[kind]) do
        rows[#rows + 1] = {problem = kind, patient = item.patient, study = item.study, series = item.series,
                           sop_instance_uid = item.sop_instance_uid}
    end
end
if #rows > 0 or args.format then
    dc.print_rows(rows, {"problem", "patient", "study", "series", "sop_instance_uid"}, args.format)
end
io.stderr:write(string.format("%s %s vs %s (%s .. %s): %d studies, %d instances; %d missing, %d extra%s%s\n",
    env.name, source, target, since, till, result.studies, result.instances, #result.missing, #result.extra,
    args.deep and string.format(", %d compared, %d different", result.compared, #result.different) or "",
    #result.errors > 0 and string.format("; %d studies could not be compared", #result.errors) or ""))
local code = #result.errors > 0 and backup.EXIT.unreachable or (#rows == 0 and cli.EXIT.ok or cli.EXIT.failure)
write_metrics(code)
return code
