-- Helpers of status.bench.sh.
--   status_bench.lua journal PATH N DAYS   a synthetic journal: N series units over the last
--                                          DAYS days (2% failed, 3% queued), one run
--   status_bench.lua collect ENVNAME DAYS  ms to read the status (rtbackup.status.collect)
--                                          and ms to render the page from it
local mode = ...
local clock = require "rtbackup.clock"
local host = require "rtbackup.host"

if mode == "journal" then
    local _, path, n, days = ...
    n, days = tonumber(n), tonumber(days)
    os.remove(path)
    local j = require("rtbackup.journal").open(path)
    local run = j:begin_run{env = "BENCH", source = "ARIA"}
    local today = clock.day(clock.today())
    local batch = {}
    for i = 1, n do
        local day = clock.format_day(today - (i % days))
        batch[#batch + 1] = {key = "1.2.826.0.1.3680043.10.1." .. i, kind = "series", expected = 1 + i % 200,
                             data = {study = "1.2.826.0.1.3680043.10.2." .. (i // 4),
                                     patient = string.format("BENCH%06d", i // 12), modality = "CT",
                                     series_in_study = 4, date = (day:gsub("-", "")), present = 0}}
        if #batch == 1000 or i == n then
            j:upsert("ARIA", batch)
            batch = {}
        end
    end
    local verified, failed = {}, {}
    for i = 1, n do
        if i % 50 == 0 then failed[#failed + 1] = "1.2.826.0.1.3680043.10.1." .. i
        elseif i % 33 ~= 0 then verified[#verified + 1] = "1.2.826.0.1.3680043.10.1." .. i end
    end
    j:mark_many("ARIA", verified, "verified", {})
    j:mark_many("ARIA", failed, "failed", {error = "3 of 10 instances not in MAIN after 3 retries"})
    j:finish_run(run, {status = "partial", summary = {command = "backup", exit_code = 1}})
    j:close()
elseif mode == "collect" then
    local _, name, days = ...
    local env = require("rtbackup.config").load(name)
    local t0 = host.monotonic()
    local st = require("rtbackup.status").collect(env, {days = tonumber(days)})
    local t1 = host.monotonic()
    local html = require("rtbackup.serve.page").render{generated_at = clock.iso_utc(), days = tonumber(days),
                                                        envs = {{status = st}}}
    local t2 = host.monotonic()
    print(string.format("%d %d %d", math.floor((t1 - t0) * 1000 + 0.5), math.floor((t2 - t1) * 1000 + 0.5), #html))
end
