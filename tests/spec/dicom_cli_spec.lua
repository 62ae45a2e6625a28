-- requires: testbed
-- The everyday DICOM commands as an operator or a script uses them: output formats
-- and exit codes (0 ok, 1 DICOM failure, 2 usage or configuration error).
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local main = {"--aet", tb.SCU_AET, "--aec", tb.MAIN_AET, "--host", tb.HOST, "--port", tb.MAIN_PORT}
local function with(base, ...)
    local args = {}
    for _, a in ipairs({...}) do args[#args + 1] = a end
    for _, a in ipairs(base) do args[#args + 1] = a end
    return args
end
local synthetic_dir = tb.SYNTH_DIR

-- An environment file pointing at the testbed, for --env/--peer.
local dir = h.tmpdir()
local envfile = h.write_file(dir .. "/tb.toml", h.env_toml(tb, "TB", {
    description = "testbed", default_source = "ARIA", default_backup = "MAIN",
    script_ae = {aet = tb.SCU_AET, port = 11113},
    sources = {{alias = "ARIA", type = "aria", peer = "ARIA"}},
    targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
    settings = {state_dir = dir .. "/state"}}))
teardown(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("rtbackup echo", function()
    it("exits 0 for a live peer taken from an environment", function()
        local r = h.run{"--config", envfile, "echo", "--env", "TB", "--peer", "ARIA"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("C%-ECHO ARIA@", r.stdout)
    end)

    it("exits 1 with the peer named when it is down", function()
        local r = h.run{"echo", "--aet", "ME", "--aec", "GONE", "--host", tb.HOST, "--port", tb.CLOSED_PORT}
        assert.are.equal(1, r.code)
        assert.matches("GONE@" .. tb.HOST .. ":" .. tb.CLOSED_PORT, r.stderr)
    end)

    it("exits 2 without a peer or without our AE title", function()
        assert.are.equal(2, h.run{"echo", "--host", tb.HOST}.code)
        local r = h.run{"echo", "--aec", "X", "--host", tb.HOST, "--port", "104"}
        assert.are.equal(2, r.code)
        assert.matches("%-%-aet", r.stderr)
    end)
end)

describe("rtbackup store and find", function()
    it("stores a directory, then finds it as JSON and CSV", function()
        local r = h.run(with(main, "store", "--filepath", synthetic_dir, "--format", "json"))
        -- index.txt in that directory is not DICOM: it fails alone, exit 1
        assert.are.equal(1, r.code, r.output)
        assert.matches("index.txt", r.stderr)
        local summary = cjson.decode(r.stdout)[1]
        assert.are.equal(tonumber(tb.SYNTH_INSTANCES), summary.stored)
        assert.are.equal(1, summary.failed)

        r = h.run(with(main, "find", "--query-level", "STUDY", "--patient-id", "RTB001", "--format", "json"))
        assert.are.equal(0, r.code, r.output)
        local rows = cjson.decode(r.stdout)
        assert.are.equal(1, #rows)
        assert.are.equal("RTB001", rows[1].PatientID)

        r = h.run(with(main, "find", "--query-level", "SERIES", "-k", "StudyInstanceUID=" .. rows[1].StudyInstanceUID,
                       "-k", "SeriesDescription=", "--format", "csv"))
        assert.are.equal(0, r.code, r.output)
        assert.matches("^PatientID,StudyInstanceUID,SeriesInstanceUID,Modality", r.stdout)
        assert.matches("SeriesDescription", r.stdout:match("^[^\n]*"))
    end)

    -- Orthanc answers C-FIND in its DefaultEncoding, Latin-1 out of the box (ISO_IR 100),
    -- as many archives do: a name outside ASCII must still match and print in UTF-8.
    it("matches and prints a name outside ASCII in UTF-8, whatever character set the peer answers in", function()
        local dicom = require "rtbackup.dicom"
        local peer = dicom.peer{aet = tb.MAIN_AET, host = tb.HOST, port = tonumber(tb.MAIN_PORT),
                                calling_aet = tb.SCU_AET}
        local name = "Müller^Jürgen"
        assert.are.equal(1, peer:store{dicom.dataset{
            SOPClassUID = "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID = dicom.uid(), StudyInstanceUID = dicom.uid(),
            SeriesInstanceUID = dicom.uid(), PatientID = "RTB_UTF8", PatientName = name, Modality = "OT",
            SpecificCharacterSet = "ISO_IR 192"}}.stored)
        local r = h.run(with(main, "find", "--query-level", "STUDY", "-k", "PatientName=Mü*", "-k",
                             "SpecificCharacterSet=", "--format", "json"))
        assert.are.equal(0, r.code, r.output)
        local rows = cjson.decode(r.stdout)
        assert.are.equal(1, #rows, r.stdout)
        assert.are.equal(name, rows[1].PatientName)
        assert.are.equal("RTB_UTF8", rows[1].PatientID)
        local orthanc = h.orthanc(tb.MAIN_HTTP_URL)
        for _, hit in ipairs(orthanc:post("/tools/lookup", rows[1].StudyInstanceUID)) do
            orthanc:delete("/studies/" .. hit.ID)
        end
    end)

    -- pydicom's real-world files in ISO_IR 100, stored into Orthanc: their names come back
    -- as pydicom decodes them (Orthanc keeps them in its Latin-1 answers).
    it("prints the names of real-world ISO_IR 100 files as pydicom reads them", function()
        local files = {"chrFren.dcm", "chrGerm.dcm"}
        local charsets = "/usr/lib/python3/dist-packages/pydicom/data/charset_files/"
        local paths = {}
        for i, f in ipairs(files) do paths[i] = charsets .. f end
        local p = io.popen("/usr/bin/python3 -c " .. h.quote([[
import json, sys, pydicom
print(json.dumps({pydicom.dcmread(f).PatientID: str(pydicom.dcmread(f).PatientName) for f in sys.argv[1:]}))
]]) .. " " .. table.concat(paths, " "))
        local expected = cjson.decode(p:read("a"))
        p:close()
        local r = h.run(with(main, "store", "--filepath", paths[1], "--filepath", paths[2]))
        assert.are.equal(0, r.code, r.output)
        local orthanc = h.orthanc(tb.MAIN_HTTP_URL)
        for id, name in pairs(expected) do
            r = h.run(with(main, "find", "--query-level", "STUDY", "--patient-id", id, "-k", "PatientName=",
                           "--format", "json"))
            assert.are.equal(0, r.code, r.output)
            local rows = cjson.decode(r.stdout)
            assert.are.equal(1, #rows, r.stdout)
            assert.are.equal(name, rows[1].PatientName)
            for _, hit in ipairs(orthanc:post("/tools/lookup", rows[1].StudyInstanceUID)) do
                orthanc:delete("/studies/" .. hit.ID)
            end
        end
    end)

    it("exits 2 for an unknown keyword in -k", function()
        local r = h.run(with(main, "find", "-k", "NotAKeyword=1"))
        assert.are.equal(2, r.code)
        assert.matches("NotAKeyword", r.stderr)
    end)
end)

describe("rtbackup move and get", function()
    it("moves from dcmqrscp to Orthanc and gets it back into a directory", function()
        local r = h.run{"--config", envfile, "find", "--env", "TB", "--peer", "ARIA", "--query-level", "STUDY",
                        "--patient-id", "RTB002", "--format", "json"}
        assert.are.equal(0, r.code, r.output)
        local study = cjson.decode(r.stdout)[1].StudyInstanceUID
        r = h.run{"--config", envfile, "move", "--env", "TB", "--peer", "ARIA", "--study-uid", study,
                  "--move-dest-aet", tb.MAIN_AET, "--format", "json"}
        assert.are.equal(0, r.code, r.output)
        assert.is_true(cjson.decode(r.stdout)[1].completed > 0)

        local out = dir .. "/got"
        r = h.run{"--config", envfile, "get", "--env", "TB", "--peer", "MAIN", "--study-uid", study,
                  "--out-dir", out, "--format", "json"}
        assert.are.equal(0, r.code, r.output)
        local got = cjson.decode(r.stdout)[1]
        local p = io.popen("ls " .. h.quote(out) .. " | wc -l")
        assert.are.equal(got.completed, tonumber(p:read("l")))
        p:close()
    end)

    it("exits 1 when the destination is unknown", function()
        local r = h.run{"--config", envfile, "move", "--env", "TB", "--peer", "ARIA", "--query-level", "PATIENT",
                        "--patient-id", "RTB001", "--move-dest-aet", "NOWHERE"}
        assert.are.equal(1, r.code)
    end)
end)

describe("rtbackup store and get with directories", function()
    it("store walks nested directories in path order; a missing path exits 2 and sends nothing", function()
        local tree = dir .. "/tree"
        local files = {}
        for name in io.popen("ls " .. h.quote(synthetic_dir) .. " | grep -v index.txt | head -3"):lines() do
            files[#files + 1] = synthetic_dir .. "/" .. name
        end
        assert.are.equal(3, #files)
        assert(os.execute(string.format("mkdir -p %s/a/b %s/c && cp %s %s/a/b/ && cp %s %s/c/ && cp %s %s/",
            h.quote(tree), h.quote(tree), h.quote(files[1]), h.quote(tree), h.quote(files[2]), h.quote(tree),
            h.quote(files[3]), h.quote(tree))))
        local r = h.run(with(main, "store", "--filepath", tree, "--format", "json"))
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(3, cjson.decode(r.stdout)[1].stored)

        r = h.run(with(main, "store", "--filepath", tree, "--filepath", dir .. "/no-such-dir"))
        assert.are.equal(2, r.code, r.output)
        assert.matches("no-such-dir", r.stderr, 1, true)
        assert.matches("No such file or directory", r.stderr, 1, true)
        assert.are.equal("", r.stdout)
    end)

    it("get creates a missing --out-dir with its parents, readable by the owner only", function()
        local r = h.run(with(main, "find", "--query-level", "STUDY", "--format", "json"))
        assert.are.equal(0, r.code, r.output)
        local study = cjson.decode(r.stdout)[1].StudyInstanceUID
        local out = dir .. "/deep/er/got"
        r = h.run(with(main, "get", "--study-uid", study, "--out-dir", out, "--format", "json"))
        assert.are.equal(0, r.code, r.output)
        assert.is_true(cjson.decode(r.stdout)[1].completed > 0)
        assert.are.equal(tonumber("700", 8), require("rtbackup.sys").stat(out).mode)
    end)

    it("get of a study the peer does not hold exits 1 (Orthanc answers 0xC000), as move does", function()
        local r = h.run(with(main, "get", "--study-uid", "1.2.3.4.5.6.7.8.9", "--out-dir", dir .. "/none",
                             "--format", "json"))
        assert.are.equal(1, r.code, r.output)
    end)
end)
