--- rtbackup.serve.metrics: /metrics of `rtbackup serve`, in Prometheus' text format,
-- so Prometheus (or Kubernetes' scraping) needs no node_exporter. The same metric
-- names as the textfile a run writes (rtbackup.metrics), here from the journals' run
-- history and the last drill and validation — per environment and source, with
-- command="drill" / "validate" and shard="I/N" as the textfile labels them — and the
-- health checks serve keeps cached; plus what only a long-running process knows:
--   rtbackup_coverage_instances{env,source,state}   verified | failed | pending, over
--                                                   the status page's days (serve_days)
--   rtbackup_open_failures{env,source}              units that failed and are not done
--   rtbackup_build_info{version}                    1
--   rtbackup_serve_requests_total{route,code}       requests answered
--   process_start_time_seconds, process_cpu_seconds_total,
--   process_resident_memory_bytes, process_open_fds (the client libraries' names)
-- The DICOM latency histogram and association failure counters exist only in the
-- textfile (they are counted by the run that measured them).
local clock = require "rtbackup.clock"
local metrics = require "rtbackup.metrics"
local sys = require "rtbackup.sys"

local exposition = {}

exposition.EXTRA = {
    {name = "rtbackup_coverage_instances", type = "gauge",
     help = "Instances (Mosaiq: records) of the days the status page shows (serve_days), by state: verified in the backup, failed, pending (not attempted yet)."},
    {name = "rtbackup_open_failures", type = "gauge",
     help = "Units of work (series, records) that failed and are not backed up yet."},
    {name = "rtbackup_build_info", type = "gauge", help = "1, labelled with the version of rtbackup serving."},
    {name = "rtbackup_serve_requests_total", type = "counter",
     help = "Requests rtbackup serve answered, by route and HTTP status code."},
    {name = "process_start_time_seconds", type = "gauge", help = "Start time of the process since the Unix epoch in seconds."},
    {name = "process_cpu_seconds_total", type = "counter", help = "Total user and system CPU time spent in seconds."},
    {name = "process_resident_memory_bytes", type = "gauge", help = "Resident memory size in bytes."},
    {name = "process_open_fds", type = "gauge", help = "Number of open file descriptors."},
}

local function labels(...)
    local list, args = {}, table.pack(...)
    for i = 1, args.n, 2 do
        if args[i + 1] ~= nil then list[#list + 1] = {args[i], tostring(args[i + 1])} end
    end
    return list
end

local function sample(out, name, lbls, value)
    if type(value) == "number" then out[#out + 1] = {name = name, labels = lbls, value = value} end
end

-- The gauges of one run's summary row, as Collector:write names them.
local function run_samples(out, identity, row, last_success)
    local started, finished = clock.parse_utc(row.started_at), clock.parse_utc(row.finished_at)
    sample(out, "rtbackup_last_run_start_timestamp_seconds", identity, started)
    sample(out, "rtbackup_last_run_end_timestamp_seconds", identity, finished)
    sample(out, "rtbackup_last_success_timestamp_seconds", identity, last_success and clock.parse_utc(last_success) or 0)
    sample(out, "rtbackup_last_run_exit_code", identity, row.exit_code)
    sample(out, "rtbackup_run_duration_seconds", identity, row.duration_seconds or (started and finished and finished - started))
    for _, f in ipairs(metrics.FAMILIES) do
        if f.value then sample(out, f.name, identity, row[f.value]) end
    end
end

-- The latest run of each (command, shard) among the rows (newest first).
local function latest_runs(runs)
    local seen, list = {}, {}
    for _, r in ipairs(runs) do
        local key = (r.command or "backup") .. "\0" .. (r.shard or "")
        if not seen[key] and r.status ~= "running" then
            seen[key] = true
            list[#list + 1] = r
        end
    end
    return list
end

local function source_samples(out, st, src)
    for _, r in ipairs(latest_runs(src.runs)) do
        local command = r.command ~= "backup" and r.command or nil
        local identity = labels("env", st.env, "source", src.alias, "shard", r.shard, "command", command)
        local success = src.last_success_of[r.command or "backup"]
        if r.command == "drill" and src.last_drill and src.last_drill.started_at == r.started_at then
            r = src.last_drill -- the file has every field
        end
        run_samples(out, identity, r, success)
    end
    local v = src.last_validate
    if v then
        local identity = labels("env", st.env, "source", src.alias, "command", "validate")
        local failed = (v.missing or 0) + (v.extra or 0) + (v.different or 0)
        run_samples(out, identity, {started_at = v.started_at, finished_at = v.finished_at, exit_code = v.exit_code,
                                    found = v.found, failed = v.found and failed or nil},
                    v.exit_code == 0 and v.finished_at or nil)
    end
    for _, state in ipairs{"verified", "failed", "pending"} do
        sample(out, "rtbackup_coverage_instances", labels("env", st.env, "source", src.alias, "state", state),
               src.totals[state])
    end
    sample(out, "rtbackup_open_failures", labels("env", st.env, "source", src.alias), #src.failures)
end

local function health_samples(out, env_name, health)
    if not health or not health.rows then return end
    for _, c in ipairs(health.rows) do
        local l = labels("env", env_name, "check", c.check, "target", c.target)
        sample(out, "rtbackup_health_check_up", l, c.ok and 1 or 0)
        sample(out, "rtbackup_health_check_duration_seconds", l, c.seconds or 0)
    end
    sample(out, "rtbackup_health_last_check_timestamp_seconds", labels("env", env_name), health.checked_unix)
end

local function read_file(path)
    local f = io.open(path, "r")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    return text
end

local function process_samples(out, started)
    sample(out, "process_start_time_seconds", {}, started)
    local stat = read_file("/proc/self/stat")
    if stat then
        -- fields after "(comm)": state is the 3rd field, utime the 14th, stime the 15th
        local rest = stat:match("%)%s+(.*)$") or ""
        local fields = {}
        for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
        local utime, stime = tonumber(fields[12]), tonumber(fields[13])
        if utime and stime then sample(out, "process_cpu_seconds_total", {}, (utime + stime) / 100) end
    end
    local status = read_file("/proc/self/status")
    local rss = status and tonumber(status:match("VmRSS:%s+(%d+)%s+kB"))
    if rss then sample(out, "process_resident_memory_bytes", {}, rss * 1024) end
    local ok, fds = pcall(sys.list, "/proc/self/fd")
    if ok then sample(out, "process_open_fds", {}, #fds - 1) end -- less the one listing
end

--- The text of /metrics. `model`: {envs = {{status, health}}, requests = {[route ..
-- "\0" .. code] = n}, started (Unix time), version}.
function exposition.render(model)
    local out = {}
    for _, e in ipairs(model.envs) do
        if e.status then
            for _, src in ipairs(e.status.sources) do source_samples(out, e.status, src) end
        end
        health_samples(out, e.name or (e.status and e.status.env), e.health)
    end
    sample(out, "rtbackup_build_info", labels("version", model.version), 1)
    local keys = {}
    for k in pairs(model.requests or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
        local route, code = k:match("^(.-)%z(.*)$")
        sample(out, "rtbackup_serve_requests_total", labels("route", route, "code", code), model.requests[k])
    end
    process_samples(out, model.started)
    return metrics.render(out, exposition.EXTRA)
end

return exposition
