-- rtbackup.metrics: the file a run writes for node_exporter's textfile collector is
-- valid Prometheus text format (checked by a real parser, promtool), replaced
-- atomically, escapes label values, and keeps what must outlive one run.
local h = require "helpers"
local metrics = require "rtbackup.metrics"

local dir

local function sh(cmd)
    local p = io.popen(cmd .. " 2>&1")
    local out = p:read("a")
    local _, _, code = p:close()
    return code, out
end

local function read(path)
    local f = assert(io.open(path))
    local text = f:read("a")
    f:close()
    return text
end

-- The value of the sample whose line starts with `prefix` (name and labels).
local function value(text, prefix)
    for line in text:gmatch("[^\n]+") do
        if line:sub(1, #prefix + 1) == prefix .. " " then return tonumber(line:sub(#prefix + 2)) end
    end
    return nil
end

local OK = {exit_code = 0, started_at = "2026-11-21T02:00:00Z", finished_at = "2026-11-21T02:10:00Z",
            duration_seconds = 600.25, found = 40, already_present = 10, moved = 30, verified = 30, failed = 0}
local T_OK_END = 1795227000 -- 2026-11-21T02:10:00Z

before_each(function() dir = h.tmpdir() end)
after_each(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("rtbackup.metrics", function()
    it("writes a file promtool accepts: gauges, a counter and a histogram, with HELP and TYPE", function()
        if sh("command -v promtool") ~= 0 then
            pending("promtool is not installed (Debian package prometheus): the format is not checked")
            return
        end
        local m = metrics.new{env = "UCLA", source = 'odd "name"\\with\nnewline'}
        m:observe("c-find", "ARIA", 0.02)
        m:observe("c-move", "ARIA", 42)
        m:observe("c-move", "ARIA", 900) -- above the largest bucket: only +Inf
        m:count_failure("ORTHANC_MAIN", "connect_failed")
        m:write(dir .. "/rtbackup.prom", OK)
        metrics.new{env = "UCLA", source = "Mosaiq"}:write(dir .. "/rtbackup.prom",
            {exit_code = 0, finished_at = "2026-11-21T03:00:00Z", duration_seconds = 5, records_built = 7})
        metrics.write_health(dir .. "/rtbackup.prom", "UCLA", {{check = "c-echo", target = "ARIA", ok = true, seconds = 0.01}})
        local code, out = sh("promtool check metrics < " .. h.quote(dir .. "/rtbackup.prom"))
        assert.are.equal(0, code, out .. "\n" .. read(dir .. "/rtbackup.prom"))
        local text = read(dir .. "/rtbackup.prom")
        for _, name in ipairs{"rtbackup_last_run_start_timestamp_seconds", "rtbackup_last_run_end_timestamp_seconds",
                              "rtbackup_last_success_timestamp_seconds", "rtbackup_run_duration_seconds",
                              "rtbackup_instances_found", "rtbackup_instances_already_present",
                              "rtbackup_instances_moved", "rtbackup_instances_verified", "rtbackup_instances_failed",
                              "rtbackup_records_built", "rtbackup_health_check_up"} do
            assert.matches("# TYPE " .. name .. " gauge\n", text, 1, true)
        end
        assert.matches("# TYPE rtbackup_association_failures_total counter\n", text, 1, true)
        assert.matches("# TYPE rtbackup_dicom_operation_duration_seconds histogram\n", text, 1, true)
        assert.are.equal(7, value(text, 'rtbackup_records_built{env="UCLA",source="Mosaiq"}'))
    end)

    it("replaces the file by rename and leaves no temporary file behind", function()
        local path = dir .. "/rtbackup.prom"
        metrics.new{env = "UCLA", source = "ARIA"}:write(path, OK)
        local _, inode_before = sh("stat -c %i " .. h.quote(path))
        metrics.new{env = "UCLA", source = "ARIA"}:write(path, OK)
        local _, inode_after = sh("stat -c %i " .. h.quote(path))
        -- a new inode: the old file was swapped for a complete new one, not rewritten in place
        assert.are_not.equal(inode_before, inode_after)
        local _, listing = sh("ls -A " .. h.quote(dir))
        assert.are.equal("rtbackup.prom\n", listing)
    end)

    it("raises an io error when the directory is missing", function()
        local m = metrics.new{env = "UCLA", source = "ARIA"}
        local ok, err = pcall(m.write, m, dir .. "/nope/rtbackup.prom", OK)
        assert.is_false(ok)
        assert.are.equal("io", err.kind)
    end)

    it("escapes backslash, double quote and newline in label values, and reads them back", function()
        local source = 'a"b\\c\nd'
        local path = dir .. "/rtbackup.prom"
        metrics.new{env = "UCLA", source = source}:write(path, OK)
        local text = read(path)
        assert.matches('rtbackup_instances_moved{env="UCLA",source="a\\"b\\\\c\\nd"} 30\n', text, 1, true)
        assert.are.equal(metrics.escape_label(source), 'a\\"b\\\\c\\nd')
        local found
        for _, s in ipairs(metrics.read(path)) do
            if s.name == "rtbackup_instances_moved" then found = s end
        end
        assert.are.same({{"env", "UCLA"}, {"source", source}}, found.labels)
        -- a second write still recognises its own series (one line, not two)
        metrics.new{env = "UCLA", source = source}:write(path, OK)
        local _, count = read(path):gsub("rtbackup_instances_moved{", "")
        assert.are.equal(1, count)
    end)

    it("keeps the last success timestamp when a run fails, and moves it on the next success", function()
        local path = dir .. "/rtbackup.prom"
        local key = 'rtbackup_last_success_timestamp_seconds{env="UCLA",source="ARIA"}'
        metrics.new{env = "UCLA", source = "ARIA"}:write(path, OK)
        assert.are.equal(T_OK_END, value(read(path), key))

        metrics.new{env = "UCLA", source = "ARIA"}:write(path, {exit_code = 4, started_at = "2026-11-22T02:00:00Z",
                                                                finished_at = "2026-11-22T02:00:05Z"})
        local text = read(path)
        assert.are.equal(T_OK_END, value(text, key))
        assert.are.equal(4, value(text, 'rtbackup_last_run_exit_code{env="UCLA",source="ARIA"}'))
        assert.are.equal(T_OK_END + 86400 - 595, value(text, 'rtbackup_last_run_end_timestamp_seconds{env="UCLA",source="ARIA"}'))
        -- the failed run found nothing: its instance gauges are gone, not the old run's numbers
        assert.is_nil(value(text, 'rtbackup_instances_moved{env="UCLA",source="ARIA"}'))

        metrics.new{env = "UCLA", source = "ARIA"}:write(path, {exit_code = 0, finished_at = "2026-11-23T02:10:00Z"})
        assert.are.equal(T_OK_END + 2 * 86400, value(read(path), key))
    end)

    it("says 0 for the last success of a source that never succeeded", function()
        local path = dir .. "/rtbackup.prom"
        metrics.new{env = "UCLA", source = "MIM"}:write(path, {exit_code = 1})
        assert.are.equal(0, value(read(path), 'rtbackup_last_success_timestamp_seconds{env="UCLA",source="MIM"}'))
    end)

    it("keeps the series of other sources, environments, shards and commands in the same file", function()
        local path = dir .. "/rtbackup.prom"
        metrics.new{env = "UCLA", source = "ARIA"}:write(path, OK)
        metrics.new{env = "TJU", source = "ARIA"}:write(path, OK)
        metrics.new{env = "UCLA", source = "ARIA", shard = "2/3"}:write(path, OK)
        metrics.new{env = "UCLA", source = "ARIA", command = "validate"}:write(path, {exit_code = 1})
        metrics.new{env = "UCLA", source = "ARIA"}:write(path, {exit_code = 0, moved = 1})
        local text = read(path)
        assert.are.equal(1, value(text, 'rtbackup_last_run_exit_code{env="UCLA",source="ARIA",command="validate"}'))
        assert.are.equal(0, value(text, 'rtbackup_last_run_exit_code{env="UCLA",source="ARIA"}'))
        assert.are.equal(1, value(text, 'rtbackup_instances_moved{env="UCLA",source="ARIA"}'))
        assert.are.equal(30, value(text, 'rtbackup_instances_moved{env="TJU",source="ARIA"}'))
        assert.are.equal(30, value(text, 'rtbackup_instances_moved{env="UCLA",source="ARIA",shard="2/3"}'))
    end)

    it("adds each run's association failures and latencies to the file's totals", function()
        local path = dir .. "/rtbackup.prom"
        local prefix = 'rtbackup_dicom_operation_duration_seconds'
        local labels = '{env="UCLA",source="ARIA",op="c-move",peer="ARIA"'
        for run = 1, 2 do
            local m = metrics.new{env = "UCLA", source = "ARIA"}
            m:count_failure("ORTHANC_MAIN", "timeout")
            m:observe("c-move", "ARIA", run == 1 and 0.3 or 7)
            m:write(path, OK)
        end
        local text = read(path)
        assert.are.equal(2, value(text, 'rtbackup_association_failures_total{env="UCLA",source="ARIA",peer="ORTHANC_MAIN",kind="timeout"}'))
        assert.are.equal(2, value(text, prefix .. "_count" .. labels .. "}"))
        assert.are.equal(7.3, value(text, prefix .. "_sum" .. labels .. "}"))
        assert.are.equal(1, value(text, prefix .. "_bucket" .. labels .. ',le="0.5"}'))
        assert.are.equal(2, value(text, prefix .. "_bucket" .. labels .. ',le="10"}'))
        assert.are.equal(2, value(text, prefix .. "_bucket" .. labels .. ',le="+Inf"}'))

        -- a run without failures keeps the total (a counter never goes down)
        metrics.new{env = "UCLA", source = "ARIA"}:write(path, OK)
        assert.are.equal(2, value(read(path), 'rtbackup_association_failures_total{env="UCLA",source="ARIA",peer="ORTHANC_MAIN",kind="timeout"}'))
    end)

    it("is fed by a run's context only: another context's operations never reach it", function()
        local context = require "rtbackup.context"
        local m = metrics.new{env = "UCLA", source = "ARIA"}
        local mine, other = context.new(nil, {metrics = m}), context.new(nil)
        other:observe("c-echo", "ARIA", 0.1)
        other:count_failure("ARIA", "timeout")
        mine:observe("c-move", "ARIA", 2)
        local path = dir .. "/ctx.prom"
        m:write(path, OK)
        local text = read(path)
        assert.is_nil(text:find('op="c-echo"', 1, true))
        assert.is_nil(text:find("rtbackup_association_failures_total{", 1, true))
        assert.are.equal(1, value(text, 'rtbackup_dicom_operation_duration_seconds_count{env="UCLA",source="ARIA",op="c-move",peer="ARIA"}'))
    end)

    it("reads UTC ISO-8601 times as Unix time", function()
        assert.are.equal(0, metrics.parse_utc("1970-01-01T00:00:00Z"))
        assert.are.equal(951782400, metrics.parse_utc("2000-02-29T00:00:00Z"))
        assert.are.equal(T_OK_END + 0.5, metrics.parse_utc("2026-11-21T02:10:00.5Z"))
        assert.is_nil(metrics.parse_utc("2026-11-21 02:10:00"))
    end)
end)
