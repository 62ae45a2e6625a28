-- The host's own edges: as many command-line arguments as a shell glob gives, as many
-- results or task arguments as a script hands over. Each of these once pushed past the
-- end of a Lua stack and corrupted the heap (a glob like /data/*.dcm of 60 files was
-- enough for `rtbackup run`).
local helpers = require "helpers"
local task = require "rtbackup.task"

local function script(text)
    local dir = helpers.tmpdir()
    return helpers.write_file(dir .. "/script.lua", text), dir
end

describe("rtbackup run", function()
    -- Checks that arg and ... both hold every argument, in order, and says so.
    local check_args = [[
local n = select("#", ...)
assert(n == #arg, "... has " .. n .. " values, arg has " .. #arg)
local varargs = {...}
for i = 1, n do
    assert(arg[i] == "f" .. i, "arg[" .. i .. "] is " .. tostring(arg[i]))
    assert(varargs[i] == arg[i], "...[" .. i .. "] is " .. tostring(varargs[i]))
end
print("received " .. n)
]]

    it("passes 10000 arguments (a shell glob) to the script, every one in order", function()
        local path, dir = script(check_args)
        local args = {"run", path}
        for i = 1, 10000 do args[#args + 1] = "f" .. i end
        local r = helpers.run(args)
        os.execute("rm -rf " .. helpers.quote(dir))
        assert.are.equal(0, r.code, r.output)
        assert.are.equal("received 10000\n", r.stdout)
    end)

    it("passes 60 arguments, the size of glob that first corrupted the heap", function()
        local path, dir = script(check_args)
        local args = {"run", path}
        for i = 1, 60 do args[#args + 1] = "f" .. i end
        local r = helpers.run(args)
        os.execute("rm -rf " .. helpers.quote(dir))
        assert.are.equal(0, r.code, r.output)
        assert.are.equal("received 60\n", r.stdout)
    end)

    it("takes its exit code from the first of 5000 returned values", function()
        local path, dir = script([[
local t = {}
for i = 1, 5000 do t[i] = i == 1 and 7 or i end
return table.unpack(t)
]])
        local r = helpers.run({"run", path})
        os.execute("rm -rf " .. helpers.quote(dir))
        assert.are.equal(7, r.code, r.output)
    end)
end)

describe("rtbackup run, when the script fails while tasks it spawned still run", function()
    local function run_script(text)
        local path, dir = script(text)
        local r = helpers.run({"run", path}, {timeout = 60})
        os.execute("rm -rf " .. helpers.quote(dir))
        return r
    end

    it("asks them to stop (task.stopping() says \"error\") and exits with the script's error at once", function()
        local r = run_script([[
local task = require "rtbackup.task"
task.spawn(function()
    while not task.stopping() do task.sleep(50) end
    print("background task saw: " .. task.stopping())
end)
task.sleep(100)
error("the script broke")
]])
        assert.are.equal(1, r.code, r.output)
        assert.matches("the script broke", r.stderr)
        assert.matches("background task saw: error", r.stdout)
        -- It stopped when asked: the grace period did not run out.
        assert.is_nil(r.stderr:match("still running"), r.stderr)
    end)

    it("reports the error and exits once the grace period is over when a task never stops", function()
        local r = run_script([[
local task = require "rtbackup.task"
task.spawn(function() while true do task.sleep(1000) end end)
error("the script broke")
]])
        -- Before, the process ran on and printed nothing until it was killed (137).
        assert.are.equal(1, r.code, r.output)
        assert.matches("the script broke", r.stderr)
        assert.matches("background task%(s%) still running 5 s after the script failed", r.stderr)
    end)

    it("exits with the error when a storage SCP with an event handler is listening", function()
        local dir = helpers.tmpdir()
        local r = run_script(string.format([[
local dicom = require "rtbackup.dicom"
local l = dicom.listen{aet = "HOSTSPEC", port = 0, dir = %q, on_store = function() end}
assert(l:port() > 0)
error("the script broke")
]], dir))
        os.execute("rm -rf " .. helpers.quote(dir))
        assert.are.equal(1, r.code, r.output)
        assert.matches("the script broke", r.stderr)
    end)
end)

describe("task.spawn", function()
    it("hands 500 arguments to the task and 500 results back", function()
        local args = {}
        for i = 1, 500 do args[i] = i end
        local t = task.spawn(function(...)
            return select("#", ...), ...
        end, table.unpack(args))
        local results = table.pack(t:wait())
        assert.are.equal(501, results.n)
        assert.are.equal(500, results[1])
        for i = 1, 500 do assert.are.equal(i, results[i + 1]) end
    end)

    it("finishes a task that returns 200000 values", function()
        local t = task.spawn(function()
            local big = {}
            for i = 1, 200000 do big[i] = i end
            return table.unpack(big)
        end)
        local results = table.pack(t:wait())
        assert.are.equal(200000, results.n)
        assert.are.equal(200000, results[200000])
    end)

    it("keeps the error of a task that overflowed its stack", function()
        local t = task.spawn(function()
            local function deeper(n) return 1 + deeper(n + 1) end
            return deeper(1)
        end)
        local ok, err = pcall(t.wait, t)
        assert.is_false(ok)
        assert.matches("stack overflow", tostring(err))
    end)
end)

describe("task.sleep", function()
    it("treats NaN and negative durations as no wait (no undefined conversion)", function()
        task.sleep(0 / 0)
        task.sleep(-5)
        task.pool_sleep(0 / 0)
        task.pool_sleep(-1)
    end)
end)
