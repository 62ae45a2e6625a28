-- rtbackup.limits: the associations this process keeps open to one peer at once, and
-- what it learns when the peer says it is busy. The peer here is the limiter's own
-- bookkeeping (the busy and served notes the DICOM layer gives it); the backup spec
-- shows the same against an archive that refuses a third association.
local h = require "helpers"
local limits = require "rtbackup.limits"
local task = require "rtbackup.task"

local n = 0
local function limiter(cap)
    n = n + 1
    return limits.for_peer("SPEC" .. n .. "@127.0.0.1:104", cap)
end

-- Runs `count` tasks that each hold a slot for `ms`; returns the most held at once.
local function most_at_once(l, count, ms)
    return h.most_at_once(count, ms, function(busy) l:run(busy) end)
end

describe("a peer's limiter", function()
    it("holds at most the cap at once", function()
        assert.are.equal(4, most_at_once(limiter(4), 10, 20))
    end)

    it("keeps to fewer once the peer refused one as busy, and tries more after serving enough", function()
        local l = limiter(6)
        -- refused while this process held 3: the peer admits 2 of ours
        for _ = 1, 3 do l:acquire() end
        l:note_busy()
        for _ = 1, 3 do l:release() end
        assert.are.equal(2, l:limit())
        assert.are.equal(2, most_at_once(l, 8, 20))
        -- 4 x 2 served in a row: one more
        for _ = 1, 8 do l:note_ok() end
        assert.are.equal(3, l:limit())
        -- a refusal resets the count (the first, within the 2 confirmed, is forgiven:
        -- see below)
        for _ = 1, 11 do l:note_ok() end
        l:note_busy()
        l:note_busy()
        assert.are.equal(1, l:limit())
        -- back to the cap in the end
        for _ = 1, 100 do l:note_ok() end
        assert.are.equal(6, l:limit())
    end)

    it("forgives a refusal within what it has seen the peer admit, once in a while", function()
        local l = limiter(4)
        for _ = 1, 3 do l:acquire() end
        l:note_busy() -- refused while 3 are held: the peer admits 2
        assert.are.equal(2, l:limit())
        for _ = 1, 8 do l:note_ok() end -- 4 x 2 served: 2 confirmed, 3 tried
        assert.are.equal(3, l:limit())
        l:note_busy() -- refused at 3, more than confirmed: believed
        assert.are.equal(2, l:limit())
        l:release() -- 2 held
        -- Refused within the 2 confirmed: one of ours may not have ended yet for the
        -- peer (its release on the way); kept to 2.
        l:note_busy()
        assert.are.equal(2, l:limit())
        l:note_ok() -- one served: fewer than the 2 confirmed
        l:note_busy() -- refused again: believed
        assert.are.equal(1, l:limit())
        for _ = 1, 8 do l:note_ok() end -- 1 confirmed now, 2 tried
        l:note_busy() -- refused at 2, more than confirmed: believed
        assert.are.equal(1, l:limit())
        l:release(); l:release()
    end)

    it("tells how long a task waited for slots, so its operation's own time can be told apart", function()
        local l = limiter(1)
        local waits = {}
        local tasks = {}
        for i = 1, 2 do
            tasks[i] = task.spawn(function()
                local before = limits.waited()
                l:run(function() task.sleep(200) end)
                waits[i] = limits.waited() - before
            end)
        end
        for _, t in ipairs(tasks) do task.wait(t) end
        assert.are.equal(0, waits[1]) -- a free slot: no wait
        assert.is_true(waits[2] >= 0.15 and waits[2] < 2, tostring(waits[2])) -- the first one's 200 ms
    end)

    it("never goes below one, and lets a task holding a slot take a second up to the cap", function()
        local l = limiter(2)
        l:acquire()
        l:note_busy()
        assert.are.equal(1, l:limit())
        local t = task.spawn(function()
            l:run(function()
                l:run(function() end) -- an operation inside another on the same peer
            end)
        end)
        l:release()
        task.wait(t)
    end)
end)
