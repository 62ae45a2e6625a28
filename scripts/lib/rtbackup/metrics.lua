--- rtbackup.metrics: what a run did, as a Prometheus text-format file for
-- node_exporter's textfile collector (the convention for batch jobs: the job writes
-- *.prom into the collector's directory, atomically, and the exporter serves it).
--
--   local metrics = require "rtbackup.metrics"
--   local m = metrics.new{env = "UCLA", source = "ARIA"}    -- the run's collector (its context holds it)
--   m:observe("c-move", "ARIA", 12.5)                        -- from the DICOM layer, via the context
--   m:count_failure("ORTHANC_MAIN", "connect_failed")
--   m:write("/var/lib/node_exporter/textfile/rtbackup.prom", summary)  -- the run's summary
--
-- One file may hold many environments and sources (`backup --all`, several cron
-- lines pointing at one file): a write replaces only its own series and keeps the
-- others it finds there. That is a read, a merge and a rename, not a lock: processes
-- that run at the same time (health beside a backup, shards) should write separate
-- files, or one may miss the other's newest series until its next write. Per run it
-- writes
--   rtbackup_last_run_{start,end}_timestamp_seconds, rtbackup_run_duration_seconds,
--   rtbackup_last_run_exit_code, rtbackup_last_success_timestamp_seconds (carried over
--   from the previous file when this run failed; 0 = never succeeded),
--   rtbackup_instances_{found,already_present,moved,verified,failed} and
--   rtbackup_records_built (gauges: the last run's numbers),
--   rtbackup_association_failures_total{peer,kind} (counter) and
--   rtbackup_dicom_operation_duration_seconds{op,peer} (histogram).
-- The counter and the histogram are cumulative across runs (this run's counts are
-- added to those read back from the file), so rate() and histogram_quantile() work
-- on them as on any long-lived process's; deleting the file resets them.
--
-- A run with --shard I/N passes shard = "I/N": the label keeps the shards' series
-- apart, which node_exporter requires when they write to separate files. A command
-- other than backup (validate) passes command = "validate" for the same reason: its
-- last success is not the backup's. (Not "job": Prometheus sets that label itself.)
local clock = require "rtbackup.clock"
local errors = require "rtbackup.error"
local files = require "rtbackup.files"

local metrics = {}

-- Seconds. DICOM operations range from a C-ECHO (milliseconds) to a C-MOVE of a
-- large series (minutes), so the buckets span both.
metrics.BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

-- Every family this module writes, in file order. `owner` says which writer owns it
-- (a run's write or a health write); `value` is the summary field of gauges taken
-- straight from the summary.
local FAMILIES = {
    {name = "rtbackup_last_run_start_timestamp_seconds", type = "gauge", owner = "run",
     help = "Unix time the last run of this environment and source started."},
    {name = "rtbackup_last_run_end_timestamp_seconds", type = "gauge", owner = "run",
     help = "Unix time the last run of this environment and source ended."},
    {name = "rtbackup_last_success_timestamp_seconds", type = "gauge", owner = "run",
     help = "Unix time the last successful run (exit code 0) ended; 0 if none succeeded yet."},
    {name = "rtbackup_last_run_exit_code", type = "gauge", owner = "run",
     help = "Exit code of the last run (0 ok, 1 partial, 3 locked, 4 unreachable, 5 outside window, 130/143 interrupted)."},
    {name = "rtbackup_run_duration_seconds", type = "gauge", owner = "run",
     help = "Wall-clock duration of the last run."},
    {name = "rtbackup_instances_found", type = "gauge", owner = "run", value = "found",
     help = "Instances the last run found at the source in its selection."},
    {name = "rtbackup_instances_already_present", type = "gauge", owner = "run", value = "already_present",
     help = "Instances of the last run's selection that were already in the backup target."},
    {name = "rtbackup_instances_moved", type = "gauge", owner = "run", value = "moved",
     help = "Instances the last run moved to the backup target."},
    {name = "rtbackup_instances_verified", type = "gauge", owner = "run", value = "verified",
     help = "Instances the last run confirmed present in the backup target."},
    {name = "rtbackup_instances_failed", type = "gauge", owner = "run", value = "failed",
     help = "Instances the last run could not back up."},
    {name = "rtbackup_instances_skipped", type = "gauge", owner = "run", value = "skipped",
     help = "Instances the last run left for later runs (a peer unreachable, the window closed, the run stopped)."},
    {name = "rtbackup_records_built", type = "gauge", owner = "run", value = "records_built",
     help = "RT Beams Treatment Records the last Mosaiq run built."},
    {name = "rtbackup_deliveries_skipped", type = "gauge", owner = "run", value = "deliveries_skipped",
     help = "Mosaiq deliveries the last run could not turn into records (named in its summary)."},
    {name = "rtbackup_records_corrected", type = "gauge", owner = "run", value = "records_corrected",
     help = "Treatment records the last Mosaiq run found corrected in Mosaiq (new versions superseding archived ones)."},
    {name = "rtbackup_references_unresolved", type = "gauge", owner = "run", value = "references_unresolved",
     help = "References of RT objects the archive lacks and the source could not provide (open, not acknowledged)."},
    {name = "rtbackup_drill_instances_compared", type = "gauge", owner = "run", value = "compared",
     help = "Instances the last restore drill retrieved from the archive and compared with the source (command=\"drill\")."},
    {name = "rtbackup_drill_instances_different", type = "gauge", owner = "run", value = "different",
     help = "Instances of the last restore drill whose content in the archive differs from the source's."},
    {name = "rtbackup_drill_instances_missing", type = "gauge", owner = "run", value = "missing",
     help = "Instances verified in the journal that the last restore drill could not retrieve from the archive."},
    {name = "rtbackup_association_failures_total", type = "counter", owner = "run",
     help = "DICOM associations that failed, by peer and kind of failure (cumulative across runs)."},
    {name = "rtbackup_dicom_operation_duration_seconds", type = "histogram", owner = "run",
     help = "Duration of DICOM operations by operation and peer (cumulative across runs)."},
    {name = "rtbackup_health_check_up", type = "gauge", owner = "health",
     help = "1 if the health check passed at the last `rtbackup health`, else 0."},
    {name = "rtbackup_health_check_duration_seconds", type = "gauge", owner = "health",
     help = "How long the health check took at the last `rtbackup health`."},
    {name = "rtbackup_health_last_check_timestamp_seconds", type = "gauge", owner = "health",
     help = "Unix time of the last `rtbackup health` of this environment."},
}
local FAMILY = {}        -- family name -> family
local SAMPLE_FAMILY = {} -- sample name (with _bucket/_sum/_count) -> family
for _, f in ipairs(FAMILIES) do
    FAMILY[f.name] = f
    SAMPLE_FAMILY[f.name] = f
    if f.type == "histogram" then
        for _, suffix in ipairs{"_bucket", "_sum", "_count"} do SAMPLE_FAMILY[f.name .. suffix] = f end
    end
end

-- ---- the text format --------------------------------------------------------------

--- A label value as the text format wants it: backslash, double quote and line feed
-- escaped (nothing else is).
function metrics.escape_label(value)
    return (tostring(value):gsub("[\\\"\n]", {["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n"}))
end

local function escape_help(text)
    return (text:gsub("[\\\n]", {["\\"] = "\\\\", ["\n"] = "\\n"}))
end

local function format_value(v)
    if v == math.huge then return "+Inf" end
    if v == -math.huge then return "-Inf" end
    if v ~= v then return "NaN" end
    if math.type(v) == "integer" then return string.format("%d", v) end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", math.floor(v)) end
    return string.format("%.15g", v)
end

local function format_labels(labels)
    if #labels == 0 then return "" end
    local parts = {}
    for i, l in ipairs(labels) do parts[i] = l[1] .. '="' .. metrics.escape_label(l[2]) .. '"' end
    return "{" .. table.concat(parts, ",") .. "}"
end

-- The identity of a series: its name and its labels in name order.
local function series_key(name, labels)
    local sorted = {}
    for i, l in ipairs(labels) do sorted[i] = l end
    table.sort(sorted, function(a, b) return a[1] < b[1] end)
    local parts = {name}
    for _, l in ipairs(sorted) do parts[#parts + 1] = l[1] .. "=" .. l[2] end
    return table.concat(parts, "\0")
end

local function label(labels, name)
    for _, l in ipairs(labels) do if l[1] == name then return l[2] end end
    return nil
end

-- Labels inside {...} starting at position i of line; returns labels and the
-- position after the closing brace, or nil for anything malformed. Values may hold
-- any character, "}" and "," included, so this scans rather than pattern-matches.
local function parse_labels(line, i)
    local labels = {}
    i = i + 1 -- past "{"
    while true do
        local close = line:match("^%s*}()", i)
        if close then return labels, close end
        local name, value_start = line:match('^%s*([%a_][%w_]*)%s*=%s*"()', i)
        if not name then return nil end
        local buf = {}
        i = value_start
        while true do
            local c = line:sub(i, i)
            if c == "" then return nil end
            if c == "\\" then
                local n = line:sub(i + 1, i + 1)
                buf[#buf + 1] = n == "n" and "\n" or n
                i = i + 2
            elseif c == '"' then
                i = i + 1
                break
            else
                buf[#buf + 1] = c
                i = i + 1
            end
        end
        labels[#labels + 1] = {name, table.concat(buf)}
        i = line:match("^%s*,?()", i)
    end
end

local function parse_value(text)
    if text == "+Inf" then return math.huge end
    if text == "-Inf" then return -math.huge end
    if text == "NaN" then return 0 / 0 end
    return tonumber(text)
end

--- The samples of a text-format file we wrote earlier: a list of {name, labels,
-- value}. Comments and lines of families this module does not know are skipped (a
-- file of an older or newer version loses only what this version cannot describe).
function metrics.read(path)
    local f = io.open(path, "r")
    if not f then return {} end
    local samples = {}
    for line in f:lines() do
        local name, rest = line:match("^([%a_:][%w_:]*)()")
        if name and SAMPLE_FAMILY[name] then
            local labels = {}
            if line:sub(rest, rest) == "{" then labels, rest = parse_labels(line, rest) end
            local value = labels and parse_value(line:match("^%s+(%S+)", rest) or "")
            if value then
                samples[#samples + 1] = {name = name, labels = labels, value = value, order = #samples + 1}
            end
        end
    end
    f:close()
    return samples
end

-- Writes `text` to path atomically and durably (rtbackup.sys.write_file: a temporary
-- beside it, fsync, rename, fsync of the directory): the collector (or a reader) sees
-- the old file or the new one, never a half-written one. The temporary's name does
-- not end in .prom, so the collector never reads it. Mode 0644: node_exporter runs as
-- another user, and the file names no patient.
local function write_atomically(path, text)
    local ok, err = pcall(files.replace, path, text, files.SHARED)
    if not ok then
        errors.raise{kind = "io", message = "cannot write the metrics file: " ..
                     tostring(type(err) == "table" and err.message or err)}
    end
    return path
end

-- The file's text: families in FAMILIES order (then `extra`'s), each with HELP and
-- TYPE once and its samples together (the format requires a family's lines to be
-- contiguous).
local function render(samples, extra)
    local families, sample_family = FAMILIES, SAMPLE_FAMILY
    if extra then
        families, sample_family = table.move(FAMILIES, 1, #FAMILIES, 1, {}), setmetatable({}, {__index = SAMPLE_FAMILY})
        for _, f in ipairs(extra) do
            families[#families + 1] = f
            sample_family[f.name] = f
            for _, suffix in ipairs{"_bucket", "_sum", "_count"} do sample_family[f.name .. suffix] = f end
        end
    end
    local by_family = {}
    for _, s in ipairs(samples) do
        local f = sample_family[s.name]
        by_family[f.name] = by_family[f.name] or {}
        table.insert(by_family[f.name], s)
    end
    local out = {}
    for _, f in ipairs(families) do
        local list = by_family[f.name]
        if list then
            out[#out + 1] = "# HELP " .. f.name .. " " .. escape_help(f.help)
            out[#out + 1] = "# TYPE " .. f.name .. " " .. f.type
            for _, s in ipairs(list) do
                out[#out + 1] = s.name .. format_labels(s.labels) .. " " .. format_value(s.value)
            end
        end
    end
    return table.concat(out, "\n") .. "\n"
end

-- The labels that say whose series it is (the others say what it measures).
local IDENTITY_LABELS = {env = true, source = true, shard = true, command = true}

-- Does the sample belong to the writer with this identity and owner?
local function owned(sample, owner, identity)
    if SAMPLE_FAMILY[sample.name].owner ~= owner then return false end
    for _, l in ipairs(identity) do
        if label(sample.labels, l[1]) ~= l[2] then return false end
    end
    -- A series with a label the identity does not have (say shard) is someone else's.
    for _, l in ipairs(sample.labels) do
        local name = l[1]
        if IDENTITY_LABELS[name] then
            local mine = false
            for _, i in ipairs(identity) do if i[1] == name then mine = true end end
            if not mine then return false end
        end
    end
    return true
end

-- Keeps the previous file's samples that are not the writer's; returns them and the
-- writer's own previous samples by series key.
local function split_previous(path, owner, identity)
    local keep, mine = {}, {}
    for _, s in ipairs(metrics.read(path)) do
        if owned(s, owner, identity) then
            mine[series_key(s.name, s.labels)] = s
        else
            keep[#keep + 1] = s
        end
    end
    return keep, mine
end

local function with_labels(identity, ...)
    local labels = {}
    for i, l in ipairs(identity) do labels[i] = {l[1], l[2]} end
    local extra = table.pack(...)
    for i = 1, extra.n, 2 do labels[#labels + 1] = {extra[i], extra[i + 1]} end
    return labels
end

metrics.parse_utc = clock.parse_utc

--- For writers that serve metrics instead of writing a file (`rtbackup serve`): the
-- families this module knows ({name, type, owner, help, value}), and the text format
-- of samples ({name, labels = {{name, value}, ...}, value}) of those families and of
-- `extra` ones ({name, type, help}, rendered after them).
metrics.FAMILIES = FAMILIES
metrics.render = render
metrics.format_value = format_value

-- ---- the collector ------------------------------------------------------------------

local Collector = {}
Collector.__index = Collector

--- A collector for one run: metrics.new{env =, source =, shard = "I/N"?, command =
-- "validate"?}. The run's context holds it; nothing else sees it.
function metrics.new(opts)
    opts = opts or {}
    if type(opts.env) ~= "string" or type(opts.source) ~= "string" then
        errors.raise{kind = "invalid", message = "metrics.new: env and source (strings) are required"}
    end
    local identity = {{"env", opts.env}, {"source", opts.source}}
    if opts.shard then identity[#identity + 1] = {"shard", tostring(opts.shard)} end
    if opts.command then identity[#identity + 1] = {"command", tostring(opts.command)} end
    return setmetatable({identity = identity, latencies = {}, failures = {}, started = os.time()}, Collector)
end

--- One DICOM operation (`op`: "c-echo", "c-find", "c-move", "c-get", "c-store")
-- with `peer` (its alias) took `seconds`.
function Collector:observe(op, peer, seconds)
    local key = op .. "\0" .. peer
    local h = self.latencies[key]
    if not h then
        h = {op = op, peer = peer, counts = {}, sum = 0, count = 0}
        for i = 1, #metrics.BUCKETS do h.counts[i] = 0 end
        self.latencies[key] = h
    end
    for i, bound in ipairs(metrics.BUCKETS) do
        if seconds <= bound then h.counts[i] = h.counts[i] + 1 end
    end
    h.sum, h.count = h.sum + seconds, h.count + 1
end

--- An association with `peer` failed with error kind `kind` ("connect_failed",
-- "timeout", "rejected", "aborted", ...).
function Collector:count_failure(peer, kind)
    local key = peer .. "\0" .. kind
    local f = self.failures[key] or {peer = peer, kind = kind, count = 0}
    f.count = f.count + 1
    self.failures[key] = f
end

-- Adds `value` to the previous sample of the same series (cumulative families).
local function accumulate(samples, previous, name, labels, value)
    local old = previous[series_key(name, labels)]
    if old then
        previous[series_key(name, labels)] = nil
        value = value + old.value
    end
    samples[#samples + 1] = {name = name, labels = labels, value = value}
end

function Collector:histogram_samples(samples, previous)
    local name = "rtbackup_dicom_operation_duration_seconds"
    local keys = {}
    for k in pairs(self.latencies) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
        local h = self.latencies[k]
        local base = with_labels(self.identity, "op", h.op, "peer", h.peer)
        -- The previous file's buckets are added only if they are the same buckets:
        -- otherwise the old series is dropped and this one starts over.
        local compatible = true
        local function bucket_labels(le) return with_labels(self.identity, "op", h.op, "peer", h.peer, "le", le) end
        for _, bound in ipairs(metrics.BUCKETS) do
            if not previous[series_key(name .. "_bucket", bucket_labels(format_value(bound)))] then compatible = false end
        end
        if not compatible then
            for key, s in pairs(previous) do
                if SAMPLE_FAMILY[s.name] == FAMILY[name] and label(s.labels, "op") == h.op
                   and label(s.labels, "peer") == h.peer then previous[key] = nil end
            end
        end
        for i, bound in ipairs(metrics.BUCKETS) do
            accumulate(samples, previous, name .. "_bucket", bucket_labels(format_value(bound)), h.counts[i])
        end
        accumulate(samples, previous, name .. "_bucket", bucket_labels("+Inf"), h.count)
        accumulate(samples, previous, name .. "_sum", base, h.sum)
        accumulate(samples, previous, name .. "_count", base, h.count)
    end
end

--- Writes the run's metrics into `path` (atomically), keeping the series of other
-- environments and sources found there. `summary` is what backup.close returns:
-- exit_code, started_at, finished_at (UTC ISO-8601), duration_seconds, found,
-- already_present, moved, verified, failed, records_built; missing numbers are left
-- out. Returns path.
function Collector:write(path, summary)
    summary = summary or {}
    local keep, previous = split_previous(path, "run", self.identity)
    local now = os.time()
    local finished = metrics.parse_utc(summary.finished_at) or now
    local started = metrics.parse_utc(summary.started_at) or self.started
    local duration = tonumber(summary.duration_seconds) or (finished - started)
    local exit_code = math.tointeger(summary.exit_code)
    local succeeded = exit_code == 0

    local samples = {}
    local function gauge(name, value)
        samples[#samples + 1] = {name = name, labels = with_labels(self.identity), value = value}
    end
    gauge("rtbackup_last_run_start_timestamp_seconds", started)
    gauge("rtbackup_last_run_end_timestamp_seconds", finished)
    local last_success = previous[series_key("rtbackup_last_success_timestamp_seconds", with_labels(self.identity))]
    gauge("rtbackup_last_success_timestamp_seconds", succeeded and finished or (last_success and last_success.value or 0))
    if exit_code then gauge("rtbackup_last_run_exit_code", exit_code) end
    gauge("rtbackup_run_duration_seconds", duration)
    for _, f in ipairs(FAMILIES) do
        if f.value and type(summary[f.value]) == "number" then gauge(f.name, summary[f.value]) end
    end

    -- Cumulative families: this run's counts plus the previous file's; series this
    -- run did not touch are carried over unchanged.
    local fkeys = {}
    for k in pairs(self.failures) do fkeys[#fkeys + 1] = k end
    table.sort(fkeys)
    for _, k in ipairs(fkeys) do
        local f = self.failures[k]
        accumulate(samples, previous, "rtbackup_association_failures_total",
                   with_labels(self.identity, "peer", f.peer, "kind", f.kind), f.count)
    end
    self:histogram_samples(samples, previous)
    local carried = {}
    for _, s in pairs(previous) do
        local t = SAMPLE_FAMILY[s.name].type
        if t == "counter" or t == "histogram" then carried[#carried + 1] = s end
    end
    -- In the order they had in the file, so a histogram's buckets stay in order.
    table.sort(carried, function(a, b) return a.order < b.order end)
    for _, s in ipairs(carried) do samples[#samples + 1] = s end

    for _, s in ipairs(samples) do keep[#keep + 1] = s end
    return write_atomically(path, render(keep))
end

--- Writes the result of `rtbackup health` for environment `env` into `path`
-- (atomically, keeping other series there): checks is a list of {check, target, ok,
-- seconds}.
function metrics.write_health(path, env, checks)
    local identity = {{"env", env}}
    local keep = split_previous(path, "health", identity)
    for _, c in ipairs(checks) do
        local labels = with_labels(identity, "check", c.check, "target", c.target)
        keep[#keep + 1] = {name = "rtbackup_health_check_up", labels = labels, value = c.ok and 1 or 0}
        keep[#keep + 1] = {name = "rtbackup_health_check_duration_seconds", labels = labels, value = c.seconds or 0}
    end
    keep[#keep + 1] = {name = "rtbackup_health_last_check_timestamp_seconds", labels = with_labels(identity),
                       value = os.time()}
    return write_atomically(path, render(keep))
end

return metrics
