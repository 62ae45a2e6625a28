-- requires: testbed
-- The ARIA/MIM backup, validate and restore workflows against the testbed: dcmqrscp
-- playing ARIA as the source, Orthanc "main" as the backup archive, Orthanc
-- "staging" as a restore destination. Each test starts from an empty archive and an
-- empty state directory.
local h = require "helpers"
local cjson = require "cjson"
local dicom = require "rtbackup.dicom"

local tb = h.testbed()
local main, staging = h.orthanc(tb.MAIN_HTTP_URL), h.orthanc(tb.STAGING_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"

-- main: more fields of the archive's table (its http_url, say; none by default:
-- verified over DICOM).
local function write_env(extra_settings, main)
    return h.write_file(dir .. "/tb.toml", h.env_toml(tb, "TB", {
        description = "testbed", default_source = "ARIA", default_backup = "MAIN",
        sources = {{alias = "ARIA", type = "aria", peer = "ARIA"},
                   {alias = "DEAD", type = "mim", aet = "DEAD", ip = tb.HOST, port = tb.CLOSED_PORT},
                   {alias = "WRONGAE", type = "aria", aet = "NOT_ARIA", ip = tb.HOST, port = tb.ARIA_PORT},
                   {alias = "STAGE", type = "mim", peer = "STAGING"},
                   {alias = "NOFIND", type = "mim", peer = "STORESCP"}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN", port = main and main.port,
                    http_url = main and main.http_url,
                    http_url_env_var = main and main.http_url_env_var},
                   {alias = "STAGING", type = "orthanc", peer = "STAGING"},
                   {alias = "SINK", type = "dicom_scp", peer = "STORESCP"},
                   {alias = "UNKNOWN", type = "dicom_scp", peer = "STORESCP", aet = "NOT_IN_MAIN"}},
        settings = {state_dir = state, retry_backoff_ms = 10}, extra = extra_settings}))
end

local ALL = {"--since", "1900-01-01", "--until", "2100-01-01"}
local function rtb(args, opts)
    local full = {"--config", dir .. "/tb.toml"}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full, opts)
end
local function backup(extra, source, run_opts)
    local args = {"backup", "TB", source or "ARIA"}
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    for _, a in ipairs(ALL) do args[#args + 1] = a end
    local r = rtb(args, run_opts)
    local f = io.open(state .. "/TB-" .. (source or "ARIA") .. "-last-run.json")
    r.summary = f and cjson.decode(f:read("a")) or {}
    if f then f:close() end
    return r
end

-- What the source holds now.
local function source_total()
    return tonumber(backup{"--dry-run"}.stdout:match("found (%d+) instances"))
end


before_each(function()
    main:wipe()
    os.execute("rm -rf " .. h.quote(state))
    write_env()
end)
teardown(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("rtbackup backup", function()
    it("backs everything up and verifies it; a second run moves nothing", function()
        local total = source_total()
        assert.is_true(total >= tonumber(tb.SYNTH_INSTANCES))
        local r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(total, r.summary.found)
        assert.are.equal(total, r.summary.moved)
        assert.are.equal(total, r.summary.verified)
        assert.are.equal(total, main:count())

        r = backup()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(0, r.summary.moved)
        assert.are.equal(total, r.summary.already_present)
        assert.are.equal(0, rtb({"validate", "TB", table.unpack(ALL)}).code)
    end)

    it("prints the plan and moves nothing with --dry-run", function()
        local r = backup{"--dry-run"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("dry run: %d+ series would be moved", r.stdout)
        assert.matches("RTB001 CT [%d.]+: 10 of 10 instances missing", r.stdout)
        assert.are.equal(0, main:count())
    end)

    -- Over DICOM, and through the archive's REST API, which may only confirm a series
    -- that holds exactly the source's instances: anything else is named by a C-FIND.
    it("after instances vanish from the archive, validate names exactly them and backup restores them", function()
        for _, url in ipairs{false, tb.MAIN_HTTP_URL} do
            main:wipe()
            os.execute("rm -rf " .. h.quote(state))
            write_env(nil, {http_url = url or nil})
            assert.are.equal(0, backup().code)
            local ids = main:get("/instances")
            local deleted = {}
            for i = 1, 3 do
                deleted[main:get("/instances/" .. ids[i] .. "/simplified-tags").SOPInstanceUID] = true
                main:delete("/instances/" .. ids[i])
            end
            -- An instance the source never had, in a series it has.
            local tags = main:get("/instances/" .. ids[4] .. "/simplified-tags")
            local archive = dicom.peer{aet = tb.MAIN_AET, host = tb.HOST, port = tonumber(tb.MAIN_PORT),
                                       calling_aet = tb.SCU_AET}
            local extra = dicom.uid()
            assert.are.equal(1, archive:store{dicom.dataset{
                SOPClassUID = tags.SOPClassUID, SOPInstanceUID = extra, StudyInstanceUID = tags.StudyInstanceUID,
                SeriesInstanceUID = tags.SeriesInstanceUID, PatientID = tags.PatientID, Modality = tags.Modality}}.stored)
            local v = rtb({"validate", "TB", "--format", "json", table.unpack(ALL)})
            assert.are.equal(1, v.code, v.output)
            local rows = cjson.decode(v.stdout)
            assert.are.equal(4, #rows, v.stdout)
            for _, row in ipairs(rows) do
                if row.problem == "extra" then
                    assert.are.equal(extra, row.sop_instance_uid)
                else
                    assert.are.equal("missing", row.problem)
                    assert.is_true(deleted[row.sop_instance_uid], row.sop_instance_uid)
                end
            end
            main:delete("/instances/" .. main:lookup(extra)[1].ID)
            local r = backup()
            assert.are.equal(0, r.code, r.output)
            assert.are.equal(0, rtb({"validate", "TB", table.unpack(ALL)}).code)
            assert.are.equal(r.summary.found, main:count())
        end
    end)

    -- Orthanc "staging" plays the source (source "STAGE") in the tests below: unlike
    -- dcmqrscp, it counts a study's instances (the plan's shortcuts need that), and what
    -- a test adds to it can be taken away again, so the other specs see the same data.
    -- Empties it and stores the synthetic files of `patients`; returns its peer and
    -- the number of files.
    local function stage_patients(patients)
        staging:wipe()
        local stage = dicom.peer{aet = tb.STAGING_AET, host = tb.HOST, port = tonumber(tb.STAGING_PORT),
                                 calling_aet = tb.SCU_AET}
        local files = {}
        for line in io.lines(tb.SYNTH_DIR .. "/index.txt") do
            local pid, _, path = line:match("^(%S+) (%S+) (%S+)$")
            if patients[pid] then files[#files + 1] = path end
        end
        assert.are.equal(#files, stage:store(files).stored)
        return stage, #files
    end
    -- Adds a one-instance series to RTB001's study in staging.
    local function add_series(stage)
        local study = stage:find{level = "STUDY", PatientID = "RTB001", StudyInstanceUID = ""}[1].StudyInstanceUID
        assert.are.equal(1, stage:store{dicom.dataset{
            SOPClassUID = "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID = dicom.uid(),
            StudyInstanceUID = study, SeriesInstanceUID = dicom.uid(),
            PatientID = "RTB001", PatientName = "TEST^PATIENT001", Modality = "OT", SeriesNumber = 99}}.stored)
    end

    it("moves only a series added at the source (Orthanc to Orthanc)", function()
        local stage, n = stage_patients{RTB001 = true}
        local first = backup({}, "STAGE")
        assert.are.equal(0, first.code, first.output)
        assert.are.equal(n, first.summary.moved)

        add_series(stage)
        local r = backup({}, "STAGE")
        staging:wipe()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(1, r.summary.moved)
        assert.are.equal(first.summary.found + 1, r.summary.found)
        assert.are.equal(first.summary.found, r.summary.already_present)
    end)

    -- Orthanc answers 0xC000 to any C-MOVE towards a destination it does not know,
    -- whatever the request's form. Before, the run took every refusal for one of the
    -- request's form, kept "no STUDY-level moves, one UID per move" in the journal for
    -- every later run, and said only "N of N instances not in MAIN after 3 retries".
    -- StudyDate may be empty (Type 2), and such a study matches no date range.
    it("backs up studies without a StudyDate: on the first run, every undated_sweep_days after, and for --patient", function()
        local stage = stage_patients{RTB001 = true}
        local function undated_study(patient)
            local study = dicom.uid()
            assert.are.equal(1, stage:store{dicom.dataset{
                SOPClassUID = "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID = dicom.uid(), StudyInstanceUID = study,
                SeriesInstanceUID = dicom.uid(), PatientID = patient, PatientName = "TEST^UNDATED", Modality = "OT"}}.stored)
            return study
        end
        local function in_main(study) return #main:lookup(study) > 0 end
        local first_study = undated_study("RTB001")
        local r = backup({}, "STAGE")
        assert.are.equal(0, r.code, r.output)
        assert.is_true(in_main(first_study), r.output)

        -- Looked for again only once undated_sweep_days (7) have passed, but always for one patient.
        local second = undated_study("RTB002")
        r = backup({}, "STAGE")
        assert.are.equal(0, r.code, r.output)
        assert.is_false(in_main(second))
        -- validate and status --refresh count it all the same: it is not in the backup.
        local v = rtb({"validate", "TB", "STAGE", "--format", "json", table.unpack(ALL)})
        assert.are.equal(1, v.code, v.output)
        local rows = cjson.decode(v.stdout)
        assert.are.same({"missing", second}, {rows[1].problem, rows[1].study}, v.stdout)
        local st = rtb({"status", "TB", "STAGE", "--refresh", "--format", "json", "--since", "2000-01-01"})
        local undated = cjson.decode(st.stdout).sources[1].undated
        assert.are.same({2, 1, 1}, {undated.known, undated.verified, undated.pending}, st.output)
        r = backup({"--patient", "RTB002"}, "STAGE")
        assert.are.equal(0, r.code, r.output)
        assert.is_true(in_main(second), r.output)
        assert.are.equal(1, r.summary.moved)

        -- With undated_sweep_days = 0, never.
        main:wipe()
        os.execute("rm -rf " .. h.quote(state))
        write_env("undated_sweep_days = 0")
        r = backup({}, "STAGE")
        staging:wipe()
        assert.are.equal(0, r.code, r.output)
        assert.is_false(in_main(first_study))
    end)

    it("from a source that cannot send to the archive: says where to look, and learns nothing from it", function()
        stage_patients{RTB001 = true}
        local modalities = staging:get("/modalities?expand")
        staging:delete("/modalities/main")
        local ok, err = pcall(function()
            local r = backup({}, "STAGE")
            assert.are.equal(1, r.code, r.output)
            assert.are.equal(0, r.summary.moved, r.output)
            local hint = "STAGE accepted none of this run's C-MOVEs: check that it knows " .. tb.MAIN_AET ..
                         " (" .. tb.HOST .. " port " .. tb.MAIN_PORT .. ") as a move destination"
            assert.matches(hint, r.summary.hint, 1, true)
            assert.matches("  hint: " .. hint, r.stdout, 1, true)
        end)
        staging:put("/modalities/main", cjson.encode(modalities.main))
        assert(ok, err)
        local facts = rtb{"run", h.write_file(dir .. "/facts.lua", string.format([[
            local j = require("rtbackup.journal").open(%q)
            print(j:fact("peer STAGE", "study_moves"), j:fact("peer STAGE", "move_rung"))]],
            state .. "/TB.journal.sqlite"))}
        assert.are.equal("nil\tnil\n", facts.stdout, facts.output)
        local fixed = backup({}, "STAGE")
        staging:wipe()
        assert.are.equal(0, fixed.code, fixed.output)
    end)

    it("asks the archive for the series of many studies in one C-FIND, not study by study", function()
        local audit_log = dir .. "/audit.jsonl"
        os.remove(audit_log)
        write_env(string.format("audit_log = %q", audit_log))
        local stage, n = stage_patients{RTB001 = true, RTB002 = true}
        -- The archive's series-level C-FINDs (their keys ask for the series' counts), per
        -- run: {for a list of studies, for one study}.
        local function archive_series_finds()
            local lists, one = 0, 0
            for _, e in ipairs(h.audit_events(audit_log)) do
                if e.op == "c-find" and e.peer == "MAIN" and e.keys and e.keys.NumberOfSeriesRelatedInstances then
                    local study = e.keys.StudyInstanceUID
                    if type(study) == "table" or tostring(study):find("\\", 1, true) then
                        lists = lists + 1
                    else
                        one = one + 1
                    end
                end
            end
            os.remove(audit_log)
            return {lists, one}
        end
        local first = backup({}, "STAGE")
        assert.are.equal(0, first.code, first.output)
        assert.are.equal(n, first.summary.moved)
        assert.are.equal(n, main:count())
        -- The empty archive answers the list with nothing; the first study asked alone
        -- confirms that it holds none of them (not that it ignores lists).
        assert.are.same({1, 1}, archive_series_finds())

        -- One series more in one study: found from the same one list.
        add_series(stage)
        local r = backup({}, "STAGE")
        staging:wipe()
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(1, r.summary.moved)
        assert.are.same({1, 0}, archive_series_finds())
    end)

    -- An IMAGE-level C-FIND costs Orthanc a dataset per instance; its REST API lists a
    -- series' children from one query. The proof is the same (its index, by UID), but
    -- only where the http_url is this archive, and only a C-FIND declares anything missing.
    it("verifies through the archive's REST API where it has one, never against another Orthanc", function()
        local audit_log = dir .. "/audit.jsonl"
        local function events()
            local image_finds, rest = 0, 0
            for _, e in ipairs(h.audit_events(audit_log)) do
                if e.op == "c-find" and e.peer == "MAIN" and e.keys and e.keys.SOPInstanceUID == "" then
                    image_finds = image_finds + 1
                elseif e.op == "rest" and e.peer == "MAIN" then
                    assert.are.equal("GET", e.method)
                    assert.truthy(e.patient_id and e.series_uid, cjson.encode(e))
                    rest = rest + 1
                end
            end
            os.remove(audit_log)
            return image_finds, rest
        end
        local total = source_total()
        local function fresh_run(url, run_opts)
            main:wipe()
            os.execute("rm -rf " .. h.quote(state))
            os.remove(audit_log)
            write_env(string.format("audit_log = %q", audit_log),
                      run_opts and {http_url_env_var = "RTB_SPEC_MAIN_URL"} or {http_url = url})
            local r = backup(nil, nil, run_opts)
            assert.are.equal(0, r.code, r.output)
            assert.are.equal(total, r.summary.verified, r.output)
            assert.are.equal(total, main:count())
            return r
        end

        local r = fresh_run(tb.MAIN_HTTP_URL)
        assert.matches("using the archive's REST API", r.output, 1, true)
        local image_finds, rest = events()
        assert.are.equal(0, image_finds)
        assert.is_true(rest > 0)

        -- The names the REST path computes are Orthanc's own.
        local orthanc = require "rtbackup.orthanc"
        local id = main:get("/instances")[1]
        local inst = main:get("/instances/" .. id)
        local series = main:get("/series/" .. inst.ParentSeries)
        local study = main:get("/studies/" .. series.ParentStudy)
        assert.are.equal(id, orthanc.id(study.PatientMainDicomTags.PatientID, study.MainDicomTags.StudyInstanceUID,
                                        series.MainDicomTags.SeriesInstanceUID, inst.MainDicomTags.SOPInstanceUID))

        -- From the environment, with a user and password: used, and neither is shown.
        r = fresh_run(nil, {env = {RTB_SPEC_MAIN_URL = tb.MAIN_HTTP_URL:gsub("//", "//rtbuser:s3cret-pw@")}})
        assert.matches("using the archive's REST API", r.output, 1, true)
        assert.is_nil(r.output:find("s3cret-pw", 1, true))
        assert.is_nil(h.read_file(audit_log):find("s3cret-pw", 1, true))
        image_finds, rest = events()
        assert.are.same({0, true}, {image_finds, rest > 0})

        -- An http_url that is another Orthanc (staging), or that does not answer: over DICOM, and said.
        for _, case in ipairs{{tb.STAGING_HTTP_URL, "another Orthanc than its DICOM settings name"},
                              {"http://" .. tb.HOST .. ":" .. tb.CLOSED_PORT, "REST API gave no answer to GET /system"}} do
            r = fresh_run(case[1])
            assert.matches(case[2], r.output, 1, true)
            image_finds, rest = events()
            assert.is_true(image_finds > 0)
            assert.are.equal(0, rest)
        end
    end)

    it("moves the structure set and CT a backed-up plan references", function()
        write_env('dicom_query_keys = { Modality = "RTPLAN" }')
        local r = backup{"--patient", "RTB001"}
        assert.are.equal(0, r.code, r.output)
        -- the plan (1), its structure set (1), the CT the contours were drawn on (10)
        assert.are.equal(12, main:count())
        assert.are.equal(2, r.summary.references_moved_series)
        assert.are.equal(0, r.summary.references_unresolved)
    end)

    it("spreads the work over runs under max_uids_per_run, moving nothing twice", function()
        write_env("max_uids_per_run = 12")
        local total = source_total()
        local moved, runs = 0, 0
        repeat
            local r = backup()
            assert.are.equal(0, r.code, r.output)
            assert.is_true(r.summary.moved <= 12, "moved " .. r.summary.moved)
            moved, runs = moved + r.summary.moved, runs + 1
        until r.summary.deferred == 0 or runs > 10
        assert.are.equal(total, moved)
        assert.is_true(runs >= 3, "runs: " .. runs)
        assert.are.equal(0, rtb({"validate", "TB", table.unpack(ALL)}).code)
    end)

    it("finishes after kill -9, without moving verified series again", function()
        for _, delay in ipairs{"0.1", "0.25"} do
            main:wipe()
            os.execute("rm -rf " .. h.quote(state))
            local cmd = string.format("%s --config %s backup TB %s >/dev/null 2>&1 & pid=$!; sleep %s; kill -9 $pid 2>/dev/null; wait $pid",
                h.quote(h.bin), h.quote(dir .. "/tb.toml"), table.concat(ALL, " "), delay)
            os.execute(cmd)
            -- What the journal holds as already moved or verified after the kill.
            local script = h.write_file(dir .. "/done.lua", string.format([[
                local ok, journal = pcall(require, "rtbackup.journal")
                local j = journal.open(%q)
                local n = 0
                for _, u in ipairs(j:units("ARIA", {state = {"moved", "verified"}})) do n = n + (u.expected or 0) end
                print(n)
            ]], state .. "/TB.journal.sqlite"))
            local before = h.run{"run", script}
            local already = tonumber(before.stdout:match("%d+")) or 0
            local r = backup()
            assert.are.equal(0, r.code, r.output)
            -- Series the journal has as moved/verified are not moved again; a series the
            -- killed run moved but could not record is found complete by the plan.
            assert.is_true(r.summary.moved <= r.summary.found - already,
                           string.format("moved %d, found %d, already %d", r.summary.moved, r.summary.found, already))
            -- (a series cut short by the kill is moved whole: at least what was missing)
            assert.is_true(r.summary.moved >= r.summary.found - r.summary.already_present)
            assert.are.equal(0, rtb({"validate", "TB", table.unpack(ALL)}).code)
        end
    end)

    it("covers everything exactly once in three concurrent shards", function()
        local total = source_total()
        local cmds = {}
        for i = 1, 3 do
            cmds[i] = string.format("%s --config %s backup TB ARIA --shard %d/3 %s >%s/shard%d.out 2>&1",
                h.quote(h.bin), h.quote(dir .. "/tb.toml"), i, table.concat(ALL, " "), dir, i)
        end
        os.execute(table.concat(cmds, " & ") .. "; wait")
        local moved = 0
        for i = 1, 3 do
            local f = assert(io.open(string.format("%s/TB-ARIA-shard%dof3-last-run.json", state, i)))
            local s = cjson.decode(f:read("a"))
            f:close()
            assert.are.equal(0, s.exit_code)
            moved = moved + s.moved
        end
        -- disjoint (nothing moved twice) and complete
        assert.are.equal(total, moved)
        assert.are.equal(0, rtb({"validate", "TB", table.unpack(ALL)}).code)
    end)

    it("exits 3 while another run holds the lock, naming its PID", function()
        os.execute("mkdir -p " .. h.quote(state))
        local holder = h.write_file(dir .. "/hold.lua", string.format([[
            local lock = require("rtbackup.journal").lock(%q)
            require("rtbackup.task").sleep(5000)
            lock:release()
        ]], state .. "/TB-ARIA.lock"))
        local pidfile = dir .. "/holder.pid"
        os.execute(string.format("%s run %s >/dev/null 2>&1 & echo $! > %s", h.quote(h.bin), h.quote(holder), pidfile))
        local pid = io.open(pidfile):read("l")
        -- until the holder has the lock (its PID is written in the lock file)
        os.execute(string.format("for i in $(seq 200); do grep -q 'pid=%s' %s 2>/dev/null && break; sleep 0.05; done",
                                 pid, h.quote(state .. "/TB-ARIA.lock")))
        local prom = dir .. "/locked.prom"
        os.remove(prom)
        local r = backup{"--metrics-file", prom}
        os.execute("kill " .. pid .. " 2>/dev/null")
        assert.are.equal(3, r.code, r.output)
        assert.matches(pid, r.stderr)
        -- the monitor sees it too
        assert.matches('rtbackup_last_run_exit_code{env="TB",source="ARIA"} 3', h.read_file(prom) or "", 1, true)
    end)

    -- A backup of ARIA, as source `name`, through tests/bench/delay_relay.py (h.relay
    -- opts); `settings` and `source` are extra TOML lines for the settings and the
    -- source. Returns the run and the relay's counts.
    local function backup_through_relay(name, relay_opts, settings, source)
        local rl = h.relay(tb.HOST, tb.ARIA_PORT, relay_opts)
        write_env(string.format('%s\n[TB.sources.%s]\ntype = "aria"\naet = "%s"\nip = "%s"\nport = %s\n%s\n',
                                settings or "", name, tb.ARIA_AET, tb.HOST, rl.port, source or ""))
        local r = backup({}, name)
        local stats = rl.stats()
        rl.stop()
        return r, stats
    end

    -- An archive serving its maximum of associations rejects one more (A-ASSOCIATE-RJ,
    -- rejected-transient): played by a relay in front of ARIA that refuses a third.
    for _, case in ipairs{{"6 at once, fixed", "false"}, {"adaptive up to 6", "true"}} do
        it("backs everything up from a source at its limit of 2 associations (" .. case[1] .. ")", function()
            local total = source_total()
            local r, stats = backup_through_relay("BUSY", {delay_ms = 2, max_associations = 2},
                                                  "adaptive_associations = " .. case[2], "max_associations = 6")
            assert.are.equal(0, r.code, r.output)
            assert.is_true(stats.refused > 0, "the source never refused an association: the test shows nothing")
            assert.matches("the peer admits fewer associations at once; keeping to that[^\n]*associations=[12]", r.stderr)
            assert.are.equal(total, r.summary.verified)
            assert.are.equal(total, main:count())
        end)
    end

    -- An archive that serves one association at a time leaves the others waiting to be
    -- accepted: played by a relay in front of ARIA that relays one connection at a time.
    it("asks fewer moves at once of a source that queues its associations", function()
        local total = source_total()
        local r, stats = backup_through_relay("SERIAL", {delay_ms = 2, serve_at_once = 1})
        assert.are.equal(0, r.code, r.output)
        assert.is_true(stats.queued > 0, "no association waited to be accepted: the test shows nothing")
        assert.matches("associations from=4 [^\n]*to=2 why=\"the peer queues associations\"", r.stderr)
        assert.are.equal(total, r.summary.verified)
        assert.are.equal(total, main:count())
    end)

    -- Before: "stopped while planning: ... accepted none of the 1 proposed presentation
    -- contexts" and exit 1, as if something had been partly done.
    it("exits 2 when the source does not answer C-FIND at all (a storage SCP named as a source)", function()
        local r = rtb({"backup", "TB", "NOFIND", table.unpack(ALL)})
        assert.are.equal(2, r.code, r.output)
        assert.matches("NOFIND does not accept C-FIND (Study Root Query/Retrieve)", r.stdout, 1, true)
    end)

    it("exits 2 when the source rejects the association for an AE title it does not know", function()
        local r = rtb({"backup", "TB", "WRONGAE", table.unpack(ALL)})
        assert.are.equal(2, r.code, r.output)
        assert.matches("Called AE Title Not Recognized", r.stdout, 1, true)
    end)

    it("exits 4 when the source is unreachable", function()
        local r = rtb({"backup", "TB", "DEAD", table.unpack(ALL)})
        assert.are.equal(4, r.code, r.output)
        assert.matches("DEAD", r.output)
    end)

    -- A mock, said so: no testbed peer fails the C-GET of one series while answering
    -- C-FIND; the real peers (dcmqrscp ARIA, Orthanc main) answer everything else.
    it("validate --deep keeps what the listings found when a retrieve fails", function()
        assert.are.equal(0, backup().code)
        local lost
        for _, id in ipairs(main:get("/instances")) do
            local t = main:get("/instances/" .. id .. "/simplified-tags")
            if t.PatientID == "RTB001" then lost = t; main:delete("/instances/" .. id); break end
        end
        local r = rtb{"run", h.write_file(dir .. "/deep.lua", string.format([[
            local dicom, validate = require "rtbackup.dicom", require "rtbackup.validate"
            local peer = function(aet, port) return dicom.peer{aet = aet, host = %q, port = port, calling_aet = %q} end
            local source, target = peer(%q, %d), peer(%q, %d)
            local real_get = target.get
            target.get = function() error(require("rtbackup.error").new{kind = "status", status = 0xA702,
                                                                        message = "C-GET failed (0xA702)"}, 0) end
            local st = source:find{level = "STUDY", StudyInstanceUID = %q, PatientID = ""}[1]
            local r = validate.study(source, target, st, true)
            print(#r.missing, r.missing[1] and r.missing[1].sop_instance_uid, #r.errors, r.compared)]],
            tb.HOST, tb.SCU_AET, tb.ARIA_AET, tonumber(tb.ARIA_PORT), tb.MAIN_AET, tonumber(tb.MAIN_PORT),
            lost.StudyInstanceUID))}
        assert.are.equal(0, r.code, r.output)
        local n, uid, errs = r.stdout:match("^(%d+)\t(%S+)\t(%d+)\t")
        assert.are.same({"1", lost.SOPInstanceUID}, {n, uid}, r.stdout)
        assert.is_true(tonumber(errs) >= 1, r.stdout)
    end)

    it("takes a patient's every study with --patient and no dates, and says when there is none", function()
        -- The testbed's studies are dated January 2026, outside the 90 days a run looks back.
        local r = rtb{"backup", "TB", "ARIA", "--patient", "RTB001"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("TB backup ARIA -> MAIN (every study date)", r.stdout, 1, true)
        local found = tonumber(r.stdout:match("found (%d+) instances"))
        assert.is_true(found > 0, r.stdout)
        assert.are.equal(found, main:count())
        r = rtb{"backup", "TB", "ARIA", "--patient", "NOSUCH"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("the source has no study of patient NOSUCH", r.stdout, 1, true)
    end)

    it("exits 4 when the archive is unreachable, saying so on stdout, and checks no reference", function()
        write_env(nil, {port = tb.CLOSED_PORT})
        local r = backup()
        assert.are.equal(4, r.code, r.output)
        assert.matches("stopped while planning: C-FIND on MAIN (" .. tb.MAIN_AET .. "@" .. tb.HOST .. ":" ..
                       tb.CLOSED_PORT .. "): cannot open association", r.stdout, 1, true)
        assert.matches("references not checked (a peer could not be used)", r.stdout, 1, true)
        assert.is_nil(r.stdout:find("unresolved", 1, true), r.stdout)
        assert.is_true(r.summary.references_not_checked)
    end)

    it("exits 5 outside the source's time window, and runs with --ignore-window", function()
        -- A one-minute window twelve hours from now.
        local now = os.date("*t")
        local h1 = (now.hour + 12) % 24
        write_env(string.format('window = "%02d:00-%02d:01"', h1, h1))
        local r = backup()
        assert.are.equal(5, r.code, r.output)
        assert.are.equal(0, main:count())
        r = backup{"--ignore-window"}
        assert.are.equal(0, r.code, r.output)
    end)
end)

describe("rtbackup restore", function()
    it("restores a patient from the archive to an empty destination, verified there", function()
        assert.are.equal(0, backup().code)
        staging:wipe()
        local r = rtb{"restore", "TB", "--to", "STAGING", "--patient", "RTB002"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("restored 13 of 13 instances", r.stdout)
        assert.are.equal(13, staging:count())
    end)

    it("refuses to restore into the archive it restores from", function()
        local r = rtb{"restore", "TB", "--to", "MAIN", "--patient", "RTB002"}
        assert.are.equal(2, r.code, r.output)
        assert.matches("--to MAIN is the archive restored from (MAIN)", r.output, 1, true)
    end)

    -- Before: "restored 13 of 13 instances ... (not verified: no C-FIND); 0 missing
    -- there", a count of missing instances nobody had counted.
    it("to a destination that answers no C-FIND: says what the archive reported, and that it is not verified", function()
        assert.are.equal(0, backup().code)
        local r = rtb{"restore", "TB", "--to", "SINK", "--patient", "RTB002"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("restored 13 of 13 instances from MAIN to SINK, as MAIN reported; not verified: SINK answers no C-FIND",
                       r.stdout, 1, true)
        assert.is_nil(r.stdout:find("missing", 1, true), r.stdout)
    end)

    -- Before: "restored 0 of 13 instances ...; 0 missing there" and exit 1, with
    -- Orthanc's bare 0xC000 above it.
    it("to a destination the archive does not know: says no study was restored, and where to look", function()
        assert.are.equal(0, backup().code)
        local r = rtb{"restore", "TB", "--to", "UNKNOWN", "--patient", "RTB002"}
        assert.are.equal(1, r.code, r.output)
        assert.matches("restored 0 of 13 instances from MAIN to UNKNOWN; 1 of 1 studies not restored (see above)",
                       r.stdout, 1, true)
        assert.matches("hint: MAIN moved none of the studies: check that it knows NOT_IN_MAIN (" .. tb.HOST ..
                       " port " .. tb.STORESCP_PORT .. ") as a move destination", r.stderr, 1, true)
    end)

    it("lists and moves nothing with --dry-run", function()
        assert.are.equal(0, backup().code)
        staging:wipe()
        local r = rtb{"restore", "TB", "--to", "STAGING", "--patient", "RTB002", "--dry-run"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("would restore RTB002", r.stdout)
        assert.are.equal(0, staging:count())
    end)

    it("is a usage error without --patient or --study", function()
        assert.are.equal(2, rtb{"restore", "TB", "--to", "STAGING"}.code)
    end)

    it("refuses, from a script too, a blank patient or a study that is no UID: they would match everything", function()
        local restore = require "rtbackup.restore"
        for _, opts in ipairs{{study = "", to = "STAGING"}, {study = "1.2.*", to = "STAGING"},
                              {patient = " ", to = "STAGING"}, {to = "STAGING"}} do
            local ok, err = pcall(restore.run, {name = "TB", default_backup = "MAIN"}, opts)
            assert.is_false(ok)
            assert.are.equal("usage", err.kind, tostring(err.message))
            assert.matches("^restore: ", err.message)
        end
    end)

    -- C-FIND reads '*' in a PatientID as a wildcard: the archive answers for both
    -- patients below, and only the one named may reach the destination.
    it("restores only the patient named, though the archive's match also takes others", function()
        main:wipe()
        staging:wipe()
        local archive = dicom.peer{aet = tb.MAIN_AET, host = tb.HOST, port = tonumber(tb.MAIN_PORT),
                                   calling_aet = tb.SCU_AET}
        local function instance(patient)
            return dicom.dataset{SOPClassUID = "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID = dicom.uid(),
                                 StudyInstanceUID = dicom.uid(), SeriesInstanceUID = dicom.uid(),
                                 PatientID = patient, PatientName = "TEST^WILDCARD", Modality = "OT"}
        end
        assert.are.equal(2, archive:store{instance("RTB*7"), instance("RTBX7")}.stored)
        local r = rtb{"restore", "TB", "--to", "STAGING", "--patient", "RTB*7"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("restored 1 of 1 instances", r.stdout)
        assert.matches("studies_left_out=1", r.stderr)
        local patients = staging:get("/patients")
        assert.are.equal(1, #patients)
        assert.are.equal("RTB*7", staging:get("/patients/" .. patients[1]).MainDicomTags.PatientID)
        main:wipe()
        staging:wipe()
    end)
end)

describe("rtbackup query", function()
    -- An archive may ignore a key it does not match on (dcmqrscp: anything outside its
    -- index) and answer every instance: the answers are checked against the day asked.
    it("lists only the treatment records of the treatment date asked for", function()
        staging:wipe()
        local stage = dicom.peer{aet = tb.STAGING_AET, host = tb.HOST, port = tonumber(tb.STAGING_PORT),
                                 calling_aet = tb.SCU_AET}
        local study, uids = dicom.uid(), {}
        local function store(sop_class, modality, treatment_date)
            local uid = dicom.uid()
            assert.are.equal(1, stage:store{dicom.dataset{
                SOPClassUID = sop_class, SOPInstanceUID = uid, StudyInstanceUID = study, StudyDate = "20261120",
                SeriesInstanceUID = dicom.uid(), PatientID = "RTBQ01", PatientName = "TEST^QUERY", Modality = modality,
                TreatmentDate = treatment_date}}.stored)
            return uid
        end
        uids.ct = store("1.2.840.10008.5.1.4.1.1.2", "CT")
        uids.on_day = store("1.2.840.10008.5.1.4.1.1.481.4", "RTRECORD", "20261125")
        uids.day_before = store("1.2.840.10008.5.1.4.1.1.481.4", "RTRECORD", "20261124")
        local r = rtb{"query", "TB", "STAGE", "--mrn", "RTBQ01", "--treatment-date", "2026-11-25", "--format", "json"}
        staging:wipe()
        assert.are.equal(0, r.code, r.output)
        local rows = cjson.decode(r.stdout)
        assert.are.equal(1, #rows, r.stdout)
        assert.are.same({uids.on_day, "20261125"}, {rows[1].SOPInstanceUID, rows[1].TreatmentDate})
    end)

    it("lists a patient's series as JSON", function()
        local r = rtb{"query", "TB", "--mrn", "RTB003", "--level", "SERIES", "--format", "json"}
        assert.are.equal(0, r.code, r.output)
        local rows = cjson.decode(r.stdout)
        assert.are.equal(4, #rows)
        for _, row in ipairs(rows) do assert.are.equal("RTB003", row.PatientID) end
    end)
end)
