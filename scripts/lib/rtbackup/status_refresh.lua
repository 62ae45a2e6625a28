--- rtbackup.status_refresh: `rtbackup status --refresh` — the days of a status
-- counted again on the peers instead of read from the journal, for what the journal
-- cannot know (a study the archive already held whole when a run first saw it, a
-- journal moved aside and rebuilt, instances deleted from the archive since).
--
--   ARIA/MIM  the source's studies of the period (C-FIND), then per study date the
--             plan a backup would make (rtbackup.qr.plan): found at the source,
--             present in the backup
--   Mosaiq    the period's deliveries rebuilt as records (rtbackup.mosaiq.flow.build:
--             the same deterministic UIDs), each looked up in the backup
-- Of what the backup lacks, the instances the journal has as failed count as failed,
-- the rest as pending. Read-only: nothing is moved, the journal is not written.
local clock = require "rtbackup.clock"
local context = require "rtbackup.context"
local journal = require "rtbackup.journal"
local plan = require "rtbackup.qr.plan"
local settings = require "rtbackup.settings"
local site = require "rtbackup.site"
local sys = require "rtbackup.sys"
local task = require "rtbackup.task"

local refresh = {}

local function failed_by_day(src)
    local by = {}
    for _, f in ipairs(src.failures) do
        local day = f.day or "undated"
        by[day] = (by[day] or 0) + (f.missing or 0)
    end
    return by
end

-- A row from what the peers say: known, present; the journal's failed for the day.
local function row(day, known, present, failed_before)
    local missing = math.max(0, known - present)
    local failed = math.min(missing, failed_before or 0)
    return {day = day, known = known, verified = present, failed = failed, pending = missing - failed,
            coverage = known > 0 and present / known or require("cjson").null}
end

local function dicom_days(env, ctx, src, since, till)
    local source, target = ctx:peer(src.alias), ctx:peer(env.default_backup)
    local keys = settings.get(env, "dicom_query_keys", src.alias)
    local studies = plan.studies(source, {study_dates = clock.dicom_date(since) .. "-" .. clock.dicom_date(till),
                                          keys = keys})
    local dates, list = {}, {}
    for _, st in ipairs(studies) do
        local d = type(st.StudyDate) == "string" and st.StudyDate:match("^(%d%d%d%d%d%d%d%d)")
        if d and not dates[d] then
            dates[d] = true
            list[#list + 1] = d
        end
    end
    table.sort(list)
    local opts = {concurrency = settings.get(env, "max_associations", src.alias),
                  accept = site.choices(env).qr.accept_series or nil}
    local function count(selection)
        local p = plan.make(source, target, selection, opts)
        if #p.errors > 0 then error(p.errors[1], 0) end
        return p
    end
    local counted = {}
    for _, d in ipairs(list) do
        local p = count{study_dates = d, keys = keys}
        counted[#counted + 1] = {day = d:sub(1, 4) .. "-" .. d:sub(5, 6) .. "-" .. d:sub(7, 8),
                                 known = p.found, present = p.present}
    end
    -- Studies without a StudyDate belong to no day: counted as the "no date" row.
    local u = count{undated_only = true, keys = keys}
    return counted, {known = u.found, present = u.present}
end

-- The journal's UID namespace fact, read but never written (a fresh journal would
-- derive the same "ENV/SOURCE" a first run derives).
local function read_only_facts(env)
    local dir = require("rtbackup.run").state_dir(env)
    local path = dir .. "/" .. env.name .. ".journal.sqlite"
    if not sys.stat(path) then return nil end
    local j = journal.open(path)
    return {j = j, fact = function(_, scope, key) return j:fact(scope, key) end, set_fact = function() end}
end

local function mosaiq_days(env, ctx, src, since, till)
    local flow = require "rtbackup.mosaiq.flow"
    local facts = read_only_facts(env)
    local ok, built = pcall(flow.build, ctx, env, src.alias, site.choices(env), since, till,
                            {journal = facts, read_only = true})
    if facts then facts.j:close() end
    if not ok then error(built, 0) end
    local target = ctx:peer(env.default_backup)
    local by_series, series = {}, {}
    for _, r in ipairs(built.records) do
        if not by_series[r.series] then
            by_series[r.series] = {study = r.study, patient = r.patient}
            series[#series + 1] = r.series
        end
    end
    local there = {}
    task.map(series, function(s)
        local info = by_series[s]
        target:find({level = "IMAGE", StudyInstanceUID = info.study, SeriesInstanceUID = s, SOPInstanceUID = "",
                     patient = info.patient}, function(m) there[m.SOPInstanceUID] = true end)
    end, {concurrency = settings.get(env, "max_associations", env.default_backup)})
    local days = {}
    local function day(d)
        days[d] = days[d] or {day = d, known = 0, present = 0, not_built = 0}
        return days[d]
    end
    for _, r in ipairs(built.records) do
        local d = day(r.day)
        d.known = d.known + 1
        if there[r.uid] then d.present = d.present + 1 end
    end
    -- Deliveries the site accepts as never being records (QA, brachytherapy, imaging:
    -- mosaiq.accepted_skips) are no record missing; the others are, as in a backup.
    local accepted = flow.accepted_skips(site.choices(env))
    for _, f in ipairs(built.skipped) do
        if not accepted[f.kind] then
            local d = day(f.day)
            d.known, d.not_built = d.known + 1, d.not_built + 1
        end
    end
    local list = {}
    for _, d in pairs(days) do list[#list + 1] = d end
    table.sort(list, function(a, b) return a.day < b.day end)
    return list
end

--- Replaces the days (and totals) of each source of status `st` with counts from the
-- peers. Raises what the peers raise (unreachable: exit 4).
function refresh.apply(env, st, opts)
    local ctx = context.new(env, {command = "status"})
    for _, src in ipairs(st.sources) do
        local failed = failed_by_day(src)
        local counted, undated
        if src.type == "mosaiq" then
            counted = mosaiq_days(env, ctx, src, st.since, st["until"])
        else
            counted, undated = dicom_days(env, ctx, src, st.since, st["until"])
        end
        local days = {}
        local totals = {day = "total", known = 0, verified = 0, failed = 0, pending = 0}
        for _, c in ipairs(counted) do
            local r = row(c.day, c.known, c.present, (failed[c.day] or 0) + (c.not_built or 0))
            days[#days + 1] = r
            for _, k in ipairs{"known", "verified", "failed", "pending"} do totals[k] = totals[k] + r[k] end
        end
        if undated then
            src.undated = row("undated", undated.known, undated.present, failed.undated)
            src.undated.units = 0
        end
        for _, k in ipairs{"known", "verified", "failed", "pending"} do totals[k] = totals[k] + src.undated[k] end
        totals.coverage = totals.known > 0 and totals.verified / totals.known or require("cjson").null
        src.days, src.totals, src.refreshed = days, totals, true
    end
    ctx:flush()
end

return refresh
