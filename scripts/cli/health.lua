--- check that an environment's peers, databases and disks are ready for a run
local backup = require "rtbackup.backup"
local cli = require "rtbackup.cli"
local dc = require "rtbackup.dicom_cli"
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local host = require "rtbackup.host"
local task = require "rtbackup.task"

local parser = cli.parser("health", [[
Checks everything a run of ENV depends on, all at once, each within --timeout:
C-ECHO of every source and backup target (with latency), ODBC login and SELECT 1 for
Mosaiq sources, that the state dir takes a file (create, fsync, remove), that the
audit log can be appended to, and the free space where the state and the spool live.
One dead peer does not hide the others: every check is reported.
  rtbackup health UCLA                 # a table on a terminal, CSV otherwise
  rtbackup health UCLA --json          # for monitors and container health checks]],
    "0 every check passed, 1 any check failed, 2 usage or configuration error")
parser:argument("env", "environment")
parser:flag("--json", "print JSON: {env, healthy, checks = [...]}")
parser:option("--timeout", "seconds each check may take", "10"):convert(tonumber)
parser:option("--min-free-mb", "free space below this many MiB fails the check", "1024"):convert(tonumber)
parser:option("--metrics-file", "also write the results in Prometheus text format to this file")
local args = cli.parse(parser, {...})

if not args.timeout or args.timeout <= 0 then
    errors.raise{kind = "usage", message = "--timeout: expected a positive number of seconds"}
end
if not args.min_free_mb or args.min_free_mb < 0 then
    errors.raise{kind = "usage", message = "--min-free-mb: expected a number of MiB (0 or more)"}
end
-- DICOM and ODBC timeouts are whole seconds.
local timeout = math.ceil(args.timeout)
local env = cli.load_env(args.env)

local function quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command under timeout(1): io.popen blocks the whole loop (every task),
-- so a command stuck on a dead NFS mount must not be able to hang the health check.
local function bounded(cmd)
    local p = io.popen(string.format("timeout -k 1 %d %s 2>&1", timeout, cmd))
    local out = p:read("a")
    local _, _, code = p:close()
    if code == 124 or code == 137 then
        errors.raise{kind = "timeout", message = string.format("no answer within %d s", timeout)}
    end
    return code == 0, out
end

-- ---- the checks: each returns a detail text, and the seconds it measured itself ----

local function echo(alias)
    local peer = dicom.peer(env, alias)
    peer.connect_timeout, peer.acse_timeout, peer.dimse_timeout = timeout, timeout, timeout
    local seconds = peer:echo()
    return string.format("%s@%s:%d", peer.aet, peer.host, peer.port), seconds
end

local function odbc_select_one(alias)
    local odbc = require "rtbackup.odbc"
    local settings = {}
    for k, v in pairs(env.settings or {}) do settings[k] = v end
    settings.login_timeout, settings.query_timeout = timeout, timeout
    local db = odbc.connect(env.sources[alias], settings, {alias = alias})
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
    local probe = string.format("%s/.rtbackup-health-%d", dir, math.random(0, 0x7fffffff))
    local f, err = io.open(probe, "w")
    if not f then errors.raise{kind = "io", message = "cannot create a file: " .. tostring(err)} end
    local written, werr = f:write("rtbackup health probe\n")
    f:close()
    local synced, out = false, ""
    if written then synced, out = bounded("sync -- " .. quote(probe)) end
    os.remove(probe)
    if not written then errors.raise{kind = "io", message = "cannot write: " .. tostring(werr)} end
    if not synced then errors.raise{kind = "io", message = "fsync failed: " .. out} end
    return "create, write, fsync, remove: ok"
end

local function exists(path)
    return os.execute("test -e " .. quote(path)) == true
end

-- Opening for append writes nothing, but would create a missing log with the wrong
-- mode (rtbackup.audit creates it 0640): then its directory must take new files.
local function audit_log_appendable(path)
    if not exists(path) then
        local dir = path:match("^(.*)/[^/]*$") or "."
        if os.execute("test -d " .. quote(dir) .. " -a -w " .. quote(dir)) ~= true then
            errors.raise{kind = "io", message = "not there yet, and its directory is not writable"}
        end
        return "not there yet; its directory is writable"
    end
    local f, err = io.open(path, "a")
    if not f then errors.raise{kind = "io", message = "cannot append: " .. tostring(err)} end
    f:close()
    return "appendable"
end

-- Free space of the file system that holds path (or will: its nearest existing
-- ancestor). Lua has no statvfs; df -P prints one portable line per file system.
local function free_space(path)
    local probe = path
    while not exists(probe) and probe:find("/[^/]*$") do
        probe = probe:match("^(.*)/[^/]*$")
        if probe == "" then probe = "/" end
    end
    local ok, out = bounded("df -Pk -- " .. quote(probe))
    if not ok then errors.raise{kind = "io", message = "df: " .. (out:gsub("%s+$", ""))} end
    local line = out:match("\n([^\n]+)")
    local size, avail, capacity, mount = (line or ""):match("^.-%s+(%d+)%s+%d+%s+(%d+)%s+(%d+)%%%s+(.*)$")
    if not size then errors.raise{kind = "io", message = "cannot read df's output: " .. out} end
    local free = tonumber(avail) * 1024
    local detail = string.format("%.1f GiB free of %.1f GiB (%s%% used) on %s", free / 2 ^ 30,
                                 tonumber(size) * 1024 / 2 ^ 30, capacity, mount)
    local min_free = args.min_free_mb * 2 ^ 20
    if free < min_free then
        errors.raise{kind = "disk_full", message = detail .. string.format(", below --min-free-mb %d", args.min_free_mb)}
    end
    return detail, nil, {free_bytes = free, size_bytes = tonumber(size) * 1024, mount = mount}
end

-- ---- which checks an environment needs ---------------------------------------------

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
end

local checks = {}
local function add(check, target, fn, ...)
    local fn_args = table.pack(...)
    checks[#checks + 1] = {check = check, target = target,
                           run = function() return fn(table.unpack(fn_args, 1, fn_args.n)) end}
end
for _, alias in ipairs(sorted_keys(env.sources)) do
    if env.sources[alias].type == "mosaiq" then
        add("odbc", alias, odbc_select_one, alias)
    else
        add("c-echo", alias, echo, alias)
    end
end
for _, alias in ipairs(sorted_keys(env.backup_targets)) do add("c-echo", alias, echo, alias) end
local state_dir = backup.state_dir(env)
add("state-dir", state_dir, state_dir_writable, state_dir)
add("free-space", state_dir, free_space, state_dir)
local spool_dir = env.settings and env.settings.spool_dir
if spool_dir and spool_dir ~= state_dir then add("free-space", spool_dir, free_space, spool_dir) end
local audit_log = env.settings and env.settings.audit_log
if audit_log then add("audit-log", audit_log, audit_log_appendable, audit_log) end

-- ---- run them all at once -----------------------------------------------------------

-- Never raises: a failure is the check's result, so one check cannot hide another.
local function run(c)
    local started = host.monotonic()
    local ok, detail, seconds, extra = pcall(c.run)
    local row = {check = c.check, target = c.target, ok = ok,
                 seconds = (ok and seconds) or (host.monotonic() - started)}
    if ok then
        row.status, row.detail = "ok", detail
        for k, v in pairs(extra or {}) do row[k] = v end
    else
        local err = detail
        row.status, row.detail = "failed", tostring(err)
        row.error_kind = errors.is(err) and err.kind or "error"
    end
    row.ms = string.format("%.1f", row.seconds * 1000)
    return row
end

local rows = task.map(checks, run, {concurrency = #checks})
local failed = 0
for _, r in ipairs(rows) do if not r.ok then failed = failed + 1 end end

if args.metrics_file then require("rtbackup.metrics").write_health(args.metrics_file, env.name, rows) end

if args.json then
    local cjson = require "cjson"
    local out = {}
    for i, r in ipairs(rows) do
        out[i] = {check = r.check, target = r.target, ok = r.ok, status = r.status, seconds = r.seconds,
                  detail = r.detail, error_kind = r.error_kind, free_bytes = r.free_bytes,
                  size_bytes = r.size_bytes, mount = r.mount}
    end
    io.stdout:write(cjson.encode({env = env.name, healthy = failed == 0, timeout_seconds = timeout,
                                  checks = out}), "\n")
else
    local format = host.isatty(1) and "table" or "csv"
    dc.print_rows(rows, {"check", "target", "status", "ms", "detail"}, format)
    if format == "table" then
        io.stdout:write(string.format("%s: %d checks, %s\n", env.name, #rows,
                                      failed == 0 and "all ok" or (failed .. " failed")))
    end
end
return failed == 0 and cli.EXIT.ok or cli.EXIT.failure
