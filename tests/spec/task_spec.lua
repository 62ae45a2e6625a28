-- The task scheduler: concurrency on the libuv pool, ordering, and failures that keep
-- their traceback without disturbing the other tasks.
local task = require "rtbackup.task"
local errors = require "rtbackup.error"

describe("task.map", function()
    it("runs jobs concurrently on the thread pool, never more than asked", function()
        local in_flight, max_in_flight = 0, 0
        local results = task.map({1, 2, 3, 4, 5, 6, 7, 8}, function(x)
            in_flight = in_flight + 1
            max_in_flight = math.max(max_in_flight, in_flight)
            task.pool_sleep(100) -- blocks a pool thread, as a DICOM association would
            in_flight = in_flight - 1
            return x * 10
        end, {concurrency = 4})
        assert.are.same({10, 20, 30, 40, 50, 60, 70, 80}, results)
        assert.are.equal(4, max_in_flight)
    end)

    it("reports a failing job with its traceback and still finishes the others", function()
        local finished = {}
        local ok, err = pcall(task.map, {1, 2, 3}, function(x)
            task.sleep(10)
            if x == 2 then error("job two broke") end
            finished[#finished + 1] = x
            return x
        end, {concurrency = 3})
        assert.is_false(ok)
        assert.is_true(errors.is(err, "task"))
        assert.matches("1 of 3 jobs failed; job 2:", err.message)
        assert.matches("job two broke", tostring(err.errors[2]))
        assert.matches("stack traceback", tostring(err.errors[2]))
        assert.matches("task_spec.lua", tostring(err.errors[2]))
        table.sort(finished)
        assert.are.same({1, 3}, finished)
        assert.are.same({[1] = 1, [3] = 3}, err.results)
    end)

    it("returns failures instead of raising with errors = 'return'", function()
        local results, failures = task.map({"a", "b"}, function(x)
            if x == "b" then errors.raise{kind = "status", message = "refused", status = 0xA700} end
            return x:upper()
        end, {errors = "return"})
        assert.are.same({"A"}, results)
        assert.are.equal("status", failures[2].kind)
        assert.is_string(failures[2].traceback)
    end)

    it("handles an empty list", function()
        assert.are.same({}, task.map({}, function() error("never") end))
    end)
end)

describe("task.spawn and wait", function()
    it("returns every result of the task", function()
        local t = task.spawn(function(a, b) task.sleep(5) return a + b, "sum" end, 2, 3)
        local sum, label = t:wait()
        assert.are.equal(5, sum)
        assert.are.equal("sum", label)
        assert.are.equal("done", t:status())
    end)

    it("raises the task's error in the waiter", function()
        local t = task.spawn(function() error({kind = "boom"}) end)
        local ok, err = pcall(task.wait, t)
        assert.is_false(ok)
        assert.are.equal("boom", err.kind)
    end)

    it("task.all collects first results in order", function()
        local r = task.all{
            function() task.sleep(30) return "slow" end,
            function() return "fast" end,
        }
        assert.are.same({"slow", "fast"}, r)
    end)

    it("sleeping tasks interleave", function()
        local order = {}
        task.all{
            function() task.sleep(60) order[#order + 1] = "b" end,
            function() task.sleep(10) order[#order + 1] = "a" end,
        }
        assert.are.same({"a", "b"}, order)
    end)
end)
