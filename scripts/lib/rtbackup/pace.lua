--- rtbackup.pace: how many transfers a run keeps going at once. Adaptive below the
-- peer's cap (max_associations): it adds one while throughput grows and halves on
-- trouble (AIMD, as TCP does), so a local archive that saturates at 4 associations
-- gets about 4, a distant one more, and a struggling one fewer.
--
--   local p = pace.new{cap = 8, start = 4, name = "ARIA"}   -- adaptive = false: fixed at cap
--   local ticket = p:enter()                    -- waits (task suspended) for a free place
--   ... one transfer of n instances ...
--   p:leave({instances = n, seconds = 1.8, trouble = false}, ticket)
--   p.limit, p.peak, p.changes                  -- what it chose, for the summary and the log
--
-- The measure: instances per second over a window of completed transfers (as many
-- as the current limit, at least 4), so each window sees every place busy at least
-- once.
--   * Throughput above the best window seen by more than 5%: one more place (never
--     above the cap, nor above a ceiling trouble left).
--   * No gain over the best with more places: back to the limit that gave the best,
--     and hold there (the probe cost one window). Probing again later was tried: on a
--     local archive each probe's one noisy window could look like a gain, and the
--     limit crept up to 6 where 4 is best (12-02, tests/bench/backup.bench.sh).
--   * Trouble (a transfer that timed out, was refused an association or aborted), a
--     transfer's time per instance more than 4 times the fastest seen among
--     transfers of about its size (a small one's fixed costs weigh more per instance)
--     since the last trouble, or a transfer that waited for the peer to accept its
--     association at least a quarter as long as it then took (a peer serving fewer
--     associations at once than it is offered queues the others: a storescp
--     serves one; more places only wait longer): half the places, and that limit
--     less one becomes the ceiling for the rest of the run. Trouble met by a transfer
--     begun before the pace last changed is the old load's, answered already (one
--     halving per burst, as TCP does).
-- Every change is logged (INFO "associations"), so an operator sees what it chose.
local host = require "rtbackup.host"
local log = require "rtbackup.log"
local task = require "rtbackup.task"

local pace = {}

local Pace = {}
Pace.__index = Pace

local GAIN, LATENCY_FACTOR, QUEUED_SHARE, QUEUED_MIN = 1.05, 4, 0.25, 0.005

--- opts: cap (required, >= 1), start (default min(cap, 4)), adaptive (default true),
-- name (for the log), admits (optional: function() -> how many the peer admits now,
-- its limiter's learned limit: no more transfers start than that, since the others
-- would only queue in the limiter, ahead of the verifications).
function pace.new(opts)
    local cap = math.max(1, math.tointeger(opts.cap) or 1)
    local adaptive = opts.adaptive ~= false
    local start = adaptive and math.max(1, math.min(cap, math.tointeger(opts.start) or 4)) or cap
    return setmetatable({
        cap = cap, limit = start, ceiling = cap, adaptive = adaptive, name = opts.name,
        active = 0, peak = 0, waiting = {},
        best = nil, best_limit = start, held = false, fastest = {}, fastest_open = nil,
        window = {moves = 0, instances = 0, trouble = false, started = nil},
        changes = {}, admits = opts.admits,
    }, Pace)
end

-- The places usable now: the limit, or fewer where the peer admits fewer.
function Pace:usable()
    local admitted = self.admits and self.admits()
    return admitted and math.min(self.limit, math.max(1, admitted)) or self.limit
end

local now = host.monotonic

--- Waits for a place (suspending the task) and takes it. Returns the transfer's ticket,
-- for leave.
function Pace:enter()
    local me = task.current()
    while self.active >= self:usable() do
        if not me then break end -- outside a task nothing can wait: go over rather than deadlock
        self.waiting[#self.waiting + 1] = me
        task.suspend()
    end
    self.active = self.active + 1
    if self.active > self.peak then self.peak = self.active end
    if not self.window.started then self.window.started = now() end
    return #self.changes
end

-- Wakes as many waiting tasks as there are free places.
function Pace:wake()
    local free = self:usable() - self.active
    while free > 0 and #self.waiting > 0 do
        task.wake(table.remove(self.waiting, 1))
        free = free - 1
    end
end

function Pace:set(limit, why, rate)
    limit = math.max(1, math.min(self.ceiling, self.cap, limit))
    if limit == self.limit then return end
    self.changes[#self.changes + 1] = {from = self.limit, to = limit, why = why}
    log.info("associations", {source = self.name, from = self.limit, to = limit, why = why,
                              instances_per_second = rate and math.floor(rate + 0.5) or nil})
    self.limit = limit
end

-- A window is complete: decide.
function Pace:judge()
    local w = self.window
    local elapsed = math.max(now() - (w.started or now()), 1e-3)
    local rate = w.instances / elapsed
    if w.trouble then
        self.ceiling = math.max(1, self.limit - 1)
        self:set(math.floor(self.limit / 2), w.trouble == "queued" and "the peer queues associations" or "trouble",
                 rate)
        -- the times seen so far were another load's: one halving per slowdown
        self.best, self.held, self.fastest = nil, false, {}
    elseif rate > 0 and (not self.best or rate > self.best * GAIN) then
        -- (a window that moved nothing, its moves refused, says nothing of throughput)
        self.best, self.best_limit = rate, self.limit
        if not self.held then self:set(self.limit + 1, "throughput grew", rate) end
    elseif self.limit > self.best_limit then
        -- the extra place bought nothing: back to the best, and stay
        self:set(self.best_limit, "no gain", rate)
        self.held = true
    end
    self.window = {moves = 0, instances = 0, trouble = false, started = self.active > 0 and now() or nil}
end

-- Whether a transfer waited to be accepted at least QUEUED_SHARE of the time it then
-- took: its opening beyond the quickest opening seen (connect and negotiation, the
-- same for every association) against the rest of its time. A wait under QUEUED_MIN
-- is an opening's jitter, not a queue (a few small files take a few ms to send). A
-- transfer that met trouble says nothing of it: an association refused at once would
-- make every later opening look like a wait.
function Pace:queued(sample)
    local opening, associations = sample.opening, sample.associations or 0
    if sample.trouble or not (opening and sample.seconds and associations > 0) then return false end
    local per = opening / associations
    if not self.fastest_open or per < self.fastest_open then self.fastest_open = per end
    local waited = opening - associations * self.fastest_open
    return waited >= QUEUED_MIN and waited >= QUEUED_SHARE * (sample.seconds - opening)
end

--- Gives the place back with what the transfer did: {instances, seconds, trouble,
-- opening (optional: seconds it spent opening associations, waits for the peer to
-- accept included), associations (how many it opened)}, and the ticket enter gave it
-- (without one it counts as begun under the current limit).
function Pace:leave(sample, ticket)
    sample = sample or {}
    self.active = math.max(0, self.active - 1)
    if self.adaptive then
        local w = self.window
        local n, seconds = sample.instances or 0, sample.seconds
        local current = ticket == nil or ticket == #self.changes
        w.moves, w.instances = w.moves + 1, w.instances + n
        if sample.trouble and current then w.trouble = true end
        if self:queued(sample) and current and self.limit > 1 and not w.trouble then w.trouble = "queued" end
        if n >= 10 and seconds and seconds > 0 then
            local per, size = seconds / n, math.floor(math.log(n, 2)) -- sizes within a factor of 2
            local fastest = self.fastest[size]
            if current and fastest and per > fastest * LATENCY_FACTOR and self.limit > 1 then
                w.trouble = true -- the peer slows down under this load
            end
            if not fastest or per < fastest then self.fastest[size] = per end
        end
        if w.trouble or w.moves >= math.max(4, self.limit) then self:judge() end
    end
    self:wake()
end

--- Gives the place back unused (nothing was transferred: no sample).
function Pace:give_back()
    self.active = math.max(0, self.active - 1)
    self:wake()
end

--- What the summary says about it.
function Pace:report()
    return {cap = self.cap, final = self.limit, peak = self.peak, adaptive = self.adaptive,
            changes = #self.changes}
end

return pace
