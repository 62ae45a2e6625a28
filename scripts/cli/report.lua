--- treatment summary of a patient from Mosaiq
local cli = require "rtbackup.cli"
local dc = require "rtbackup.dicom_cli"
local errors = require "rtbackup.error"
local context = require "rtbackup.context"
local mosaiq = require "rtbackup.mosaiq.query"
local mcli = require "rtbackup.mosaiq.cli"

local EXIT_NO_MATCH = 3

local parser = cli.parser("report", [[
Lists a patient's treatment courses from Mosaiq, one row per course: patient name,
MRN, site, first and last treatment date, total dose (cGy), fractions planned and
delivered. With --from/--to (YYYY-MM-DD, inclusive) only the courses treated in that
period. The MRN is passed to the database as a parameter, never as SQL text.
  rtbackup report UCLA --mrn MRN0012345
  rtbackup report DEMO MOSAIQ --mrn MRN0100037 --from 2026-01-01 --to 2026-06-30 --format csv]],
    "0 courses listed, 1 database failure, 2 usage or configuration error (bad date, " ..
    "unknown source), 3 no course matched")
parser:argument("env", "environment")
parser:argument("source", "Mosaiq source alias (default: default_source if Mosaiq, else the first)")
      :args("?")
parser:option("--mrn", "the patient's MRN (Mosaiq Ident.IDA)"):args(1)
parser:option("--from", "first day of the period, YYYY-MM-DD")
parser:option("--to", "last day of the period, YYYY-MM-DD")
cli.add_format_option(parser)
local args = cli.parse(parser, {...})

local COLUMNS = {"PatientName", "MRN", "Site", "Start", "End", "TotalDose", "Fractions", "Delivered"}

local function usage(message)
    errors.raise{kind = "usage", message = message}
end

if not args.mrn or args.mrn == "" then usage("give the patient's --mrn") end

local function run()
    local env = cli.load_env(args.env)
    local ctx = context.new(env, {command = "report"})
    local db = mcli.connect(env, args.source, {ctx = ctx})
    local ok, courses = pcall(mosaiq.treatment_summary, db, args.mrn, args.from, args.to)
    db:close()
    ctx:flush()
    if not ok then error(courses, 0) end
    if #courses == 0 then
        local period = ""
        if args.from or args.to then
            period = string.format(" treated between %s and %s", args.from or "the first day",
                                   args.to or "today")
        end
        io.stderr:write(string.format("no treatment course found for MRN %s%s\n", args.mrn, period))
        -- Machine-readable formats still print an empty result, so pipes stay valid.
        if args.format == "json" or args.format == "csv" then dc.print_rows({}, COLUMNS, args.format) end
        return EXIT_NO_MATCH
    end
    dc.print_rows(courses, COLUMNS, args.format)
    return cli.EXIT.ok
end

local ok, result = pcall(run)
if ok then return result end
-- A bad date or MRN is the caller's mistake (exit 2); database trouble is a failure (1).
if errors.is(result, "invalid") then result.kind = "usage" end
if errors.is(result) and result.kind ~= "usage" and result.kind ~= "config" then
    io.stderr:write("rtbackup report: ", tostring(result), "\n")
    return cli.EXIT.failure
end
error(result, 0)
