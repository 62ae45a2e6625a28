-- requires: testbed
-- `rtbackup listen` as an operator runs it, fed by DCMTK's own tools (storescu,
-- echoscu) and by raw sockets: silent clients cannot starve it, it speaks DICOM
-- TLS, it reports what it stored, and real-world files arrive byte for byte.
-- The testbed gives the CA and certificates (tests/testbed/testbed.sh).
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local work = h.tmpdir()
teardown(function() os.execute("rm -rf " .. h.quote(work)) end)

local PY = "/usr/bin/python3" -- Debian's, with pydicom

local function sh(cmd)
    local p = io.popen("(" .. cmd .. ") 2>&1")
    local out = p:read("a")
    local ok, _, code = p:close()
    return out, ok and 0 or code
end

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return "" end
    local s = f:read("a")
    f:close()
    return s
end

local function sleep(s) os.execute("sleep " .. s) end

local function count_files(dir, pattern)
    local out = sh(string.format("find %s -type f -name %s | wc -l", h.quote(dir), h.quote(pattern or "*.dcm")))
    return tonumber(out:match("%d+"))
end

local n_listeners = 0
--- Starts `rtbackup listen --port 0 ...extra` in the background; returns {pid, port,
-- out (its --out-dir: `out`, else a new one), log (its output file)} once it listens.
local function listen(extra, out)
    n_listeners = n_listeners + 1
    local base = string.format("%s/listener%d", work, n_listeners)
    os.execute("mkdir -p " .. h.quote(base))
    local l = {out = out or base .. "/in", log = base .. "/listen.log"}
    local args = {h.bin, "listen", "--aet", "RTB_LISTEN", "--port", "0", "--out-dir", l.out}
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    for i, a in ipairs(args) do args[i] = h.quote(a) end
    local p = io.popen(string.format("%s >%s 2>&1 </dev/null & echo $!", table.concat(args, " "), h.quote(l.log)))
    l.pid = p:read("l")
    p:close()
    for _ = 1, 100 do
        local text = slurp(l.log)
        l.port = tonumber(text:match("listening[^\n]*port=(%d+)"))
        if l.port then return l end
        if text:match("rtbackup listen:") then error("listen did not start: " .. text) end
        sleep(0.1)
    end
    error("listen did not start: " .. slurp(l.log))
end

--- SIGINT (the normal end), then waits for it to exit; returns its whole output.
local function stop(l)
    os.execute(string.format("kill -INT %s 2>/dev/null; for i in $(seq 100); do kill -0 %s 2>/dev/null || break; sleep 0.1; done",
                             l.pid, l.pid))
    return slurp(l.log)
end

local function stopped_line(output)
    local line = output:match("[^\n]*stopped[^\n]*")
    assert.is_not_nil(line, output)
    local t = {}
    for k, v in line:gmatch("([%w_]+)=(%d+)") do t[k] = tonumber(v) end
    return t
end

local function storescu(l, files, extra)
    return sh(string.format("TCP_NODELAY=1 storescu -to 10 -ta 10 -td 20 %s -aet STORESCU -aec RTB_LISTEN 127.0.0.1 %d %s",
                            extra or "", l.port, files))
end

-- Opens N silent TCP connections from SRC (the whole 127.0.0.0/8 is loopback, so a
-- test can play another host), runs echoscu from 127.0.0.1 meanwhile, then waits
-- until the SCP has closed every silent connection. Prints JSON: the echo's exit
-- code and milliseconds, and per connection when it was closed and what it got.
local IDLE_PY = h.write_file(work .. "/idle.py", [[
import json, select, socket, subprocess, sys, time
n, src, port, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
echo = sys.argv[5:]
t0 = time.monotonic()
socks = []
for _ in range(n):
    s = socket.socket()
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    socks.append(s)
time.sleep(0.2)
e0 = time.monotonic()
rc = subprocess.call(echo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
echo_ms = (time.monotonic() - e0) * 1000
out = [{"closed_after": None, "got": ""} for _ in socks]
while time.monotonic() - t0 < limit:
    open_ = [s for i, s in enumerate(socks) if out[i]["closed_after"] is None]
    if not open_:
        break
    r, _, _ = select.select(open_, [], [], 0.1)
    for s in r:
        i = socks.index(s)
        try:
            d = s.recv(100)
        except ConnectionResetError:
            d = b""
        if d:
            out[i]["got"] += d.hex()
        else:
            out[i]["closed_after"] = time.monotonic() - t0
print(json.dumps({"echo_rc": rc, "echo_ms": echo_ms, "conns": out}))
]])

describe("rtbackup listen under silent clients", function()
    it("answers C-ECHO at once while idle connections wait, refuses those over the per-host cap, drops the rest after the request timeout", function()
        local l = listen{"--request-timeout", "2", "--max-per-host", "3"}
        local out = sh(string.format("%s %s 5 127.0.0.2 %d 30 echoscu -to 5 -ta 5 -aet ECHO -aec RTB_LISTEN 127.0.0.1 %d",
                                     PY, IDLE_PY, l.port, l.port))
        local r = cjson.decode(out)
        assert.are.equal(0, r.echo_rc, out)
        local refused, dropped, slowest = 0, 0, 0
        for _, c in ipairs(r.conns) do
            assert.is_number(c.closed_after, "the SCP left a silent connection open: " .. out)
            if c.got ~= "" then
                -- A-ASSOCIATE-RJ: transient, service provider (presentation), local limit exceeded
                assert.are.equal("03000000000400020302", c.got)
                refused = refused + 1
            else
                dropped = dropped + 1
                slowest = math.max(slowest, c.closed_after)
            end
        end
        assert.are.equal(2, refused)
        assert.are.equal(3, dropped)
        print(string.format("# 5 idle connections (cap 3 per host): echoscu answered in %.0f ms (process start included); 2 refused at once, 3 dropped after %.2f s (request timeout 2 s)",
                            r.echo_ms, slowest))
        local s = stopped_line(stop(l))
        assert.are.equal(2, s.refused)
        assert.are.equal(3, s.dropped)
        assert.are.equal(1, s.associations)
    end)

    it("takes its limits from the environment's settings with --env", function()
        local envfile = h.write_file(work .. "/limits.toml", h.env_toml(tb, "TB", {
            description = "testbed", default_source = "ARIA", default_backup = "MAIN",
            script_ae = {aet = "RTB_LISTEN", port = 11113},
            sources = {{alias = "ARIA", type = "aria", peer = "ARIA"}},
            targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
            settings = {scp_request_timeout = 3, scp_max_associations = 6, scp_max_per_host = 2}}))
        n_listeners = n_listeners + 1
        local logf = string.format("%s/env%d.log", work, n_listeners)
        local p = io.popen(string.format("%s --config %s listen --env TB --port 0 --out-dir %s >%s 2>&1 </dev/null & echo $!",
                                         h.quote(h.bin), h.quote(envfile), h.quote(work .. "/env-in"), h.quote(logf)))
        local l = {pid = p:read("l"), log = logf}
        p:close()
        for _ = 1, 100 do
            if slurp(logf):match("listening") then break end
            sleep(0.1)
        end
        local text = stop(l)
        assert.matches("request_timeout=3", text)
        assert.matches("max_associations=6", text)
        assert.matches("max_per_host=2", text)
    end)

    it("takes the settings' defaults where neither an option nor the environment sets them", function()
        local text = stop(listen())
        assert.matches("request_timeout=5", text)
        assert.matches("max_associations=16", text) -- docs/settings.md's default, with --env or without
        assert.matches("max_per_host=4", text)
    end)
end)

describe("rtbackup listen reports", function()
    it("the number of instances it stored when it stops", function()
        local l = listen()
        local out, code = storescu(l, h.quote(tb.SYNTH_DIR) .. "/*.dcm")
        assert.are.equal(0, code, out)
        local s = stopped_line(stop(l))
        local n = tonumber(tb.SYNTH_INSTANCES)
        assert.are.equal(n, s.stored)
        assert.are.equal(n, count_files(l.out))
    end)
end)

describe("rtbackup listen and storage classes newer than DCMTK's list", function()
    it("stores Enhanced RT Image and a vendor's private class, and still refuses a query model", function()
        local l = listen()
        local r = h.run{"run", h.write_file(work .. "/newclasses.lua", string.format([[
            local dicom = require "rtbackup.dicom"
            local peer = dicom.peer{aet = "RTB_LISTEN", host = "127.0.0.1", port = %d, calling_aet = "NEWCLASSES"}
            local function ds(class, uid)
                return dicom.dataset{SOPClassUID = class, SOPInstanceUID = uid, StudyInstanceUID = "1.2.3.4.7",
                                     SeriesInstanceUID = "1.2.3.4.8", PatientID = "RTBNEW", Modality = "OT"}
            end
            local r = peer:store{ds("1.2.840.10008.5.1.4.1.1.481.23", "1.2.3.4.5.6.1"),
                                 ds("1.3.12.2.1107.5.9.1", "1.2.3.4.5.6.2")}
            print(r.stored)
            -- a query model is no storage class: proposed as one, it is refused
            print((pcall(peer.store, peer, {ds("1.2.840.10008.5.1.4.1.2.2.1", "1.2.3.4.5.6.3")})))]], l.port))}
        stop(l)
        assert.are.equal(0, r.code, r.output)
        assert.matches("^2\n", r.stdout)
        assert.are.equal(1, count_files(l.out, "1.2.3.4.5.6.1.dcm"))
        assert.are.equal(1, count_files(l.out, "1.2.3.4.5.6.2.dcm"))
        assert.are.equal(0, count_files(l.out, "1.2.3.4.5.6.3.dcm"))
    end)
end)

describe("rtbackup listen and an instance received twice", function()
    it("keeps a repeat once, and other content under the same UID beside the first, saying so", function()
        local l = listen()
        local src = work .. "/dup"
        os.execute("mkdir -p " .. h.quote(src))
        local first = tb.SYNTH_DIR .. "/" .. sh("ls " .. h.quote(tb.SYNTH_DIR) .. " | grep dcm$ | head -1"):gsub("%s+$", "")
        local uid = sh("dcmdump +P SOPInstanceUID " .. h.quote(first)):match("%[([%d%.]+)%]")
        -- the same instance with another PatientName: other content, the same UID
        assert.is_true(os.execute(string.format("cp %s %s/b.dcm && dcmodify -nb -m PatientName=OTHER^NAME %s/b.dcm",
                                                h.quote(first), h.quote(src), h.quote(src))))
        for _, f in ipairs{first, first, src .. "/b.dcm"} do
            local out, code = storescu(l, h.quote(f))
            assert.are.equal(0, code, out)
        end
        local output = stop(l)
        assert.are.equal(slurp(first):sub(-4096), slurp(l.out .. "/" .. uid .. ".dcm"):sub(-4096))
        assert.matches("OTHER^NAME", sh("dcmdump " .. h.quote(l.out .. "/" .. uid .. ".2.dcm")), 1, true)
        assert.are.equal(2, count_files(l.out))
        assert.matches("stored beside an earlier instance with the same SOP Instance UID", output, 1, true)
    end)
end)

describe("rtbackup listen and the temporary files a killed listen left", function()
    local function exists(path) return io.open(path) ~= nil end

    it("removes them at start, and no other hidden file; not while another listen serves the directory", function()
        local dir = work .. "/killed"
        os.execute("mkdir -p " .. h.quote(dir))
        -- As a listen killed with -9 leaves them: an empty one made ahead, a half-received one.
        local left = {dir .. "/.pool.Ab3xZ9", dir .. "/.1.2.826.0.1.3680043.10.543.7.dcm.q8Rt2K"}
        h.write_file(left[1], "")
        h.write_file(left[2], string.rep("\0", 128) .. "DICM")
        -- Hidden files of others, some of them close to our names.
        local others = {dir .. "/.config.backup", dir .. "/.notes.dcm.Ab3xZ9", dir .. "/.pool.toolong1",
                        dir .. "/.1.2.3.dcm.txt"}
        for _, f in ipairs(others) do h.write_file(f, "kept") end

        local first = listen(nil, dir)
        for _, f in ipairs(left) do assert.is_false(exists(f), f .. " is still there") end
        for _, f in ipairs(others) do assert.is_true(exists(f), f .. " was removed") end
        assert.matches("removed temporary files[^\n]*files=2", slurp(first.log))

        -- The first listen's own ready temporaries, seen by a second listen on the same directory.
        local out = sh("ls -a " .. h.quote(dir))
        local mine = {}
        for name in out:gmatch("%.pool%.%w+") do mine[#mine + 1] = dir .. "/" .. name end
        assert.is_true(#mine > 0, out)
        local second = listen(nil, dir)
        for _, f in ipairs(mine) do assert.is_true(exists(f), f .. " of the running listen was removed") end
        assert.is_nil(slurp(second.log):match("removed temporary files"))
        local sent, code = storescu(first, h.quote(tb.SYNTH_DIR) .. "/*.dcm")
        assert.are.equal(0, code, sent)
        stop(second)
        assert.are.equal(tonumber(tb.SYNTH_INSTANCES), stopped_line(stop(first)).stored)
        assert.are.equal(tonumber(tb.SYNTH_INSTANCES), count_files(dir))
        -- Both stopped normally: nothing of theirs is left to remove.
        assert.are.equal(0, count_files(dir, ".pool.??????"))
    end)
end)

describe("rtbackup listen over DICOM TLS", function()
    if not tb.TLS_CA then
        pending("the testbed made no certificates (no openssl)")
        return
    end
    local server = {"--tls-cert", tb.RTB_TESTBED_DIR .. "/tls/server.pem", "--tls-key", tb.RTB_TESTBED_DIR .. "/tls/server.key",
                    "--tls-ca", tb.TLS_CA}
    local function with(list, ...)
        local t = {}
        for _, a in ipairs(list) do t[#t + 1] = a end
        for _, a in ipairs({...}) do t[#t + 1] = a end
        return t
    end
    local client = string.format("+tls %s %s +cf %s", h.quote(tb.TLS_KEY), h.quote(tb.TLS_CERT), h.quote(tb.TLS_CA))
    -- A certificate no CA of ours signed, made here.
    local rogue_key, rogue_cert = work .. "/rogue.key", work .. "/rogue.pem"
    local out, code = sh(string.format("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 -subj /CN=RTB_SCU",
                                       h.quote(rogue_key), h.quote(rogue_cert)))
    assert(code == 0, out)
    local files = h.quote(tb.SYNTH_DIR) .. "/*.dcm"

    it("stores what storescu sends with a client certificate signed by the CA (required)", function()
        local l = listen(with(server, "--require-client-cert"))
        local out, code = storescu(l, files, client)
        assert.are.equal(0, code, out)
        local s = stopped_line(stop(l))
        assert.are.equal(tonumber(tb.SYNTH_INSTANCES), s.stored)
        assert.are.equal(tonumber(tb.SYNTH_INSTANCES), count_files(l.out))
    end)

    it("refuses a client without a certificate, one with an untrusted certificate, and plain TCP, and keeps serving", function()
        local l = listen(with(server, "--require-client-cert"))
        local function echo(opts)
            return sh(string.format("echoscu -to 10 -ta 10 %s -aet ECHO -aec RTB_LISTEN 127.0.0.1 %d", opts, l.port))
        end
        local out, code = echo("+tla +cf " .. h.quote(tb.TLS_CA))
        assert.are_not.equal(0, code, out)
        out, code = echo(string.format("+tls %s %s +cf %s", h.quote(rogue_key), h.quote(rogue_cert), h.quote(tb.TLS_CA)))
        assert.are_not.equal(0, code, out)
        out, code = storescu(l, files)
        assert.are_not.equal(0, code, out)
        -- the listener is still there and serves a trusted client
        out, code = echo(client)
        assert.are.equal(0, code, out)
        local s = stopped_line(stop(l))
        assert.are.equal(0, s.stored)
        assert.are.equal(1, s.associations)
        assert.are.equal(3, s.dropped)
        assert.are.equal(0, count_files(l.out))
    end)

    it("serves anonymous TLS clients when client certificates are not required, but not untrusted ones", function()
        local l = listen(server)
        local out, code = sh(string.format("echoscu -to 10 -ta 10 +tla +cf %s -aet ECHO -aec RTB_LISTEN 127.0.0.1 %d",
                                           h.quote(tb.TLS_CA), l.port))
        assert.are.equal(0, code, out)
        out, code = sh(string.format("echoscu -to 10 -ta 10 +tls %s %s +cf %s -aet ECHO -aec RTB_LISTEN 127.0.0.1 %d",
                                     h.quote(rogue_key), h.quote(rogue_cert), h.quote(tb.TLS_CA), l.port))
        assert.are_not.equal(0, code, out)
        stop(l)
    end)

    it("creates its --out-dir private (received instances name patients), or exits 2 naming it", function()
        local l = listen()
        stop(l)
        local p = io.popen("stat -c %a " .. h.quote(l.out))
        assert.are.equal("700", p:read("l"))
        p:close()
        local r = h.run{"listen", "--aet", "X", "--port", "0", "--out-dir", "/proc/self/no/such"}
        assert.are.equal(2, r.code, r.output)
        assert.matches("cannot create %-%-out%-dir /proc/self/no/such", r.stderr)
    end)

    it("exits 2 for TLS options that do not go together or a certificate it cannot read", function()
        local r = h.run{"listen", "--aet", "X", "--port", "0", "--out-dir", work .. "/bad", "--tls-cert", tb.TLS_CERT}
        assert.are.equal(2, r.code, r.output)
        assert.matches("%-%-tls%-key", r.stderr)
        r = h.run{"listen", "--aet", "X", "--port", "0", "--out-dir", work .. "/bad", "--tls-cert", tb.TLS_CERT,
                  "--tls-key", tb.TLS_KEY, "--require-client-cert"}
        assert.are.equal(2, r.code, r.output)
        assert.matches("%-%-tls%-ca", r.stderr)
        r = h.run{"listen", "--aet", "X", "--port", "0", "--out-dir", work .. "/bad", "--tls-cert", work .. "/missing.pem",
                  "--tls-key", tb.TLS_KEY}
        assert.are.equal(2, r.code, r.output)
        assert.matches("missing.pem", r.stderr)
    end)
end)

describe("rtbackup listen with real-world files", function()
    -- pydicom's corpus, re-identified by tests/testbed/corpus.py (fresh SOP Instance
    -- UIDs): every transfer syntax the archives use, sent by storescu one file per
    -- association, each proposed in exactly its own transfer syntax (a storescu
    -- profile per file), so nothing is converted on the way.
    it("stores every file storescu can send with its transfer syntax and pixel data bytes unchanged", function()
        local corpus = work .. "/corpus"
        local out, code = sh(string.format("%s %s/tests/testbed/corpus.py build %s", PY, h.source, h.quote(corpus)))
        assert.are.equal(0, code, out)
        local rows = {}
        local header
        for line in io.lines(corpus .. "/index.tsv") do
            local fields = {}
            for f in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = f end
            if not header then
                header = fields
            else
                local row = {}
                for i, k in ipairs(header) do row[k] = fields[i] end
                rows[#rows + 1] = row
            end
        end
        local cfg = {"[[TransferSyntaxes]]"}
        for i, r in ipairs(rows) do cfg[#cfg + 1] = string.format("[TS%d]\nTransferSyntax1 = %s", i, r.transfer_syntax) end
        cfg[#cfg + 1] = "[[PresentationContexts]]"
        for i, r in ipairs(rows) do
            cfg[#cfg + 1] = string.format("[PC%d]\nPresentationContext1 = %s\\TS%d", i, r.sop_class, i)
        end
        cfg[#cfg + 1] = "[[Profiles]]"
        for i in ipairs(rows) do cfg[#cfg + 1] = string.format("[P%d]\nPresentationContexts = PC%d", i, i) end
        local cfgfile = h.write_file(work .. "/corpus-storescu.cfg", table.concat(cfg, "\n") .. "\n")

        local l = listen()
        local sent, refused_by_storescu = {}, {}
        for i, r in ipairs(rows) do
            local o, c = storescu(l, h.quote(corpus .. "/" .. r.file), string.format("-xf %s P%d", h.quote(cfgfile), i))
            if c == 0 and not o:match("Store Failed") and not o:match("[FE]: ") then
                sent[r.sop_instance_uid] = r
            else
                refused_by_storescu[#refused_by_storescu + 1] = r.file .. " (" .. r.kind .. ")"
                -- only the files broken on purpose may fail to go
                assert.are_not.equal("good", r.kind, r.file .. ": " .. o)
            end
        end
        local s = stopped_line(stop(l))
        local n_sent = 0
        for _ in pairs(sent) do n_sent = n_sent + 1 end
        assert.are.equal(n_sent, s.stored)

        local report = sh(string.format("%s %s/tests/testbed/corpus.py compare %s %s", PY, h.source,
                                        h.quote(corpus .. "/index.tsv"), h.quote(l.out)))
        local syntaxes = {}
        for uid, verdict, detail in report:gmatch("([%d.]+)\t(%S+)\t([^\n]*)") do
            if sent[uid] then
                assert.are.equal("same", verdict, detail)
                syntaxes[#syntaxes + 1] = sent[uid].transfer_syntax_name
            end
        end
        assert.are.equal(n_sent, #syntaxes)
        print(string.format("# %d corpus files stored unchanged (%s); storescu could not send: %s", #syntaxes,
                            table.concat(syntaxes, ", "), table.concat(refused_by_storescu, ", ")))
    end)
end)

-- The data set of a Part 10 file: what follows its meta header (whose group
-- length, the first element after "DICM", says where it ends). The SCP writes a
-- meta header of its own, so only this part is compared with what was sent.
local function data_set(path)
    local s = slurp(path)
    assert.are.equal("DICM", s:sub(129, 132), path)
    assert.are.equal("\2\0\0\0UL", s:sub(133, 138), path)
    return s:sub(145 + string.unpack("<I4", s, 141))
end

-- Several storescu at once, the files dealt round-robin among them; fails unless all succeed.
local function storescu_parallel(l, files, n)
    local shares = {}
    for i, f in ipairs(files) do
        local k = (i - 1) % n + 1
        shares[k] = (shares[k] or "") .. " " .. h.quote(f)
    end
    local cmd = {"rc=0; pids="}
    for _, share in ipairs(shares) do
        cmd[#cmd + 1] = string.format("TCP_NODELAY=1 storescu -to 10 -ta 10 -td 20 -aet STORESCU -aec RTB_LISTEN 127.0.0.1 %d%s & pids=\"$pids $!\"",
                                      l.port, share)
    end
    cmd[#cmd + 1] = "for p in $pids; do wait $p || rc=1; done; exit $rc"
    return sh(table.concat(cmd, "\n"))
end

describe("rtbackup listen under concurrent associations", function()
    -- Workers that rename into the same directory share its flushes (group commit):
    -- every instance must still arrive whole, under its own name, in its directory.
    local sent = {} -- path -> {sop =, study =}
    local function synthetic()
        if #sent == 0 then
            for f in sh(string.format("ls %s/*.dcm", h.quote(tb.SYNTH_DIR))):gmatch("[^\n]+") do
                local dump = sh(string.format("dcmdump -q +P 0008,0018 +P 0020,000d %s", h.quote(f)))
                local sop, study = dump:match("%(0008,0018%)[^%[]*%[([%d.]+)%]"), dump:match("%(0020,000d%)[^%[]*%[([%d.]+)%]")
                assert.is_not_nil(sop, dump)
                assert.is_not_nil(study, dump)
                sent[#sent + 1] = {path = f, sop = sop, study = study}
            end
        end
        local paths = {}
        for i, s in ipairs(sent) do paths[i] = s.path end
        return paths
    end

    local function arrives_intact(extra, where)
        local files = synthetic()
        local l = listen(extra)
        local out, code = storescu_parallel(l, files, 4)
        assert.are.equal(0, code, out)
        assert.are.equal(#files, stopped_line(stop(l)).stored)
        for _, s in ipairs(sent) do
            assert.are.equal(data_set(s.path), data_set(where(l.out, s)), s.path)
        end
        -- nothing else: no temporary file left behind
        assert.are.equal(#files, count_files(l.out, "*"))
    end

    it("stores every instance sent over four associations at once into one directory, its data set byte for byte", function()
        arrives_intact({"--max-per-host", "8"}, function(dir, s) return dir .. "/" .. s.sop .. ".dcm" end)
    end)

    it("with --sort-by-study, stores each instance sent over four associations at once in its study's directory, byte for byte", function()
        arrives_intact({"--sort-by-study", "--max-per-host", "8"},
                       function(dir, s) return dir .. "/" .. s.study .. "/" .. s.sop .. ".dcm" end)
    end)
end)

-- Another DICOM stack (python3-odil) sends C-STORE requests whose data set names
-- another instance than the request, or none: no DCMTK tool can, they read both
-- from the same file.
local MISMATCH_PY = h.write_file(work .. "/mismatch.py", [[
import json, sys
import odil
from odil_ct import CT, ct_dataset
port = int(sys.argv[1])
def dataset(sop):
    return ct_dataset(sop, "RTB_MISMATCH")
a = odil.Association()
a.set_peer_host("127.0.0.1")
a.set_peer_port(port)
pc = odil.AssociationParameters.PresentationContext(
    1, CT, [odil.registry.ExplicitVRLittleEndian], odil.AssociationParameters.PresentationContext.Role.SCU)
a.update_parameters().set_calling_ae_title("ODIL_SCU").set_called_ae_title("RTB_LISTEN").set_presentation_contexts([pc])
a.associate()
out = []
for announced, inside in (("1.2.3.4.5.100", "1.2.3.4.5.999"), ("1.2.3.4.5.101", None), ("1.2.3.4.5.102", "1.2.3.4.5.102")):
    a.send_message(odil.messages.CStoreRequest(a.next_message_id(), CT, announced, 0, dataset(inside)), CT)
    out.append(odil.messages.CStoreResponse(a.receive_message()).get_status())
a.release()
print(json.dumps(out))
]])

describe("rtbackup listen and a data set that is not the instance announced", function()
    it("refuses it (0xA900) and keeps nothing under the announced name; the next store on the association is kept", function()
        local l = listen()
        local out, code = sh(string.format("PYTHONPATH=%s %s %s %d", h.quote(h.source .. "/tests/spec"), PY,
                                           MISMATCH_PY, l.port))
        assert.are.equal(0, code, out)
        assert.are.same({0xA900, 0xA900, 0}, cjson.decode(out:match("%[[^\n]*%]")))
        local output = stop(l)
        local s = stopped_line(output)
        -- each refusal is in the log, with its status
        local _, said = output:gsub("refused a C%-STORE: nothing kept[^\n]*status=0xA900", "")
        assert.are.equal(2, said, output)
        assert.are.equal(1, s.stored)
        assert.are.equal(1, count_files(l.out))
        assert.are.equal(1, count_files(l.out, "1.2.3.4.5.102.dcm"))
        assert.are.equal(0, count_files(l.out, "*.tmp*"))
    end)
end)

describe("rtbackup listen with storescp's habits", function()
    it("--sort-by-study writes each instance under <out-dir>/<StudyInstanceUID>/", function()
        local l = listen{"--sort-by-study"}
        local out, code = storescu(l, h.quote(tb.SYNTH_DIR) .. "/*.dcm")
        assert.are.equal(0, code, out)
        local s = stopped_line(stop(l))
        assert.are.equal(tonumber(tb.SYNTH_INSTANCES), s.stored)
        local listing = sh(string.format("cd %s && find . -type f -name '*.dcm' | sort", h.quote(l.out)))
        local n, studies = 0, {}
        for dir, file in listing:gmatch("%./([^/\n]+)/([^/\n]+%.dcm)") do
            local uid = sh(string.format("dcmdump -q +P 0020,000d %s", h.quote(l.out .. "/" .. dir .. "/" .. file))):match("%[([%d.]+)%]")
            assert.are.equal(uid, dir)
            studies[dir] = true
            n = n + 1
        end
        assert.are.equal(tonumber(tb.SYNTH_INSTANCES), n) -- every file is in a study folder
        local n_studies = 0
        for _ in pairs(studies) do n_studies = n_studies + 1 end
        assert.are.equal(tonumber(tb.SYNTH_PATIENTS), n_studies)
    end)

    it("--sort-by-study keeps an instance without a StudyInstanceUID in --out-dir, and says so", function()
        local l = listen{"--sort-by-study"}
        local r = h.run{"run", h.write_file(work .. "/nostudy.lua", string.format([[
            local dicom = require "rtbackup.dicom"
            local peer = dicom.peer{aet = "RTB_LISTEN", host = "127.0.0.1", port = %d, calling_aet = "NOSTUDY"}
            print(peer:store{dicom.dataset{SOPClassUID = "1.2.840.10008.5.1.4.1.1.7",
                                           SOPInstanceUID = "1.2.3.4.5.9.1", PatientID = "RTBNS"}}.stored)]],
            l.port))}
        local output = stop(l)
        assert.are.equal(0, r.code, r.output)
        assert.are.equal(1, count_files(l.out, "1.2.3.4.5.9.1.dcm"))
        assert.matches("stored in --out-dir itself: the instance has no valid StudyInstanceUID", output, 1, true)
    end)

    it("--exec-on-reception runs the command for each stored instance with #p #f #a #c #r, never through a shell", function()
        local record = work .. "/record.log"
        local script = h.write_file(work .. "/record.sh", "#!/bin/sh\nprintf '%s|%s|%s|%s\\n' \"$1\" \"$2\" \"$3\" \"$4\" >>" ..
                                    h.quote(record) .. "\n")
        os.execute("chmod +x " .. h.quote(script))
        local l = listen{"--exec-on-reception", script .. " #a '#p/#f' #c #r"}
        -- A calling AE title a shell would run: here it must stay one plain argument.
        local evil = "X;touch PWNED"
        local files = sh(string.format("ls %s/*.dcm | head -3", h.quote(tb.SYNTH_DIR)))
        local list = {}
        for f in files:gmatch("[^\n]+") do list[#list + 1] = h.quote(f) end
        local out, code = sh(string.format("cd %s && TCP_NODELAY=1 storescu -aet %s -aec RTB_LISTEN 127.0.0.1 %d %s",
                                           h.quote(work), h.quote(evil), l.port, table.concat(list, " ")))
        assert.are.equal(0, code, out)
        local s = stopped_line(stop(l)) -- the commands still queued run before it exits
        assert.are.equal(3, s.stored)
        assert.are.equal(3, s.exec_ran)
        assert.are.equal(0, s.exec_failed)
        local lines = {}
        for line in slurp(record):gmatch("[^\n]+") do lines[#lines + 1] = line end
        assert.are.equal(3, #lines)
        for _, line in ipairs(lines) do
            local ae, path, called, remote = line:match("^(.-)|(.-)|(.-)|(.-)$")
            assert.are.equal(evil, ae)
            assert.are.equal("RTB_LISTEN", called)
            assert.are.equal("127.0.0.1", remote)
            assert.matches("^" .. l.out:gsub("%p", "%%%0") .. "/[%d.]+%.dcm$", path)
            assert.are.equal(0, select(2, sh("test -f " .. h.quote(path))))
        end
        assert.is_nil(io.open(work .. "/PWNED"))
    end)

    it("exits 2 for an --exec-on-reception with an unmatched quote", function()
        local r = h.run{"listen", "--aet", "X", "--port", "0", "--out-dir", work .. "/bad", "--exec-on-reception", "echo 'oops"}
        assert.are.equal(2, r.code, r.output)
        assert.matches("unmatched", r.stderr)
    end)
end)
