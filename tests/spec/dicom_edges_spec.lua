-- requires: testbed
-- C-STORE and C-GET against files and peers the project did not write: pydicom's corpus
-- of real-world files (every transfer syntax, a truncated file, a SOP Class UID encoded
-- as UN; tests/testbed/corpus.py), Orthanc, dcmqrscp (CORPUS, accepting every syntax)
-- and storescp. Nothing may be lost, refused silently or changed.
local h = require "helpers"
local cjson = require "cjson"
local dicom = require "rtbackup.dicom"

local tb = h.testbed()
local PY = "/usr/bin/python3"
local corpus_py = h.source .. "/tests/testbed/corpus.py"
local orthanc = h.orthanc(tb.MAIN_HTTP_URL)

local function peer_args(aet, port)
    return {"--aet", tb.SCU_AET, "--aec", aet, "--host", tb.HOST, "--port", tostring(port)}
end
local function cmd(base, ...)
    local args = {...}
    for _, a in ipairs(base) do args[#args + 1] = a end
    return args
end

-- The corpus index: file, kind (good | unreadable | un_vr), transfer syntax and its
-- name, SOP class, SOP Instance UID, series.
local corpus = {}
do
    local header
    for line in io.lines(tb.CORPUS_DIR .. "/index.tsv") do
        local fields = {}
        for f in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = f end
        if not header then
            header = fields
        else
            local row = {}
            for i, k in ipairs(header) do row[k] = fields[i] end
            corpus[#corpus + 1] = row
        end
    end
end
local function corpus_rows(kind)
    local out = {}
    for _, r in ipairs(corpus) do if r.kind == kind then out[#out + 1] = r end end
    return out
end
local good = corpus_rows("good")
local study_uid = dicom.read(tb.CORPUS_DIR .. "/" .. good[1].file).StudyInstanceUID

local function sh(command)
    local p = io.popen(command .. " 2>&1")
    local out = p:read("a")
    local ok, _, code = p:close()
    return out, ok and 0 or code
end

local function copy(src, dst)
    local f = assert(io.open(src, "rb"))
    local data = f:read("a")
    f:close()
    h.write_file(dst, data)
end

-- The testbed's synthetic instances: their file names, sorted.
local function synthetic_names()
    local names = {}
    for name in io.popen("ls " .. h.quote(tb.SYNTH_DIR)):lines() do
        if name:match("%.dcm$") then names[#names + 1] = name end
    end
    table.sort(names)
    return names
end

-- Copies the synthetic instances into dir (under their own names); returns how many.
local function copy_synthetic(dir)
    local names = synthetic_names()
    for _, name in ipairs(names) do copy(tb.SYNTH_DIR .. "/" .. name, dir .. "/" .. name) end
    return #names
end

-- corpus.py compare: {uid = {verdict, detail}} for every good corpus instance.
local function compare(dir)
    local out = sh(string.format("%s %s compare %s %s", PY, h.quote(corpus_py),
                                 h.quote(tb.CORPUS_DIR .. "/index.tsv"), h.quote(dir)))
    local verdicts = {}
    for uid, verdict, detail in out:gmatch("([%d%.]+)\t(%S+)\t([^\n]*)") do
        verdicts[uid] = {verdict = verdict, detail = detail}
    end
    return verdicts, out
end

local dirs = {}
local function tmpdir()
    local d = h.tmpdir()
    dirs[#dirs + 1] = d
    return d
end
teardown(function()
    orthanc:wipe()
    for _, d in ipairs(dirs) do os.execute("rm -rf " .. h.quote(d)) end
end)

describe("rtbackup store of a folder with a truncated file in the middle", function()
    it("stores every good file, names the bad one as unreadable and exits 1", function()
        orthanc:wipe()
        local dir = tmpdir()
        local names = synthetic_names()
        for i, name in ipairs(names) do
            copy(tb.SYNTH_DIR .. "/" .. name, string.format("%s/%03d.dcm", dir, 2 * i))
        end
        -- sorts in the middle of the folder
        local bad = string.format("%s/%03d.dcm", dir, 2 * (#names // 2) + 1)
        copy(tb.CORPUS_DIR .. "/mr_truncated.dcm", bad)

        local r = h.run(cmd(peer_args(tb.MAIN_AET, tb.MAIN_PORT), "store", "--filepath", dir, "--format", "json"))
        assert.are.equal(1, r.code, r.output)
        local summary = cjson.decode(r.stdout)[1]
        assert.are.same({stored = #names, refused = 0, unreadable = 1, not_sent = 0, failed = 1}, summary)
        assert.matches("unreadable: " .. bad:gsub("%p", "%%%0") .. ": cannot be read whole %(I/O suspension or premature end of stream%)",
                       r.stderr)
        assert.are.equal(#names, orthanc:count())
    end)

    it("follows linked directories, and names a dangling link as unreadable without stopping", function()
        orthanc:wipe()
        local dir, elsewhere = tmpdir(), tmpdir()
        local names = synthetic_names()
        copy(tb.SYNTH_DIR .. "/" .. names[1], dir .. "/001.dcm")
        copy(tb.SYNTH_DIR .. "/" .. names[2], elsewhere .. "/002.dcm")
        assert.is_true(os.execute(string.format("ln -s %s %s && ln -s /nonexistent/x.dcm %s && ln -s %s %s",
                                                h.quote(elsewhere), h.quote(dir .. "/linked"),
                                                h.quote(dir .. "/dangling.dcm"), h.quote(dir), h.quote(dir .. "/loop"))))
        local r = h.run(cmd(peer_args(tb.MAIN_AET, tb.MAIN_PORT), "store", "--filepath", dir, "--format", "json"))
        assert.are.equal(1, r.code, r.output)
        assert.are.same({stored = 2, refused = 0, unreadable = 1, not_sent = 0, failed = 1}, cjson.decode(r.stdout)[1])
        assert.matches("unreadable: " .. (dir .. "/dangling.dcm"):gsub("%p", "%%%0"), r.stderr)
        assert.are.equal(2, orthanc:count())
        orthanc:wipe()
    end)

    it("gives each item its outcome in the Lua result", function()
        local main = dicom.peer{aet = tb.MAIN_AET, host = tb.HOST, port = tonumber(tb.MAIN_PORT),
                                calling_aet = tb.SCU_AET}
        local r = main:store{tb.CORPUS_DIR .. "/mr_truncated.dcm", tb.CORPUS_DIR .. "/mr_rle.dcm",
                             tb.CORPUS_DIR .. "/index.tsv"}
        assert.are.same({"unreadable", "stored", "unreadable"},
                        {r.items[1].outcome, r.items[2].outcome, r.items[3].outcome})
        assert.are.equal(1, r.stored)
        assert.are.equal(2, r.unreadable)
        assert.are.equal(2, r.failed)
        assert.are.equal("MR Image Storage", r.items[2].sop_class)
        assert.are.equal("RLE Lossless", r.items[2].transfer_syntax)
        assert.are.equal(1, r.associations)
    end)
end)

describe("rtbackup store of an export with a DICOMDIR", function()
    local PYDICOM_FILES = "/usr/lib/python3/dist-packages/pydicom/data/test_files/"

    it("skips the DICOMDIR, saying so, and stores the instances (exit 0)", function()
        orthanc:wipe()
        local dir = tmpdir()
        copy(PYDICOM_FILES .. "dicomdirtests/DICOMDIR", dir .. "/DICOMDIR")
        os.execute("mkdir -p " .. h.quote(dir .. "/DICOM"))
        copy(PYDICOM_FILES .. "CT_small.dcm", dir .. "/DICOM/IM0001")
        local r = h.run(cmd(peer_args(tb.MAIN_AET, tb.MAIN_PORT), "store", "--filepath", dir, "--format", "json"))
        assert.are.equal(0, r.code, r.output)
        assert.matches("skipped: " .. (dir .. "/DICOMDIR"):gsub("%p", "%%%0") .. ": a DICOMDIR", r.stderr)
        assert.are.same({stored = 1, refused = 0, unreadable = 0, not_sent = 0, failed = 0}, cjson.decode(r.stdout)[1])
        assert.are.equal(1, orthanc:count())

        -- Named itself, it is no instance: unreadable, never sent.
        r = h.run(cmd(peer_args(tb.MAIN_AET, tb.MAIN_PORT), "store", "--filepath", dir .. "/DICOMDIR"))
        assert.are.equal(1, r.code, r.output)
        assert.matches("unreadable: [^\n]*DICOMDIR: a DICOMDIR %(the index of a medium%), not an instance", r.stderr)
        orthanc:wipe()
    end)

    -- A real-world file whose SOP Class and Instance UIDs are only in its meta header
    -- (storescu refuses it too): sent, it would be a dataset no archive can index by them.
    it("does not send a file whose dataset lacks its own SOP UIDs", function()
        local r = h.run(cmd(peer_args(tb.MAIN_AET, tb.MAIN_PORT), "store", "--filepath",
                            PYDICOM_FILES .. "no_meta_group_length.dcm"))
        assert.are.equal(1, r.code, r.output)
        assert.matches("unreadable: [^\n]*no_meta_group_length%.dcm: not a DICOM instance %(no SOP Class UID in its dataset%)",
                       r.stderr)
        assert.are.equal(0, orthanc:count())
    end)
end)

describe("rtbackup store over several associations", function()
    -- A relay in front of the peer (tests/bench/delay_relay.py) counts the DICOM
    -- associations open at once; its 5 ms each way make the batches overlap, as they do
    -- across a network.
    local function relay(port) return h.relay(tb.HOST, port) end
    -- The synthetic instances with a truncated file sorting in the middle.
    local function folder()
        local dir = tmpdir()
        local names = synthetic_names()
        for i, name in ipairs(names) do copy(tb.SYNTH_DIR .. "/" .. name, string.format("%s/%03d.dcm", dir, 2 * i)) end
        local bad = string.format("%s/%03d.dcm", dir, 2 * (#names // 2) + 1)
        copy(tb.CORPUS_DIR .. "/mr_truncated.dcm", bad)
        return dir, #names, bad
    end
    local function store_through(r, dir, ...)
        return h.run(cmd(peer_args(tb.MAIN_AET, r.port), "store", "--filepath", dir, "--format", "json", ...))
    end
    local function each_outcome_as_one_association(r, n, bad)
        assert.are.equal(1, r.code, r.output)
        assert.are.same({stored = n, refused = 0, unreadable = 1, not_sent = 0, failed = 1}, cjson.decode(r.stdout)[1])
        assert.matches("unreadable: " .. bad:gsub("%p", "%%%0") .. ": cannot be read whole %(I/O suspension or premature end of stream%)",
                       r.stderr)
        assert.are.equal(n, orthanc:count())
    end

    it("with --associations 1 uses one association, as storescu", function()
        orthanc:wipe()
        local dir, n, bad = folder()
        local rl = relay(tb.MAIN_PORT)
        local r = store_through(rl, dir, "--associations", "1")
        local stats = rl.stats()
        rl.stop()
        each_outcome_as_one_association(r, n, bad)
        assert.are.same({1, 1}, {stats.associations, stats.peak})
    end)

    it("refuses an --associations or --max-reconnects that is no whole number, naming it, before any association", function()
        local dir = folder()
        local rl = relay(tb.MAIN_PORT)
        for _, bad in ipairs{{"--associations", "0"}, {"--associations", "four"}, {"--associations", "2.5"},
                             {"--max-reconnects", "-1"}} do
            local r = store_through(rl, dir, bad[1] .. "=" .. bad[2]) -- "=": "-1" is no option
            assert.are.equal(2, r.code, r.output)
            local said = string.format("%s: expected a whole number of at least ", bad[1])
            assert.matches(said:gsub("%p", "%%%0") .. "%d, got '" .. bad[2]:gsub("%p", "%%%0") .. "'", r.stderr)
        end
        local stats = rl.stats()
        rl.stop()
        assert.are.equal(0, stats.associations)
    end)

    it("with --associations 4 keeps 4 open at once, every file with its own outcome", function()
        orthanc:wipe()
        local dir, n, bad = folder()
        local rl = relay(tb.MAIN_PORT)
        local r = store_through(rl, dir, "--associations", "4")
        local stats = rl.stats()
        rl.stop()
        each_outcome_as_one_association(r, n, bad)
        assert.are.equal(4, stats.peak)
        -- batches of 8 consecutive files, one association each
        assert.are.equal(math.ceil((n + 1) / 8), stats.associations)
    end)

    it("by default adapts several at once, below the peer's max_associations (8), and logs it", function()
        orthanc:wipe()
        local dir, n, bad = folder()
        local rl = relay(tb.MAIN_PORT)
        local r = store_through(rl, dir)
        local stats = rl.stats()
        rl.stop()
        each_outcome_as_one_association(r, n, bad)
        assert.is_true(stats.peak >= 2 and stats.peak <= 8, "peak " .. stats.peak)
        -- it starts at 4 and, the peer keeping up, tries one more
        assert.matches("associations from=4 [^\n]*to=5 why=\"throughput grew\"", r.stderr)
    end)

    it("by default goes down to one association at a peer that serves one at a time", function()
        -- The testbed's storescp serves one association at a time (no --fork): the
        -- others wait in its queue, so more at once would only wait longer. Enough
        -- files for the pace to see the queue twice (4 -> 2 -> 1) on a loaded machine.
        local dir = tmpdir()
        local n = 300
        local uids = {}
        for i = 1, n do
            uids[i] = dicom.uid("spec", "serial", i)
            dicom.dataset{SOPClassUID = "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID = uids[i], PatientID = "SERIAL01",
                          Modality = "OT", StudyInstanceUID = dicom.uid("spec", "serial"),
                          SeriesInstanceUID = dicom.uid("spec", "serial", "series"), InstanceNumber = i,
                          ImageComments = string.rep("x", 4000)}:save(string.format("%s/%03d.dcm", dir, i))
        end
        local r = h.run(cmd(peer_args("STORESCP", tb.STORESCP_PORT), "store", "--filepath", dir, "--format", "json"))
        assert.are.equal(0, r.code, r.output)
        assert.are.same({stored = n, refused = 0, unreadable = 0, not_sent = 0, failed = 0}, cjson.decode(r.stdout)[1])
        assert.matches("associations from=%d+ [^\n]*to=1 why=\"the peer queues associations\"", r.stderr)
        -- storescp names a file by its modality (SC: secondary capture) and instance UID
        local stored = {}
        for name in sh("ls " .. h.quote(tb.STORESCP_DIR)):gmatch("[^\n]+") do stored[name] = true end
        for _, uid in ipairs(uids) do assert.is_true(stored["SC." .. uid], "not in the storescp's folder: " .. uid) end
    end)

    it("stores everything into a peer that refuses more than 2 associations at once", function()
        local dir = tmpdir()
        local out = tmpdir()
        os.execute("mkdir -p " .. h.quote(dir .. "/a") .. " " .. h.quote(dir .. "/b"))
        local n = copy_synthetic(dir .. "/a")
        -- the same instances again: the peer overwrites them, every file counts
        sh("cp " .. h.quote(dir) .. "/a/*.dcm " .. h.quote(dir .. "/b/"))
        local scp = dicom.listen{aet = "CAPPED", port = 0, dir = out, max_associations = 2}
        local r = h.run(cmd(peer_args("CAPPED", scp:port()), "store", "--filepath", dir, "--associations", "6",
                            "--format", "json"))
        scp:stop()
        local s = scp:stats()
        assert.are.equal(0, r.code, r.output)
        assert.are.same({stored = 2 * n, refused = 0, unreadable = 0, not_sent = 0, failed = 0}, cjson.decode(r.stdout)[1])
        assert.is_true(s.refused > 0, "the peer never refused an association: the test shows nothing")
        assert.are.equal(2 * n, s.stored)
    end)
end)

describe("rtbackup store to a peer that fails mid-run", function()
    -- A real storescp on the test SCP port: --fork serves each association in a child
    -- process, and --exec-on-reception --exec-sync runs abort_once.sh after the first
    -- file, which kills -9 that child (as a crashing archive would): the association is
    -- reset mid-run, the listener lives on.
    local function start_storescp(dir, extra)
        local pidfile = dir .. "/pid"
        os.execute(string.format("cd %s && (TCP_NODELAY=1 storescp --fork -aet FLAKY -od %s -uf %s %s >%s 2>&1 & echo $! >%s)",
                                 h.quote(dir), h.quote(dir .. "/out"), extra, tb.TEST_SCP_PORT,
                                 h.quote(dir .. "/storescp.log"), h.quote(pidfile)))
        local pid = io.open(pidfile):read("l")
        for _ = 1, 50 do
            if select(2, sh(string.format("echoscu -to 2 -aet PROBE -aec FLAKY %s %s", tb.HOST, tb.TEST_SCP_PORT))) == 0 then
                break
            end
            sh("sleep 0.1")
        end
        return pid
    end
    local function synthetic_copy()
        local dir = tmpdir()
        os.execute("mkdir -p " .. h.quote(dir .. "/in") .. " " .. h.quote(dir .. "/out"))
        return dir, copy_synthetic(dir .. "/in")
    end

    it("reopens the association and stores everything", function()
        local dir, n = synthetic_copy()
        h.write_file(dir .. "/abort_once.sh", [[
#!/bin/sh
# mkdir is atomic: with several associations at once, only the first file aborts one.
mkdir "$1/aborted" 2>/dev/null || exit 0
p=$PPID
while [ "$p" -gt 1 ]; do
    if [ "$(cat /proc/$p/comm 2>/dev/null)" = storescp ]; then kill -9 "$p"; exit 0; fi
    p=$(cut -d' ' -f4 /proc/$p/stat)
done
]])
        os.execute("chmod +x " .. h.quote(dir .. "/abort_once.sh"))
        local pid = start_storescp(dir, string.format("--exec-sync -xcr %s",
                                                      h.quote(dir .. "/abort_once.sh " .. dir)))
        local r = h.run(cmd(peer_args("FLAKY", tb.TEST_SCP_PORT), "store", "--filepath", dir .. "/in", "--format", "json"))
        os.execute("kill " .. pid)
        assert.is_true(io.open(dir .. "/aborted") ~= nil, "the peer never failed: " .. r.output)
        assert.are.equal(0, r.code, r.output)
        assert.matches("1 association was lost and reopened", r.stderr)
        local summary = cjson.decode(r.stdout)[1]
        assert.are.equal(n, summary.stored)
        assert.are.equal(0, summary.failed)
        local stored = select(1, sh("ls " .. h.quote(dir .. "/out") .. " | wc -l"))
        assert.are.equal(n, tonumber(stored))
    end)

    it("trips the breaker when every association aborts, and reports the rest not sent", function()
        local dir, n = synthetic_copy()
        -- storescp --abort-after aborts each association after the first C-STORE-RQ.
        local pid = start_storescp(dir, "--abort-after")
        local r = h.run(cmd(peer_args("FLAKY", tb.TEST_SCP_PORT), "store", "--filepath", dir .. "/in",
                            "--max-reconnects", "2", "--format", "json"))
        os.execute("kill " .. pid)
        assert.are.equal(1, r.code, r.output)
        local summary = cjson.decode(r.stdout)[1]
        assert.are.equal(0, summary.stored)
        assert.are.equal(n, summary.not_sent)
        assert.matches("the peer kept failing, the rest was not sent", r.stderr)
        assert.matches("not sent: .*: not sent: the peer failed 3 associations in a row", r.stderr)
    end)
end)

describe("refusals", function()
    it("name the SOP class and transfer syntax, also for a SOP Class UID encoded as UN", function()
        -- The testbed's storescp accepts uncompressed syntaxes only.
        local r = h.run(cmd(peer_args(tb.STORESCP_AET, tb.STORESCP_PORT), "store", "--filepath", tb.CORPUS_DIR,
                            "--format", "json"))
        assert.are.equal(1, r.code, r.output)
        assert.matches("refused: [^\n]*/mr_rle%.dcm: the peer refused MR Image Storage in RLE Lossless", r.stderr)
        assert.matches("refused: [^\n]*/mr_rle_sopclass_un%.dcm: the peer refused MR Image Storage in RLE Lossless",
                       r.stderr)
        assert.matches("refused: [^\n]*/sc_j2k_lossy%.dcm: the peer refused Secondary Capture Image Storage in JPEG 2000",
                       r.stderr)
        local summary = cjson.decode(r.stdout)[1]
        assert.are.equal(1 + #corpus_rows("unreadable"), summary.unreadable) -- and index.tsv
        assert.are.equal(0, summary.not_sent)
    end)
end)

describe("an archive at its limit of associations", function()
    -- The relay admits one association and refuses the next (A-ASSOCIATE-RJ,
    -- rejected-transient, local limit exceeded); a bare TCP connection holds the one
    -- place for 0.6 s, as another client of the archive would.
    -- Waits until the relay has counted the holding connection (a fixed pause lost the
    -- race on a loaded machine: the C-FIND came first and took the place).
    local function hold(rl, seconds)
        local before = rl.stats().connections or 0
        os.execute(string.format("%s -c 'import socket,time; s=socket.create_connection((\"%s\", %s)); time.sleep(%s)' &",
                                 PY, tb.HOST, rl.port, seconds))
        for _ = 1, 100 do
            local ok, stats = pcall(rl.stats)
            if ok and (stats.connections or 0) > before then return end
            sh("sleep 0.05")
        end
        error("the holding connection never reached the relay")
    end

    it("is asked again: a C-FIND refused while it is busy gets its answer", function()
        local rl = h.relay(tb.HOST, tb.MAIN_PORT, {delay_ms = 0, max_associations = 1})
        hold(rl, 0.6)
        local r = h.run(cmd(peer_args(tb.MAIN_AET, rl.port), "find", "--query-level", "PATIENT", "--format", "json"))
        local stats = rl.stats()
        rl.stop()
        assert.are.equal(0, r.code, r.output)
        assert.is_true(stats.refused > 0, "the relay never refused: the test shows nothing")
        assert.are.equal("table", type(cjson.decode(r.stdout)))
    end)

    it("that stays busy ends the C-FIND with the archive's own reason, after about 3 s", function()
        local rl = h.relay(tb.HOST, tb.MAIN_PORT, {delay_ms = 0, max_associations = 1})
        hold(rl, 8)
        local r = h.run(cmd(peer_args(tb.MAIN_AET, rl.port), "find", "--query-level", "PATIENT"))
        local stats = rl.stats()
        rl.stop()
        assert.are.equal(1, r.code, r.output) -- the DICOM tools' "failure"
        assert.matches("Rejected Transient[^\n]*Local Limit Exceeded", r.stderr)
        assert.are.equal(6, stats.refused) -- asked 1 + 5 times
    end)
end)

describe("rtbackup get of every corpus transfer syntax", function()
    local function get(aet, port)
        local dir = tmpdir()
        local r = h.run(cmd(peer_args(aet, port), "get", "--study-uid", study_uid, "--out-dir", dir, "--format", "json"))
        return r, dir
    end

    it("from Orthanc: every instance as stored, pixel bytes identical", function()
        orthanc:wipe()
        local r = h.run(cmd(peer_args(tb.MAIN_AET, tb.MAIN_PORT), "store", "--filepath", tb.CORPUS_DIR, "--format", "json"))
        local summary = cjson.decode(r.stdout)[1]
        assert.are.equal(#good, summary.stored, r.output) -- compressed files kept their syntax
        local dir
        r, dir = get(tb.MAIN_AET, tb.MAIN_PORT)
        assert.are.equal(0, r.code, r.output)
        local verdicts, raw = compare(dir)
        for _, row in ipairs(good) do
            local v = verdicts[row.sop_instance_uid]
            assert.is_truthy(v, row.file .. " missing from the comparison:\n" .. raw)
            assert.are.equal("same", v.verdict, row.file .. ": " .. v.detail)
        end
        local result = cjson.decode(r.stdout)[1]
        assert.are.equal(#good, result.received)
        assert.are.equal(0, result.transcoded)
    end)

    it("from dcmqrscp: compressed instances as stored; uncompressed ones in explicit VR little endian", function()
        local r, dir = get(tb.CORPUS_AET, tb.CORPUS_PORT)
        assert.are.equal(0, r.code, r.output)
        local verdicts, raw = compare(dir)
        -- dcmqrscp answers neither TransferSyntaxUID nor SOPClassUID in C-FIND, sends on the
        -- first context accepted for the class and converts among uncompressed syntaxes
        -- itself (values unchanged); so what it stores in implicit VR, big endian or
        -- deflated arrives in explicit VR little endian, the syntax of the first round.
        -- Compressed data it cannot convert: it arrives in the round leading with its syntax.
        local converted = {["1.2.840.10008.1.2"] = true, ["1.2.840.10008.1.2.2"] = true,
                           ["1.2.840.10008.1.2.1.99"] = true}
        for _, row in ipairs(good) do
            local v = verdicts[row.sop_instance_uid]
            assert.is_truthy(v, row.file .. " missing from the comparison:\n" .. raw)
            if converted[row.transfer_syntax] then
                assert.are.equal("transcoded", v.verdict, row.file)
                assert.matches("arrived ExplicitVRLittleEndian$", v.detail)
            else
                assert.are.equal("same", v.verdict, row.file .. ": " .. v.detail)
            end
        end
    end)

    it("validate --deep compares dcmqrscp's corpus with Orthanc's: every instance, none different", function()
        -- Orthanc holds the corpus since the test above; digests are over the content, so
        -- dcmqrscp's uncompressed conversions do not count as differences, and no
        -- compressed instance may be missing or decompressed on either side.
        local dir = tmpdir()
        local envfile = h.write_file(dir .. "/tb.toml", h.env_toml(tb, "TB", {
            description = "testbed", default_source = "CORPUS", default_backup = "MAIN",
            script_ae = {aet = tb.SCU_AET, port = 11113},
            sources = {{alias = "CORPUS", type = "aria", peer = "CORPUS"}},
            targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
            settings = {state_dir = dir .. "/state"}}))
        local r = h.run{"--config", envfile, "validate", "TB", "--study", study_uid, "--since", "1900-01-01",
                        "--until", "2099-12-31", "--deep", "--format", "json"}
        assert.are.equal(0, r.code, r.output)
        assert.matches(string.format("%d instances; 0 missing, 0 extra, %d compared, 0 different", #good, #good),
                       r.stderr)
    end)

    it("gets one instance by SOP Instance UID through the Lua API, as stored", function()
        local main = dicom.peer{aet = tb.MAIN_AET, host = tb.HOST, port = tonumber(tb.MAIN_PORT),
                                calling_aet = tb.SCU_AET}
        local row
        for _, r in ipairs(good) do if r.file == "sc_j2k_lossy.dcm" then row = r end end
        local source = dicom.read(tb.CORPUS_DIR .. "/" .. row.file)
        local got = {}
        local r = main:get({level = "IMAGE", StudyInstanceUID = study_uid, SeriesInstanceUID = row.series_uid,
                            SOPInstanceUID = row.sop_instance_uid}, function(ds) got[#got + 1] = ds:digest() end)
        assert.are.equal(0, r.failed)
        assert.are.same({source:digest()}, got)
    end)
end)

-- A C-GET peer that sends, under an announced SOP Instance UID, the data set of another
-- instance. No archive of the testbed does that (each reads both from one file), so a
-- few lines of python3-odil play the peer: they answer the plan's C-FIND with nothing
-- (the retrieve then goes as asked), then send one wrong and one right instance. odil
-- listens afresh for each association, so a relay with a real backlog stands in front
-- (the C-GET's connection would otherwise race odil's listening again).
describe("rtbackup get from a peer that sends another instance than it announces", function()
    it("refuses that one (0xA900), keeps it nowhere, keeps the right one, and exits 1", function()
        local dir = tmpdir()
        local port = h.free_port()
        local script = h.write_file(dir .. "/wrong_instance_get.py", [==[
import json, os, select, socket, sys, time
import odil
public = int(sys.argv[1])
spare = socket.socket()
spare.bind(("127.0.0.1", 0))
port = spare.getsockname()[1]  # odil's, behind the relay
spare.close()
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", public))
listener.listen(8)
odil_pid = os.fork()
if odil_pid == 0:
    listener.close()
else:
    for _ in range(2):  # relay each connection to odil, once odil listens again
        conn, _addr = listener.accept()
        deadline = time.monotonic() + 10
        while True:
            try:
                inner = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        ends = {conn: inner, inner: conn}
        while ends:
            ready, _, _ = select.select(list(ends), [], [], 30)
            if not ready:
                break
            data = ready[0].recv(65536)
            if not data:
                break
            ends[ready[0]].sendall(data)
        conn.close()
        inner.close()
    os.waitpid(odil_pid, 0)
    sys.exit(0)
from odil_ct import CT, ct_dataset
def dataset(sop):
    return ct_dataset(sop, "RTB_WRONG_INSTANCE")
statuses = []
for _ in range(2):  # the plan's C-FIND, then the C-GET
    a = odil.Association()
    a.set_tcp_timeout(20)
    a.receive_association("v4", port)
    while True:
        try:
            msg = a.receive_message()
        except (odil.AssociationReleased, odil.AssociationAborted):
            break
        field = msg.get_command_set().as_int(odil.registry.CommandField)[0]
        if field == 0x0020:
            req = odil.messages.CFindRequest(msg)
            a.send_message(odil.messages.CFindResponse(req.get_message_id(), 0), req.get_affected_sop_class_uid())
        elif field == 0x0010:
            req = odil.messages.CGetRequest(msg)
            for announced, inside in (("1.2.3.4.5.100", "1.2.3.4.5.999"), ("1.2.3.4.5.102", "1.2.3.4.5.102")):
                a.send_message(odil.messages.CStoreRequest(a.next_message_id(), CT, announced, 0, dataset(inside)), CT)
                statuses.append(odil.messages.CStoreResponse(a.receive_message()).get_status())
            rsp = odil.messages.CGetResponse(req.get_message_id(), 0xB000)
            rsp.set_number_of_completed_sub_operations(1)
            rsp.set_number_of_failed_sub_operations(1)
            rsp.set_number_of_warning_sub_operations(0)
            a.send_message(rsp, req.get_affected_sop_class_uid())
print(json.dumps(statuses), flush=True)
]==])
        local statuses = dir .. "/statuses.json"
        os.execute(string.format("PYTHONPATH=%s %s %s %d >%s 2>&1 &", h.quote(h.source .. "/tests/spec"), PY,
                                 h.quote(script), port, h.quote(statuses)))
        os.execute(string.format("for i in $(seq 100); do ss -Htln 'sport = :%d' | grep -q . && break; sleep 0.1; done", port))
        local out = dir .. "/out"
        local r = h.run(cmd(peer_args("WRONG_GET", port), "get", "--study-uid", "1.2.3.4", "--out-dir", out))
        assert.are.equal(1, r.code, r.output)
        assert.matches("1.2.3.4.5.100 arrived as a data set of another instance: refused, not kept", r.stderr, 1, true)
        local listing = io.popen("ls " .. h.quote(out)):read("a")
        assert.are.equal("1.2.3.4.5.102.dcm\n", listing)
        local said -- the peer prints the statuses it got once the association has ended
        for _ = 1, 100 do
            local f = io.open(statuses)
            said = f:read("a"):match("%[[^\n]*%]")
            f:close()
            if said then break end
            os.execute("sleep 0.1")
        end
        assert.are.same({0xA900, 0}, cjson.decode(said or "null"))
    end)
end)
