-- Memory safety of the bindings: each case once wrote past a Lua stack, read a freed
-- string or dataset, or sized an array from a number the caller made up. Without a
-- sanitizer some of them only corrupt memory quietly, so each case also checks the
-- result is exactly right (`tools/test.sh --sanitize` turns any overrun into a failure).
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local odbc = require "rtbackup.odbc"
local rtrecord = require "rtbackup.rtrecord"
local journal_core = require "rtbackup.journal.core"
local h = require "helpers"

local failure = h.failure
local PYDICOM_FILES = "/usr/lib/python3/dist-packages/pydicom/data/test_files/"

describe("rtbackup.error", function()
    it("prints peer, a message of 1000 to 1100 bytes and the status whole", function()
        -- The buffer behind tostring starts at 1 KiB: every length across that edge.
        for len = 1000, 1100 do
            local message = string.rep("m", len)
            local err = errors.new{kind = "status", peer = "ARIA@host:104", message = message,
                                   status = 0xA700}
            assert.are.equal("ARIA@host:104: " .. message .. " (status 0xA700)", tostring(err))
        end
    end)
end)

describe("rtbackup.dicom datasets", function()
    it("stores and reads back an element with 300 values", function()
        local values = {}
        for i = 1, 300 do values[i] = "V" .. i end
        local ds = dicom.dataset{}
        ds.ImageType = values
        assert.are.same(values, ds.ImageType)
    end)

    -- dicom.parse reads what an Orthanc's /instances/{id}/file returns: whatever the
    -- network gave, so any prefix of a file, and bytes that are no DICOM at all.
    it("parses a file's bytes as dicom.read reads the file, and refuses every cut of them by name", function()
        local dir = h.tmpdir()
        local ds = dicom.dataset{SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.4", SOPInstanceUID = dicom.uid(),
                                 PatientID = "RTB001", StudyInstanceUID = dicom.uid(), SeriesInstanceUID = dicom.uid()}
        ds:save(dir .. "/a.dcm")
        local bytes = h.read_file(dir .. "/a.dcm")
        os.execute("rm -rf " .. h.quote(dir))
        local parsed = dicom.parse(bytes, "a.dcm")
        assert.are.equal(ds:digest(), parsed:digest())
        assert.are.equal("RTB001", parsed.PatientID)
        for _, cut in ipairs{0, 1, 128, 132, 140, #bytes // 2, #bytes - 1} do
            local ok, err = pcall(dicom.parse, bytes:sub(1, cut), "cut")
            assert.is_false(ok, "a cut at " .. cut .. " parsed")
            assert.are.equal("io", err.kind)
            assert.matches("^cut: ", err.message)
        end
        assert.is_false((pcall(dicom.parse, ("not DICOM\n"):rep(100))))
    end)

    it("derives a UID from 64 names", function()
        local names = {}
        for i = 1, 64 do names[i] = "name" .. i end
        local uid = dicom.uid(table.unpack(names))
        assert.is_true(dicom.uid_valid(uid))
        assert.are.equal(uid, dicom.uid(table.unpack(names)))
        assert.are_not.equal(uid, dicom.uid(table.unpack(names, 1, 63)))
    end)

    it("builds and reads back sequences nested 30 levels deep", function()
        local function nest(level)
            if level == 0 then return {{SeriesInstanceUID = "1.2.3"}} end
            return {{ReferencedSeriesSequence = nest(level - 1)}}
        end
        local ds = dicom.dataset{ReferencedSeriesSequence = nest(30)}
        local t = ds:totable()
        for _ = 1, 30 do t = t.ReferencedSeriesSequence[1] end
        assert.are.equal("1.2.3", t.ReferencedSeriesSequence[1].SeriesInstanceUID)
    end)

    it("refuses a table that contains itself instead of recursing until it crashes", function()
        local item = {}
        item.ReferencedSeriesSequence = {item}
        local err = failure(dicom.dataset, {ReferencedSeriesSequence = {item}})
        assert.are.equal("invalid", err.kind)
        assert.matches("nested deeper than 64", err.message)
    end)

    it("refuses an item handle once its sequence was removed, instead of using freed memory", function()
        local ds = dicom.dataset{ReferencedSeriesSequence = {{SeriesInstanceUID = "1.2.3"}}}
        local item = ds.ReferencedSeriesSequence[1]
        assert.are.equal("1.2.3", item.SeriesInstanceUID)
        ds.ReferencedSeriesSequence = nil
        local ok, err = pcall(function() return item.SeriesInstanceUID end)
        assert.is_false(ok)
        assert.matches("sequence item no longer exists", tostring(err))
        ok, err = pcall(function() item.SeriesInstanceUID = "9" end)
        assert.is_false(ok)
        assert.matches("sequence item no longer exists", tostring(err))
    end)

    it("refuses item handles of a sequence that was replaced, at any depth", function()
        local ds = dicom.dataset{ReferencedSeriesSequence = {
            {ReferencedInstanceSequence = {{ReferencedSOPInstanceUID = "1.2"}}}}}
        local inner = ds.ReferencedSeriesSequence[1].ReferencedInstanceSequence[1]
        ds.ReferencedSeriesSequence = {{SeriesInstanceUID = "4.5"}}
        local ok, err = pcall(function() return inner.ReferencedSOPInstanceUID end)
        assert.is_false(ok)
        assert.matches("sequence item no longer exists", tostring(err))
        assert.are.equal("4.5", ds.ReferencedSeriesSequence[1].SeriesInstanceUID)
    end)

    it("keeps item handles when only a plain element changes", function()
        local ds = dicom.dataset{ReferencedSeriesSequence = {{SeriesInstanceUID = "1.2.3"}}}
        local item = ds.ReferencedSeriesSequence[1]
        ds.PatientID = "P1"
        item.SeriesDescription = "kept"
        assert.are.equal("1.2.3", item.SeriesInstanceUID)
        assert.are.equal("kept", ds.ReferencedSeriesSequence[1].SeriesDescription)
    end)

    it("reorders a sequence from its own items (ds.Seq = {ds.Seq[2], ds.Seq[1]})", function()
        local ds = dicom.dataset{ReferencedSeriesSequence = {{SeriesInstanceUID = "1"},
                                                             {SeriesInstanceUID = "2"}}}
        local seq = ds.ReferencedSeriesSequence
        ds.ReferencedSeriesSequence = {seq[2], seq[1]}
        local again = ds.ReferencedSeriesSequence
        assert.are.equal("2", again[1].SeriesInstanceUID)
        assert.are.equal("1", again[2].SeriesInstanceUID)
    end)

    it("refuses a text value with a NUL byte rather than cutting it short", function()
        local ds = dicom.dataset{}
        local ok, err = pcall(function() ds.PatientID = "12\0" .. "34" end)
        assert.is_false(ok)
        assert.are.equal("invalid", err.kind)
        assert.matches("NUL byte", err.message)
    end)

    it("gives private elements a gggg,eeee key in totable", function()
        -- pydicom's corpus: a private element of VR UN the dictionary does not name.
        local t = dicom.read(PYDICOM_FILES .. "UN_sequence.dcm"):totable()
        assert.is_not_nil(t["4453,100C"])
    end)
end)

describe("rtbackup.odbc parameters", function()
    local dir, db

    before_each(function()
        dir = h.tmpdir()
        db = odbc.connect({odbc_driver = "SQLite3", db_database = dir .. "/t.db"}, nil,
                          {create = true})
    end)

    after_each(function()
        if db and db:is_open() then db:close() end
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("refuses a parameter count n that is negative or absurd", function()
        for _, n in ipairs{-1, 1 << 60, math.maxinteger} do
            local err = failure(db.query, db, "SELECT ? AS a", {n = n, "x"})
            assert.are.equal("invalid", err.kind)
            assert.matches("is not a count", err.message)
        end
    end)

    it("binds 300 text parameters and returns them as 300 columns", function()
        local marks, params = {}, {}
        for i = 1, 300 do
            marks[i] = "? AS c" .. i
            params[i] = "v" .. i
        end
        local rows, columns = db:query("SELECT " .. table.concat(marks, ", "), params)
        assert.are.equal(300, #columns)
        for i = 1, 300 do assert.are.equal("v" .. i, rows[1]["c" .. i]) end
    end)
end)

describe("argument tables are read raw", function()
    -- An __index function's value is referenced by nothing once popped: the C side,
    -- which keeps pointers to the strings it read, must never see one.
    local function proxy()
        local calls = {n = 0}
        return setmetatable({}, {__index = function(_, k)
            calls.n = calls.n + 1
            collectgarbage()
            return "made up " .. tostring(k)
        end}), calls
    end

    it("rtrecord: fields behind __index are not consulted", function()
        local input, calls = proxy()
        local ok = pcall(rtrecord.beams_treatment_record, input)
        assert.is_false(ok) -- an empty record is incomplete
        assert.are.equal(0, calls.n)
    end)

    it("journal core: unit fields behind __index are not consulted", function()
        local dir = h.tmpdir()
        local j = journal_core.open(dir .. "/journal.db")
        local unit, calls = proxy()
        local ok, err = pcall(j.upsert, j, "ARIA", {unit})
        j:close()
        os.execute("rm -rf " .. h.quote(dir))
        assert.is_false(ok)
        assert.matches("no key", tostring(err))
        assert.are.equal(0, calls.n)
    end)
end)
