--- rtbackup.health: what a run of an environment depends on, checked all at once.
-- Each check returns a row {check, target, ok, status, seconds, detail, error_kind,
-- ...}; a failing check never hides another.
local context = require "rtbackup.context"
local dc = require "rtbackup.dicom_cli"
local errors = require "rtbackup.error"
local files = require "rtbackup.files"
local host = require "rtbackup.host"
local settings = require "rtbackup.settings"
local sys = require "rtbackup.sys"
local task = require "rtbackup.task"

local health = {}

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
end

local function echo(ctx, alias, timeout)
    local peer = ctx:peer(alias)
    peer.connect_timeout, peer.acse_timeout, peer.dimse_timeout = timeout, timeout, timeout
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

--- Runs every check of env at once. opts: timeout (seconds), min_free_mb.
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
    for _, alias in ipairs(sorted_keys(env.backup_targets)) do add("c-echo", alias, echo, ctx, alias, opts.timeout) end
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
        else
            row.status, row.detail = "failed", tostring(detail)
            row.error_kind = errors.is(detail) and detail.kind or "error"
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
                      detail = r.detail, error_kind = r.error_kind, free_bytes = r.free_bytes,
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
