-- Memory safety of the DICOM SCU and SCP bindings (rtbackup.dicom.core), called
-- directly as scripts/lib/rtbackup/dicom.lua does. Every argument is checked before
-- anything is allocated, so a bad peer, option or item raises a clear error and leaves
-- nothing behind (`tools/test.sh --sanitize` runs this spec under LeakSanitizer: each
-- of these cases once leaked the request, its identifier or its copied datasets);
-- integers are range-checked instead of cast (a port of 2^32 + 104 used to become 104);
-- lists are read raw, whatever their __len says. The peers are real: our own SCP,
-- DCMTK's echoscu, and pydicom as the independent reader of the files.
local core = require "rtbackup.dicom.core"
local dicom = require "rtbackup.dicom"
local h = require "helpers"

local failure = h.failure
local PY = "/usr/bin/python3" -- Debian's, with pydicom
local PYDICOM_FILES = "/usr/lib/python3/dist-packages/pydicom/data/test_files/"
local CALLING = "RTB_SAFETY"
local SCP_AET = "RTB_SAFETY_SCP"

local function sh(cmd)
    local p = io.popen("(" .. cmd .. ") 2>&1")
    local out = p:read("a")
    local ok, _, code = p:close()
    return out, ok and 0 or code
end

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- A peer on a port nothing listens on: no case below gets as far as connecting,
-- except where it says so. Fields set to NONE are left out.
local NONE = {}
local function peer(fields)
    local p = {aet = "NOBODY", host = "127.0.0.1", port = h.free_port(), calling_aet = CALLING}
    for k, v in pairs(fields or {}) do
        if v == NONE then p[k] = nil else p[k] = v end
    end
    return p
end

local function instance()
    return dicom.dataset{SOPClassUID = "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID = dicom.uid(),
                         PatientID = "RTB_SAFETY", PatientName = "TEST^SAFETY", Modality = "OT",
                         StudyInstanceUID = dicom.uid(), SeriesInstanceUID = dicom.uid()}
end

-- Every SCU operation, each with arguments that are good apart from the peer: the
-- identifier and the datasets are what used to be built before the peer was read.
local OPERATIONS = {
    echo = function(p) return core.echo(p) end,
    move = function(p) return core.move(p, "STUDY", "study", {StudyInstanceUID = "1.2.3"}, "DEST") end,
    store = function(p) return core.store(p, {instance(), "/nonexistent/x.dcm", instance()}, {max_reconnects = 1}) end,
    find_start = function(p) return core.find_start(p, "STUDY", "study", {PatientID = "X", StudyInstanceUID = ""}) end,
    get_start = function(p) return core.get_start(p, "STUDY", "study", {StudyInstanceUID = "1.2.3"}, "/tmp", false) end,
}

local function each_operation(fields, message)
    for name, op in pairs(OPERATIONS) do
        local err = failure(op, peer(fields))
        assert.are.equal("invalid", err.kind, name)
        assert.are.equal(message, err.message, name)
    end
end

describe("SCU arguments are checked before anything is allocated", function()
    it("refuses a peer without calling_aet in every operation, naming the field", function()
        each_operation({calling_aet = NONE}, "peer: 'calling_aet' is required")
    end)

    it("refuses a peer without aet, host or port, and fields of the wrong type", function()
        each_operation({aet = NONE}, "peer: 'aet' is required")
        each_operation({host = NONE}, "peer: 'host' is required")
        each_operation({port = NONE}, "peer: 'port' is required")
        each_operation({host = {}}, "peer: 'host' must be a string (got a table)")
        each_operation({calling_aet = "RTB\0X"}, "peer: 'calling_aet' contains a NUL byte")
    end)

    it("refuses a port outside 1..65535 by name instead of wrapping it (2^32 + 104 is not 104)", function()
        each_operation({port = (1 << 32) + 104}, "peer: 'port' must be an integer from 1 to 65535 (got 4294967400)")
        each_operation({port = 2^32 + 104}, "peer: 'port' must be an integer from 1 to 65535 (got 4294967400)")
        for _, port in ipairs{0, -1, 65536, math.maxinteger, math.mininteger} do
            local err = failure(core.echo, peer{port = port})
            assert.are.equal(string.format("peer: 'port' must be an integer from 1 to 65535 (got %d)", port),
                             err.message)
        end
        assert.are.equal("peer: 'port' must be an integer from 1 to 65535 (got 104.5)",
                         failure(core.echo, peer{port = 104.5}).message)
        assert.are.equal("peer: 'port' must be an integer from 1 to 65535 (got 'x')",
                         failure(core.echo, peer{port = "x"}).message)
    end)

    it("refuses timeouts and a PDU size that do not fit, by name", function()
        each_operation({connect_timeout = (1 << 32) + 5},
                       "peer: 'connect_timeout' must be an integer from 0 to 86400 (got 4294967301)")
        each_operation({acse_timeout = -1}, "peer: 'acse_timeout' must be an integer from 0 to 86400 (got -1)")
        each_operation({dimse_timeout = 1 << 31},
                       "peer: 'dimse_timeout' must be an integer from 0 to 86400 (got 2147483648)")
        each_operation({max_pdu = (1 << 32) + 16384},
                       "peer: 'max_pdu' must be an integer from 0 to 2147483647 (got 4294983680)")
    end)

    it("refuses tls = true rather than talking plain DICOM", function()
        each_operation({tls = true}, "peer: 'tls' must be a table {cert, key, ca} (got a boolean)")
    end)

    it("refuses store options that do not fit, by name", function()
        local function store_opts(opts) return core.store(peer(), {instance()}, opts) end
        assert.are.equal("store: 'max_reconnects' must be an integer from -1 to 1000 (got 4294967296)",
                         failure(store_opts, {max_reconnects = 1 << 32}).message)
        assert.are.equal("store: 'backoff_ms' must be an integer from 0 to 3600000 (got -1)",
                         failure(store_opts, {backoff_ms = -1}).message)
        assert.are.equal("store: 'max_backoff_ms' must be an integer from 0 to 3600000 (got 1099511627776)",
                         failure(store_opts, {max_backoff_ms = 1 << 40}).message)
    end)

    it("refuses a store item that is neither a path nor a dataset, before copying any", function()
        local err = failure(core.store, peer(), {instance(), "/a.dcm", 42, instance()})
        assert.are.equal("store: item 3 must be a path or a dataset (got a number)", err.message)
        err = failure(core.store, peer(), {instance(), "/a.dcm\0/b.dcm"})
        assert.are.equal("store: item 2: the path contains a NUL byte", err.message)
    end)

    it("refuses an identifier with an unknown keyword after a good peer", function()
        for _, op in ipairs{
            function() return core.move(peer(), "STUDY", "study", {NoSuchKeyword = "x"}, "DEST") end,
            function() return core.find_start(peer(), "STUDY", "study", {PatientID = "X", NoSuchKeyword = "x"}) end,
            function() return core.get_start(peer(), "STUDY", "study", {NoSuchKeyword = "x"}, "/tmp", false) end,
        } do
            assert.matches("NoSuchKeyword", failure(op).message)
        end
    end)

    it("ends a find and a get that cannot connect with that error, and frees their streams", function()
        local find = core.find_start(peer(), "STUDY", "study", {PatientID = "X"})
        assert.are.equal("connect_failed", failure(find.next, find).kind)
        local get = core.get_start(peer(), "STUDY", "study", {StudyInstanceUID = "1.2.3"}, nil, true)
        assert.are.equal("connect_failed", failure(get.next, get).kind)
        find, get = nil, nil
        collectgarbage()
        collectgarbage()
    end)
end)

describe("C-FIND results", function()
    -- python3-odil as the peer (a DICOM stack that is not DCMTK): one association, each
    -- C-FIND answered with three matches, the second nested `depth` sequences deep.
    local FIND_SCP = [[
import sys, odil
R = odil.registry
port, depth = int(sys.argv[1]), int(sys.argv[2])

def match(depth, patient):
    ds = odil.DataSet()
    ds.add(R.SeriesInstanceUID, ["1.2.3"])
    for _ in range(depth):
        outer = odil.DataSet()
        outer.add(R.ReferencedSeriesSequence, [ds])
        ds = outer
    ds.add(R.PatientID, [patient])
    ds.add(R.QueryRetrieveLevel, ["STUDY"])
    return ds

assoc = odil.Association()
assoc.set_tcp_timeout(20)
assoc.receive_association("v4", port)
C = odil.messages.Message.Command
while True:
    try:
        msg = assoc.receive_message()
    except (odil.AssociationReleased, odil.AssociationAborted):
        break
    if int(msg.get_command_field()) != int(C.C_FIND_RQ):
        continue
    req = odil.messages.CFindRequest(msg)
    mid, sop_class = req.get_message_id(), req.get_affected_sop_class_uid()
    for d, p in ((1, "SHALLOW_1"), (depth, "DEEP"), (1, "SHALLOW_2")):
        rsp = odil.messages.CFindResponse(mid, 0xFF00, match(d, p))
        rsp.set_affected_sop_class_uid(sop_class)
        assoc.send_message(rsp, sop_class)
    rsp = odil.messages.CFindResponse(mid, 0x0000)
    rsp.set_affected_sop_class_uid(sop_class)
    assoc.send_message(rsp, sop_class)
]]

    it("a match nested deeper than 64 levels raises from next(), and its batch is freed", function()
        local dir = h.tmpdir()
        local script = h.write_file(dir .. "/find_scp.py", FIND_SCP)
        local port = h.free_port()
        local pid = sh(string.format("%s %s %d 70 >%s 2>&1 </dev/null & echo $!", PY, h.quote(script), port,
                                     h.quote(dir .. "/scp.log"))):match("%d+")
        for _ = 1, 100 do
            if sh("ss -Htln 'sport = :" .. port .. "'") ~= "" then break end
            os.execute("sleep 0.1")
        end
        local stream = core.find_start(peer{aet = "ODIL", port = port}, "STUDY", "study", {PatientID = ""})
        local seen, errors = {}, {}
        for _ = 1, 10 do -- each batch holds what had arrived: one match or more
            local ok, batch = pcall(stream.next, stream)
            if ok and not batch then break end
            if ok then
                for _, m in ipairs(batch) do seen[#seen + 1] = m.PatientID end
            else
                errors[#errors + 1] = batch
            end
        end
        os.execute("kill " .. pid .. " 2>/dev/null")
        os.execute("rm -rf " .. h.quote(dir))
        assert.are.equal(1, #errors)
        assert.are.equal("invalid", errors[1].kind)
        assert.matches("nested deeper than 64", errors[1].message)
        -- A batch that fails is lost whole: the shallow matches arrive when they came in
        -- batches of their own, which depends on timing; never the deep one.
        for _, id in ipairs(seen) do assert.matches("^SHALLOW_[12]$", id) end
    end)
end)

describe("lists are read raw", function()
    local dir, scp

    before_each(function()
        dir = h.tmpdir()
        scp = core.listen{aet = SCP_AET, port = 0, dir = dir}
    end)

    after_each(function()
        scp:stop()
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("store sends the items the list holds, whatever its __len says", function()
        local to_scp = peer{aet = SCP_AET, port = scp:port()}
        for _, len in ipairs{-1, 1 << 40, math.mininteger} do
            local items = setmetatable({instance()}, {__len = function() return len end})
            local r = core.store(to_scp, items)
            assert.are.equal(1, r.stored)
            assert.are.equal(1, #r.items)
        end
        local raising = setmetatable({instance()}, {__len = function() error("never called") end})
        assert.are.equal(1, core.store(to_scp, raising).stored)
        assert.are.equal(4, scp:stored())
    end)

    it("listen takes allow and exec as they are, whatever their __len says", function()
        local other = core.listen{aet = "RTB_SAFETY_SCP2", port = 0, dir = dir,
                                  allow = setmetatable({CALLING}, {__len = function() return 1 << 40 end}),
                                  exec = setmetatable({"true"}, {__len = function() return -1 end})}
        local ok = pcall(core.echo, peer{aet = "RTB_SAFETY_SCP2", port = other:port()})
        local stranger = pcall(core.echo, peer{aet = "RTB_SAFETY_SCP2", port = other:port(), calling_aet = "STRANGER"})
        other:stop()
        assert.is_true(ok)
        assert.is_false(stranger)
    end)
end)

describe("listen", function()
    local dir

    before_each(function() dir = h.tmpdir() end)
    after_each(function() os.execute("rm -rf " .. h.quote(dir)) end)

    local function echoscu(calling, port)
        local _, code = sh(string.format("echoscu -to 10 -ta 10 -aet %s -aec %s 127.0.0.1 %d", calling, SCP_AET, port))
        return code
    end

    it("accepts 64 allowed AE titles, each of them answered, and refuses a 65th", function()
        local allow = {}
        for i = 1, 64 do allow[i] = string.format("ALLOWED_%02d", i) end
        local scp = core.listen{aet = SCP_AET, port = 0, dir = dir, allow = allow, events = true,
                                exec = {"true", "#p", "#f", "#a", "#c", "#r"}}
        local port = scp:port()
        local first, last, stranger = echoscu("ALLOWED_01", port), echoscu("ALLOWED_64", port), echoscu("STRANGER", port)
        scp:stop()
        assert.are.equal(0, first)
        assert.are.equal(0, last)
        assert.are_not.equal(0, stranger)
        assert.is_nil(scp:next()) -- stopped, and drained
        allow[65] = "ALLOWED_65"
        local ok, err = pcall(core.listen, {aet = SCP_AET, port = 0, dir = dir, allow = allow})
        assert.is_false(ok)
        assert.matches("listen: at most 64 allowed AE titles (got 65)", tostring(err), 1, true)
    end)

    it("refuses a port, timeout or count that does not fit, by name", function()
        local function refused(field, value, range)
            local ok, err = pcall(core.listen, {aet = SCP_AET, dir = dir, [field] = value})
            assert.is_false(ok)
            assert.matches(string.format("listen: '%s' must be an integer from %s (got ", field, range),
                           tostring(err), 1, true)
        end
        refused("port", (1 << 32) + 104, "0 to 65535")
        refused("port", 65536, "0 to 65535")
        refused("port", -1, "0 to 65535")
        refused("request_timeout", -1, "0 to 86400")
        refused("acse_timeout", (1 << 32) + 30, "0 to 86400")
        refused("max_pdu", (1 << 32) + 16384, "0 to 2147483647")
        refused("max_associations", (1 << 32) + 1, "0 to 65535")
        refused("max_per_host", 1.5, "0 to 65535")
        local ok, err = pcall(core.listen, {port = 0, dir = dir})
        assert.is_false(ok)
        assert.matches("listen: 'aet' is required", tostring(err), 1, true)
        ok, err = pcall(core.listen, {aet = SCP_AET, port = 0, dir = dir, allow = {SCP_AET, {}}})
        assert.is_false(ok)
        assert.matches("listen: 'allow' must list AE titles (item 2 is a table)", tostring(err), 1, true)
    end)

    it("ends a waiting next() when stopped, and frees an SCP collected without stop()", function()
        local scp = core.listen{aet = SCP_AET, port = 0, dir = dir, events = true}
        local waiter = require("rtbackup.task").spawn(function() return scp:next() end)
        scp:stop()
        assert.is_nil(waiter:wait())
        scp = core.listen{aet = SCP_AET, port = 0, dir = dir, events = true}
        assert.are.equal(0, echoscu(CALLING, scp:port()))
        scp = nil
        collectgarbage()
        collectgarbage()
    end)

    it("closes with next() and stop() still running on the pool, touching no freed memory", function()
        -- The state closes (os.exit(0, true): lua_close, then exit) while one task waits in
        -- scp:next() and another in scp:stop(), which an idle connection keeps busy: the
        -- SCP's __gc runs while both still use its queue on pool threads. Under
        -- `tools/test.sh --sanitize` this once was a heap-use-after-free in pop_batch.
        local script = h.write_file(dir .. "/close.lua", string.format([=[
local core = require "rtbackup.dicom.core"
local task = require "rtbackup.task"
local scp = core.listen{aet = "RTB_SAFETY_SCP", port = 0, dir = %q, events = true}
os.execute(string.format("%s -c 'import socket, sys, time; s = socket.create_connection((\"127.0.0.1\", int(sys.argv[1]))); time.sleep(1)' %%d >/dev/null 2>&1 & sleep 0.3", scp:port()))
task.spawn(function() scp:next() end)
task.spawn(function() scp:stop() end)
task.sleep(0.05)
os.exit(0, true)
]=], dir, PY))
        local r = h.run({"run", script})
        assert.are.equal(0, r.code, r.output)
        assert.are.equal("", r.output)
    end)
end)

describe("datasets: every element read as binary gives its bytes", function()
    -- pydicom reads the same files: the bytes must be the ones it finds.
    local function pydicom_value(path, tag)
        local out, code = sh(string.format(
            "%s -c 'import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).get_item(%s).value.hex())' %s",
            PY, tag, h.quote(path)))
        assert.are.equal(0, code, out)
        return out:match("%x+")
    end

    it("a private sequence read as UN (priv_SQ.dcm): its 166 bytes, as pydicom reads them", function()
        local path = PYDICOM_FILES .. "priv_SQ.dcm"
        local t = dicom.read(path):totable()
        assert.are.equal("aaabbbccc MEDICAL SYSTEMS", t.PrivateCreator)
        assert.are.equal(166, #t["3F03,1001"])
        assert.are.equal(pydicom_value(path, "0x3F031001"), hex(t["3F03,1001"]))
    end)

    it("UN values inside private sequences (nested_priv_SQ.dcm)", function()
        local t = dicom.read(PYDICOM_FILES .. "nested_priv_SQ.dcm"):totable()
        local outer = t["0001,0001"][1]
        assert.are.equal("Double Nested SQ", outer["0001,0001"][1]["0001,0001"])
        -- 9 bytes in the file; DICOM values are of even length, so DCMTK pads the odd one.
        assert.are.equal("Nested SQ\0", outer["0001,0002"])
    end)

    it("OB, OW, OF, OD, OL and OV: the bytes pydicom wrote", function()
        local dir = h.tmpdir()
        local path = dir .. "/vrs.dcm"
        local script = [[
import struct, sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
fm = FileMetaDataset()
fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
fm.MediaStorageSOPInstanceUID = "2.25.1234"
fm.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset()
ds.file_meta = fm
ds.SOPClassUID = fm.MediaStorageSOPClassUID
ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
ds.EncapsulatedDocument = b"%PDF-1.4 synthetic"
ds.RedPaletteColorLookupTableData = struct.pack("<4H", 0, 1, 0x1234, 0xFFFF)
ds.FloatPixelData = struct.pack("<3f", 1.5, -2.0, 3.25)
ds.DoubleFloatPixelData = struct.pack("<2d", 1.5, -2.0)
ds.LongPrimitivePointIndexList = struct.pack("<3I", 1, 70000, 3)
ds.ExtendedOffsetTable = struct.pack("<2Q", 0, 1 << 40)
ds.save_as(sys.argv[1], write_like_original=False)
for e in ds:
    if e.VR in ("OB", "OW", "OF", "OD", "OL", "OV"):
        print(e.keyword, e.value.hex())
]]
        local out, code = sh(string.format("%s -c %s %s", PY, h.quote(script), h.quote(path)))
        assert.are.equal(0, code, out)
        local t = dicom.read(path):totable()
        local seen = 0
        for keyword, value in out:gmatch("(%w+) (%x+)") do
            assert.are.equal(value, hex(t[keyword]), keyword)
            seen = seen + 1
        end
        assert.are.equal(6, seen)
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("text elements stay text", function()
        local t = dicom.read(PYDICOM_FILES .. "priv_SQ.dcm"):totable()
        assert.are.equal("aaabbbccc MEDICAL SYSTEMS", t.PrivateCreator)
        local ds = dicom.dataset{PatientID = "P1", InstanceNumber = 7}
        assert.are.same({PatientID = "P1", InstanceNumber = 7}, ds:totable())
    end)
end)
