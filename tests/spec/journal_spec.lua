-- rtbackup.journal: units that resume across runs, the verified rule, runs, locks
-- between processes, and a journal that stays whole when its writer is killed -9.
local journal = require "rtbackup.journal"
local errors = require "rtbackup.error"
local task = require "rtbackup.task"
local helpers = require "helpers"

local quote = helpers.quote

local function raises(kind, fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, "expected an error of kind " .. kind)
    assert.is_true(errors.is(err, kind), "expected kind " .. kind .. ", got " .. tostring(err))
    return err
end

local function shell(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    return out
end

--- Starts `rtbackup run script args...` in the background; returns its PID.
local function spawn(script, args, log)
    local parts = {quote(helpers.bin), "run", quote(script)}
    for _, a in ipairs(args) do parts[#parts + 1] = quote(a) end
    local cmd = string.format("cd %s && %s >%s 2>&1 & echo $!", quote(helpers.source),
                              table.concat(parts, " "), quote(log))
    return assert(math.tointeger(tonumber(shell(cmd):match("%d+"))))
end

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    return text
end

--- Polls fn every 20 ms until it returns a true value (returned) or `seconds` pass.
local function eventually(fn, seconds, what)
    for _ = 1, seconds * 50 do
        local v = fn()
        if v then return v end
        task.sleep(20)
    end
    error("timed out waiting for " .. what)
end

-- Dead once gone or a zombie: an exited child may never be reaped here (PID 1 of a
-- container), but it has released its locks and files.
local function dead(pid)
    local stat = read_file("/proc/" .. pid .. "/stat")
    return stat == nil or stat:match("%) (%a)") == "Z"
end

local function kill9(pid)
    os.execute("kill -9 " .. pid)
    eventually(function() return dead(pid) end, 10, "PID " .. pid .. " to die")
end

local dir
before_each(function() dir = helpers.tmpdir() end)
after_each(function() os.execute("rm -rf " .. quote(dir)) end)

describe("journal.open", function()
    it("creates the file and its schema, and finds the units again after reopening", function()
        local j = journal.open(dir .. "/UCLA.journal")
        assert.are.equal(1, j:upsert("ARIA", {{key = "1.2.3", kind = "series"}}))
        j:close()
        local again = journal.open(dir .. "/UCLA.journal")
        assert.are.equal("series", again:get("ARIA", "1.2.3").kind)
        assert.are.equal("2\nwal\n", shell("sqlite3 " .. quote(dir .. "/UCLA.journal") ..
                                           " 'PRAGMA user_version' 'PRAGMA journal_mode'"))
        again:close()
    end)

    it("names the file when its directory does not exist", function()
        local err = raises("io", journal.open, dir .. "/missing/UCLA.journal")
        assert.matches("missing/UCLA.journal", err.message, 1, true)
    end)

    it("refuses a journal written by a newer rtbackup", function()
        os.execute("sqlite3 " .. quote(dir .. "/new.journal") .. " 'PRAGMA user_version = 7'")
        local err = raises("version", journal.open, dir .. "/new.journal")
        assert.matches("schema version 7", err.message)
    end)

    it("refuses calls after close", function()
        local j = journal.open(dir .. "/j")
        j:close()
        raises("invalid", j.counts, j, "ARIA")
    end)
end)

describe("units", function()
    local j
    before_each(function() j = journal.open(dir .. "/j") end)
    after_each(function() j:close() end)

    it("upsert counts the new units and keeps data tables, integers included", function()
        local added = j:upsert("ARIA", {
            {key = "s1", kind = "series", expected = 120,
             data = {study = "1.2.840.1", patient = "MRN001", sizes = {3, 4}}},
            {key = "s2", kind = "series", data = "plain text"},
        })
        assert.are.equal(2, added)
        assert.are.equal(1, j:upsert("ARIA", {{key = "s1", expected = 121}, {key = "s3"}}))
        local s1 = j:get("ARIA", "s1")
        assert.are.same({study = "1.2.840.1", patient = "MRN001", sizes = {3, 4}}, s1.data)
        assert.are.equal("integer", math.type(s1.data.sizes[1]))
        assert.are.equal(121, s1.expected)
        assert.are.equal("series", s1.kind)
        assert.are.equal("queued", s1.state)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", s1.created_at)
        assert.are.equal("plain text", j:get("ARIA", "s2").data)
        assert.is_nil(j:get("ARIA", "nope"))
    end)

    it("never demotes a verified unit on upsert or mark; requeue does", function()
        j:upsert("ARIA", {{key = "s1", data = {v = 1}}})
        assert.is_true(j:mark("ARIA", "s1", "verified", {moved = 10}))
        assert.are.equal(0, j:upsert("ARIA", {{key = "s1", state = "queued", data = {v = 2}}}))
        assert.is_false(j:mark("ARIA", "s1", "failed", {error = "late failure"}))
        local s1 = j:get("ARIA", "s1")
        assert.are.equal("verified", s1.state)
        assert.are.same({v = 1}, s1.data)
        assert.is_string(s1.verified_at)
        assert.are.equal(1, j:requeue("ARIA", {"s1", "unknown"}))
        s1 = j:get("ARIA", "s1")
        assert.are.equal("queued", s1.state)
        assert.are.equal(0, s1.moved)
        assert.is_nil(s1.verified_at)
    end)

    it("mark records attempts and the error text, and verified clears the error", function()
        j:upsert("ARIA", {{key = "s1"}})
        local failure = errors.new{kind = "status", message = "C-MOVE failed", peer = "ARIA"}
        j:mark("ARIA", "s1", "failed", {error = failure, attempts_increment = true})
        j:mark("ARIA", "s1", nil, {attempts_increment = true})
        local s1 = j:get("ARIA", "s1")
        assert.are.equal("failed", s1.state)
        assert.are.equal(2, s1.attempts)
        assert.are.equal("ARIA: C-MOVE failed", s1.last_error)
        j:mark("ARIA", "s1", "verified")
        assert.is_nil(j:get("ARIA", "s1").last_error)
    end)

    it("mark_many changes nothing when one key is unknown", function()
        j:upsert("ARIA", {{key = "a"}, {key = "b"}})
        assert.are.equal(2, j:mark_many("ARIA", {"a", "b"}, "moved"))
        local err = raises("not_found", j.mark_many, j, "ARIA", {"a", "typo"}, "verified")
        assert.matches("typo", err.message)
        assert.are.same({queued = 0, moved = 2, verified = 0, failed = 0, total = 2},
                        j:counts("ARIA"))
    end)

    it("lists units by state, kind and limit, oldest first", function()
        j:upsert("ARIA", {{key = "a", kind = "series"}, {key = "b", kind = "series", state = "failed"},
                          {key = "c", kind = "instance"}, {key = "d", state = "verified"}})
        j:upsert("ARIA", {{key = "e", kind = "series"}})
        local function keys(list)
            local out = {}
            for i, u in ipairs(list) do out[i] = u.key end
            return out
        end
        assert.are.same({"a", "b", "c", "e"}, keys(j:units("ARIA", {state = {"queued", "failed"}})))
        assert.are.same({"a", "b"}, keys(j:units("ARIA", {state = {"queued", "failed"},
                                                          kind = "series", limit = 2})))
        assert.are.same({"e", "c"}, keys(j:units("ARIA", {state = "queued", order = "newest",
                                                          limit = 2})))
        assert.are.same({}, j:units("MIM"))
        raises("invalid", j.units, j, "ARIA", {state = "done"})
    end)

    it("refuses integers too large to keep exactly in JSON", function()
        local err = raises("invalid", j.upsert, j, "ARIA", {{key = "a", data = {n = 1 << 60}}})
        assert.matches("data.n", err.message, 1, true)
        assert.are.equal(0, j:counts("ARIA").total)
    end)
end)

describe("runs", function()
    it("finish_run keeps the status and the summary table", function()
        local j = journal.open(dir .. "/j")
        local id = j:begin_run{env = "UCLA", source = "ARIA"}
        assert.are.equal("running", j:last_run("ARIA").status)
        j:upsert("ARIA", {{key = "s1"}})
        assert.are.equal(id, j:get("ARIA", "s1").run_id)
        j:finish_run(id, {status = "partial", summary = {moved = 3, failed = {"s9"}}})
        local run = j:last_run("ARIA")
        assert.are.equal(id, run.id)
        assert.are.equal("partial", run.status)
        assert.are.same({moved = 3, failed = {"s9"}}, run.summary)
        assert.is_string(run.finished_at)
        assert.is_nil(j:last_run("MIM"))
        j:close()
    end)
end)

describe("journal.lock", function()
    local holder_script = [[
local journal = require "rtbackup.journal"
local task = require "rtbackup.task"
local lock = journal.lock(arg[1])
local f = assert(io.open(arg[2], "w"))
f:write(lock.pid, " ", lock.started)
f:close()
for _ = 1, 600 do task.sleep(100) end -- the spec kills it long before
]]
    local taker_script = [[
require("rtbackup.journal").lock(arg[1])
print("took the lock")
]]

    it("makes a second rtbackup exit 3 naming the holder; a killed holder blocks no one", function()
        local lock_path = dir .. "/UCLA-ARIA.lock"
        local holder = helpers.write_file(dir .. "/holder.lua", holder_script)
        local pid = spawn(holder, {lock_path, dir .. "/ready"}, dir .. "/holder.log")
        local ready = eventually(function() return read_file(dir .. "/ready") end, 20,
                                 "the holder to take the lock")
        local holder_pid, started = ready:match("^(%d+) (%S+)$")
        assert.are.equal(pid, tonumber(holder_pid))

        local taker = helpers.write_file(dir .. "/taker.lua", taker_script)
        local r = helpers.run({"run", taker, lock_path})
        assert.are.equal(3, r.code)
        assert.matches("PID " .. pid, r.stderr, 1, true)
        assert.matches(started, r.stderr, 1, true)
        assert.not_matches("took the lock", r.stdout)

        local err = raises("locked", journal.lock, lock_path)
        assert.are.equal(pid, err.holder_pid)
        assert.are.equal(started, err.holder_started)
        assert.are.equal(3, err.exit_code)

        kill9(pid)
        assert.matches("pid=" .. pid, read_file(lock_path), 1, true) -- stale content
        local lock = journal.lock(lock_path)
        assert.is_true(lock.pid ~= pid)
        lock:release()
    end)

    it("is released by release(), by <close>, and refused twice in one process", function()
        local path = dir .. "/l.lock"
        do
            local lock <close> = journal.lock(path)
            raises("locked", journal.lock, path)
        end
        local again = journal.lock(path)
        again:release()
        assert.are.equal("", read_file(path))
        journal.lock(path):release()
    end)
end)

describe("a writer killed with -9", function()
    local BATCH = 200
    -- Each batch: one upsert of BATCH units, then one mark of its first half.
    local writer_script = [[
local journal = require "rtbackup.journal"
local j = journal.open(arg[1])
j:begin_run{env = "DEMO", source = "ARIA"}
for batch = 1, math.huge do
    local units, half = {}, {}
    for i = 1, ]] .. BATCH .. [[ do
        local key = batch .. "." .. i
        units[i] = {key = key, kind = "instance", data = {batch = batch}}
        if i <= ]] .. BATCH // 2 .. [[ then half[#half + 1] = key end
    end
    j:upsert("ARIA", units)
    j:mark_many("ARIA", half, "verified", {moved = 1})
end
]]

    it("leaves whole transactions only, and the next run sees it was interrupted", function()
        local path = dir .. "/DEMO.journal"
        local writer = helpers.write_file(dir .. "/writer.lua", writer_script)
        local pid = spawn(writer, {path}, dir .. "/writer.log")
        eventually(function()
            local ok, j = pcall(journal.open, path)
            if not ok then return false end
            local total = j:counts("ARIA").total
            j:close()
            return total >= 20 * BATCH
        end, 60, "the writer to commit 20 batches")
        task.sleep(math.random(0, 30))
        kill9(pid)

        assert.are.equal("ok\n", shell("sqlite3 " .. quote(path) .. " 'PRAGMA integrity_check'"))
        local j = journal.open(path)
        local per_batch = {}
        for _, u in ipairs(j:units("ARIA")) do
            local b = per_batch[u.data.batch] or {units = 0, verified = 0}
            b.units = b.units + 1
            if u.state == "verified" then b.verified = b.verified + 1 end
            per_batch[u.data.batch] = b
        end
        local batches = #per_batch
        assert.is_true(batches >= 20)
        for n, b in ipairs(per_batch) do
            assert.are.equal(BATCH, b.units, "batch " .. n .. " is partial")
            if n < batches then
                assert.are.equal(BATCH // 2, b.verified, "batch " .. n)
            else
                assert.is_true(b.verified == 0 or b.verified == BATCH // 2, "last batch")
            end
        end
        assert.are.equal(batches * BATCH, j:counts("ARIA").total)

        j:begin_run{env = "DEMO", source = "check"}
        local killed = j:last_run("ARIA")
        assert.are.equal(pid, killed.pid)
        assert.are.equal("interrupted", killed.status)
        j:close()
    end)
end)
