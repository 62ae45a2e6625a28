--- rtbackup.compare: instance-level comparison of a source and a backup archive
-- (validate), and digest comparison of the instances themselves (--deep).
local dicom = require "rtbackup.dicom"
local log = require "rtbackup.log"
local task = require "rtbackup.task"
local qr = require "rtbackup.qr_backup"

local compare = {}

local function uids_of(peer, breaker, study, series)
    local list = {}
    breaker:call(peer.find, peer, {level = "IMAGE", StudyInstanceUID = study, SeriesInstanceUID = series,
                                   SOPInstanceUID = ""}, function(m) list[m.SOPInstanceUID] = true end)
    return list
end

local function series_of(peer, breaker, study)
    local list = {}
    for _, s in ipairs(breaker:call(peer.find, peer, {level = "SERIES", StudyInstanceUID = study,
                                                      SeriesInstanceUID = "", Modality = ""})) do
        list[s.SeriesInstanceUID] = s
    end
    return list
end

-- Digest of every instance of a series, by SOP Instance UID, through C-GET.
local function digests(peer, breaker, study, series)
    local out = {}
    breaker:call(peer.get, peer, {level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = series},
                 function(ds) out[ds.SOPInstanceUID] = ds:digest() end)
    return out
end

--- Compares one study: missing (in source, not in backup), extra (in backup only),
-- and with deep = true, different (both have it, digests differ).
local function compare_study(ctx, study, deep)
    local found = {missing = {}, extra = {}, different = {}, instances = 0, compared = 0}
    local id = study.StudyInstanceUID
    local src_series = series_of(ctx.source, ctx.source_breaker, id)
    local tgt_series = series_of(ctx.target, ctx.target_breaker, id)
    local function note(list, series, uid)
        list[#list + 1] = {patient = study.PatientID, study = id, series = series, sop_instance_uid = uid}
    end
    for series in pairs(src_series) do
        local src = uids_of(ctx.source, ctx.source_breaker, id, series)
        local tgt = tgt_series[series] and uids_of(ctx.target, ctx.target_breaker, id, series) or {}
        for uid in pairs(src) do
            found.instances = found.instances + 1
            if not tgt[uid] then note(found.missing, series, uid) end
        end
        for uid in pairs(tgt) do if not src[uid] then note(found.extra, series, uid) end end
        if deep and tgt_series[series] then
            local a, b = digests(ctx.source, ctx.source_breaker, id, series),
                         digests(ctx.target, ctx.target_breaker, id, series)
            for uid, d in pairs(a) do
                if b[uid] then
                    found.compared = found.compared + 1
                    if b[uid] ~= d then note(found.different, series, uid) end
                end
            end
        end
    end
    for series in pairs(tgt_series) do
        if not src_series[series] then
            for uid in pairs(uids_of(ctx.target, ctx.target_breaker, id, series)) do note(found.extra, series, uid) end
        end
    end
    return found
end

--- Compares the studies of the selection. Returns {instances, compared, missing,
-- extra, different, errors} (lists of {patient, study, series, sop_instance_uid}).
function compare.run(env, source_alias, target_alias, selection, opts)
    local limit = (env.settings or {}).circuit_breaker_failures or 3
    local ctx = {source = dicom.peer(env, source_alias), target = dicom.peer(env, target_alias)}
    ctx.source_breaker, ctx.target_breaker = qr.breaker(ctx.source, limit), qr.breaker(ctx.target, limit)
    local studies = qr.studies(ctx, selection)
    local results, failures = task.map(studies, function(s) return compare_study(ctx, s, opts.deep) end,
                                       {concurrency = opts.concurrency or 4, errors = "return"})
    local total = {instances = 0, compared = 0, missing = {}, extra = {}, different = {}, errors = {},
                   studies = #studies}
    for i = 1, #studies do
        local r = results[i]
        if r then
            total.instances, total.compared = total.instances + r.instances, total.compared + r.compared
            for _, k in ipairs{"missing", "extra", "different"} do
                for _, item in ipairs(r[k]) do total[k][#total[k] + 1] = item end
            end
        else
            total.errors[#total.errors + 1] = {study = studies[i].StudyInstanceUID, error = tostring(failures[i])}
            log.error("cannot compare a study", {study = studies[i].StudyInstanceUID, error = tostring(failures[i])})
        end
    end
    for _, k in ipairs{"missing", "extra", "different"} do
        table.sort(total[k], function(a, b) return a.sop_instance_uid < b.sop_instance_uid end)
    end
    return total
end

return compare
