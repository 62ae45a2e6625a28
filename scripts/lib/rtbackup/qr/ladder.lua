--- rtbackup.qr.ladder: moving again the instances a C-MOVE left out, in the way the
-- source accepts.
--
-- Archives differ in what they accept for an IMAGE-level C-MOVE. The rungs, from the
-- cheapest to the most robust:
--   list     one C-MOVE with a list of up to 100 SOP Instance UIDs (conformant, but
--            some archives answer 0xA900 or 0xC000 to a list)
--   single   one C-MOVE per SOP Instance UID
--   series   the whole series again (a peer that ignores IMAGE-level moves still sends
--            the series; what the target has is simply sent again)
-- A refusal moves a peer down a rung for the rest of the run. It is kept in the
-- journal (fact "move_rung" of the peer), so the next run starts on the rung that
-- works, when it says the request's form was refused (0xA900: the identifier does not
-- suit the request; 0x0122: not supported) and the lower rung then worked. Orthanc
-- answers 0xC000 ("unable to process") alike to a form it refuses, to a destination
-- it does not know and to a destination that failed one store of the move: that is
-- learned for the run only (one refused attempt per run), never kept. A rung that
-- "succeeded" while nothing arrived (a peer that drops silently) also moves that unit
-- down a rung for its next attempt.
local errors = require "rtbackup.error"
local exit = require "rtbackup.exit"
local log = require "rtbackup.log"

local ladder = {RUNGS = {"list", "single", "series"}}

local INDEX = {list = 1, single = 2, series = 3}

local function scope(run)
    return "peer " .. run.source_alias
end

--- The rung this run uses for its source.
function ladder.rung(run)
    run.rungs = run.rungs or {}
    local rung = run.rungs[run.source_alias]
    if not rung then
        rung = run.journal and run.journal:fact(scope(run), "move_rung") or "list"
        if not INDEX[rung] then rung = "list" end
        run.rungs[run.source_alias] = rung
    end
    return rung
end

-- Statuses about delivering the sub-operations (to the destination, or the source's
-- resources), not about the request's form: a move the target could not receive
-- (it died, it is full) teaches nothing about how the source takes requests.
local DELIVERY = {[0xA701] = true, [0xA702] = true, [0xA801] = true, [0xB000] = true, [0xFE00] = true}

-- The peer refused the request itself (not: it could not be reached, nor could it
-- deliver what was asked).
local function refused(err)
    if not errors.is(err) or exit.is_unreachable(err) or err.kind == "stopped" or exit.needs_configuration(err) then
        return false
    end
    return not DELIVERY[tonumber(err.status) or -1]
end
ladder.refused = refused

-- Statuses that say the form of the request was refused, whatever else: worth
-- remembering across runs.
local FORM_REFUSED = {[0xA900] = true, [0x0122] = true}

-- Notes what a refusal taught, to keep once a lower way has worked (ladder.confirm).
local function learned(run, err, fact, value)
    if not FORM_REFUSED[tonumber(type(err) == "table" and err.status) or -1] then return end
    run.unconfirmed = run.unconfirmed or {}
    run.unconfirmed[fact] = value
end

--- Whether the source takes STUDY-level C-MOVEs (a study moved whole in one request);
-- false once it refused one (for the run, and the next runs: fact "study_moves").
function ladder.study_moves(run)
    run.no_study_moves = run.no_study_moves or {}
    if run.no_study_moves[run.source_alias] == nil then
        run.no_study_moves[run.source_alias] = run.journal and run.journal:fact(scope(run), "study_moves") == "refused"
    end
    return not run.no_study_moves[run.source_alias]
end

function ladder.no_study_moves(run, err)
    run.no_study_moves[run.source_alias] = true
    learned(run, err, "study_moves", "refused")
    log.warn("the source refused a STUDY-level C-MOVE; moving series by series from now on",
             {source = run.source_alias, error = tostring(err)})
end

local function descend(run, rung, err)
    local lower = ladder.RUNGS[INDEX[rung] + 1]
    if not lower then return nil end
    if INDEX[ladder.rung(run)] < INDEX[lower] then
        run.rungs[run.source_alias] = lower
        learned(run, err, "move_rung", lower)
        log.warn("the source refused a C-MOVE; moving stragglers the next way from now on",
                 {source = run.source_alias, was = rung, now = lower, error = tostring(err)})
    end
    return lower
end

local function sorted(set)
    local list = {}
    for uid in pairs(set) do list[#list + 1] = uid end
    table.sort(list)
    return list
end

local function move_on(run, rung, unit, uids)
    local peer = run:peer(run.source_alias)
    local destination = run:peer(run.target_alias).aet
    local base = {StudyInstanceUID = unit.data.study, destination = destination, patient = unit.data.patient}
    local function move(level, extra)
        local q = {level = level}
        for k, v in pairs(base) do q[k] = v end
        for k, v in pairs(extra) do q[k] = v end
        run:move_answered(nil, peer:move(q))
    end
    if rung == "series" then
        move("SERIES", {SeriesInstanceUID = unit.key})
    elseif rung == "single" then
        for _, uid in ipairs(uids) do move("IMAGE", {SeriesInstanceUID = unit.key, SOPInstanceUID = uid}) end
    else
        for i = 1, #uids, 100 do
            local batch = table.move(uids, i, math.min(i + 99, #uids), 1, {})
            move("IMAGE", {SeriesInstanceUID = unit.key, SOPInstanceUID = #batch == 1 and batch[1] or batch})
        end
    end
end

--- A C-MOVE the source accepted: what was learned from its refusals is kept for the
-- next runs (a lower way worked where the higher one was refused).
function ladder.confirm(run)
    local learned = run.unconfirmed
    if not learned or not next(learned) then return end
    run.unconfirmed = nil
    if not run.journal then return end
    for fact, value in pairs(learned) do run.journal:set_fact(scope(run), fact, value) end
end

--- Moves the `missing` instances (a set of SOP Instance UIDs) of `unit` again, on the
-- run's rung for its source, going down a rung at a refusal, or when the last attempt
-- on this rung brought nothing (`unit.last_retry`).
function ladder.move_missing(run, unit, missing, n_missing)
    local rung = ladder.rung(run)
    local last = unit.last_retry
    if last and last.n == n_missing and INDEX[last.rung] >= INDEX[rung] then
        rung = ladder.RUNGS[INDEX[last.rung] + 1] or last.rung
        log.warn("a retry brought none of the missing instances; trying the next way for this series",
                 {source = run.source_alias, series = unit.key, was = last.rung, now = rung})
    end
    local uids = sorted(missing)
    while true do
        local ok, err = pcall(move_on, run, rung, unit, uids)
        if ok then
            ladder.confirm(run)
            break
        end
        if not refused(err) then error(err, 0) end
        local lower = descend(run, rung, err)
        if not lower then error(err, 0) end
        rung = lower
    end
    unit.last_retry = {rung = rung, n = n_missing}
end

return ladder
