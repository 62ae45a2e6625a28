-- rtbackup.pace: how many transfers a run keeps going at once. The transfers here are
-- tasks that hold a place for a while and report a sample; the backup benchmark shows
-- the pace against real sources (tests/bench/backup.bench.sh).
local h = require "helpers"
local pace = require "rtbackup.pace"

-- Runs `count` transfers through p, each holding its place for `ms` and reporting
-- `sample`; returns the most that held a place at once.
local function most_at_once(p, count, ms, sample)
    return h.most_at_once(count, ms, function(busy)
        p:enter()
        busy()
        p:leave(sample or {instances = 10, seconds = ms / 1000})
    end)
end

describe("the pace", function()
    it("keeps to the cap when it is not adaptive", function()
        local p = pace.new{cap = 3, adaptive = false}
        assert.are.equal(3, most_at_once(p, 12, 20))
        assert.are.equal(3, p.limit)
        assert.are.equal(0, #p.changes)
    end)

    it("starts at 4, adds a place while throughput grows, never above the cap", function()
        local p = pace.new{cap = 5}
        assert.are.equal(4, p.limit)
        most_at_once(p, 4, 10) -- the first window: the best seen so far
        assert.are.equal(5, p.limit)
        most_at_once(p, 40, 10)
        assert.is_true(p.limit <= 5)
    end)

    it("adds no place for a window that moved nothing (its moves refused)", function()
        local p = pace.new{cap = 8}
        most_at_once(p, 4, 5, {instances = 0, seconds = 0.005})
        assert.are.equal(4, p.limit)
        assert.are.equal(0, #p.changes)
        most_at_once(p, 4, 10) -- the first window that moved something is the best yet
        assert.are.equal(5, p.limit)
    end)

    it("halves on trouble, and keeps below the limit that met it", function()
        local p = pace.new{cap = 8}
        p:enter()
        p:leave{instances = 0, seconds = 1, trouble = true}
        assert.are.equal(2, p.limit)
        assert.are.equal(3, p.ceiling)
        assert.are.same({from = 4, to = 2, why = "trouble"}, p.changes[1])
    end)

    it("starts no more transfers than the peer admits, whatever its own limit", function()
        local admitted = 2
        local p = pace.new{cap = 8, adaptive = false, admits = function() return admitted end}
        assert.are.equal(2, most_at_once(p, 10, 20))
        admitted = 5 -- the peer's limiter learned it admits more
        assert.are.equal(5, most_at_once(p, 10, 20))
        admitted = 0 -- never fewer than one
        assert.are.equal(1, most_at_once(p, 3, 10))
    end)

    it("halves once for a burst of trouble: a transfer begun before the change is the old load's", function()
        local p = pace.new{cap = 8}
        local a, b = p:enter(), p:enter()
        p:leave({instances = 0, seconds = 1, trouble = true}, a)
        p:leave({instances = 0, seconds = 1, trouble = true}, b)
        assert.are.same({4, 2}, {p.changes[1].from, p.limit})
        assert.are.equal(1, #p.changes)
        -- trouble met under the new limit is news: half again
        local c = p:enter()
        p:leave({instances = 0, seconds = 1, trouble = true}, c)
        assert.are.equal(1, p.limit)
    end)

    it("takes a transfer for slow only beside transfers of about its size", function()
        local p = pace.new{cap = 8}
        local t = p:enter()
        p:leave({instances = 512, seconds = 0.5}, t) -- 1 ms per instance
        -- small transfers pay their fixed costs over few instances: 10 ms each is not trouble
        for _ = 1, 6 do
            t = p:enter()
            p:leave({instances = 10, seconds = 0.1}, t)
        end
        for _, c in ipairs(p.changes) do assert.are_not.equal("trouble", c.why) end
        local before = p.limit
        -- the same size as the fastest, 10 times slower: the peer slows down under this load
        t = p:enter()
        p:leave({instances = 512, seconds = 5}, t)
        assert.are.same({"trouble", before // 2}, {p.changes[#p.changes].why, p.limit})
    end)

    it("halves when a transfer waited to be accepted: the peer queues associations", function()
        local p = pace.new{cap = 8}
        -- a distant peer: every association takes 40 ms to open, nobody waits
        for _ = 1, 3 do
            local t = p:enter()
            p:leave({instances = 32, seconds = 0.14, opening = 0.04, associations = 1}, t)
        end
        assert.are.equal(0, #p.changes)
        -- one opening 30 ms longer than the quickest, for a 100 ms send: it waited in a queue
        local t = p:enter()
        p:leave({instances = 32, seconds = 0.17, opening = 0.07, associations = 1}, t)
        assert.are.same({from = 4, to = 2, why = "the peer queues associations"}, p.changes[1])
        assert.are.equal(3, p.ceiling)
    end)
end)
