--- check that an environment's peers, databases and disks are ready for a run
local cli = require "rtbackup.cli"
local exit = require "rtbackup.exit"

local parser = cli.parser("health", [[
Checks everything a run of ENV depends on, all at once, each within --timeout:
C-ECHO of every source and backup target (with latency), ODBC login and SELECT 1 for
Mosaiq sources, that the state dir takes a file (create, fsync, remove), that the
audit log can be appended to, the free space where the state and the spool live, and
that the files naming patients (state dir, audit log) are not readable by others.
One dead peer does not hide the others: every check is reported.

--deep checks what a first connection to a site usually gets wrong, each failure
naming the side whose configuration to fix: every DICOM source answers a STUDY-level
C-FIND from our AE title; it C-MOVEs one instance into default_backup (one the
archive already holds when there is one, so nothing changes; else the first instance
of its first study), which must then be found there; and default_backup answers
C-FIND (verification needs it). `rtbackup config peers ENV` prints what each peer
must be told.
  rtbackup health UCLA                   # a table on a terminal, CSV otherwise
  rtbackup health UCLA --format json     # for monitors and container health checks
  rtbackup health UCLA --deep            # first day at a site: query and move too]],
    "0 every check passed, 1 any check failed, 2 usage or configuration error")
parser:argument("env", "environment")
cli.add_format_option(parser)
parser:flag("--json", "the same as --format json")
parser:flag("--deep", "also C-FIND each source and the archive, and C-MOVE one instance into the archive")
parser:option("--timeout", "seconds each check may take", "10"):convert(cli.seconds("--timeout"))
parser:option("--min-free-mb", "free space below this many MiB fails the check", "1024")
      :convert(cli.whole_number("--min-free-mb", 0))
parser:option("--metrics-file", "also write the results in Prometheus text format to this file")
local args = cli.parse(parser, {...})

local health = require "rtbackup.health"
local env = cli.load_env(args.env)
local rows = health.check(env, {timeout = math.ceil(args.timeout), min_free_mb = args.min_free_mb,
                                deep = args.deep})
if args.metrics_file then require("rtbackup.metrics").write_health(args.metrics_file, env.name, rows) end
health.print(env, rows, args.json and "json" or args.format, math.ceil(args.timeout))
for _, r in ipairs(rows) do if not r.ok then return exit.partial end end
return exit.ok
