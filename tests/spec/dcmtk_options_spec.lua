-- requires: testbed
-- The DICOM tools take the options DCMTK users type (echoscu, findscu, movescu):
-- -aet, -aec, -aem, positional `peer port`, -to/-ta/-td, alongside the long names.
-- Peers: the testbed's dcmqrscp "ARIA" (which knows ORTHANC_MAIN) and Orthanc "main".
local h = require "helpers"

local tb = h.testbed()

describe("DCMTK spellings", function()
    it("echo -aet -aec -to -ta -td PEER PORT works like echoscu", function()
        local r = h.run({"echo", "-aet", tb.SCU_AET, "-aec", tb.ARIA_AET, "-to", "5", "-ta", "5", "-td", "5",
                         tb.HOST, tb.ARIA_PORT})
        assert.are.equal(0, r.code, r.output)
        assert.matches("C%-ECHO ARIA@" .. tb.HOST:gsub("%.", "%%.") .. ":" .. tb.ARIA_PORT .. " ok", r.stdout)
    end)

    it("find -k Keyword=value and -k Keyword= with a positional peer, like findscu", function()
        local r = h.run({"find", "-aet", tb.SCU_AET, "-aec", tb.ARIA_AET, "-k", "PatientID=RTB001",
                         "-k", "PatientName=", tb.HOST, tb.ARIA_PORT, "--format", "csv"})
        assert.are.equal(0, r.code, r.output)
        assert.matches("\nRTB001,TEST%^PATIENT001,", r.stdout)
        local _, lines = r.stdout:gsub("\n", "")
        assert.are.equal(2, lines, r.stdout)
    end)

    it("move -aem and --move name the destination, like movescu", function()
        local m = h.run({"find", "-aet", tb.SCU_AET, "-aec", tb.ARIA_AET, "--query-level", "IMAGE", "-k", "PatientID=RTB002",
                         tb.HOST, tb.ARIA_PORT, "--format", "json"})
        local first = require("cjson").decode(m.stdout)[1]
        for _, spelling in ipairs{"-aem", "--move"} do
            local r = h.run({"move", "-aet", tb.SCU_AET, "-aec", tb.ARIA_AET, spelling, tb.MAIN_AET,
                             "--query-level", "IMAGE", "--study-uid", first.StudyInstanceUID,
                             "--series-uid", first.SeriesInstanceUID, "--sop-instance-uid", first.SOPInstanceUID,
                             tb.HOST, tb.ARIA_PORT, "--format", "csv"})
            assert.are.equal(0, r.code, r.output)
            assert.matches("\n0,1,0,0\n", r.stdout)
        end
    end)

    it("-d logs each operation (debug), -v keeps info, whatever the global level", function()
        local r = h.run({"--log-level", "error", "echo", "-d", "-aet", tb.SCU_AET, "-aec", tb.ARIA_AET,
                         tb.HOST, tb.ARIA_PORT})
        assert.are.equal(0, r.code, r.output)
        assert.matches("DEBUG C%-ECHO ms=%d+ outcome=ok peer=", r.stderr)
        local quiet = h.run({"--log-level", "error", "echo", "-v", "-aet", tb.SCU_AET, "-aec", tb.ARIA_AET,
                             tb.HOST, tb.ARIA_PORT})
        assert.are.equal(0, quiet.code, quiet.output)
        assert.is_nil(quiet.stderr:find("DEBUG", 1, true))
    end)

    it("a timeout of 0 is a usage error, and --help names both spellings", function()
        local r = h.run({"echo", "-aet", "ME", "-aec", "X", "-to", "0", tb.HOST, tb.CLOSED_PORT})
        assert.are.equal(2, r.code, r.output)
        local help = h.run({"move", "--help"})
        for _, s in ipairs{"DCMTK: %-aet", "DCMTK: %-aec", "DCMTK: %-aem, %-%-move", "DCMTK: %-to", "<peer>", "<port>"} do
            assert.matches(s, help.stdout)
        end
    end)

    it("refuses a host given twice differently", function()
        local r = h.run({"echo", "-aet", "ME", "-aec", "X", "--host", "127.0.0.2", tb.HOST, tb.CLOSED_PORT})
        assert.are.equal(2, r.code, r.output)
        assert.matches("give the host once", r.stderr)
    end)
end)
