-- requires: testbed
-- Errors that tell the operator the truth, and files that hold patient data (issue 11).
-- The source is ODIL_QR (its own patients RTB101..); the archive Orthanc "main", or,
-- where a target must die in the middle of a run, a dcmqrscp of this spec's own
-- ("TGT", started and killed by PID), which ODIL_QR learns as a move destination for
-- the length of the spec. A closed port plays a source that is down.
local h = require "helpers"
local cjson = require "cjson"
local sys = require "rtbackup.sys"
local task = require "rtbackup.task"

local tb = h.testbed()
local main = h.orthanc(tb.MAIN_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local audit_log = dir .. "/audit.jsonl"
local config = dir .. "/run.toml"
local ALL = {"--since", "1900-01-01", "--until", "2100-01-01"}
local ODIL_INSTANCES = tonumber(tb.ODIL_INSTANCES)

local tgt_port = h.free_port()
local tgt_pid
local destinations -- ODIL_QR's move destinations as the testbed wrote them

local function write_env(default_backup)
    h.write_file(config, h.env_toml(tb, "RUN", {
        default_source = "ODIL", default_backup = default_backup or "MAIN", script_ae = {aet = tb.SCU_AET},
        sources = {{alias = "ODIL", type = "mim", peer = "ODIL", max_associations = 1},
                   {alias = "DEAD", type = "aria", aet = "DEAD", ip = tb.HOST, port = tb.CLOSED_PORT}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"},
                   {alias = "TGT", type = "dicom_scp", aet = "TGT", ip = tb.HOST, port = tgt_port}},
        settings = {state_dir = state, audit_log = audit_log, retry_backoff_ms = 10}}))
end

local function rtb(args, opts)
    local full = {"--config", config}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full, opts)
end

-- Runs a bash script; returns its exit status and what it printed.
local function bash(script)
    local out = os.tmpname()
    local _, _, code = os.execute("bash -c " .. h.quote(script) .. " >" .. out .. " 2>&1")
    local f = io.open(out)
    local text = f:read("a")
    f:close()
    os.remove(out)
    return code, text
end

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    return text
end

local function read_json(path)
    local text = read_file(path)
    return text and cjson.decode(text)
end

local function mode(path)
    local st = sys.stat(path)
    return st and string.format("%o", st.mode)
end

local function eventually(fn, seconds, what)
    for _ = 1, seconds * 50 do
        local v = fn()
        if v then return v end
        task.sleep(20)
    end
    error("timed out waiting for " .. what)
end

local function quirks(q) h.write_file(tb.ODIL_QUIRKS, cjson.encode(q or {})) end

local function forget_odil_patients()
    for _, id in ipairs(main:get("/patients")) do
        local p = main:get("/patients/" .. id)
        if p.MainDicomTags.PatientID:match("^RTB1%d%d$") then main:delete("/patients/" .. id) end
    end
end

-- The journal's unit counts of source ODIL: {queued, moved, verified, failed, total}.
local function journal_counts()
    local r = h.run{"run", h.write_file(dir .. "/counts.lua", [[
        local j = require("rtbackup.journal").open(arg[1])
        print(require("cjson").encode(j:counts("ODIL")))]]), state .. "/RUN.journal.sqlite"}
    assert.are.equal(0, r.code, r.output)
    return cjson.decode(r.stdout)
end

-- ---- the spec's own target: a dcmqrscp that can be killed -------------------------------

local function start_target()
    os.execute("mkdir -p " .. h.quote(dir .. "/tgt"))
    h.write_file(dir .. "/tgt.cfg", string.format([[
NetworkTCPPort  = %d
MaxPDUSize      = 116794
MaxAssociations = 16
HostTable BEGIN
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
TGT  %s/tgt  RW (500, 1024mb) ANY
AETable END
]], tgt_port, dir))
    local p = io.popen(string.format("TCP_NODELAY=1 dcmqrscp -c %s >>%s 2>&1 & echo $!", h.quote(dir .. "/tgt.cfg"),
                                     h.quote(dir .. "/tgt.log")))
    tgt_pid = p:read("l")
    p:close()
    eventually(function()
        return os.execute(string.format("echoscu -to 2 -aet PROBE -aec TGT %s %d >/dev/null 2>&1", tb.HOST, tgt_port))
    end, 20, "the spec's dcmqrscp TGT to answer")
end

local function kill_target()
    if tgt_pid then os.execute("kill -KILL " .. tgt_pid .. " 2>/dev/null; wait " .. tgt_pid .. " 2>/dev/null") end
    tgt_pid = nil
end

setup(function()
    destinations = read_file(tb.ODIL_DESTINATIONS)
    h.write_file(tb.ODIL_DESTINATIONS, destinations .. string.format("TGT %s %d\n", tb.HOST, tgt_port))
end)

before_each(function()
    os.execute("rm -rf " .. h.quote(state) .. " " .. h.quote(audit_log))
    quirks()
    write_env()
end)

after_each(function()
    quirks()
    forget_odil_patients()
end)

teardown(function()
    kill_target()
    h.write_file(tb.ODIL_DESTINATIONS, destinations)
    quirks()
    os.execute("rm -rf " .. h.quote(dir))
end)

-- ---- errors that tell the operator the truth --------------------------------------------

describe("config check ENV of a file that does not parse", function()
    -- config_spec covers `config check` (every environment) of such a file; here the
    -- operator names the environment the broken file defines.
    local BAD = "[RUN]\ndescription = \"x\"\nport = = 3\n"

    it("reports the parse error with file and line first, not that ENV is undefined", function()
        local file = h.write_file(dir .. "/bad.toml", BAD)
        for _, args in ipairs{{"--config", file, "config", "check", "RUN"},
                              {"--config", dir, "config", "check", "RUN"}} do
            local r = h.run(args)
            assert.are.equal(2, r.code, r.output)
            assert.matches("^[^\n]*bad%.toml:3: ", r.output)
            assert.is_nil(r.output:find("not defined", 1, true), r.output)
        end
        -- and every command that loads the environment says the same
        local r = h.run{"--config", file, "backup", "RUN"}
        assert.are.equal(2, r.code, r.output)
        assert.matches("bad%.toml:3: ", r.stderr)
        assert.is_nil(r.output:find("not defined", 1, true), r.output)
        os.remove(file)
    end)
end)

describe("a journal that cannot be used", function()
    local journal = state .. "/RUN.journal.sqlite"

    local function assert_remedy(text)
        assert.matches("the journal " .. journal .. " cannot be used", text, 1, true)
        assert.matches("mv " .. journal .. " " .. journal .. ".broken", text, 1, true)
        assert.matches("rebuilds it by comparing the source with the archive", text, 1, true)
        assert.is_nil(text:find("traceback", 1, true), text)
    end

    it("of garbage exits 2 naming the file, how to move it aside and what a rebuild costs", function()
        os.execute("mkdir -p " .. h.quote(state))
        h.write_file(journal, string.rep("not a journal at all\n", 300))
        local r = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(2, r.code, r.output)
        assert_remedy(r.stderr)
        assert.matches("not a database", r.stderr, 1, true)
        assert.is_truthy(read_file(journal), "the journal was removed") -- the operator decides
    end)

    it("damaged inside exits 2 with the remedy, and the remedy works", function()
        local first = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(0, first.code, first.output)
        -- The pages of every table and index but the run history's: opening the file
        -- and recording the run still work, the damage is found in the middle.
        local code, out = bash(string.format([[
set -e
for page in $(sqlite3 %s "SELECT rootpage FROM sqlite_master WHERE name NOT LIKE 'runs%%' AND rootpage > 0"); do
    head -c 4096 /dev/zero | tr '\0' 'x' | dd of=%s bs=4096 seek=$((page - 1)) conv=notrunc status=none
done]], h.quote(journal), h.quote(journal)))
        assert.are.equal(0, code, out)
        local r = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(2, r.code, r.output)
        assert_remedy(r.output)
        assert.matches("malformed", r.output, 1, true)

        -- Moved aside, the next run finds everything in the archive and moves nothing.
        assert.is_true(os.rename(journal, journal .. ".broken"))
        os.remove(journal .. "-wal")
        os.remove(journal .. "-shm")
        local again = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(0, again.code, again.output)
        local s = read_json(state .. "/RUN-ODIL-last-run.json")
        assert.are.equal(ODIL_INSTANCES, s.already_present)
        assert.are.equal(0, s.moved)
    end)

    it("written by a newer rtbackup exits 2 and says to run that one or move it aside", function()
        local first = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(0, first.code, first.output)
        local code, out = bash("sqlite3 " .. h.quote(journal) .. " 'PRAGMA user_version = 99'")
        assert.are.equal(0, code, out)
        local r = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(2, r.code, r.output)
        assert.matches("written by a newer rtbackup (schema version 99", r.stderr, 1, true)
        assert.matches("Run the rtbackup that wrote it", r.stderr, 1, true)
        assert_remedy(r.stderr)
    end)
end)

describe("usage errors", function()
    local function assert_usage(r, words)
        assert.are.equal(2, r.code, r.output)
        assert.are.equal("", r.stdout)
        local lines = select(2, r.stderr:gsub("\n", "\n"))
        assert.are.equal(1, lines, "not one line:\n" .. r.stderr)
        assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
        assert.matches(words, r.stderr, 1, true)
    end

    it("--shard out of range, with I > N, I = 0, or not I/N: exit 2, one line", function()
        for _, shard in ipairs{"1/99999999999999999999", "0/2", "3/2", "x", "1/0", "1.5/2"} do
            assert_usage(rtb{"backup", "RUN", "ODIL", "--shard", shard}, "--shard: expected I/N")
        end
    end)

    it("--since after --until, for backup and validate: exit 2, one line", function()
        local period = {"--since", "2026-02-01", "--until", "2026-01-01"}
        assert_usage(rtb{"backup", "RUN", "ODIL", table.unpack(period)}, "--since 2026-02-01 is after --until 2026-01-01")
        assert_usage(rtb{"validate", "RUN", "ODIL", table.unpack(period)}, "--since 2026-02-01 is after --until 2026-01-01")
    end)
end)

describe("a target that dies in the middle of a run", function()
    after_each(kill_target)

    it("is unreachable (4): what was not done is skipped and still queued; the next run moves only that", function()
        assert.matches("4 a source or target unreachable", rtb{"backup", "--help"}.stdout, 1, true) -- documented
        write_env("TGT")
        os.execute("rm -rf " .. h.quote(dir .. "/tgt"))
        start_target()
        quirks{move_delay_ms = 200} -- a slow source: the kill lands while instances are on their way
        -- The backup runs in the background; TGT is killed once its first instance is stored.
        local code, out = bash(string.format([[
%s --config %s backup RUN %s >%s 2>&1 & pid=$!
for i in $(seq 1 600); do ls %s | grep -q '\.dcm$' && break; sleep 0.05; done
kill -KILL %s; wait $pid; echo "exit=$?"]], h.quote(h.bin), h.quote(config), table.concat(ALL, " "),
            h.quote(dir .. "/first.out"), h.quote(dir .. "/tgt"), tgt_pid))
        tgt_pid = nil
        local first = read_file(dir .. "/first.out")
        assert.are.equal("4", out:match("exit=(%d+)"), out .. first)
        assert.matches("exit 4 (unreachable)", first, 1, true)
        local s = read_json(state .. "/RUN-ODIL-last-run.json")
        assert.are.equal("unreachable", s.status)
        assert.are.equal(4, s.exit_code)
        assert.are.equal(0, s.failed)
        assert.are.equal(0, s.units_failed)
        assert.are.equal(ODIL_INSTANCES, s.skipped + s.verified)
        assert.is_true(s.skipped > 0)
        local c = journal_counts()
        assert.are.equal(0, c.failed)
        assert.are.equal(c.total, c.queued + c.moved + c.verified)
        assert.is_true(c.queued + c.moved > 0)

        -- TGT back (with what it had stored): the next run completes, moving only the rest.
        quirks()
        start_target()
        local r = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(0, r.code, r.output)
        s = read_json(state .. "/RUN-ODIL-last-run.json")
        assert.is_true(s.already_present > 0, "TGT kept nothing: " .. cjson.encode(s))
        assert.are.equal(ODIL_INSTANCES, s.already_present + s.verified)
        assert.are.equal(s.verified, s.moved)
        c = journal_counts()
        assert.are.equal(0, c.failed)
        assert.are.equal(c.total, c.verified)
        local v = rtb{"validate", "RUN", "ODIL", "TGT", table.unpack(ALL)}
        assert.are.equal(0, v.code, v.output)
        assert.matches(ODIL_INSTANCES .. " instances; 0 missing, 0 extra", v.stderr, 1, true)
    end)
end)

describe("the summary of a run that cannot reach its source", function()
    it("says what was being attempted, with whom", function()
        local r = rtb{"backup", "RUN", "DEAD", table.unpack(ALL)}
        assert.are.equal(4, r.code, r.output)
        local lines = {}
        for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
        assert.are.equal("RUN backup DEAD -> MAIN (1900-01-01 .. 2100-01-01)", lines[1])
        assert.matches("^  stopped while planning: C%-FIND on DEAD %(DEAD@" .. tb.HOST:gsub("%.", "%%.") .. ":" ..
                       tb.CLOSED_PORT .. "%): cannot open association", lines[2])
        assert.matches("exit 4 (unreachable)", r.stdout, 1, true)
        assert.is_nil(r.stdout:find("->  (", 1, true))
        local s = read_json(state .. "/RUN-DEAD-last-run.json")
        assert.are.same({"DEAD", "DEAD@" .. tb.HOST .. ":" .. tb.CLOSED_PORT, "C-FIND", "planning", "connect_failed"},
                        {s.error.peer, s.error.address, s.error.operation, s.error.phase, s.error.kind})
    end)
end)

describe("sharded and unsharded runs of one source", function()
    -- A run held open (its locks taken the way run.backup takes them) until killed.
    local HOLD = [[
local run = require "rtbackup.run"
local task = require "rtbackup.task"
local i, n = arg[2]:match("^(%d+)/(%d+)$")
local r = run.new(require("rtbackup.config").load("RUN"), arg[1],
                  {shard = i and {index = tonumber(i), count = tonumber(n)} or nil})
r:open()
local f = assert(io.open(arg[3], "w"))
f:write(require("rtbackup.sys").pid())
f:close()
for _ = 1, 1200 do task.sleep(100) end -- the spec kills it long before
]]
    local holder

    local function hold(shard)
        local script = h.write_file(dir .. "/hold.lua", HOLD)
        local ready = dir .. "/held"
        os.remove(ready)
        local p = io.popen(string.format("cd %s && %s --config %s run %s ODIL %s %s >%s 2>&1 & echo $!",
                                         h.quote(h.source), h.quote(h.bin), h.quote(config), h.quote(script),
                                         shard or "-", h.quote(ready), h.quote(dir .. "/hold.log")))
        holder = p:read("l")
        p:close()
        eventually(function() return read_file(ready) ~= nil and read_file(ready) ~= "" end, 20,
                   "the holder to take its locks")
        return holder
    end

    after_each(function()
        if holder then os.execute("kill -KILL " .. holder .. " 2>/dev/null") end
        holder = nil
    end)

    it("an unsharded run is locked out (3) by a running shard, and names it", function()
        local pid = hold("1/2")
        local r = rtb{"backup", "RUN", "ODIL", table.unpack(ALL)}
        assert.are.equal(3, r.code, r.output)
        assert.matches("sharded runs hold the lock " .. state .. "/RUN-ODIL.lock", r.stderr, 1, true)
        assert.matches("shard 1/2: PID " .. pid, r.stderr, 1, true)
        assert.matches("exit 3 (locked)", r.stdout, 1, true)
    end)

    it("a sharded run is locked out (3) by a running unsharded one, and names it", function()
        local pid = hold(nil)
        local r = rtb{"backup", "RUN", "ODIL", "--shard", "2/2", table.unpack(ALL)}
        assert.are.equal(3, r.code, r.output)
        assert.matches("another run holds the lock " .. state .. "/RUN-ODIL.lock: PID " .. pid, r.stderr, 1, true)
    end)

    it("the same shard twice: the second is locked out (3); another shard runs meanwhile", function()
        local pid = hold("1/2")
        local r = rtb{"backup", "RUN", "ODIL", "--shard", "1/2", table.unpack(ALL)}
        assert.are.equal(3, r.code, r.output)
        assert.matches("another run holds the lock " .. state .. "/RUN-ODIL-shard1of2.lock: PID " .. pid, r.stderr,
                       1, true)
        local other = rtb{"backup", "RUN", "ODIL", "--shard", "2/2", table.unpack(ALL)}
        assert.are.equal(0, other.code, other.output)
        local s = read_json(state .. "/RUN-ODIL-shard2of2-last-run.json")
        assert.are.equal("ok", s.status)
        assert.is_true(s.found > 0 and s.found < ODIL_INSTANCES, cjson.encode(s)) -- its share only
    end)
end)

-- ---- files that hold patient data -------------------------------------------------------

describe("files naming patients", function()
    it("are private after a backup under umask 022: state dir 0700, journal, summary, lock, audit log 0600", function()
        local code, out = bash(string.format("umask 022; cd %s && %s --config %s backup RUN %s --metrics-file %s",
                                             h.quote(h.source), h.quote(h.bin), h.quote(config), table.concat(ALL, " "),
                                             h.quote(state .. "/run.prom")))
        assert.are.equal(0, code, out)
        assert.are.equal("700", mode(state))
        for _, name in ipairs{"RUN.journal.sqlite", "RUN-ODIL-last-run.json", "RUN-ODIL.lock"} do
            assert.are.equal("600", mode(state .. "/" .. name), name)
        end
        assert.are.equal("600", mode(audit_log))
        assert.matches("RTB1%d%d", read_file(audit_log)) -- it does name patients
        -- The metrics file is node_exporter's to read (another user): 0644, and it names
        -- no patient.
        assert.are.equal("644", mode(state .. "/run.prom"))
        assert.is_nil(read_file(state .. "/run.prom"):find("RTB1%d%d"))
    end)

    it("received by listen under umask 022: its spool dir 0700, each instance 0600", function()
        local port = h.free_port()
        local spool = state .. "/spool"
        local p = io.popen(string.format("umask 022; cd %s && %s listen --aet SPOOL --port %d --out-dir %s >%s 2>&1 & echo $!",
                                         h.quote(h.source), h.quote(h.bin), port, h.quote(spool),
                                         h.quote(dir .. "/listen.log")))
        local pid = p:read("l")
        p:close()
        local ok, err = pcall(function()
            eventually(function()
                return os.execute(string.format("echoscu -to 2 -aec SPOOL %s %d >/dev/null 2>&1", tb.HOST, port))
            end, 20, "listen to answer")
            local code, out = bash(string.format("f=$(find %s -type f -name '*.dcm' | head -1); storescu -aec SPOOL %s %d \"$f\"",
                                                 h.quote(tb.ODIL_DIR), tb.HOST, port))
            assert.are.equal(0, code, out)
            assert.are.equal("700", mode(spool))
            local name = sys.list(spool)[1]
            assert.is_truthy(name, "nothing received")
            assert.are.equal("600", mode(spool .. "/" .. name))
        end)
        os.execute("kill -TERM " .. pid .. " 2>/dev/null")
        if not ok then error(err, 0) end
    end)

    it("make health warn, naming the path, when others can read the state dir or the audit log", function()
        assert.are.equal(0, rtb{"backup", "RUN", table.unpack(ALL)}.code)
        local function checks()
            local r = rtb{"health", "RUN", "--format", "json", "--timeout", "5"}
            local by = {}
            for _, c in ipairs(cjson.decode(r.stdout).checks) do by[c.check] = c end
            return by
        end
        local by = checks()
        assert.are.equal("ok", by["state-dir"].status)
        assert.are.equal("ok", by["audit-log"].status)
        sys.chmod(state, tonumber("755", 8))
        sys.chmod(audit_log, tonumber("644", 8))
        by = checks()
        assert.are.equal("warning", by["state-dir"].status)
        assert.matches("chmod 0700 " .. state, by["state-dir"].detail, 1, true)
        assert.are.equal("warning", by["audit-log"].status)
        assert.matches("chmod 0600 " .. audit_log, by["audit-log"].detail, 1, true)
    end)
end)

describe("summary and metrics files", function()
    it("are fsynced before the rename, and a temporary a killed run left is gone after the next", function()
        local code, out = bash("strace -o /dev/null true")
        if code ~= 0 then return pending("strace cannot trace here: " .. out) end
        os.execute("mkdir -p " .. h.quote(state))
        local summary, prom = state .. "/RUN-ODIL-last-run.json", state .. "/run.prom"
        -- A PID above pid_max never runs; the spec's own PID does (a writer at work).
        local dead = tonumber(read_file("/proc/sys/kernel/pid_max")) + 1
        local stale = {summary .. ".tmp." .. dead, prom .. ".tmp." .. dead}
        local live = summary .. ".tmp." .. sys.pid()
        for _, path in ipairs(stale) do h.write_file(path, '{"env": "RU') end
        h.write_file(live, "in progress")

        local trace = dir .. "/trace"
        -- LeakSanitizer cannot run under ptrace (tools/test.sh --sanitize): off for this process.
        code, out = bash(string.format("cd %s && ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 " ..
                                       "strace -ff -e trace=openat,fsync,rename,chmod,fchmodat,execve " ..
                                       "-o %s %s --config %s backup RUN %s --metrics-file %s",
                                       h.quote(h.source), h.quote(trace), h.quote(h.bin), h.quote(config),
                                       table.concat(ALL, " "), h.quote(prom)))
        assert.are.equal(0, code, out)
        for _, path in ipairs(stale) do assert.is_nil(sys.stat(path), path .. " is still there") end
        assert.is_truthy(sys.stat(live), "the temporary of a running process was removed")
        os.remove(live)
        local s = read_json(summary)
        assert.are.equal(0, s.exit_code)
        assert.is_string(s.finished_at)
        assert.matches('rtbackup_last_run_exit_code{env="RUN",source="ODIL"} 0', read_file(prom), 1, true)

        -- Each thread's system calls, in order (strace -ff: one file per thread; it pads " = result").
        local calls, execs = {}, 0
        local names = sys.list(dir)
        table.sort(names)
        for _, name in ipairs(names) do
            if name:match("^trace%.%d+$") then
                for line in io.lines(dir .. "/" .. name) do
                    calls[#calls + 1] = line
                    if line:match("^execve%(") then execs = execs + 1 end
                end
                calls[#calls + 1] = "--"
            end
        end
        -- path written through "<path>.tmp.<pid>": that file's descriptor is fsynced
        -- before the rename.
        local function fsynced_before_rename(path)
            local fd
            for _, line in ipairs(calls) do
                if line == "--" then fd = nil end
                local opened, got = line:match('^openat%(AT_FDCWD, "([^"]+)", [^)]*O_CREAT[^)]*%)%s+=%s+(%d+)')
                if opened and opened:match("^" .. path:gsub("%p", "%%%0") .. "%.tmp%.%d+$") then fd = got end
                if fd and line:match("^fsync%(" .. fd .. "%)%s+=%s+0") then fd = "synced" end
                if line:match('^rename%("' .. path:gsub("%p", "%%%0") .. '%.tmp%.%d+", "') then
                    return fd == "synced"
                end
            end
            return false
        end
        assert.is_true(fsynced_before_rename(summary), "the summary was not fsynced before its rename")
        assert.is_true(fsynced_before_rename(prom), "the metrics file was not fsynced before its rename")
        -- The audit log is created 0600 by the open itself: no chmod, no program run.
        local created
        for _, line in ipairs(calls) do
            if line:find('"' .. audit_log .. '"', 1, true) then
                if line:match("^openat") and line:find("O_CREAT", 1, true) and line:find("0600", 1, true) then
                    created = true
                end
                assert.is_nil(line:match("^f?chmod"), line)
            end
        end
        assert.is_true(created, "the audit log was not created 0600 at open")
        assert.are.equal(1, execs, "rtbackup ran another program")
    end)
end)
