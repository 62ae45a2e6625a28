--- rtbackup.units: the one bookkeeping of units of work (a series, a Mosaiq record,
-- a referenced series), whatever the flow.
--
-- A unit goes queued -> moved -> verified, or failed, in the journal. What the counts
-- mean, for every flow, the summary, the metrics and the exit code:
--   verified   instances confirmed present in the target (by SOP Instance UID)
--   moved      instances that arrived in the target during this run: found by the
--              verification, so a peer that reports no counts (or wrong ones) cannot
--              make the figure lie; where the target could not be checked, what the
--              peer reported
--   failed     instances the target still lacks after every retry — never 0 while an
--              attempted unit is incomplete
--   skipped    instances of units not attempted or not finished because a peer was
--              unreachable, the window closed or the run was stopped: still queued (or
--              moved, to be verified first) for the next run
--   deferred   instances left for later runs by max_uids_per_run
local log = require "rtbackup.log"

local units = {STATES = {"queued", "moved", "verified", "failed"}}

local Book = {}
Book.__index = Book

--- The book of one run of `source` (its alias) over `journal` (nil for a dry run).
function units.book(journal, source)
    return setmetatable({
        journal = journal, source = source,
        counts = {moved = 0, verified = 0, failed = 0, skipped = 0, deferred = 0},
        outcomes = {verified = 0, failed = 0, skipped = 0},
        errors = {},
        done = {}, -- units verified in this run
        failed_units = {}, -- what each unit failed in this run added to the counts
        verified_units = {}, -- what each unit verified in this run added to the counts
        present_at_start = {}, -- per unit: what the target held when this run first counted it
    }, Book)
end

local function keys_of(list)
    local keys = {}
    for i, u in ipairs(list) do keys[i] = u.key end
    return keys
end

--- Records what the plan found: `open` units are incomplete in the target (queued;
-- ones the journal has as verified are queued again, since the target lost them, and
-- said so); `complete` ones are there whole (verified, not moved). Units carry
-- `present` (instances already in the target), kept in their data so that the
-- arrivals of a later run can be told from what was there.
function Book:record_plan(open, complete)
    local j, source = self.journal, self.source
    for _, u in ipairs(open) do
        u.data = u.data or {}
        u.data.present = u.present or 0
    end
    local lost = {}
    for _, u in ipairs(open) do
        local known = j:get(source, u.key)
        if known and known.state == "verified" then lost[#lost + 1] = u.key end
    end
    if #lost > 0 then
        log.warn("units verified earlier are incomplete in the target again; queueing them",
                 {source = source, count = #lost})
        j:requeue(source, lost) -- first, so the upsert below refreshes their counts
    end
    j:upsert(source, open)
    j:upsert(source, complete)
    j:mark_many(source, keys_of(complete), "verified", {})
    return #lost
end

--- The open units (queued, moved, failed), oldest first (max_uids_per_run chooses
-- among them in that order: Run:work_plan).
function Book:open_units()
    return self.journal:units(self.source, {state = {"moved", "queued", "failed"}, order = "oldest"})
end

local function present_before(u)
    return (u.data and u.data.present) or u.present or 0
end

-- What the target held of a unit before this run moved any of it. A unit can be
-- counted twice in a run (the references pass moves and verifies a series again that
-- the archive lost meanwhile, or that failed earlier): the arrivals are counted from
-- what was there the first time, not from what was left the second.
local function present_at_start(self, u)
    local n = self.present_at_start[u.key]
    if n == nil then
        n = present_before(u)
        self.present_at_start[u.key] = n
    end
    return n
end

local function note_error(self, unit, err)
    local e = {unit = unit.key, kind = unit.kind, patient = unit.data and unit.data.patient, error = tostring(err)}
    self.errors[#self.errors + 1] = e
    return e
end

--- The move of `list` succeeded; `reported` is what the peer said it completed (nil
-- when its responses carry no counts).
function Book:moved(list, reported)
    -- One transaction for the list: a job of many single-instance units (Mosaiq
    -- records) is one commit, not one per unit.
    self.journal:mark_many(self.source, keys_of(list), "moved",
                           {moved = #list == 1 and reported or nil, attempts_increment = true})
    -- What the peer reported sent (its C-MOVE's completed sub-operations) counts as
    -- moved if the units are not verified in this run (it stopped first): once, with
    -- the first unit, for a move of many units (a whole study).
    for i, u in ipairs(list) do
        u.state = "moved"
        u.reported = i == 1 and reported or nil
    end
end

-- A unit counted as verified earlier in this run and verified again (the references
-- pass found the archive had lost part of it, and moved it again): what it added
-- then is taken back, so no instance counts twice.
local function forget_verified(self, u)
    local v = self.verified_units[u.key]
    if not v then return false end
    self.verified_units[u.key] = nil
    self.counts.verified = self.counts.verified - v.verified
    self.counts.moved = self.counts.moved - v.moved
    self.outcomes.verified = self.outcomes.verified - 1
    return true
end

-- A unit counted as failed earlier in this run and complete now (the references pass
-- moved it after all): its failure is taken back, so no instance counts twice.
local function forget_failure(self, u)
    local f = self.failed_units[u.key]
    if not f then return end
    self.failed_units[u.key] = nil
    self.counts.failed = self.counts.failed - f.failed
    self.counts.moved = self.counts.moved - f.moved
    self.outcomes.failed = self.outcomes.failed - 1
    for i, e in ipairs(self.errors) do
        if e == f.error then table.remove(self.errors, i) break end
    end
end

--- Units complete in the target: each {unit, total} of `list` has `total` instances,
-- every one found; recorded in one journal transaction.
function Book:verified_all(list)
    if #list == 0 then return end
    local keys = {}
    for i, v in ipairs(list) do keys[i] = v[1].key end
    self.journal:mark_many(self.source, keys, "verified", {})
    for _, v in ipairs(list) do
        local u, total = v[1], v[2]
        forget_failure(self, u)
        local again = forget_verified(self, u)
        local moved = math.max(0, total - present_at_start(self, u))
        self.verified_units[u.key] = {verified = total, moved = moved}
        self.counts.verified = self.counts.verified + total
        self.counts.moved = self.counts.moved + moved
        self.outcomes.verified = self.outcomes.verified + 1
        if not again then self.done[#self.done + 1] = u end
    end
end

--- One unit complete in the target: `total` instances, every one found.
function Book:verified(u, total)
    self:verified_all({{u, total}})
    return "verified"
end

--- A unit is still incomplete after every retry: `missing` of `total` instances
-- absent; message names them.
function Book:failed(u, missing, total, message)
    -- data.missing: how many the target lacks, for `rtbackup status` (the rest of the
    -- unit is there, and counts as backed up).
    local data
    if type(u.data) == "table" then
        data = {}
        for k, v in pairs(u.data) do data[k] = v end
        data.missing = missing
    end
    self.journal:mark(self.source, u.key, "failed", {error = message, data = data})
    forget_verified(self, u)
    forget_failure(self, u)
    local moved = math.max(0, total - missing - present_at_start(self, u))
    self.counts.failed = self.counts.failed + missing
    self.counts.moved = self.counts.moved + moved
    self.outcomes.failed = self.outcomes.failed + 1
    self.failed_units[u.key] = {failed = missing, moved = moved, error = note_error(self, u, message)}
    log.error("not completely backed up", {source = self.source, unit = u.key, missing = missing, total = total})
    return "failed"
end

--- A unit could not be attempted or finished (a peer unreachable, the window closed,
-- the run stopped): it keeps its state (queued, or moved to be verified first) for
-- the next run. `refused`: the peer refused it for good (a failure, not a skip).
function Book:skipped(u, err, refused)
    local expected = u.expected or 0
    if refused then
        self.journal:mark(self.source, u.key, "failed", {error = tostring(err), attempts_increment = true})
        local missing = expected - present_before(u)
        self.counts.failed = self.counts.failed + missing
        self.outcomes.failed = self.outcomes.failed + 1
        self.failed_units[u.key] = {failed = missing, moved = 0, error = note_error(self, u, err)}
        return "failed"
    end
    self.journal:mark(self.source, u.key, nil, {error = tostring(err)})
    self.counts.skipped = self.counts.skipped + math.max(0, expected - present_before(u))
    if u.reported then self.counts.moved = self.counts.moved + u.reported end
    self.outcomes.skipped = self.outcomes.skipped + 1
    note_error(self, u, err)
    return "skipped"
end

--- A unit that is not in the journal (found by the references pass, say) joins it
-- queued, with what is already there.
function Book:adopt(u)
    u.data = u.data or {}
    u.data.present = u.present or 0
    self.journal:upsert(self.source, {u})
    local known = self.journal:get(self.source, u.key)
    if known and known.state == "verified" then
        self.journal:requeue(self.source, {u.key})
    end
    return u
end

return units
