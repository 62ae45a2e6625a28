--- back up a source (or --all) into the environment's backup archive, verified
local cli = require "rtbackup.cli"
local backup = require "rtbackup.backup"
local clock = require "rtbackup.clock"
local errors = require "rtbackup.error"
local log = require "rtbackup.log"
local site = require "rtbackup.site"

local parser = cli.parser("backup", [[
Backs up one source of an environment (default: its default_source), or every source
with --all, into its default_backup, and verifies every instance arrived. Work is
journaled in the state dir: a run that is interrupted is finished by the next one.
  rtbackup backup UCLA                      # ARIA, yesterday and today
  rtbackup backup UCLA MIM --since 2026-11-01 --until 2026-11-21
  rtbackup backup UCLA --all --dry-run]],
    "0 everything verified, 1 some items failed (partial), 2 usage or configuration error, " ..
    "3 another run holds the lock, 4 a source or target unreachable, 5 outside the source's " ..
    "time window, 130/143 interrupted (SIGINT/SIGTERM)")
parser:argument("env", "environment")
parser:argument("source", "source alias (default: the environment's default_source)"):args("?")
parser:flag("--all", "every source of the environment, one after the other")
parser:option("--since", "first study date, YYYY-MM-DD (default: yesterday)")
parser:option("--until", "last study date, YYYY-MM-DD (default: today)")
parser:option("--patient", "only this patient (MRN / PatientID)")
parser:option("--study", "only this StudyInstanceUID")
parser:option("--shard", "I/N: only the studies of shard I of N (stable hash of StudyInstanceUID)")
parser:flag("--dry-run", "print the plan, move nothing")
parser:flag("--ignore-window", "run even outside the source's time window")
parser:option("--metrics-file", "write the run's Prometheus metrics to this file (node_exporter textfile collector)")
local args = cli.parse(parser, {...})

local env = cli.load_env(args.env)
local opts = {dry_run = args.dry_run, ignore_window = args.ignore_window, patient = args.patient,
              metrics_file = args.metrics_file,
              study = args.study, since = args.since and clock.check_date(args.since, "--since"),
              ["until"] = args["until"] and clock.check_date(args["until"], "--until")}
if args.shard then
    local i, n = args.shard:match("^(%d+)/(%d+)$")
    i, n = tonumber(i), tonumber(n)
    if not i or n < 1 or i < 1 or i > n then
        errors.raise{kind = "usage", message = "--shard: expected I/N with 1 <= I <= N, got " .. args.shard}
    end
    opts.shard = {index = i, count = n}
end

local sources = {}
if args.all then
    for alias in pairs(env.sources or {}) do sources[#sources + 1] = alias end
    table.sort(sources)
else
    sources[1] = args.source or env.default_source
end
if #sources == 0 or not sources[1] then
    errors.raise{kind = "usage", message = env.name .. " has no default_source: name a source"}
end

local flow = site.load(env, "backup")()
local worst = backup.EXIT.ok
for _, alias in ipairs(sources) do
    local ok, run = pcall(backup.open, env, alias, opts)
    local code
    if not ok then
        local err = run
        if errors.is(err, "locked") then
            io.stderr:write("rtbackup backup: ", tostring(err), "\n")
            code = backup.EXIT.locked
        else
            error(err, 0)
        end
    else
        local window, outside = backup.window(run)
        if window and outside() then
            log.warn("outside the source's time window; nothing done (--ignore-window to run anyway)",
                     {source = alias, window = window})
            backup.close(run, {source = alias, outside_window = window}, backup.EXIT.outside_window)
            code = backup.EXIT.outside_window
        else
            local fine, summary, c = pcall(flow, run)
            if not fine then
                local err = summary
                summary = {source = alias, error = tostring(err)}
                c = require("rtbackup.qr_backup").is_unreachable(err) and backup.EXIT.unreachable
                    or (errors.is(err, "config") and backup.EXIT.usage or backup.EXIT.partial)
                log.error("backup of a source failed", {source = alias, error = tostring(err)})
                if not errors.is(err) and err then io.stderr:write(tostring(err), "\n") end
            end
            backup.close(run, summary, c)
            backup.print_summary(summary)
            code = c
        end
    end
    if code > worst then worst = code end
end
return worst
