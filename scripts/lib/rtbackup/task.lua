--- rtbackup.task: run many things at once without callbacks.
--
-- Every script runs as a task (a coroutine). Blocking calls in the bindings (DICOM,
-- SQL, disk) hand their work to the thread pool and suspend only the calling task,
-- so code reads sequentially and N associations still run at once:
--
--   local results = task.map(series, move_one, {concurrency = 4})
--
-- spawn(fn, ...)         start fn(...) as a new task; returns the task
-- t:wait() / wait(t)     its results, or its error raised again here
-- all(list)              wait for tasks (or functions, spawned first); list of first results
-- map(list, fn, opts)    fn(item, i) over list, opts.concurrency at a time, results in order
-- sleep(ms)              suspend this task
-- stopping()             "SIGINT"/"SIGTERM" once the run was asked to stop, "error" once
--                        the main script failed (tasks still running get 5 s to end, then
--                        the process exits with the script's error), else false
-- suspend() / wake(t)    wait until another task wakes this one (semaphores, queues)
local core = require "rtbackup.task.core"
local errors = require "rtbackup.error"

local task = {
    spawn = core.spawn,
    wait = core.wait,
    sleep = core.sleep,
    stopping = core.stopping,
    current = core.current,
    suspend = core.suspend,
    wake = core.wake,
    -- A pool job that only sleeps: shows the pool's concurrency in tests/benchmarks.
    pool_sleep = core.pool_sleep,
}

-- Keeps the traceback of the place that failed, whatever the error value is.
local function with_traceback(err)
    if type(err) == "table" then
        err.traceback = err.traceback or debug.traceback("", 2)
        return err
    end
    return debug.traceback(tostring(err), 2)
end

--- The error handler for xpcall that every task uses: a table error gets the
-- traceback of where it was raised (err.traceback), any other error becomes its
-- message with the traceback.
task.traceback = with_traceback

local function failure_summary(failures, total)
    local first_index, first = next(failures)
    for i, e in pairs(failures) do
        if i < first_index then first_index, first = i, e end
    end
    local count = 0
    for _ in pairs(failures) do count = count + 1 end
    return string.format("%d of %d jobs failed; job %d: %s", count, total, first_index,
                         tostring(first))
end

--- Waits for every task (functions are spawned first). Returns the first result of
-- each, in order. If any failed, raises {kind = "task", errors = {[i] = err}} after
-- all have finished: one failure does not abandon the others.
function task.all(list)
    local tasks = {}
    for i, t in ipairs(list) do
        tasks[i] = type(t) == "function" and core.spawn(t) or t
    end
    local results, failures, failed = {}, {}, false
    for i, t in ipairs(tasks) do
        local ok, r = pcall(core.wait, t)
        if ok then results[i] = r else failures[i], failed = r, true end
    end
    if failed then
        errors.raise{kind = "task", message = failure_summary(failures, #tasks),
                     errors = failures, results = results}
    end
    return results
end

--- Calls fn(item, i) for every item, at most opts.concurrency (default 4) at once.
-- Returns the first result of each call, in order. When a call fails the others go
-- on; then, by default, a {kind = "task"} error listing the failures is raised, or
-- with opts.errors = "return" the failures are returned as a second table
-- {[i] = err} (each error carries its traceback). Once the run is asked to stop
-- (SIGINT/SIGTERM) no new item starts; those items fail with kind "stopped".
function task.map(list, fn, opts)
    opts = opts or {}
    local n = #list
    local concurrency = math.max(1, math.min(opts.concurrency or 4, n))
    local results, failures, failed = {}, {}, false
    local next_index = 1

    local function worker()
        while next_index <= n do
            local i = next_index
            next_index = i + 1
            local stop = core.stopping()
            if stop then
                failures[i] = errors.new{kind = "stopped",
                                         message = "not started: the run is stopping (" .. stop .. ")"}
                failed = true
            else
                local ok, r = xpcall(fn, with_traceback, list[i], i)
                if ok then results[i] = r else failures[i], failed = r, true end
            end
        end
    end

    local workers = {}
    for w = 1, (n > 0 and concurrency or 0) do workers[w] = core.spawn(worker) end
    for _, w in ipairs(workers) do core.wait(w) end

    if opts.errors == "return" then return results, failures end
    if failed then
        errors.raise{kind = "task", message = failure_summary(failures, n),
                     errors = failures, results = results}
    end
    return results
end

return task
