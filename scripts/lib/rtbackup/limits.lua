--- rtbackup.limits: how many associations this process has open to a peer at once.
--
-- One limiter per peer (AE title, host, port), held by the process: every operation
-- on that peer (find, move, get, store, echo), whichever command, script or task asks,
-- takes a slot first and gives it back when its association ends. A site script that
-- maps over 8 items with `concurrency = 8` still gets at most the peer's
-- max_associations at once: the other tasks wait their turn.
--
--   local l = limits.for_peer("ARIA@10.0.0.5:104", 4)
--   l:run(function() ... end)        -- waits for a slot, runs, frees it (also on error)
--   l.peak                           -- most slots ever in use at once
--   l:note_busy() / l:note_ok()      -- the peer refused an association as busy / served one
--   limits.waited()                  -- seconds the calling task has waited for slots
--
-- A peer may admit fewer associations than max_associations says (its own limit, or
-- other clients holding places). When it refuses one as busy (A-ASSOCIATE-RJ
-- rejected-transient) while this process holds n, the limiter keeps to n - 1 (at least
-- 1), so moves, queries and verifications wait here instead of being refused there;
-- after 4 x that many operations served in a row it tries one more, up to the cap.
-- That many served also confirms the number it kept to. A refusal within a confirmed
-- number n is forgiven when at least n operations were served since the last one
-- forgiven: one of our associations that has ended may not have ended yet for the peer
-- (its release still on the way), and keeping to one fewer then would halve the work
-- with an archive capped at 2, for nothing. A peer that really admits fewer now refuses
-- about as often as it serves, and is soon believed. The refused operation is asked
-- again later (rtbackup.dicom, rtbackup.run), as always.
local errors = require "rtbackup.error"
local host = require "rtbackup.host"
local log = require "rtbackup.log"
local task = require "rtbackup.task"

local limits = {}

local registry = {}

-- Seconds each task has waited for slots, on any peer. An operation's own time is its
-- time less that wait: rtbackup.pace judges how the peer serves, not our queue for it.
local waited = setmetatable({}, {__mode = "k"})

--- Seconds the calling task (or `t`) has waited for slots so far.
function limits.waited(t)
    t = t or task.current()
    return t and waited[t] or 0
end

local Limiter = {}
Limiter.__index = Limiter

--- The limiter of peer `key`. When two configurations name the same peer with
-- different caps (two aliases for one archive), the smaller cap holds for both.
function limits.for_peer(key, cap)
    cap = math.max(1, math.tointeger(cap) or 1)
    local l = registry[key]
    if not l then
        l = setmetatable({key = key, cap = cap, active = 0, peak = 0, waiting = {}, granted = {}, since_forgiven = 0,
                          holders = setmetatable({}, {__mode = "k"})}, Limiter)
        registry[key] = l
    elseif cap < l.cap then
        l.cap = cap
    end
    return l
end

--- Every limiter this process made (for summaries and tests).
function limits.all()
    return registry
end

--- The number of slots in use that the caller may use: the cap, or fewer once the
-- peer said it is busy.
function Limiter:limit()
    return self.learned and math.min(self.cap, self.learned) or self.cap
end

--- The peer refused an association as busy while this one held a slot.
function Limiter:note_busy()
    local learned = math.max(1, self.active - 1)
    if self.active <= (self.confirmed or 0) and self.since_forgiven >= self.confirmed then
        self.since_forgiven = 0
        log.debug("the peer refused an association within what it was seen to admit; asking again",
                  {peer = self.key, associations = self.active})
        return
    end
    self.served = 0
    if self.confirmed then self.confirmed = math.min(self.confirmed, learned) end
    if learned < self:limit() then
        self.learned = learned
        log.info("the peer admits fewer associations at once; keeping to that", {peer = self.key, associations = learned})
    end
end

--- The peer served an association: after enough in a row, one more is tried.
function Limiter:note_ok()
    self.since_forgiven = self.since_forgiven + 1
    if not self.learned then return end
    self.served = (self.served or 0) + 1
    if self.served >= 4 * self.learned then
        self.served = 0
        self.confirmed = self.learned
        self.learned = self.learned + 1
        if self.learned >= self.cap then self.learned = nil end
    end
end

local function hold(self, who)
    if who then self.holders[who] = (self.holders[who] or 0) + 1 end
    if self.active > self.peak then self.peak = self.active end
end

--- Takes a slot, waiting (the task suspended) while all are in use.
function Limiter:acquire()
    local me = task.current()
    -- A task that holds a slot and needs another (an operation inside another) may go
    -- past what the peer was seen to admit, never past the cap.
    local limit = (me and (self.holders[me] or 0) > 0) and self.cap or self:limit()
    if self.active < limit then
        self.active = self.active + 1
        hold(self, me)
        return
    end
    if me == nil then
        errors.raise{kind = "invalid", message = string.format(
            "%s: all %d associations are in use and this code cannot wait (not in a task)", self.key, self.cap)}
    end
    if (self.holders[me] or 0) > 0 then
        -- This task holds a slot and waits for another: with every slot held so, nothing
        -- would ever move. Nested operations on one peer need a free slot.
        errors.raise{kind = "invalid", message = string.format(
            "%s: an operation inside another on the same peer needs a second association, and all %d are in use",
            self.key, self.cap)}
    end
    self.waiting[#self.waiting + 1] = me
    local t0 = host.monotonic()
    repeat task.suspend() until self.granted[me]
    waited[me] = (waited[me] or 0) + host.monotonic() - t0
    self.granted[me] = nil
    hold(self, me)
end

--- Gives a slot back: to the longest-waiting task, else to the pool.
function Limiter:release()
    local me = task.current()
    if me and self.holders[me] then
        self.holders[me] = self.holders[me] > 1 and self.holders[me] - 1 or nil
    end
    local nxt = table.remove(self.waiting, 1)
    if nxt and self.active <= self:limit() then
        self.granted[nxt] = true
        task.wake(nxt)
    else
        self.active = self.active - 1
        if nxt then table.insert(self.waiting, 1, nxt) end
    end
end

--- Runs fn(...) holding a slot; the slot is freed whatever fn does.
function Limiter:run(fn, ...)
    self:acquire()
    local results = table.pack(pcall(fn, ...))
    self:release()
    if not results[1] then error(results[2], 0) end
    return table.unpack(results, 2, results.n)
end

return limits
