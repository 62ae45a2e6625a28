--- rtbackup.references: referential completeness of RT objects in the backup.
--
-- A treatment record is of little use without its RT Plan, a plan without its
-- structure set, a structure set without the images it was drawn on. For RT objects
-- backed up in this run, read them back from the target, follow those references
-- (RTRECORD/RTDOSE -> RTPLAN -> RTSTRUCT -> image series), and move from the source
-- whatever the target lacks. References found in neither archive are reported.
local log = require "rtbackup.log"

local references = {}

local RT_MODALITIES = {RTRECORD = true, RTPLAN = true, RTSTRUCT = true, RTDOSE = true}
references.RT_MODALITIES = RT_MODALITIES

-- What one RT object points at: instance UIDs (plans, structure sets) and series.
local function refs_of(ds)
    local out = {instances = {}, series = {}}
    local function items(ds_, keyword) return ds_[keyword] or {} end
    for _, kw in ipairs{"ReferencedRTPlanSequence", "ReferencedStructureSetSequence"} do
        for _, item in ipairs(items(ds, kw)) do
            local uid = item.ReferencedSOPInstanceUID
            if uid and uid ~= "" then out.instances[#out.instances + 1] = uid end
        end
    end
    for _, frame in ipairs(items(ds, "ReferencedFrameOfReferenceSequence")) do
        for _, study in ipairs(items(frame, "RTReferencedStudySequence")) do
            for _, series in ipairs(items(study, "RTReferencedSeriesSequence")) do
                out.series[#out.series + 1] = {study = study.ReferencedSOPInstanceUID,
                                               series = series.SeriesInstanceUID}
            end
        end
    end
    return out
end

-- instance UID -> series UID for every instance of a study in an archive.
local function study_map(ctx, peer, breaker, study)
    local map, counts = {}, {}
    local series = breaker:call(peer.find, peer, {level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = ""})
    for _, s in ipairs(series) do
        counts[s.SeriesInstanceUID] = 0
        breaker:call(peer.find, peer, {level = "IMAGE", StudyInstanceUID = study,
                                       SeriesInstanceUID = s.SeriesInstanceUID, SOPInstanceUID = ""},
            function(m)
                map[m.SOPInstanceUID] = s.SeriesInstanceUID
                counts[s.SeriesInstanceUID] = counts[s.SeriesInstanceUID] + 1
            end)
    end
    return {instances = map, series = counts}
end

--- Follows the references of the RT series in `units` ({key = series UID, data =
-- {study =, modality =}}). Returns {moved_series =, moved =, failed =, unresolved =
-- {...}}; a referenced series is checked complete (instance count) after its move.
function references.complete(ctx, units)
    local maps = {source = {}, target = {}}
    local function map(side, study)
        local peer = side == "source" and ctx.source or ctx.target
        local breaker = side == "source" and ctx.source_breaker or ctx.target_breaker
        maps[side][study] = maps[side][study] or study_map(ctx, peer, breaker, study)
        return maps[side][study]
    end
    local result = {moved_series = 0, moved = 0, failed = 0, unresolved = {}}
    local done, queue = {}, {}
    for _, u in ipairs(units) do
        if RT_MODALITIES[u.data.modality or ""] then queue[#queue + 1] = {study = u.data.study, series = u.key} end
    end

    local function move_series(study, series)
        -- A series the journal knows is in this selection: the plan moves it (maybe in
        -- a later run, under max_uids_per_run). Only series outside it are moved here.
        if ctx.journal and ctx.journal:get(ctx.source_alias, series) then return end
        local r = ctx.source_breaker:call(ctx.source.move, ctx.source, {
            level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = series, destination = ctx.destination})
        result.moved_series, result.moved = result.moved_series + 1, result.moved + (r.completed or 0)
        maps.target[study] = nil -- the target changed: list it again
        local want, have = map("source", study).series[series] or 0, map("target", study).series[series] or 0
        if have < want then
            result.failed = result.failed + (want - have)
            log.error("a referenced series is still incomplete in the target after the move",
                      {study = study, series = series, expected = want, present = have})
        end
        queue[#queue + 1] = {study = study, series = series} -- it may reference more
        log.info("moved a referenced series the backup lacked", {study = study, series = series,
                                                                 instances = r.completed})
    end

    while #queue > 0 do
        local item = table.remove(queue, 1)
        local key = item.study .. "/" .. item.series
        if not done[key] then
            done[key] = true
            local found = {}
            ctx.target_breaker:call(ctx.target.get, ctx.target, {level = "SERIES", StudyInstanceUID = item.study,
                                                                  SeriesInstanceUID = item.series},
                function(ds) if RT_MODALITIES[ds.Modality or ""] then found[#found + 1] = refs_of(ds) end end)
            for _, refs in ipairs(found) do
                for _, uid in ipairs(refs.instances) do
                    if not map("target", item.study).instances[uid] then
                        local series = map("source", item.study).instances[uid]
                        if series then
                            move_series(item.study, series)
                        else
                            result.unresolved[#result.unresolved + 1] = {study = item.study, from_series = item.series,
                                                                         instance = uid}
                        end
                    end
                end
                for _, ref in ipairs(refs.series) do
                    local study = ref.study or item.study
                    local want = map("source", study).series[ref.series]
                    local have = map("target", study).series[ref.series] or 0
                    if want == nil then
                        if have == 0 then
                            result.unresolved[#result.unresolved + 1] = {study = study, from_series = item.series,
                                                                         series = ref.series}
                        end
                    elseif have < want then
                        move_series(study, ref.series)
                    end
                end
            end
        end
    end
    for _, u in ipairs(result.unresolved) do
        log.warn("a reference is in neither archive", {study = u.study, from_series = u.from_series,
                                                        instance = u.instance, series = u.series})
    end
    return result
end

return references
