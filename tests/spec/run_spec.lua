-- requires: testbed
-- A run's lifecycle as the library owns it: an interrupted run is recorded as
-- interrupted everywhere; every audit line that touches a patient names the patient;
-- the per-peer association cap holds for every command. The source is ODIL_QR (a
-- Q/R SCP on another DICOM stack, with switchable quirks), the archive Orthanc "main".
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local main = h.orthanc(tb.MAIN_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local ALL = {"--since", "1900-01-01", "--until", "2100-01-01"}

local function quirks(q) h.write_file(tb.ODIL_QUIRKS, cjson.encode(q or {})) end

local function write_env(extra)
    h.write_file(dir .. "/run.toml", h.env_toml(tb, "RUN", {
        default_source = "ODIL", default_backup = "MAIN", script_ae = {aet = tb.SCU_AET},
        sources = {{alias = "ODIL", type = "mim", peer = "ODIL"}, {alias = "ARIA", type = "aria", peer = "ARIA"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"},
                   {alias = "STAGING", type = "orthanc", peer = "STAGING"}},
        settings = {state_dir = state, audit_log = dir .. "/audit.jsonl", retry_backoff_ms = 10}, extra = extra}))
end

local function rtb(args)
    local full = {"--config", dir .. "/run.toml"}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full)
end

local function read_json(path)
    local f = io.open(path)
    if not f then return nil end
    local v = cjson.decode(f:read("a"))
    f:close()
    return v
end

local function audit_events()
    local list = {}
    local f = io.open(dir .. "/audit.jsonl")
    if not f then return list end
    for line in f:lines() do list[#list + 1] = cjson.decode(line) end
    f:close()
    return list
end

-- Starts a backup in the background, sends `signal` once `ready` (a shell test) holds,
-- and returns its exit code.
local function interrupted_backup(signal, ready)
    local script = string.format([[
%s --config %s backup RUN %s --metrics-file %s >%s/out 2>&1 & pid=$!
for i in $(seq 1 300); do %s && break; sleep 0.05; done
kill -%s $pid; wait $pid; echo $?]],
        h.quote(h.bin), h.quote(dir .. "/run.toml"), table.concat(ALL, " "), h.quote(dir .. "/run.prom"), dir,
        ready, signal)
    local p = io.popen("bash -c " .. h.quote(script))
    local code = tonumber(p:read("a"):match("(%d+)%s*$"))
    p:close()
    return code
end

local function metric(name)
    local f = io.open(dir .. "/run.prom")
    local text = f and f:read("a") or ""
    if f then f:close() end
    return tonumber(text:match(name .. '{env="RUN",source="ODIL"} (%S+)'))
end

local function forget_odil_patients()
    for _, id in ipairs(main:get("/patients")) do
        local p = main:get("/patients/" .. id)
        if p.MainDicomTags.PatientID:match("^RTB1%d%d$") then main:delete("/patients/" .. id) end
    end
end

before_each(function()
    forget_odil_patients()
    os.execute("rm -rf " .. h.quote(state) .. " " .. h.quote(dir .. "/audit.jsonl") .. " " .. h.quote(dir .. "/run.prom"))
    quirks()
    write_env()
end)
after_each(function() quirks(); forget_odil_patients() end)
teardown(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("an interrupted run", function()
    it("says 130 and interrupted in its summary, last-run.json, metrics and journal, and counts what it left", function()
        write_env("max_associations = 1") -- one study at a time: the signal finds some not started
        quirks{move_delay_ms = 120}        -- a slow archive: the signal arrives in the middle of the moves
        local code = interrupted_backup("INT", string.format("grep -q '\"c-move\"' %s 2>/dev/null",
                                                             h.quote(dir .. "/audit.jsonl")))
        assert.are.equal(130, code)
        local s = read_json(state .. "/RUN-ODIL-last-run.json")
        assert.is_table(s, "no last-run.json")
        assert.are.equal(130, s.exit_code)
        assert.are.equal("interrupted", s.status)
        assert.is_true(s.interrupted)
        assert.is_true(s.skipped > 0, "nothing counted as left for later: " .. cjson.encode(s))
        assert.is_true(s.verified < tonumber(tb.ODIL_INSTANCES))
        -- "moved" is what arrived: the moves in progress finished, verified or not.
        assert.are.equal(main:count_of("^RTB1%d%d$"), s.moved, cjson.encode(s))
        assert.are.equal(130, metric("rtbackup_last_run_exit_code"))
        assert.are.equal(0, metric("rtbackup_last_success_timestamp_seconds"))
        -- the journal's history says so too
        local r = h.run{"--config", dir .. "/run.toml", "run", h.write_file(dir .. "/last.lua", string.format([[
            local j = require("rtbackup.journal").open(%q)
            print(j:last_run("ODIL").status)]], state .. "/RUN.journal.sqlite"))}
        assert.matches("^interrupted", r.stdout)

        -- the next run finishes the work
        quirks()
        local again = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(0, again.code, again.output)
        local after = read_json(state .. "/RUN-ODIL-last-run.json")
        assert.are.equal(tonumber(tb.ODIL_INSTANCES), after.already_present + after.verified, cjson.encode(after) .. "\nFIRST: " .. cjson.encode(s))
    end)

    it("interrupted while planning exits 143 and says so (not unreachable)", function()
        quirks{find_delay_ms = 400} -- planning takes a while
        local code = interrupted_backup("TERM", "sleep 0.6; true")
        assert.are.equal(143, code)
        local s = read_json(state .. "/RUN-ODIL-last-run.json")
        assert.are.equal(143, s.exit_code)
        assert.are.equal("interrupted", s.status)
        assert.are.equal(143, metric("rtbackup_last_run_exit_code"))
    end)
end)

describe("the audit log", function()
    it("names the patient of every C-FIND, C-MOVE and C-GET a backup makes", function()
        local r = rtb{"backup", "RUN", table.unpack(ALL)}
        assert.are.equal(0, r.code, r.output)
        local seen = {}
        for _, e in ipairs(audit_events()) do
            if e.op == "c-find" or e.op == "c-move" or e.op == "c-get" then
                local named = e.patient_id or (e.patient_ids and e.patient_ids[1])
                -- the one study-level search of the selection names no patient yet
                if not (e.op == "c-find" and e.keys and e.keys.QueryRetrieveLevel == nil and e.keys.PatientID == "*") then
                    assert.is_truthy(named, "no patient in " .. cjson.encode(e))
                end
                seen[e.op] = true
            end
        end
        assert.is_true(seen["c-move"] and seen["c-find"], "no moves or finds audited")
    end)

    it("names the patient of query --mrn and restore", function()
        assert.are.equal(0, rtb{"backup", "RUN", table.unpack(ALL)}.code)
        os.remove(dir .. "/audit.jsonl")
        assert.are.equal(0, rtb{"query", "RUN", "--mrn", "RTB101", "--level", "SERIES", "--format", "json"}.code)
        local events = audit_events()
        assert.is_true(#events > 0, "query wrote no audit line")
        for _, e in ipairs(events) do
            assert.are.equal("RTB101", e.patient_id or (e.patient_ids or {})[1], cjson.encode(e))
        end
        os.remove(dir .. "/audit.jsonl")
        local r = rtb{"restore", "RUN", "--to", "STAGING", "--patient", "RTB101"}
        assert.are.equal(0, r.code, r.output)
        local restore, moves = nil, 0
        for _, e in ipairs(audit_events()) do
            if e.op == "restore" then restore = e end
            if e.op == "c-move" then
                moves = moves + 1
                assert.are.equal("RTB101", e.patient_id, cjson.encode(e))
            end
        end
        assert.are.equal("RTB101", restore and restore.patient_id)
        assert.is_true(moves > 0)
        h.orthanc(tb.STAGING_HTTP_URL):wipe()
    end)
end)

describe("the per-peer association cap", function()
    -- ODIL_QR logs each association's start and end in order: the most it ever had at
    -- once is what the command opened at once.
    local LOG = tb.RTB_TESTBED_DIR .. "/logs/odil.log"
    local function lines_now()
        local n = 0
        for _ in io.lines(LOG) do n = n + 1 end
        return n
    end
    local function peak_since(start)
        local active, peak, n = {}, 0, 0
        for line in io.lines(LOG) do
            n = n + 1
            if n > start then
                local pid = line:match("odil_qr%[(%d+)%] association from")
                if pid and not line:find("released", 1, true) and not line:find("abort", 1, true) then
                    active[pid] = true
                elseif line:find("released", 1, true) or line:find("abort", 1, true) then
                    active[line:match("odil_qr%[(%d+)%]") or ""] = nil
                end
                local count = 0
                for _ in pairs(active) do count = count + 1 end
                if count > peak then peak = count end
            end
        end
        return peak
    end

    it("keeps validate within the source's max_associations", function()
        h.write_file(dir .. "/run.toml", (io.open(dir .. "/run.toml"):read("a"):gsub(
            'port = ' .. tb.ODIL_PORT .. '\n', 'port = ' .. tb.ODIL_PORT .. '\nmax_associations = 1\n', 1)))
        local start = lines_now()
        local r = rtb{"validate", "RUN", "ODIL", table.unpack(ALL)}
        assert.are.equal(1, r.code, r.output) -- the archive lacks ODIL's patients: discrepancies, listed
        assert.are.equal(1, peak_since(start))
    end)

    it("opens several at once when the cap allows it (the check can fail)", function()
        h.write_file(dir .. "/run.toml", (io.open(dir .. "/run.toml"):read("a"):gsub(
            'port = ' .. tb.ODIL_PORT .. '\n', 'port = ' .. tb.ODIL_PORT .. '\nmax_associations = 8\n', 1)))
        -- Each query lasts long enough to meet the next: without the delay a loaded
        -- machine could finish one before the next began, and the peak would be 1.
        quirks{find_delay_ms = 200}
        local start = lines_now()
        local r = rtb{"validate", "RUN", "ODIL", table.unpack(ALL)}
        assert.are.equal(1, r.code, r.output)
        assert.is_true(peak_since(start) > 1)
    end)
end)
