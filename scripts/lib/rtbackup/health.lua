--- rtbackup.health: what a run of an environment depends on, checked all at once.
-- Each check returns a row {check, target, ok, status, seconds, detail, error_kind,
-- ...}; a failing check never hides another.
local context = require "rtbackup.context"
local dc = require "rtbackup.dicom_cli"
local errors = require "rtbackup.error"
local files = require "rtbackup.files"
local host = require "rtbackup.host"
local orthanc = require "rtbackup.orthanc"
local settings = require "rtbackup.settings"
local sys = require "rtbackup.sys"
local task = require "rtbackup.task"

local health = {}

local sorted_keys = require("rtbackup.pretty").sorted_keys

local function echo(ctx, alias, timeout)
    local peer = ctx:peer(alias)
    peer.connect_timeout, peer.acse_timeout, peer.dimse_timeout = timeout, timeout, timeout
    peer.move_timeout = timeout
    local seconds = peer:echo()
    return string.format("%s@%s:%d", peer.aet, peer.host, peer.port), seconds
end

local function odbc_select_one(env, alias, timeout)
    local odbc = require "rtbackup.odbc"
    local s = settings.resolve(env, alias)
    s.login_timeout, s.query_timeout = timeout, timeout
    local db = odbc.connect(env.sources[alias], s, {alias = alias})
    local ok, result = pcall(function()
        local rows = db:query("SELECT 1 AS one")
        if #rows ~= 1 or tonumber(rows[1].one) ~= 1 then
            errors.raise{kind = "sql", message = "SELECT 1 did not return 1"}
        end
        return db:info().dbms_name .. " answered SELECT 1"
    end)
    db:close()
    if not ok then error(result, 0) end
    return result
end

-- A file created, written, fsynced and removed: what a run does with its journal.
local function state_dir_writable(dir)
    local probe = string.format("%s/.rtbackup-health-%d", dir, sys.pid())
    sys.write_file(probe, "rtbackup health probe\n", {mode = files.PRIVATE})
    os.remove(probe)
    if files.world_readable(dir) then
        errors.raise{kind = "permissions", message = string.format(
            "%s is readable by every user (mode %o); it holds journals and summaries naming patients: chmod 0700 %s",
            dir, sys.stat(dir).mode, dir)}
    end
    return "create, write, fsync, remove: ok; mode " .. string.format("%o", sys.stat(dir).mode)
end

-- The audit log must take appends (or its directory a new file), and only its owner
-- (and group) may read it.
local function audit_log_appendable(path)
    local st = sys.stat(path)
    if not st then
        local dir = path:match("^(.*)/[^/]*$") or "."
        if not sys.access(dir, "w") then
            errors.raise{kind = "io", message = "not there yet, and its directory is not writable"}
        end
        return "not there yet; its directory is writable"
    end
    if not sys.access(path, "w") then errors.raise{kind = "io", message = "cannot append: permission denied"} end
    if files.world_readable(path) then
        errors.raise{kind = "permissions", message = string.format(
            "readable by every user (mode %o); it names patients: chmod 0600 %s", st.mode, path)}
    end
    return "appendable; mode " .. string.format("%o", st.mode)
end

-- Free space of the file system that holds path (or will: its nearest existing ancestor).
local function free_space(path, min_free_mb)
    local probe = path
    while not sys.stat(probe) and probe:find("/[^/]*$") do
        probe = probe:match("^(.*)/[^/]*$")
        if probe == "" then probe = "/" end
    end
    local v = sys.statvfs(probe)
    local detail = string.format("%.1f GiB free of %.1f GiB (%.0f%% used)", v.avail / 2 ^ 30, v.size / 2 ^ 30,
                                 v.size > 0 and (v.size - v.free) * 100 / v.size or 0)
    if v.avail < min_free_mb * 2 ^ 20 then
        errors.raise{kind = "disk_full", message = detail .. string.format(", below --min-free-mb %d", min_free_mb)}
    end
    return detail, nil, {free_bytes = v.avail, size_bytes = v.size}
end

-- ---- --deep: what the first connection to a site usually gets wrong -------------------
--
-- C-ECHO proves only that an association opens. A backup also needs: the source to
-- answer C-FIND from our AE title, the source to know the archive's AE title (and its
-- host and port) as a C-MOVE destination, the archive to accept the source's stores,
-- and the archive to answer our C-FIND (verification). Each of those lives in a
-- different system's configuration, so each failure names the side to fix.

-- The sentence that tells the operator where to add an AE title.
local function peers_hint(env)
    return string.format("`rtbackup config peers %s` prints the entry", env.name)
end

local function with_timeout(peer, timeout)
    peer.connect_timeout, peer.acse_timeout, peer.dimse_timeout = timeout, timeout, timeout
    peer.move_timeout = timeout
    return peer
end

-- An error raised by a deep check: the peer's own error, translated into which side's
-- configuration to fix. `side` is the alias whose configuration is at fault.
local function explain(err, fields)
    fields.kind = errors.is(err) and err.kind or "error"
    fields.status = errors.is(err) and err.status or nil
    fields.cause = tostring(err)
    fields.message = fields.message .. " (" .. tostring(err) .. ")"
    errors.raise(fields)
end

-- An Orthanc target's REST API (its http_url), which verification reads when it
-- answers as that archive: one that does not is a configuration to fix, since runs
-- then verify over DICOM only (said in their log, easily missed).
local function rest_api(archive)
    local problem = archive:problem()
    if problem then
        errors.raise{kind = "config", side = archive.alias, message = string.format(
            "%s at %s: fix http_url of %s (runs verify over DICOM only until then)", problem, archive.shown,
            archive.alias)}
    end
    return "GET /system answered as " .. archive.aet .. " at " .. archive.shown
end

-- Association-level refusals: the called AE title is wrong (our configuration of the
-- peer), or the peer does not know our calling AE title (the peer's configuration).
-- A status in a response is not one: 0xA7xx is "out of resources" (for a C-MOVE, most
-- often the archive refusing the source's stores), 0xA9xx a query the peer cannot
-- read; the caller names those.
local function association_refusal(err, env, alias, peer, what)
    local text = tostring(err)
    if errors.is(err, "rejected") and text:find("Called AE Title Not Recognized", 1, true) then
        -- dcmqrscp gives this reason too when it does not know the calling AE title.
        explain(err, {message = string.format(
            "%s rejects the association: either %s is not its AE title (fix `aet` of [%s.%s.%s]), or it does not accept our AE title %s (on %s, add it; %s)",
            alias, peer.aet, env.name, (env.sources or {})[alias] and "sources" or "backup_targets", alias,
            peer.calling_aet, alias, peers_hint(env)), side = alias})
    end
    if errors.is(err, "rejected") or errors.is(err, "aborted") then
        explain(err, {message = string.format(
            "%s refuses %s from our AE title %s: on %s, add %s as a DICOM node allowed to %s; %s",
            alias, what, peer.calling_aet, alias, peer.calling_aet, what == "C-FIND" and "query" or "retrieve",
            peers_hint(env)), side = alias})
    end
    return nil
end

-- A STUDY-level C-FIND that stops (C-CANCEL) after `limit` matches: cheap on an
-- archive of any size. Returns the matches.
local function study_sample(peer, limit)
    local matches = {}
    peer:find({level = "STUDY", StudyInstanceUID = "", StudyDate = "", PatientID = ""}, function(m)
        matches[#matches + 1] = m
        return #matches < limit
    end)
    return matches
end

local function first_match(peer, query)
    local found
    peer:find(query, function(m) found = m; return false end)
    return found
end

local function deep_find(env, ctx, alias, timeout)
    local peer = with_timeout(ctx:peer(alias), timeout)
    local ok, result = pcall(study_sample, peer, 5)
    if not ok then
        association_refusal(result, env, alias, peer, "C-FIND")
        explain(result, {message = string.format("%s failed a STUDY-level C-FIND from %s", alias, peer.calling_aet),
                         side = alias})
    end
    return string.format("STUDY-level C-FIND from %s answered (%d match%s sampled)", peer.calling_aet, #result,
                         #result == 1 and "" or "es"), nil, {sample = result}
end

-- One instance of the source to move: preferably one the archive already holds (the
-- source sends it again and the archive keeps what it has, so the probe changes
-- nothing), else the source's first instance of its first study (the archive then
-- holds one instance more of what a backup would have moved anyway). A C-MOVE that
-- matches nothing is no probe: dcmqrscp answers success without looking at the
-- destination, Orthanc answers 0xC000 whatever the destination (both measured on the
-- testbed). Returns {study, series, sop, in_archive}, or nil when the source is empty.
local function by_uid(key)
    return function(a, b) return tostring(a[key]) < tostring(b[key]) end
end

local function pick_instance(source, archive, studies)
    -- Series and instances in UID order, read in full: which match comes first (before
    -- a C-CANCEL) differs from one query to the next on dcmqrscp, and the probe must
    -- pick the same instance each time, or a second probe would add another.
    local fallback
    for _, study in ipairs(studies) do
        local uid = study.StudyInstanceUID
        if type(uid) == "string" and uid ~= "" then
            local series_list = source:find{level = "SERIES", StudyInstanceUID = uid, SeriesInstanceUID = ""}
            table.sort(series_list, by_uid("SeriesInstanceUID"))
            for i = 1, math.min(#series_list, 3) do -- a few series per study: a probe, not an inventory
                local series = series_list[i]
                local images = source:find{level = "IMAGE", StudyInstanceUID = uid,
                                           SeriesInstanceUID = series.SeriesInstanceUID, SOPInstanceUID = ""}
                local held = {}
                if archive and #images > 0 then
                    for _, m in ipairs(archive:find{level = "IMAGE", StudyInstanceUID = uid,
                                                    SeriesInstanceUID = series.SeriesInstanceUID, SOPInstanceUID = ""}) do
                        held[m.SOPInstanceUID] = true
                    end
                end
                table.sort(images, by_uid("SOPInstanceUID"))
                for _, image in ipairs(images) do
                    local candidate = {study = uid, series = series.SeriesInstanceUID, sop = image.SOPInstanceUID,
                                       patient = study.PatientID, in_archive = held[image.SOPInstanceUID]}
                    if candidate.in_archive then return candidate end
                    fallback = fallback or candidate
                end
            end
        end
    end
    return fallback
end

local function deep_move(env, ctx, alias, archive_alias, timeout, sample)
    local source = with_timeout(ctx:peer(alias), timeout)
    local archive = with_timeout(ctx:peer(archive_alias), timeout)
    local studies = sample()
    if not studies then
        errors.raise{kind = "skipped", message = string.format(
            "not tried: %s did not answer the C-FIND (see the c-find check)", alias)}
    end
    -- Whether the archive answers C-FIND is its own check; here it only decides
    -- which instance to use, and whether the arrival can be seen.
    local archive_finds, held = pcall(study_sample, archive, 20)
    -- Studies the archive holds first (the source sends one of their instances again
    -- and nothing changes), then the source's sample.
    local candidates = {}
    for _, st in ipairs(archive_finds and held or {}) do candidates[#candidates + 1] = st end
    table.sort(candidates, by_uid("StudyInstanceUID"))
    local sample = {}
    for _, st in ipairs(studies) do sample[#sample + 1] = st end
    table.sort(sample, by_uid("StudyInstanceUID"))
    for _, st in ipairs(sample) do candidates[#candidates + 1] = st end
    local ok, chosen = pcall(pick_instance, source, archive_finds and archive or nil, candidates)
    if not ok then
        association_refusal(chosen, env, alias, source, "C-FIND")
        explain(chosen, {message = string.format("%s failed a C-FIND while looking for an instance to move", alias),
                         side = alias})
    end
    if not chosen then
        return string.format("not tried: %s holds no instance to move (a C-MOVE matching nothing proves nothing)", alias)
    end
    local dest = archive.aet
    local where = string.format("%s at %s port %d", dest, archive.host, archive.port)
    local moved_ok, r = pcall(source.move, source, {level = "IMAGE", StudyInstanceUID = chosen.study,
        SeriesInstanceUID = chosen.series, SOPInstanceUID = chosen.sop, destination = dest, patient = chosen.patient})
    if not moved_ok then
        local err = r
        if errors.is(err, "status") and err.status == 0xA801 then
            explain(err, {message = string.format(
                "%s does not know the move destination %s: on %s, add %s; %s", alias, dest, alias, where,
                peers_hint(env)), side = alias})
        end
        association_refusal(err, env, alias, source, "C-MOVE")
        if errors.is(err, "status") then
            -- Orthanc answers 0xC000 both for a destination it does not know and for
            -- one that refused the instance, dcmqrscp 0xA702 when it could not store
            -- at the destination: name both places.
            explain(err, {message = string.format(
                "%s could not send an instance to %s: on %s, check that %s is a known destination (%s); on %s, that it accepts stores from %s",
                alias, dest, alias, dest, where, archive_alias, source.aet), side = alias})
        end
        explain(err, {message = string.format("%s failed the C-MOVE to %s", alias, dest), side = alias})
    end
    if (r.completed or 0) == 0 then
        errors.raise{kind = "move_failed", side = alias, completed = r.completed, failed = r.failed, message = string.format(
            "%s accepted the C-MOVE but sent nothing to %s (%d failed): on %s, check the host and port it has for %s (%s); on %s, that it accepts stores from %s",
            alias, dest, r.failed or 0, alias, dest, where, archive_alias, source.aet)}
    end
    -- Arrival seen at the archive, when the archive answers C-FIND at all.
    local seen_ok, held = pcall(first_match, archive, {level = "IMAGE", StudyInstanceUID = chosen.study,
                                                       SeriesInstanceUID = chosen.series, SOPInstanceUID = chosen.sop})
    if seen_ok and not held then
        errors.raise{kind = "move_failed", side = alias, message = string.format(
            "%s reported the instance sent to %s, but %s does not hold it: %s sends %s's stores somewhere else (check the host and port it has for %s: %s)",
            alias, dest, archive_alias, alias, dest, dest, where)}
    end
    return string.format("C-MOVE of one instance to %s: %s%s", dest,
                         chosen.in_archive and "sent again (the archive already held it)" or "sent (now in the archive)",
                         seen_ok and ", seen in the archive" or ", not verified (the archive refuses C-FIND)")
end

local function deep_archive_find(env, ctx, alias, timeout)
    local peer = with_timeout(ctx:peer(alias), timeout)
    local ok, result = pcall(study_sample, peer, 1)
    if not ok then
        association_refusal(result, env, alias, peer, "C-FIND")
        explain(result, {message = string.format("%s (the archive) failed a STUDY-level C-FIND from %s: verification needs it",
                                                 alias, peer.calling_aet), side = alias})
    end
    return string.format("STUDY-level C-FIND from %s answered (verification can see what arrives)", peer.calling_aet)
end

-- The deep checks of env: per DICOM source a C-FIND and a C-MOVE round trip into
-- default_backup, and a C-FIND of default_backup.
local function add_deep_checks(env, ctx, add, timeout)
    local archive = env.default_backup
    local function add_move(alias)
        local function sample()
            local ok, r = pcall(study_sample, with_timeout(ctx:peer(alias), timeout), 5)
            return ok and r or nil
        end
        add("c-move", alias .. "->" .. archive, deep_move, env, ctx, alias, archive, timeout, sample)
    end
    local stagings = {}
    for _, alias in ipairs(sorted_keys(env.sources)) do
        local src = env.sources[alias]
        if src.type ~= "mosaiq" then
            add("c-find", alias, deep_find, env, ctx, alias, timeout)
            if archive then add_move(alias) end
        elseif src.staging_target_alias and archive and not stagings[src.staging_target_alias] then
            -- Mosaiq's records reach the archive by a C-MOVE from staging: the same round trip.
            stagings[src.staging_target_alias] = true
            add_move(src.staging_target_alias)
        end
    end
    if archive then add("c-find", archive, deep_archive_find, env, ctx, archive, timeout) end
end

--- Runs every check of env at once. opts: timeout (seconds), min_free_mb, deep (also
-- C-FIND at each DICOM source and the archive, and a C-MOVE round trip into the archive).
function health.check(env, opts)
    local ctx = context.new(env, {command = "health"})
    local checks = {}
    local function add(check, target, fn, ...)
        local fn_args = table.pack(...)
        checks[#checks + 1] = {check = check, target = target,
                               run = function() return fn(table.unpack(fn_args, 1, fn_args.n)) end}
    end
    for _, alias in ipairs(sorted_keys(env.sources)) do
        if env.sources[alias].type == "mosaiq" then
            add("odbc", alias, odbc_select_one, env, alias, opts.timeout)
        else
            add("c-echo", alias, echo, ctx, alias, opts.timeout)
        end
    end
    for _, alias in ipairs(sorted_keys(env.backup_targets)) do
        add("c-echo", alias, echo, ctx, alias, opts.timeout)
        local archive = orthanc.for_peer(env.backup_targets[alias], alias, ctx)
        if archive then add("rest", alias, rest_api, archive) end
    end
    if opts.deep then add_deep_checks(env, ctx, add, opts.timeout) end
    local state_dir = require("rtbackup.run").state_dir(env)
    add("state-dir", state_dir, state_dir_writable, state_dir)
    add("free-space", state_dir, free_space, state_dir, opts.min_free_mb)
    local spool_dir = settings.get(env, "spool_dir")
    if spool_dir and spool_dir ~= state_dir then add("free-space", spool_dir, free_space, spool_dir, opts.min_free_mb) end
    local audit_log = settings.get(env, "audit_log")
    if audit_log then add("audit-log", audit_log, audit_log_appendable, audit_log) end

    return task.map(checks, function(c)
        local started = host.monotonic()
        local ok, detail, seconds, extra = pcall(c.run)
        local row = {check = c.check, target = c.target, ok = ok,
                     seconds = (ok and seconds) or (host.monotonic() - started)}
        if ok then
            row.status, row.detail = "ok", detail
            for k, v in pairs(extra or {}) do row[k] = v end
        elseif errors.is(detail, "permissions") then
            -- Works, but exposes patient data: a warning, not a failure.
            row.ok, row.status, row.detail, row.error_kind = true, "warning", tostring(detail), "permissions"
        elseif errors.is(detail, "skipped") then
            -- Could not be tried because another check failed: that one is the failure.
            row.ok, row.status, row.detail, row.error_kind = true, "skipped", detail.message, "skipped"
        else
            -- A deep check's error names the side to fix in its message; its cause is in it.
            row.status, row.detail = "failed", (errors.is(detail) and detail.side) and detail.message or tostring(detail)
            row.error_kind = errors.is(detail) and detail.kind or "error"
            row.fix = errors.is(detail) and detail.side or nil
        end
        row.ms = string.format("%.1f", row.seconds * 1000)
        return row
    end, {concurrency = #checks})
end

--- Prints the rows: a table (with a closing line) on a terminal, CSV otherwise, or JSON.
function health.print(env, rows, format, timeout)
    local failed = 0
    for _, r in ipairs(rows) do if not r.ok then failed = failed + 1 end end
    if format == "json" then
        local cjson = require "cjson"
        local out = {}
        for i, r in ipairs(rows) do
            out[i] = {check = r.check, target = r.target, ok = r.ok, status = r.status, seconds = r.seconds,
                      detail = r.detail, error_kind = r.error_kind, fix = r.fix, free_bytes = r.free_bytes,
                      size_bytes = r.size_bytes}
        end
        io.stdout:write(cjson.encode({env = env.name, healthy = failed == 0, timeout_seconds = timeout, checks = out}), "\n")
        return
    end
    format = format or (host.isatty(1) and "table" or "csv")
    dc.print_rows(rows, {"check", "target", "status", "ms", "detail"}, format)
    if format == "table" then
        io.stdout:write(string.format("%s: %d checks, %s\n", env.name, #rows, failed == 0 and "all ok" or (failed .. " failed")))
    end
end

return health
