--- rtbackup.status: what the backup holds, per source and per day, read from the
-- journal — no network needed. For each day (the study date for ARIA/MIM, the
-- treatment date for Mosaiq), the instances (records) known in the source and, of
-- those, verified in the backup, failed (the target still lacks them after every
-- retry) and pending (not attempted yet: queued, moved but not verified, deferred);
-- the last runs; the open failures with their last error; the last drill and
-- validation. With refresh = true the days' numbers are counted again on the peers
-- (C-FIND at the source and the backup; Mosaiq: the day's deliveries rebuilt).
--
--   local st = status.collect(env, {days = 30})                -- or since/until
--   status.print(st, "table")                                  -- "json"
--   st.sources[1].days[1] --> {day = "2026-11-21", known = 120, verified = 117, failed = 3,
--                              pending = 0, coverage = 0.975}
--
-- What the numbers mean, per unit of the journal (a series, a record):
--   verified  every instance of a verified unit; of a failed one, those the target has
--             (its data.missing says how many it lacks); of one not done yet, those the
--             target already held when it was planned
--   failed    the instances a failed unit still lacks
--   pending   the other instances of units not done yet
-- A day counts what the runs have seen: a study the target already held whole when a
-- run first saw it is not in the journal (refresh counts it).
local clock = require "rtbackup.clock"
local cjson_mod = require "cjson"
local journal = require "rtbackup.journal"
local log = require "rtbackup.log"
local settings = require "rtbackup.settings"
local sys = require "rtbackup.sys"

local cjson = cjson_mod.new()
cjson.encode_sparse_array(true)
cjson.encode_invalid_numbers("null")

local status = {RUNS = 10}

local sorted_keys = require("rtbackup.pretty").sorted_keys

--- "YYYY-MM-DD" of a unit (data.date "YYYYMMDD" of DICOM units, data.day of Mosaiq
-- records), or nil when it has none (a series followed by reference: collect then
-- takes the date of another series of its study, if the journal has one).
local day_of_text = setmetatable({}, {__index = function(t, d)
    -- a journal has a few hundred distinct dates and many thousand units: each
    -- text is parsed once
    local y, m, dd = d:match("^(%d%d%d%d)%-?(%d%d)%-?(%d%d)")
    local day = y and (y .. "-" .. m .. "-" .. dd) or false
    rawset(t, d, day)
    return day
end})

function status.unit_day(u)
    local data = u.data
    if type(data) ~= "table" then return nil end
    local d = data.day or data.date
    if type(d) ~= "string" then return nil end
    return day_of_text[d] or nil
end

--- How a unit's instances count: verified, failed, pending (see the top of this file).
function status.unit_counts(u)
    local expected = math.max(0, math.tointeger(u.expected) or 0)
    local data = type(u.data) == "table" and u.data or {}
    if u.state == "verified" then return expected, 0, 0 end
    local present = math.min(expected, math.max(0, math.tointeger(data.present) or 0))
    if u.state == "failed" then
        local missing = math.tointeger(data.missing)
        if not missing then missing = expected - present end
        missing = math.min(expected, math.max(0, missing))
        return expected - missing, missing, 0
    end
    return present, 0, expected - present
end

local function new_row(day)
    return {day = day, known = 0, verified = 0, failed = 0, pending = 0, units = 0}
end

local function finish_row(r)
    r.coverage = r.known > 0 and r.verified / r.known or cjson_mod.null
    return r
end

--- The journals of environment env in its state dir: the unsharded one and each
-- shard's (paths, sorted). Nothing is created.
function status.journal_paths(env)
    local dir = require("rtbackup.run").state_dir(env)
    local list = {}
    local ok, names = pcall(sys.list, dir)
    if not ok then return list, dir end
    local plain = env.name .. ".journal.sqlite"
    for _, name in ipairs(names) do
        if name == plain or (name:sub(1, #env.name + 1) == env.name .. "-"
                             and name:sub(#env.name + 2):match("^shard%d+of%d+%.journal%.sqlite$")) then
            list[#list + 1] = dir .. "/" .. name
        end
    end
    table.sort(list)
    return list, dir
end

-- A summary's figures for a run row.
local function run_row(r)
    local s = type(r.summary) == "table" and r.summary or {}
    local started = s.started_at or r.started_at
    local duration = s.duration_seconds
    if not duration and r.finished_at and r.started_at then
        local a, b = clock.parse_utc(r.started_at), clock.parse_utc(r.finished_at)
        duration = a and b and b - a or nil
    end
    return {id = r.id, command = s.command or "backup", status = r.status, exit_code = s.exit_code,
            started_at = started, finished_at = s.finished_at or r.finished_at, duration_seconds = duration,
            found = s.found, moved = s.moved, verified = s.verified, failed = s.failed, skipped = s.skipped,
            deferred = s.deferred, compared = s.compared, equal = s.equal, different = s.different, missing = s.missing,
            already_present = s.already_present, records_built = s.records_built,
            deliveries_skipped = s.deliveries_skipped, references_unresolved = s.references_unresolved,
            shard = s.shard, host = r.host, error = s.error and s.error.message or nil,
            -- why a run did not end well, in a line that names no patient
            cause = s.error and s.error.message or s.hint}
end

-- lua-cjson decodes every number as a float: counts get their integer type back.
local function integers(v)
    if type(v) == "table" then
        for k, x in pairs(v) do v[k] = integers(x) end
        return v
    end
    return math.type(v) == "float" and math.tointeger(v) or v
end

local function read_json(path)
    local f = io.open(path, "r")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    local ok, v = pcall(cjson.decode, text)
    return ok and type(v) == "table" and integers(v) or nil
end

-- The day range of opts: since/until, else the last `days` days (today included) in
-- the site's time zone.
local function range(env, opts)
    local tz = settings.get(env, "timezone")
    local till = opts["until"] or clock.today(tz, 0)
    local since = opts.since
    if not since then
        since = clock.format_day(clock.day(till) - ((opts.days or settings.get(env, "serve_days")) - 1))
    end
    return since, till
end

-- Reads one source out of the open journals.
local function collect_source(env, alias, journals, since, till, opts)
    local cfg = env.sources[alias]
    local src = {alias = alias, type = cfg.type, unit = cfg.type == "mosaiq" and "records" or "instances",
                 totals = new_row("total"), undated = new_row("undated"), failures = {}, runs = {},
                 references_open = 0, last_success_of = {}}
    local by_day = {}
    local hide = opts.hide_patients
    for _, j in ipairs(journals) do
        local units = j:units(alias)
        -- A series the references pass adopted carries no date of its own; another
        -- series of its study does.
        local study_day, unit_days = {}, {}
        for i, u in ipairs(units) do
            local day = status.unit_day(u)
            unit_days[i] = day or false
            if day and u.data.study then study_day[u.data.study] = day end
        end
        for i, u in ipairs(units) do
            local v, f, p = status.unit_counts(u)
            local day = unit_days[i] or (type(u.data) == "table" and study_day[u.data.study] or nil)
            local row
            if day == nil then
                row = src.undated
            elseif day >= since and day <= till then
                row = by_day[day]
                if not row then
                    row = new_row(day)
                    by_day[day] = row
                end
            end
            if row then
                row.known, row.verified, row.failed, row.pending = row.known + v + f + p, row.verified + v,
                    row.failed + f, row.pending + p
                row.units = row.units + 1
            end
            if u.state == "failed" then
                local data = type(u.data) == "table" and u.data or {}
                src.failures[#src.failures + 1] = {
                    unit = u.key, kind = u.kind, patient = not hide and data.patient or nil, study = data.study,
                    day = day, modality = data.modality, missing = f, expected = u.expected, attempts = u.attempts,
                    last_error = u.last_error, since = u.created_at, updated_at = u.updated_at}
            end
        end
        local listed = j:runs(alias, opts.runs or status.RUNS)
        for _, r in ipairs(listed) do src.runs[#src.runs + 1] = run_row(r) end
        -- The last success of each command (backup, drill): in the runs listed, else
        -- further back in this journal; the latest over the journals (shards).
        local found = {}
        local function successes(list)
            for _, r in ipairs(list) do
                local row = run_row(r)
                if row.exit_code == 0 and not found[row.command] and row.finished_at then
                    found[row.command] = true
                    local known = src.last_success_of[row.command]
                    if not known or row.finished_at > known then src.last_success_of[row.command] = row.finished_at end
                end
            end
        end
        successes(listed)
        if not (found.backup and found.drill) and #listed >= (opts.runs or status.RUNS) then
            successes(j:runs(alias, 200))
        end
        src.references_open = src.references_open + #j:refs(alias, "open")
    end
    table.sort(src.runs, function(a, b) return (a.started_at or "") > (b.started_at or "") end)
    for i = #src.runs, (opts.runs or status.RUNS) + 1, -1 do src.runs[i] = nil end
    src.last_success = src.last_success_of.backup
    table.sort(src.failures, function(a, b)
        if (a.day or "") ~= (b.day or "") then return (a.day or "") > (b.day or "") end
        return a.unit < b.unit
    end)
    src.days = {}
    for _, day in ipairs(sorted_keys(by_day)) do
        local r = finish_row(by_day[day])
        src.days[#src.days + 1] = r
        for _, k in ipairs{"known", "verified", "failed", "pending", "units"} do src.totals[k] = src.totals[k] + r[k] end
    end
    -- The total is every row's: the studies without a date are in the backup too.
    for _, k in ipairs{"known", "verified", "failed", "pending", "units"} do
        src.totals[k] = src.totals[k] + src.undated[k]
    end
    finish_row(src.totals)
    finish_row(src.undated)
    return src
end

--- The status of environment env: {env, generated_at, since, until, journals = {...},
-- sources = {source, ...}}. opts: source (one alias; default every source), days or
-- since/until, runs (how many, default 10), hide_patients, refresh (count again on
-- the peers).
function status.collect(env, opts)
    opts = opts or {}
    local since, till = range(env, opts)
    local paths, dir = status.journal_paths(env)
    local out = {env = env.name, description = env.description, generated_at = clock.iso_utc(), since = since,
                 ["until"] = till, journals = paths, sources = {}}
    local journals = {}
    for _, path in ipairs(paths) do
        local ok, j = pcall(journal.open, path)
        if ok then
            journals[#journals + 1] = j
        else
            -- Shown, and the others still read (serve keeps serving); the command exits 2
            -- with the way out (rtbackup.run's remedy for a journal that cannot be used).
            local problem = require("rtbackup.run").journal_problem(j)
            log.warn("cannot read a journal", {path = path, error = tostring(problem or j)})
            out.errors = out.errors or {}
            out.errors[#out.errors + 1] = {journal = path, error = tostring(problem or j), state = problem ~= nil}
        end
    end
    local ok, err = pcall(function()
        local aliases = opts.source and {opts.source} or sorted_keys(env.sources)
        for _, alias in ipairs(aliases) do
            local src = collect_source(env, alias, journals, since, till, opts)
            src.last_drill = read_json(string.format("%s/%s-%s-last-drill.json", dir, env.name, alias))
            src.last_validate = read_json(string.format("%s/%s-%s-last-validate.json", dir, env.name, alias))
            if opts.hide_patients then
                if src.last_drill then src.last_drill = status.without_patients(src.last_drill) end
                if src.last_validate then src.last_validate = status.without_patients(src.last_validate) end
            end
            out.sources[#out.sources + 1] = src
        end
    end)
    for _, j in ipairs(journals) do j:close() end
    if not ok then error(err, 0) end
    if opts.refresh then require("rtbackup.status_refresh").apply(env, out, opts) end
    return out
end

--- The last `limit` runs of source `alias` of env over its journals, newest first
-- (the rows of collect's src.runs), without reading the units.
function status.runs(env, alias, limit)
    local list = {}
    for _, path in ipairs(status.journal_paths(env)) do
        local j = journal.open(path)
        local ok, runs = pcall(j.runs, j, alias, limit)
        j:close()
        if not ok then error(runs, 0) end
        for _, r in ipairs(runs) do list[#list + 1] = run_row(r) end
    end
    table.sort(list, function(a, b) return (a.started_at or "") > (b.started_at or "") end)
    for i = #list, limit + 1, -1 do list[i] = nil end
    return list
end

--- A copy of a summary (a drill's, a validation's) without patient IDs: every
-- "patient" field, however deep.
function status.without_patients(s)
    if type(s) ~= "table" then return s end
    local copy = {}
    for k, v in pairs(s) do
        if k ~= "patient" then copy[k] = status.without_patients(v) end
    end
    return copy
end

--- Whether a status has something a person must act on: open failures, or failed
-- instances in its days.
function status.has_problems(st)
    for _, src in ipairs(st.sources) do
        if #src.failures > 0 or src.totals.failed > 0 then return true end
    end
    return false
end

--- The status command: collects, prints, returns the exit code (0 nothing failed, 1
-- failures to look at, 2 a journal that cannot be used, 4 --refresh could not reach a
-- peer).
function status.run(env, opts)
    local exit = require "rtbackup.exit"
    local ok, st = pcall(status.collect, env, opts)
    if not ok then
        -- Of jobs run at once (task.map), the first failure says what happened.
        local cause = st
        if type(st) == "table" and st.kind == "task" and type(st.errors) == "table" then
            local first
            for i, e in pairs(st.errors) do if not first or i < first then first, cause = i, e end end
        end
        if not exit.is_unreachable(cause) then error(st, 0) end
        local text = "status: could not count on the peers: " .. tostring(cause)
        if opts.format == "json" then
            io.stdout:write(require("cjson").encode({env = env.name, error = {kind = cause.kind, message = text}}), "\n")
        else
            io.stdout:write(text, "\n")
        end
        io.stderr:write("rtbackup ", text, "\n")
        return exit.stop_code() or exit.unreachable
    end
    status.print(st, opts.format)
    for _, e in ipairs(st.errors or {}) do
        if e.state then
            io.stderr:write("rtbackup status: ", e.error, "\n")
            return exit.stop_code() or exit.usage
        end
    end
    return exit.stop_code() or (status.has_problems(st) and exit.partial or exit.ok)
end

-- ---- printing ----------------------------------------------------------------------

local function percent(c)
    if type(c) ~= "number" then return "-" end
    local p = c * 100
    -- 99.95% must not print as 100.0%: only a complete day says 100.
    if c < 1 and p > 99.9 then return "99.9%" end
    return string.format("%.1f%%", p)
end
status.percent = percent

--- "3m12s", "1h04m", "0.4s".
function status.duration(seconds)
    if type(seconds) ~= "number" then return "-" end
    if seconds < 10 then return string.format("%.1fs", seconds) end
    seconds = math.floor(seconds + 0.5)
    if seconds < 60 then return seconds .. "s" end
    if seconds < 3600 then return string.format("%dm%02ds", seconds // 60, seconds % 60) end
    return string.format("%dh%02dm", seconds // 3600, (seconds % 3600) // 60)
end

local function short_time(iso)
    if type(iso) ~= "string" then return "-" end
    return (iso:gsub("T", " "):gsub("%.%d+Z$", ""):gsub("Z$", ""))
end
status.short_time = short_time

local function n(v) return v == nil and "-" or tostring(v) end

local function drill_line(d)
    if not d then return "never" end
    return string.format("%s %s: %d %s compared, %d equal, %d different, %d missing (exit %s)",
                         short_time(d.started_at), d.status or "?", d.compared or 0, d.unit or "instances",
                         d.equal or 0, d.different or 0, d.missing or 0, n(d.exit_code))
end
status.drill_line = drill_line

local function validate_line(v)
    if not v then return "never" end
    return string.format("%s %s: %d instances, %d missing, %d extra%s (exit %s)", short_time(v.started_at),
                         v.status or "?", v.found or 0, v.missing or 0, v.extra or 0,
                         v.deep and string.format(", %d different", v.different or 0) or "", n(v.exit_code))
end
status.validate_line = validate_line

--- Prints a status as a table (default) or JSON on `out` (default stdout).
function status.print(st, format, out)
    out = out or io.stdout
    if format == "json" then
        out:write(cjson.encode(st), "\n")
        return
    end
    local render = require("rtbackup.dicom_cli").render_table
    out:write(string.format("%s status, %s .. %s (journal: %d file%s)\n", st.env, st.since, st["until"],
                            #st.journals, #st.journals == 1 and "" or "s"))
    for _, src in ipairs(st.sources) do
        out:write(string.format("\n%s (%s)%s, %s per %s\n", src.alias, src.type,
                                src.refreshed and ", counted on the peers now" or "",
                                src.unit, src.type == "mosaiq" and "treatment date" or "study date"))
        local rows = {}
        for _, d in ipairs(src.days) do
            rows[#rows + 1] = {day = d.day, known = d.known, verified = d.verified, failed = d.failed,
                               pending = d.pending, coverage = percent(d.coverage)}
        end
        if src.undated.known > 0 then
            local u = src.undated
            rows[#rows + 1] = {day = "no date", known = u.known, verified = u.verified, failed = u.failed,
                               pending = u.pending, coverage = percent(u.coverage)}
        end
        local t = src.totals
        rows[#rows + 1] = {day = "total", known = t.known, verified = t.verified, failed = t.failed,
                           pending = t.pending, coverage = percent(t.coverage)}
        out:write(render(rows, {"day", "known", "verified", "failed", "pending", "coverage"}))
        if src.undated.known > 0 then
            out:write("  (\"no date\": studies without a StudyDate, and series of other studies backed up " ..
                      "because RT objects reference them)\n")
        end
        out:write(string.format("last success: %s\nlast drill: %s\nlast validation: %s\n",
                                short_time(src.last_success), drill_line(src.last_drill),
                                validate_line(src.last_validate)))
        if src.references_open > 0 then
            out:write(string.format("%d references unresolved (rtbackup refs %s %s)\n", src.references_open, st.env,
                                    src.alias))
        end
        if #src.runs > 0 then
            out:write("last runs\n")
            local runs = {}
            for _, r in ipairs(src.runs) do
                runs[#runs + 1] = {started = short_time(r.started_at), command = r.command,
                                   duration = status.duration(r.duration_seconds), exit = n(r.exit_code),
                                   status = r.status, moved = n(r.moved), verified = n(r.verified), failed = n(r.failed)}
            end
            out:write(render(runs, {"started", "command", "duration", "exit", "status", "moved", "verified", "failed"}))
            local last = src.runs[1]
            if last.status ~= "ok" and last.cause then out:write("  last run: ", last.cause, "\n") end
        end
        if #src.failures > 0 then
            out:write(string.format("open failures (%d)\n", #src.failures))
            local rows2 = {}
            for i, f in ipairs(src.failures) do
                if i > 20 then
                    out:write(string.format("... and %d more (--format json lists them all)\n", #src.failures - 20))
                    break
                end
                rows2[#rows2 + 1] = {patient = f.patient, day = f.day or "", unit = f.unit, missing = f.missing,
                                     attempts = f.attempts, ["last error"] = (f.last_error or ""):sub(1, 100)}
            end
            out:write(render(rows2, {"patient", "day", "unit", "missing", "attempts", "last error"}))
        end
    end
end

return status
