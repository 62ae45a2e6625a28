-- requires: testbed
-- The staged Mosaiq backup against the testbed: a synthetic Mosaiq on SQLite (through
-- its ODBC driver, generated afresh for each test with its situations: interrupted
-- beams, edits, HDR, QA, a missing field version, rows corrected after the day),
-- Orthanc "staging" as the staging SCP, Orthanc "main" as the archive.
local h = require "helpers"
local cjson = require "cjson"
local odbc = require "rtbackup.odbc"
local mosaiq = require "rtbackup.mosaiq.query"
local synth = require "rtbackup.mosaiq.synth"
local dicom = require "rtbackup.dicom"

local tb = h.testbed()
local main, staging = h.orthanc(tb.MAIN_HTTP_URL), h.orthanc(tb.STAGING_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local START, DAYS = "2026-11-02", 10
local PERIOD = {"--since", "2026-11-02", "--until", "2026-11-11"}
local clinic

local function write_env(opts)
    opts = opts or {}
    h.write_file(dir .. "/mq.toml", h.env_toml(tb, "MQ", {
        description = "Mosaiq on the testbed", default_source = "MOSAIQ", default_backup = "MAIN",
        sources = {{alias = "MOSAIQ", type = "mosaiq", odbc_driver = "SQLite3", db_server = "localhost",
                    db_database = dir .. "/mosaiq.db", db_username = "test", db_password = "",
                    staging_target_alias = "STAGING"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN", aet = opts.main_aet,
                    http_url = opts.http and tb.MAIN_HTTP_URL or nil},
                   {alias = "STAGING", type = "dicom_scp", peer = "STAGING", port = opts.staging_port}},
        settings = {state_dir = state}, extra = opts.settings}))
end

-- A fresh synthetic Mosaiq (seed 2: every situation falls in the period).
local function new_clinic()
    os.remove(dir .. "/mosaiq.db")
    local db = odbc.connect({odbc_driver = "SQLite3", db_database = dir .. "/mosaiq.db"}, nil, {create = true})
    mosaiq.create_schema(db)
    local c = synth.generate(db, {seed = 2, patients = 8, start_date = START, days = DAYS,
                                  leaf_encoding = "float32_mm", -- the default site's reading
                                  faults = true})
    db:close()
    return c
end

local function apply_corrections()
    local db = odbc.connect({odbc_driver = "SQLite3", db_database = dir .. "/mosaiq.db"})
    synth.apply_corrections(db, clinic)
    db:close()
end

local function rtb(args)
    local full = {"--config", dir .. "/mq.toml"}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full)
end

local function backup(extra)
    local args = {"backup", "MQ"}
    for _, a in ipairs(extra or PERIOD) do args[#args + 1] = a end
    local r = rtb(args)
    local f = io.open(state .. "/MQ-MOSAIQ-last-run.json")
    r.summary = f and cjson.decode(f:read("a")) or {}
    if f then f:close() end
    return r
end

local function records_in(orthanc)
    local n = 0
    for _, id in ipairs(orthanc:get("/series")) do
        local s = orthanc:get("/series/" .. id)
        if s.MainDicomTags.Modality == "RTRECORD" then n = n + #s.Instances end
    end
    return n
end

-- The record with this SOP Instance UID, as the archive holds it (nil: not there).
local function archived(uid)
    for _, hit in ipairs(main:lookup(uid)) do
        if hit.Type == "Instance" then
            local path = dir .. "/fetched.dcm"
            os.execute(string.format("curl -s -o %s %s", h.quote(path), h.quote(tb.MAIN_HTTP_URL ..
                                     "/instances/" .. hit.ID .. "/file")))
            return dicom.read(path)
        end
    end
end

-- The records of the run: the journal's view, by identity (from the summary's plan of
-- a dry run, which lists every record the period gives).
local function planned_records(extra)
    local args = {"backup", "MQ", "--dry-run", "--format", "json"}
    for _, a in ipairs(extra or PERIOD) do args[#args + 1] = a end
    local r = rtb(args)
    local ok, s = pcall(cjson.decode, r.stdout)
    assert(ok, r.output)
    return s.plan or {}, s
end

-- A backup run of PERIOD with the flow's batches made small: parts of 5 records
-- staged 3 at a time (a year's run hands them over by the hundred), so that a short
-- period shows the moves of the first parts beside the queries, builds and stores of
-- later days. Returns the command's result and its JSON summary.
local function backup_in_parts()
    h.write_file(dir .. "/parts.lua", string.format([[
local flow = require "rtbackup.mosaiq.flow"
flow.STAGE_BATCH, flow.PART_RECORDS = 3, 5
local env = require("rtbackup.config").load("MQ")
return require("rtbackup.run").backup(env, {"MOSAIQ"}, {since = %q, ["until"] = %q, format = "json"})]],
        PERIOD[2], PERIOD[4]))
    os.remove(dir .. "/audit.jsonl")
    local r = rtb{"run", dir .. "/parts.lua"}
    local ok, s = pcall(cjson.decode, r.stdout)
    assert(ok, r.output)
    return r, s
end

-- When the audit log of the last run saw the first move from staging and the last
-- store into it, and how many moves there were.
local function first_move_last_store()
    local moves, first_move, last_store = 0, nil, nil
    for line in io.lines(dir .. "/audit.jsonl") do
        local e = cjson.decode(line)
        if e.op == "c-store" and e.peer == "STAGING" then
            last_store = e.time
        elseif e.op == "c-move" and e.peer == "STAGING" then
            moves, first_move = moves + 1, first_move or e.time
        end
    end
    assert(first_move and last_store, "no moves or stores audited")
    return first_move, last_store, moves
end

-- The keys of the records the journal has open, oldest first.
local function open_records()
    local script = h.write_file(dir .. "/open.lua", string.format([[
local j = require("rtbackup.journal").open(%q)
for _, u in ipairs(j:units("MOSAIQ", {state = {"queued", "moved", "failed"}, order = "oldest"})) do print(u.key) end
]], state .. "/MQ.journal.sqlite"))
    local r = h.run{"run", script}
    assert(r.code == 0, r.output)
    local keys = {}
    for key in r.stdout:gmatch("[^\n]+") do keys[#keys + 1] = key end
    return keys
end

local function by_kind(list)
    local out = {}
    for _, s in ipairs(list or {}) do out[s.kind] = (out[s.kind] or 0) + 1 end
    return out
end

before_each(function()
    main:wipe()
    staging:wipe()
    os.execute("rm -rf " .. h.quote(state))
    clinic = new_clinic()
    write_env()
end)
teardown(function()
    main:wipe()
    staging:wipe()
    os.execute("rm -rf " .. h.quote(dir))
end)

describe("the Mosaiq backup", function()
    it("backs up every delivery it can and names every one it cannot, with its reason", function()
        local r = backup()
        -- a delivery naming a field version Mosaiq no longer has: data is missing, exit 1
        assert.are.equal(1, r.code, r.output)
        local s = r.summary
        assert.is_true(s.records_built > 10, r.output)
        assert.are.same({s.records_built, 0}, {s.verified, s.failed})
        assert.are.equal(s.records_built, records_in(main))
        assert.are.equal(s.records_built, records_in(staging))
        local kinds = by_kind(s.skipped_deliveries)
        assert.are.equal(#clinic.situations.missing_field, kinds.missing_version)
        assert.is_true((kinds.brachytherapy or 0) >= #clinic.situations.hdr, r.output)
        assert.are.equal(#clinic.situations.qa_mode[1].dhs_ids, kinds.qa_mode)
        assert.are.equal(#s.skipped_deliveries, s.deliveries_skipped)
        local missing = clinic.situations.missing_field[1]
        assert.matches(string.format("not built (missing_version): %s %s (plan unknown) fraction",
                                     missing.day, missing.mrn), r.stdout, 1, true)
        assert.matches("FLD_ID " .. missing.fld_id, r.stdout, 1, true)
        -- each delivery row named, so the rows of one fraction (an HDR channel each) are told apart
        for _, d in ipairs(s.skipped_deliveries) do
            assert.matches(string.format("fraction %d (Dose_Hst %d): ", d.fraction, d.dhs_id), r.stdout, 1, true)
        end

        -- a rerun sends nothing: the same records, the same UIDs, the same bytes
        local again = backup()
        assert.are.equal(1, again.code, again.output)
        assert.are.same({0, s.records_built, 0}, {again.summary.moved, again.summary.already_present,
                                                   again.summary.records_corrected})
        assert.are.equal(s.records_built, records_in(main))
    end)

    it("moves the first records while it still builds the rest", function()
        write_env{settings = string.format("audit_log = %q", dir .. "/audit.jsonl")}
        local r, s = backup_in_parts()
        assert.are.equal(1, r.code, r.output) -- the missing field version, as in a whole plan
        assert.is_true(s.records_built > 10, r.output)
        assert.are.same({s.records_built, s.records_built, 0}, {s.moved, s.verified, s.failed})
        assert.are.equal(s.records_built, records_in(main))
        local first_move, last_store, moves = first_move_last_store()
        assert.is_true(first_move < last_store, "the first move " .. first_move .. " waited for the last store " ..
                       last_store)
        assert.is_true(moves > 1)
        -- a rerun finds every record, under the same UIDs
        local again = backup()
        assert.are.same({0, s.records_built}, {again.summary.moved, again.summary.already_present})
    end)

    it("under max_uids_per_run moves the oldest records first, still while it builds the rest", function()
        local CAP = 7
        write_env{settings = string.format("audit_log = %q\nmax_uids_per_run = %d", dir .. "/audit.jsonl", CAP)}
        local r, s = backup_in_parts()
        assert.are.equal(1, r.code, r.output)
        assert.are.same({CAP, CAP, 0, s.records_built - CAP}, {s.moved, s.verified, s.failed, s.deferred})
        assert.are.equal(CAP, records_in(main))
        local first_move, last_store = first_move_last_store()
        assert.is_true(first_move < last_store, "under the cap the first move waited for the last store")
        -- Each later run sends the oldest records the journal still has open, at most CAP.
        local sent = CAP
        while sent < s.records_built do
            local oldest = open_records()
            r, s = backup_in_parts()
            assert.are.equal(math.min(CAP, #oldest), s.moved, r.output)
            local now_open = {}
            for _, key in ipairs(open_records()) do now_open[key] = true end
            for i, key in ipairs(oldest) do
                assert.are.equal(i > CAP, now_open[key] == true, "record " .. i .. " of the open ones, oldest first")
            end
            sent = sent + s.moved
        end
        assert.are.same({s.records_built, 0}, {records_in(main), s.deferred})
    end)

    it("says in a dry run which records a real run then sends, as records", function()
        local plan, s = planned_records()
        assert.is_true(#plan > 10)
        assert.are.equal("records", s.kind == "mosaiq" and "records" or s.kind)
        local text = rtb{"backup", "MQ", "--dry-run", table.unpack(PERIOD)}
        assert.matches(string.format("dry run: %d records would be moved", #plan), text.stdout, 1, true)
        assert.are.equal(0, records_in(main) + records_in(staging)) -- nothing sent
        local r = backup()
        assert.are.same({#plan, #plan}, {r.summary.moved, r.summary.records_built})
        local again = planned_records()
        assert.are.equal(0, #again)
    end)

    it("by default looks back a week, so the run after midnight builds the evening's deliveries", function()
        -- A clinic whose last six days end yesterday (the deploy's timer runs at 01:30,
        -- when "today" has no deliveries yet).
        local function day(ago) return os.date("%Y-%m-%d", os.time() - ago * 86400) end
        os.remove(dir .. "/mosaiq.db")
        local db = odbc.connect({odbc_driver = "SQLite3", db_database = dir .. "/mosaiq.db"}, nil, {create = true})
        mosaiq.create_schema(db)
        synth.generate(db, {seed = 3, patients = 4, start_date = day(6), days = 6, leaf_encoding = "float32_mm"})
        db:close()
        local function records(period)
            local set = {}
            for _, row in ipairs(planned_records(period)) do set[row.record] = true end
            return set
        end
        local week, today = records{"--since", day(6), "--until", day(1)}, records{"--since", day(0)}
        local before_today = 0
        for key in pairs(week) do if not today[key] then before_today = before_today + 1 end end
        assert.is_true(before_today > 0, "the synthetic week has no deliveries before today")
        local default = records{}
        for key in pairs(week) do assert.is_true(default[key], key) end
        write_env{settings = "lookback_days = 0"} -- today only: the week's records are not seen
        assert.are.same(today, records{})
    end)

    it("lets a site accept deliveries that are never treatment records, still naming them", function()
        -- the patient whose plan was checked in QA mode (the missing field version is another's)
        local qa = clinic.situations.qa_mode[1]
        assert.are_not.equal(clinic.situations.missing_field[1].mrn, qa.mrn)
        local scripts = dir .. "/scripts"
        os.execute(string.format("rm -rf %s && cp -r %s/scripts %s/ && mkdir -p %s/site", h.quote(scripts),
                                 h.quote(h.source), h.quote(dir), h.quote(scripts)))
        h.write_file(scripts .. "/site/site.lua",
                     [[return {mosaiq = {accepted_skips = {"qa_mode", "brachytherapy"}}}]])
        local toml = io.open(dir .. "/mq.toml"):read("a"):gsub('description = ', 'scripts = "site"\ndescription = ')
        h.write_file(dir .. "/mq.toml", toml)
        local r = h.run({"--config", dir .. "/mq.toml", "backup", "MQ", "--patient", qa.mrn, table.unpack(PERIOD)},
                        {env = {RTBACKUP_SCRIPTS = scripts}})
        assert.are.equal(0, r.code, r.output)
        assert.matches("not built %(qa_mode%)", r.stdout)
        -- status --refresh does not count them as failed either
        local st = h.run({"--config", dir .. "/mq.toml", "status", "MQ", "MOSAIQ", "--refresh", "--format", "json",
                          "--since", PERIOD[2], "--until", PERIOD[4]}, {env = {RTBACKUP_SCRIPTS = scripts}})
        local by = {}
        for _, d in ipairs(cjson.decode(st.stdout).sources[1].days) do by[d.day] = d end
        local qa_day = qa.day:gsub("^(%d%d%d%d)(%d%d)(%d%d)$", "%1-%2-%3")
        assert.is_table(by[qa_day], st.stdout)
        assert.are.equal(0, by[qa_day].failed, st.stdout)
        -- and a kind that means missing data cannot be accepted
        h.write_file(scripts .. "/site/site.lua", [[return {mosaiq = {accepted_skips = {"missing_version"}}}]])
        r = h.run({"--config", dir .. "/mq.toml", "backup", "MQ", table.unpack(PERIOD)},
                  {env = {RTBACKUP_SCRIPTS = scripts}})
        assert.are.equal(2, r.code, r.output)
        assert.matches('accepted_skips: "missing_version" cannot be accepted', r.output, 1, true)
    end)

    it("carries a correction to the archive as a new version, and says which one it supersedes", function()
        local fix = clinic.situations.corrected[1]
        local only = {"--patient", fix.mrn, "--since", fix.day, "--until", fix.day}
        local first = backup(only)
        assert.are.equal(0, first.code, first.output)
        local before = planned_records(only)
        assert.are.equal(0, #before) -- all verified

        apply_corrections() -- a late beam charted, a verification status changed after review
        local r = backup(only)
        assert.are.equal(0, r.code, r.output)
        local s = r.summary
        assert.are.equal(1, s.records_corrected, r.output)
        local c = s.corrected_records[1]
        assert.are_not.equal(c.superseded, c.current)
        assert.matches(fix.plan_uid, c.record, 1, true)
        assert.are.equal(1, s.moved)
        -- both versions are in the archive, the new one with the late beam and the new status
        local old, new = archived(c.superseded), archived(c.current)
        assert.is_truthy(old, "the superseded version was removed")
        assert.are.equal(#old.TreatmentSessionBeamSequence + 1, #new.TreatmentSessionBeamSequence)
        assert.are.equal("VERIFIED_OVR", new.TreatmentSessionBeamSequence[1].TreatmentVerificationStatus)
        assert.are.equal("kept", s.superseded_records[1].superseded[1].state)
        assert.matches("superseded: " .. fix.mrn, r.stdout, 1, true)
        -- the next run has nothing to do
        local again = backup(only)
        assert.are.same({0, 0, first.summary.records_built},
                        {again.code, again.summary.moved, again.summary.already_present})
    end)

    it("removes the superseded version through Orthanc's REST API when the site asks for it, audited", function()
        local audit_log = h.tmpdir() .. "/audit.jsonl"
        write_env{http = true, settings = string.format("mosaiq_remove_superseded = true\naudit_log = %q", audit_log)}
        local fix = clinic.situations.corrected[1]
        local only = {"--patient", fix.mrn, "--since", fix.day, "--until", fix.day}
        assert.are.equal(0, backup(only).code)
        apply_corrections()
        local r = backup(only)
        assert.are.equal(0, r.code, r.output)
        local c = r.summary.corrected_records[1]
        assert.is_nil(archived(c.superseded))
        assert.is_truthy(archived(c.current))
        assert.are.equal("removed", r.summary.superseded_records[1].superseded[1].state)
        local deletes = {}
        for _, e in ipairs(h.audit_events(audit_log)) do
            if e.op == "rest" and e.method == "DELETE" then deletes[#deletes + 1] = e end
        end
        assert.are.equal(1, #deletes)
        assert.are.same({"MAIN", fix.mrn, c.superseded, "ok"},
                        {deletes[1].peer, deletes[1].patient_id, deletes[1].sop_instance_uid, deletes[1].outcome})
    end)

    -- As stored, whether the archive gives its file through its REST API or by C-GET.
    it("fails, naming it, a record the archive holds with other content under its UID", function()
        for _, http in ipairs{false, true} do
            main:wipe()
            staging:wipe()
            os.execute("rm -rf " .. h.quote(state))
            write_env{http = http}
            local fix = clinic.situations.corrected[1]
            local only = {"--patient", fix.mrn, "--since", fix.day, "--until", fix.day}
            -- what the backup will send, tampered with and put into the archive first
            local out = h.tmpdir() .. "/records"
            local w = rtb{"rtrecord", "MQ", "--date", fix.day, "--out", out}
            assert.is_true(w.code == 0 or w.code == 1, w.output)
            local plan = planned_records(only)
            assert.is_true(#plan > 0)
            local uid = plan[1].uid
            local ds = dicom.read(out .. "/" .. uid .. ".dcm")
            ds.TreatmentSessionBeamSequence[1].TreatmentTerminationStatus = "MACHINE"
            ds:save(dir .. "/tampered.dcm")
            os.execute(string.format("curl -s -X POST --data-binary @%s %s/instances >/dev/null",
                                     h.quote(dir .. "/tampered.dcm"), h.quote(tb.MAIN_HTTP_URL)))
            local r = backup(only)
            assert.are.equal(1, r.code, r.output)
            assert.is_true(r.summary.failed >= 1, r.output)
            assert.matches("holds different content under the record's UID " .. uid, r.output, 1, true)
            -- and it stays failed, not "already backed up", on the next run
            assert.are.equal(1, backup(only).code)
        end
    end)

    -- A C-GET costs the archive an association and a C-STORE sub-operation per record;
    -- its REST API gives the stored file for a fraction of that.
    it("verifies every record as stored through the archive's REST API, without a C-GET", function()
        local audit_log = dir .. "/audit.jsonl"
        os.remove(audit_log)
        write_env{http = true, settings = string.format("audit_log = %q", audit_log)}
        local r = backup()
        assert.is_true(r.code == 0 or r.code == 1, r.output) -- 1: the deliveries named as not records
        assert.is_true(r.summary.verified > 0, r.output)
        assert.are.equal(r.summary.records_built, r.summary.verified, r.output)
        assert.are.equal(0, r.summary.failed)
        local gets, files = 0, {}
        for _, e in ipairs(h.audit_events(audit_log)) do
            if e.op == "c-get" then gets = gets + 1 end
            if e.op == "rest" and e.method == "GET" and e.count == 1 then files[e.sop_instance_uid] = true end
        end
        assert.are.equal(0, gets)
        local n = 0
        for _ in pairs(files) do n = n + 1 end
        assert.are.equal(r.summary.verified, n)
    end)

    it("references the interrupted part from its continuation, across runs", function()
        local cont = clinic.situations.interrupted_next_day[1]
        assert.is_truthy(cont.continued_day, "the continuation is in the period")
        local day1 = {"--patient", cont.mrn, "--since", cont.day, "--until", cont.day}
        local day2 = {"--patient", cont.mrn, "--since", cont.continued_day, "--until", cont.continued_day}
        assert.are.equal(0, backup(day1).code)
        local first_uids = {}
        for _, id in ipairs(main:get("/instances")) do
            first_uids[main:get("/instances/" .. id .. "/simplified-tags").SOPInstanceUID] = true
        end
        local r = backup(day2)
        assert.are.equal(0, r.code, r.output)
        -- the continuation (session 2 of the earlier fraction) names the interrupted
        -- record, which the first run archived
        local found = 0
        for _, id in ipairs(main:get("/instances")) do
            local tags = main:get("/instances/" .. id .. "/simplified-tags")
            local refs = tags.ReferencedTreatmentRecordSequence
            if refs then
                local ds = archived(tags.SOPInstanceUID)
                assert.are.equal("CONTINUATION", ds.TreatmentSessionBeamSequence[1].TreatmentDeliveryType)
                local referenced = refs[1].ReferencedSOPInstanceUID
                assert.is_true(first_uids[referenced], "the referenced record is the first run's")
                assert.are.equal(ds.InstanceNumber, archived(referenced).InstanceNumber) -- the same fraction
                found = found + 1
            end
        end
        assert.are.equal(1, found)
    end)

    -- Before, the continuation took its reference from the journal: backed up before its
    -- interrupted part (or by a shard, or under a renamed environment, each a journal of
    -- its own), it was built without one, and later rebuilt with one under another UID
    -- ("corrected in Mosaiq" when nothing changed, and two records for one delivery).
    it("builds a continuation the same whatever the journal knows: its interrupted part is read from Mosaiq", function()
        local cont = clinic.situations.interrupted_next_day[1]
        local function period(a, b) return {"--patient", cont.mrn, "--since", a, "--until", b} end
        local function archived_uids()
            local set, refs = {}, {}
            for _, id in ipairs(main:get("/instances")) do
                local tags = main:get("/instances/" .. id .. "/simplified-tags")
                set[tags.SOPInstanceUID] = true
                if tags.ReferencedTreatmentRecordSequence then
                    refs[tags.SOPInstanceUID] = tags.ReferencedTreatmentRecordSequence[1].ReferencedSOPInstanceUID
                end
            end
            return set, refs
        end
        -- The continuation's day alone, first, with an empty journal.
        local r = backup(period(cont.continued_day, cont.continued_day))
        assert.are.equal(0, r.code, r.output)
        local _, alone = archived_uids()
        local continuation, interrupted = next(alone)
        assert.is_truthy(continuation, "the continuation references its interrupted part")
        -- Both days at once, from scratch: the same two records.
        main:wipe()
        staging:wipe()
        os.execute("rm -rf " .. h.quote(state))
        r = backup(period(cont.day, cont.continued_day))
        assert.are.equal(0, r.code, r.output)
        local both = archived_uids()
        assert.is_true(both[continuation], "the continuation has the same UID")
        assert.is_true(both[interrupted], "the interrupted part is the record referenced")
        -- and the continuation's day again is no correction
        r = backup(period(cont.continued_day, cont.continued_day))
        assert.are.equal(0, r.code, r.output)
        assert.are.same({0, 0}, {r.summary.records_corrected, r.summary.moved})
    end)

    it("archives no record twice under an environment's new name (a new journal, the same database)", function()
        local r = backup()
        assert.are.equal(1, r.code, r.output) -- the clinic's missing field version
        local held = records_in(main)
        local text = h.read_file(dir .. "/mq.toml"):gsub("%[MQ([%]%.])", "[RENAMED%1")
        h.write_file(dir .. "/mq.toml", text)
        local args = {"backup", "RENAMED"}
        for _, a in ipairs(PERIOD) do args[#args + 1] = a end
        local again = rtb(args)
        assert.are.equal(1, again.code, again.output)
        -- the same records under the same UIDs: none twice in the archive
        assert.are.equal(held, records_in(main))
    end)

    it("points validate of a Mosaiq source to drill and status --refresh (exit 2)", function()
        local r = rtb{"validate", "MQ", "MOSAIQ"}
        assert.are.equal(2, r.code, r.output)
        assert.matches("MOSAIQ is a Mosaiq source: validate compares a DICOM archive", r.stderr, 1, true)
        assert.matches("rtbackup drill MQ MOSAIQ", r.stderr, 1, true)
    end)

    it("says when Mosaiq has no delivery of the patient asked for", function()
        local args = {"--patient", "NOSUCH"}
        for _, a in ipairs(PERIOD) do args[#args + 1] = a end
        local r = backup(args)
        assert.are.equal(0, r.code, r.output)
        assert.matches("Mosaiq has no delivery of patient NOSUCH in the period", r.stdout, 1, true)
        assert.are.equal("NOSUCH", r.summary.patient_not_found)
    end)

    it("exits 4 when staging is down, keeps the records queued, and the next run completes", function()
        write_env{staging_port = tb.CLOSED_PORT}
        local args = {"--metrics-file", dir .. "/down.prom"}
        for _, a in ipairs(PERIOD) do args[#args + 1] = a end
        local r = backup(args)
        assert.are.equal(4, r.code, r.output)
        assert.are.equal(0, records_in(main))
        -- the stores' failed associations are in the metrics
        assert.matches('rtbackup_association_failures_total{env="MQ",source="MOSAIQ",peer="STAGING",' ..
                       'kind="connect_failed"} [1-9]', h.read_file(dir .. "/down.prom"))
        write_env()
        r = backup()
        assert.are.equal(1, r.code, r.output) -- the missing field version, still
        assert.are.same({r.summary.records_built, 0}, {r.summary.verified, r.summary.failed})
        assert.are.equal(r.summary.records_built, records_in(main))
    end)

    -- Before: every record was stored, moved (refused), verified and retried three times
    -- (about 9 s) and the run ended "partial" with each record "not found in MAIN".
    it("exits 2 at once when staging is a storage SCP that does not accept C-MOVE, and says so", function()
        write_env{staging_port = tb.STORESCP_PORT} -- storescp: C-STORE only
        local r = backup()
        assert.are.equal(2, r.code, r.output)
        assert.matches("STAGING does not accept C-MOVE (Study Root Query/Retrieve)", r.summary.hint, 1, true)
        assert.are.same({0, 0, r.summary.records_built}, {r.summary.moved, r.summary.failed, r.summary.skipped})
        assert.are.equal(0, records_in(main))
    end)

    it("reports a failure when the archive's AE title is wrong (staging cannot send to it, it rejects us)", function()
        write_env{main_aet = "NOT_KNOWN"} -- staging knows no such destination: the C-MOVE fails
        local r = backup()
        -- the move is refused, the verification's association rejected for an AE title
        -- the archive does not know (a setting to change: exit 2): the records stay queued
        -- for a run with the right configuration
        assert.are.equal(2, r.code, r.output)
        assert.matches("Called AE Title Not Recognized", r.stdout, 1, true)
        assert.are.equal(0, records_in(main))
        assert.is_true(#r.summary.errors > 0)
    end)

    it("writes the day's records as files with rtbackup rtrecord", function()
        local day = clinic.situations.missing_field[1].day
        local out = h.tmpdir() .. "/records"
        local r = rtb{"rtrecord", "MQ", "--date", day, "--out", out}
        assert.are.equal(1, r.code, r.output) -- and names the delivery it could not build
        assert.matches("not built %(missing_version%)", r.stderr)
        local n = tonumber(r.stdout:match("(%d+) records written"))
        assert.is_true(n > 0)
        local p = io.popen("ls " .. h.quote(out) .. " | wc -l")
        assert.are.equal(n, tonumber(p:read("l")))
        p:close()
    end)
end)
