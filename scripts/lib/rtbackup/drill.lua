--- rtbackup.drill: a restore drill — a backup is trusted only after it was restored.
-- A random sample of what the journal has as verified is retrieved from the backup
-- archive into a scratch directory, read back from there, and compared, instance by
-- instance, with the source:
--
--   ARIA/MIM  each verified series of the sampled studies: C-GET from the archive into
--             the scratch directory (files, as a restore writes them), C-GET from the
--             source (kept in memory); canonical digests compared (ds:digest(): the
--             content, whatever the transfer syntax of the file)
--   Mosaiq    each sampled record: C-GET from the archive into the scratch directory;
--             the record built again from Mosaiq (rtbackup.mosaiq.flow.build, the same
--             deterministic UIDs); digests compared
--
-- Every instance is equal, or named: "different" (both have it, the content differs)
-- or "missing" (the journal says verified, the archive does not return it). What the
-- archive holds beyond the source ("only in the archive") is listed, not a failure.
-- A drill moves nothing anywhere and writes only inside its scratch directory (private,
-- removed at the end, however the drill ends). It is recorded like a run: the journal's
-- run history (command "drill"), <state_dir>/<ENV>-<SOURCE>-last-drill.json, metrics
-- (command="drill"), the audit log, and an alert on a mismatch.
--
--   local code = drill.run(env, "ARIA", {sample = 3})    -- or {study = uid}
--
-- Exit codes: 0 every instance equal, 1 a mismatch (or nothing verified to drill),
-- 2 usage or configuration error, 4 a peer unreachable, 130/143 interrupted.
local alerts = require "rtbackup.alerts"
local clock = require "rtbackup.clock"
local context = require "rtbackup.context"
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local exit = require "rtbackup.exit"
local files = require "rtbackup.files"
local host = require "rtbackup.host"
local journal = require "rtbackup.journal"
local log = require "rtbackup.log"
local metrics = require "rtbackup.metrics"
local settings = require "rtbackup.settings"
local site = require "rtbackup.site"
local summary_mod = require "rtbackup.summary"
local sys = require "rtbackup.sys"
local task = require "rtbackup.task"

local drill = {}

-- ---- the sample ----------------------------------------------------------------------

local function shuffle(list)
    for i = #list, 2, -1 do
        local k = math.random(i)
        list[i], list[k] = list[k], list[i]
    end
    return list
end

--- What a DICOM source's drill can take: {study uid -> {study, patient, date, series =
-- {uid, ...}}} of the verified series units, and their list.
local function verified_studies(j, alias)
    local by, list = {}, {}
    for _, u in ipairs(j:units(alias, {state = "verified", kind = "series"})) do
        local data = type(u.data) == "table" and u.data or {}
        if data.study then
            local s = by[data.study]
            if not s then
                s = {study = data.study, patient = data.patient, date = data.date, series = {}}
                by[data.study] = s
                list[#list + 1] = s
            end
            s.series[#s.series + 1] = u.key
        end
    end
    return by, list
end

local function verified_records(j, alias)
    local list = {}
    for _, u in ipairs(j:units(alias, {state = "verified", kind = "record"})) do
        local data = type(u.data) == "table" and u.data or {}
        if data.day and data.study and data.series and data.uid then
            -- key: the record's identity; uid: the version the archive holds
            list[#list + 1] = {key = u.key, uid = data.uid, day = data.day, patient = data.patient,
                               study = data.study, series = data.series}
        end
    end
    return list
end

--- The items a drill takes: opts.study names one study (every verified series of it,
-- or for Mosaiq every verified record of it); otherwise `sample` picked at random.
function drill.pick(j, alias, kind, opts)
    local sample = opts.sample
    if kind == "mosaiq" then
        local records = verified_records(j, alias)
        if opts.study then
            local chosen = {}
            for _, r in ipairs(records) do if r.study == opts.study then chosen[#chosen + 1] = r end end
            return chosen
        end
        shuffle(records)
        return table.move(records, 1, math.min(sample, #records), 1, {})
    end
    local by, list = verified_studies(j, alias)
    if opts.study then return by[opts.study] and {by[opts.study]} or {} end
    table.sort(list, function(a, b) return a.study < b.study end) -- the same order before shuffling
    shuffle(list)
    return table.move(list, 1, math.min(sample, #list), 1, {})
end

-- ---- the scratch directory ---------------------------------------------------------------

local function remove_tree(path)
    local st = sys.stat(path)
    if not st then return end
    if st.type == "directory" then
        for _, name in ipairs(sys.list(path)) do remove_tree(path .. "/" .. name) end
    end
    local ok, err = os.remove(path)
    if not ok then log.error("cannot remove the drill's scratch space", {path = path, error = err}) end
end
drill.remove_tree = remove_tree

--- A new private directory for one drill: <drill_scratch_dir or state_dir/drill>/<ENV>-<SOURCE>-<pid>.
function drill.scratch(env, alias)
    local base = settings.get(env, "drill_scratch_dir") or (require("rtbackup.run").state_dir(env) .. "/drill")
    files.private_dir(base)
    local dir = string.format("%s/%s-%s-%d", base, env.name, alias, sys.pid())
    remove_tree(dir) -- left by a killed drill of a process with our PID
    return files.private_dir(dir)
end

-- ---- comparing ---------------------------------------------------------------------------

-- The digests of the files a C-GET wrote into dir: {SOP Instance UID -> digest}.
local function file_digests(dir)
    local out = {}
    for _, name in ipairs(sys.list(dir)) do
        local ds = dicom.read(dir .. "/" .. name)
        out[ds.SOPInstanceUID] = ds:digest()
    end
    return out
end

local function note(result, problem, item)
    result.mismatches[#result.mismatches + 1] = item
    item.problem = problem
end

-- Compares two digest maps: `expected` from the source, `restored` from the archive.
local function compare(result, row, expected, restored, where)
    for uid, d in pairs(expected) do
        local r = restored[uid]
        if r == nil then
            row.missing = row.missing + 1
            note(result, "missing", {study = where.study, series = where.series, sop_instance_uid = uid,
                                     patient = where.patient})
        else
            row.compared = row.compared + 1
            if r == d then
                row.equal = row.equal + 1
            else
                row.different = row.different + 1
                note(result, "different", {study = where.study, series = where.series, sop_instance_uid = uid,
                                           patient = where.patient, source_digest = d, archive_digest = r})
            end
        end
    end
    for uid in pairs(restored) do
        if expected[uid] == nil then
            row.only_in_archive = row.only_in_archive + 1
            result.only_in_archive[#result.only_in_archive + 1] = {study = where.study, series = where.series,
                                                                   sop_instance_uid = uid}
        end
    end
end

local function new_row(fields)
    fields.compared, fields.equal, fields.different, fields.missing, fields.only_in_archive = 0, 0, 0, 0, 0
    return fields
end

-- One study of a DICOM source: each verified series from the archive (to files) and
-- from the source (in memory).
local function drill_study(d, item, index)
    local row = new_row{study = item.study, patient = item.patient, date = item.date, series = #item.series}
    for k, series in ipairs(item.series) do
        local q = {level = "SERIES", StudyInstanceUID = item.study, SeriesInstanceUID = series, patient = item.patient}
        local into = string.format("%s/%d-%d", d.scratch, index, k)
        files.private_dir(into)
        d.target:get(q, into)
        local restored = file_digests(into)
        local expected = {}
        d.source:get(q, function(ds) expected[ds.SOPInstanceUID] = ds:digest() end)
        compare(d.result, row, expected, restored, {study = item.study, series = series, patient = item.patient})
        remove_tree(into) -- the scratch space holds one series at a time
    end
    return row
end

-- The records of a Mosaiq drill, rebuilt day by day: {identity -> record}.
local function rebuilt_records(d, items)
    local days, list = {}, {}
    for _, r in ipairs(items) do
        if not days[r.day] then days[r.day] = true; list[#list + 1] = r.day end
    end
    table.sort(list)
    local flow = require "rtbackup.mosaiq.flow"
    local by_key = {}
    for _, day in ipairs(list) do
        local built = flow.build(d.ctx, d.env, d.alias, site.choices(d.env), day, day, {journal = d.journal})
        for _, r in ipairs(built.records) do by_key[r.key] = r end
    end
    return by_key
end

local function drill_record(d, item, index, rebuilt)
    local row = new_row{study = item.study, patient = item.patient, date = item.day, record = item.key, uid = item.uid}
    local into = string.format("%s/%d", d.scratch, index)
    files.private_dir(into)
    d.target:get({level = "IMAGE", StudyInstanceUID = item.study, SeriesInstanceUID = item.series,
                  SOPInstanceUID = item.uid, patient = item.patient}, into)
    local restored = file_digests(into)
    remove_tree(into)
    local expected = {}
    local r = rebuilt[item.key]
    if r and r.uid == item.uid then
        expected[item.uid] = r.ds:digest()
    else
        -- Mosaiq no longer yields this version of the record (the delivery was
        -- corrected or deleted since; the next backup archives the new version).
        row.not_in_source = 1
        d.result.not_in_source[#d.result.not_in_source + 1] = {record = item.key, day = item.day,
                                                               patient = item.patient}
        return row
    end
    compare(d.result, row, expected, restored, {study = item.study, series = item.series, patient = item.patient})
    return row
end

-- ---- the drill -------------------------------------------------------------------------

local function journal_path(env)
    return require("rtbackup.run").state_dir(env) .. "/" .. env.name .. ".journal.sqlite"
end

local function totals(s, rows)
    s.compared, s.equal, s.different, s.missing, s.only_in_archive = 0, 0, 0, 0, 0
    for _, r in ipairs(rows) do
        for _, k in ipairs{"compared", "equal", "different", "missing", "only_in_archive"} do s[k] = s[k] + r[k] end
    end
end

local function print_result(s)
    local out = io.stdout
    out:write(string.format("%s drill %s <- %s: %d %s, %d %s compared\n", s.env, s.source, s.target,
                            #(s.items or {}), s.kind == "mosaiq" and "records" or "studies", s.compared or 0, s.unit))
    if s.error then
        local e = s.error
        local with = e.peer and string.format("%s%s: ", e.peer, e.address and (" (" .. e.address .. ")") or "") or ""
        out:write(string.format("  stopped while %s: %s%s\n", e.phase or "drilling", with, e.message))
    end
    for _, r in ipairs(s.items or {}) do
        out:write(string.format("  %s %s %s: %d equal, %d different, %d missing%s\n", r.patient or "?", r.date or "",
                                r.record or r.study, r.equal, r.different, r.missing,
                                r.only_in_archive > 0 and string.format(", %d only in the archive", r.only_in_archive) or
                                (r.not_in_source and ", no longer in Mosaiq" or "")))
    end
    for i, m in ipairs(s.mismatches or {}) do
        if i > 50 then
            out:write(string.format("  ... and %d more (--format json lists them all)\n", #s.mismatches - 50))
            break
        end
        out:write(string.format("  %s: %s %s series %s instance %s\n", m.problem, m.patient or "?", m.study, m.series,
                                m.sop_instance_uid))
    end
    out:write(string.format("  %.1f s, exit %d (%s)%s\n", s.duration_seconds or 0, s.exit_code, s.status,
                            (s.different or 0) + (s.missing or 0) > 0 and ": THE BACKUP DIFFERS FROM THE SOURCE" or ""))
end

--- The drill of source `alias` of env. opts: sample (default: the setting drill_sample),
-- study (a StudyInstanceUID), seed (for the random sample), target (default:
-- default_backup), metrics_file, format ("json" prints the summary as JSON). Returns
-- the exit code.
function drill.run(env, alias, opts)
    opts = opts or {}
    local cfg = (env.sources or {})[alias]
    if not cfg then errors.raise{kind = "usage", message = env.name .. " has no source " .. tostring(alias)} end
    local target_alias = opts.target or env.default_backup
    if not (env.backup_targets or {})[target_alias] then
        errors.raise{kind = "config", message = env.name .. ": the backup target " .. tostring(target_alias) ..
                     " is not defined"}
    end
    if opts.seed then math.randomseed(opts.seed) end
    local kind = cfg.type == "mosaiq" and "mosaiq" or "qr"
    local collector = opts.metrics_file and metrics.new{env = env.name, source = alias, command = "drill"}
    local ctx = context.new(env, {command = "drill", source = alias, metrics = collector, batched = true})
    local started = host.monotonic()
    local s = {env = env.name, source = alias, target = target_alias, command = "drill", kind = kind,
               unit = kind == "mosaiq" and "records" or "instances", started_at = clock.iso_utc(),
               sample = opts.study and nil or (opts.sample or settings.get(env, "drill_sample", alias)),
               study = opts.study, seed = opts.seed}
    local d = {env = env, alias = alias, ctx = ctx, result = {mismatches = {}, only_in_archive = {}, not_in_source = {}}}
    local phase = "opening the journal"
    local j, run_id
    local code
    local ok, err = xpcall(function()
        local path = journal_path(env)
        if not sys.stat(path) then
            errors.raise{kind = "nothing", message = "no journal yet (" .. path .. "): back up " .. alias .. " first"}
        end
        j = journal.open(path)
        d.journal = j
        run_id = j:begin_run{env = env.name, source = alias}
        phase = "choosing the sample"
        local items = drill.pick(j, alias, kind, {sample = s.sample, study = opts.study})
        if #items == 0 then
            errors.raise{kind = "nothing", message = opts.study and
                ("the journal has nothing verified of study " .. opts.study .. " in " .. alias) or
                ("the journal has nothing verified of " .. alias .. " to drill: back it up first")}
        end
        phase = "restoring and comparing"
        d.scratch = drill.scratch(env, alias)
        s.scratch = d.scratch
        d.target = ctx:peer(target_alias)
        if kind == "qr" then d.source = ctx:peer(alias) end
        local rebuilt = kind == "mosaiq" and rebuilt_records(d, items) or nil
        local rows, failures = task.map(items, function(item, i)
            local r = kind == "mosaiq" and drill_record(d, item, i, rebuilt) or drill_study(d, item, i)
            ctx:flush() -- one audit batch per study
            return r
        end, {concurrency = 2, errors = "return"})
        s.items = {}
        for i = 1, #items do
            if rows[i] then s.items[#s.items + 1] = rows[i] end
        end
        -- A study that could not be compared leaves the drill without a verdict: the
        -- first failure ends it (unreachable: 4, stopped: 130/143), the others are logged.
        local first
        for i = 1, #items do
            if failures[i] then
                first = first or failures[i]
                if failures[i] ~= first and not exit.is_stopped(failures[i]) then
                    log.error("cannot drill", {item = items[i].study or items[i].key, error = tostring(failures[i])})
                end
            end
        end
        if first then error(first, 0) end
        totals(s, s.items)
    end, task.traceback)
    if ok then
        local mismatch = s.different + s.missing > 0
        code = exit.stop_code() or ((mismatch or s.compared == 0) and exit.partial or exit.ok)
    else
        code = exit.stop_code() or (errors.is(err, "nothing") and exit.partial or exit.of_error(err))
        s.error = {phase = phase, kind = type(err) == "table" and err.kind or "internal",
                   message = type(err) == "table" and tostring(err.message or err) or tostring(err),
                   peer = type(err) == "table" and err.alias or nil,
                   address = type(err) == "table" and type(err.peer) == "string" and err.peer or nil}
        if s.items == nil then s.items = {} end
        totals(s, s.items)
        if not errors.is(err, "nothing") then
            log.error("the drill stopped", {source = alias, phase = phase, error = tostring(err)})
        end
    end
    if d.scratch then remove_tree(d.scratch) end
    s.mismatches, s.only_in_archive_list, s.not_in_source = d.result.mismatches, d.result.only_in_archive,
        d.result.not_in_source
    table.sort(s.mismatches, function(a, b) return a.sop_instance_uid < b.sop_instance_uid end)
    s.finished_at = clock.iso_utc()
    s.duration_seconds = host.monotonic() - started
    s.exit_code, s.status = code, exit.status(code)
    s.interrupted = exit.stop_code() ~= nil or nil
    drill.record(env, s, j, run_id, collector, opts.metrics_file)
    local flushed, ferr = pcall(ctx.flush, ctx)
    if not flushed then log.error("cannot write the audit log", {error = tostring(ferr)}) end
    if opts.format == "json" then io.stdout:write(summary_mod.json(s), "\n") else print_result(s) end
    alerts.notify(env, s)
    return code
end

--- The drills of several sources, one after the other; returns the worst exit code.
function drill.sources(env, aliases, opts)
    local worst = exit.ok
    for _, alias in ipairs(aliases) do
        local code = drill.run(env, alias, opts)
        if code > worst then worst = code end
        if exit.stop_code() then break end
    end
    return worst
end

--- Records a drill's summary: the journal's run history, last-drill.json, metrics.
-- None of them may change the drill's outcome: a failure is logged.
function drill.record(env, s, j, run_id, collector, metrics_file)
    if j then
        if run_id then
            local ok, err = pcall(j.finish_run, j, run_id, {status = s.status, summary = s})
            if not ok then log.error("cannot record the drill in the journal", {error = tostring(err)}) end
            require("rtbackup.run").prune_history(env, j)
        end
        j:close()
    end
    local ok, err = pcall(function()
        local dir = require("rtbackup.run").state_dir(env)
        files.replace(string.format("%s/%s-%s-last-drill.json", dir, env.name, s.source), summary_mod.json(s) .. "\n")
    end)
    if not ok then log.error("cannot write the drill's summary", {error = tostring(err)}) end
    if collector then
        local wrote, werr = pcall(collector.write, collector, metrics_file, s)
        if not wrote then log.error("cannot write the metrics file", {path = metrics_file, error = tostring(werr)}) end
    end
end

return drill
