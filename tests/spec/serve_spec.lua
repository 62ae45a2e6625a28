-- requires: testbed
-- rtbackup serve against the testbed, after real backups and drills: the status page
-- loaded in headless Chromium (the rendered DOM checked against what Orthanc holds,
-- screenshots on a desktop and a phone, printed to PDF), /metrics checked by promtool,
-- /healthz, /readyz, /api, basic auth, TLS, hidden patient IDs, and serving while a
-- backup writes the journal.
--
-- The clinic: "ARIA" is Orthanc "staging" holding a synthetic study a day for the last
-- 21 days (the testbed's patient RTB001, copied with new UIDs and dates); two of those
-- days have an RTDOSE (in a study of its own) of a SOP class the archive does not
-- know, which Orthanc "main" refuses (red); most of the last three days are left to
-- later runs by max_uids_per_run (grey).
-- "Mosaiq" is the synthetic Mosaiq (SQLite) of the last 7 days. The archive is "main".
--
-- RTB_UPDATE_SCREENSHOT=1 copies the desktop screenshot to docs/status-page.png (the
-- one the README shows).
local h = require "helpers"
local cjson = require "cjson"
local task = require "rtbackup.task"

local tb = h.testbed()
local main, staging = h.orthanc(tb.MAIN_HTTP_URL), h.orthanc(tb.STAGING_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"
local DAYS = 21
local FAILING = {3, 9} -- days back whose RTDOSE the archive refuses
local PER_STUDY = tonumber(tb.SYNTH_CT_SLICES) + 3
local PASSWORD = "correct horse battery staple"

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local data = f:read("a")
    f:close()
    return data
end

local function sh(cmd)
    local p = io.popen("(" .. cmd .. ") 2>&1")
    local out = p:read("a")
    local _, _, code = p:close()
    return code, out
end

local function day_back(n) return os.date("%Y-%m-%d", os.time() - n * 86400) end

local function write_env(path, extra)
    h.write_file(path, h.env_toml(tb, "CLINIC", {
        description = "synthetic clinic on the testbed", default_source = "ARIA", default_backup = "MAIN",
        sources = {{alias = "ARIA", type = "aria", peer = "STAGING"},
                   {alias = "Mosaiq", type = "mosaiq", odbc_driver = "SQLite3", db_server = "localhost",
                    db_database = dir .. "/mosaiq.db", db_username = "test", db_password = ""}},
        targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
        settings = {state_dir = state, retry_backoff_ms = 10, max_retries = 1, serve_days = DAYS}, extra = extra}))
    return path
end

local CONFIG = dir .. "/clinic.toml"

local function rtb(args, opts)
    local full = {"--config", CONFIG}
    for _, a in ipairs(args) do full[#full + 1] = a end
    return h.run(full, opts)
end

-- The synthetic days: RTB001's files copied per day with new UIDs (references kept
-- consistent), uploaded to Orthanc "staging" over REST.
local GENERATE = [[
import datetime, hashlib, io, json, sys, urllib.request
import pydicom
index, url, days, failing = sys.argv[1], sys.argv[2], int(sys.argv[3]), {int(x) for x in sys.argv[4].split(",")}
files = [l.split()[2] for l in open(index) if l.startswith("RTB001 ")]
today = datetime.date.today()
def new_uid(key, old):
    return "2.25." + str(int(hashlib.sha256((key + "/" + str(old)).encode()).hexdigest()[:32], 16))
n = 0
for back in range(days):
    day = today - datetime.timedelta(days=back)
    key = "serve-spec-" + day.isoformat()
    for path in files:
        ds = pydicom.dcmread(path)
        for elem in ds.iterall():
            if elem.VR == "UI" and elem.value and str(elem.value).startswith("2.25."):
                elem.value = new_uid(key, elem.value)
        ds.PatientID = "SRV%03d" % back
        ds.PatientName = "STATUS^DAY%03d" % back
        ds.StudyDate = day.strftime("%Y%m%d")
        if ds.Modality == "RTDOSE" and back in failing:
            ds.SOPClassUID = "1.2.826.0.1.3680043.10.1234.99.1"  # no archive knows it
            ds.StudyInstanceUID = new_uid(key, "a study of its own")  # so that it fails alone
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf)
        req = urllib.request.Request(url + "/instances", data=buf.getvalue(), method="POST")
        json.load(urllib.request.urlopen(req))
        n += 1
print(n)
]]

-- What "main" holds of the clinic's days: {["YYYY-MM-DD"] = instances}.
local function held_per_day()
    local days = {}
    for _, id in ipairs(main:get("/studies")) do
        local s = main:get("/studies/" .. id)
        if s.PatientMainDicomTags.PatientID:match("^SRV%d%d%d$") then
            local d = s.MainDicomTags.StudyDate
            local day = d:sub(1, 4) .. "-" .. d:sub(5, 6) .. "-" .. d:sub(7, 8)
            days[day] = (days[day] or 0) + #main:get("/studies/" .. id .. "/instances")
        end
    end
    return days
end

-- ---- serve in a child process ---------------------------------------------------------------

-- Runs `rtbackup serve CLINIC` in the background on a free port; records its pid,
-- and its exit code when it ends. `vars`: environment variables for it.
h.write_file(dir .. "/launch.sh", [[
name=$1; shift
"$@" </dev/null >"$DIR/$name.log" 2>&1 &
echo $! > "$DIR/$name.pid"
wait $!
echo $? > "$DIR/$name.rc"
]])

local servers = {}
local function start_serve(config, name, vars)
    local port_file = dir .. "/" .. name .. ".port"
    for _, ext in ipairs{".port", ".pid", ".rc", ".log"} do os.remove(dir .. "/" .. name .. ext) end
    local env = {}
    for k, v in pairs(vars or {}) do env[#env + 1] = h.quote(k .. "=" .. v) end
    os.execute(string.format("DIR=%s sh %s %s env %s %s --config %s serve CLINIC --port 0 --port-file %s " ..
                             "</dev/null >/dev/null 2>&1 &", h.quote(dir), h.quote(dir .. "/launch.sh"), h.quote(name),
                             table.concat(env, " "), h.quote(h.bin), h.quote(config), h.quote(port_file)))
    for _ = 1, 400 do
        local port = slurp(port_file)
        if port and port:match("^%d+\n$") then
            local s = {name = name, port = tonumber(port), pid = tonumber(slurp(dir .. "/" .. name .. ".pid"))}
            servers[#servers + 1] = s
            return s
        end
        if slurp(dir .. "/" .. name .. ".rc") then break end
        task.sleep(25)
    end
    error("rtbackup serve did not start:\n" .. tostring(slurp(dir .. "/" .. name .. ".log")))
end

-- Signals it and waits for it to end; returns its exit code.
local function stop_serve(s, signal)
    os.execute("kill -" .. (signal or "TERM") .. " " .. s.pid .. " 2>/dev/null")
    for _ = 1, 400 do
        local rc = slurp(dir .. "/" .. s.name .. ".rc")
        if rc then return tonumber(rc) end
        task.sleep(25)
    end
end

-- curl: {code (curl's exit), status, body, headers, seconds}.
local function curl(url, args)
    local parts = {}
    for i, a in ipairs(args or {}) do parts[i] = h.quote(a) end
    local body, headers = dir .. "/curl.body", dir .. "/curl.headers"
    os.remove(body)
    os.remove(headers)
    local p = io.popen(string.format("curl -s -m 30 -o %s -D %s -w '%%{http_code} %%{time_total}' %s %s 2>/dev/null",
                                     h.quote(body), h.quote(headers), table.concat(parts, " "), h.quote(url)))
    local out = p:read("a")
    local _, _, code = p:close()
    local status, seconds = out:match("^(%d+) ([%d.]+)")
    return {code = code, status = tonumber(status), seconds = tonumber(seconds), body = slurp(body) or "",
            headers = slurp(headers) or ""}
end

local function chromium(args, url)
    local all = {"chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--user-data-dir=" .. dir .. "/chromium", "--no-first-run", "--disable-extensions"}
    for _, a in ipairs(args) do all[#all + 1] = a end
    all[#all + 1] = url
    local quoted = {}
    for i, a in ipairs(all) do quoted[i] = h.quote(a) end
    local p = io.popen(table.concat(quoted, " ") .. " 2>/dev/null")
    local out = p:read("a")
    p:close()
    return out
end

local function png_size(path)
    local data = slurp(path) or ""
    if data:sub(1, 8) ~= "\137PNG\r\n\26\n" then return nil end
    return string.unpack(">I4", data, 17), string.unpack(">I4", data, 21)
end

-- ---- the clinic's history ---------------------------------------------------------------------

local srv
local base

setup(function()
    main:wipe()
    staging:wipe()
    write_env(CONFIG)
    local code, out = sh(string.format("/usr/bin/python3 -c %s %s %s %d %s", h.quote(GENERATE),
                                       h.quote(tb.SYNTH_DIR .. "/index.txt"), h.quote(tb.STAGING_HTTP_URL), DAYS,
                                       table.concat(FAILING, ",")))
    assert(code == 0, out)
    local r = rtb{"mosaiq-db", "create", "CLINIC", "--patients", "4", "--from", day_back(6), "--days", "7",
                  "--leaf-encoding", "float32_mm"}
    assert(r.code == 0, r.output)
    -- Everything up to three days ago; of the last three days, one study (the cap).
    r = rtb{"backup", "CLINIC", "ARIA", "--since", day_back(DAYS - 1), "--until", day_back(3)}
    assert(r.code == 1, r.output) -- the refused RTDOSEs
    write_env(CONFIG, "max_uids_per_run = " .. PER_STUDY)
    r = rtb{"backup", "CLINIC", "ARIA", "--since", day_back(2), "--until", day_back(0)}
    assert(r.code == 1, r.output) -- the refused RTDOSEs, tried again first
    write_env(CONFIG)
    r = rtb{"backup", "CLINIC", "Mosaiq", "--since", day_back(6), "--until", day_back(0)}
    assert(r.code == 0, r.output)
    r = rtb{"drill", "CLINIC", "ARIA", "--sample", "3"}
    assert(r.code == 0, r.output)
    r = rtb{"drill", "CLINIC", "Mosaiq", "--sample", "3"}
    assert(r.code == 0, r.output)
    srv = start_serve(CONFIG, "plain")
    base = "http://127.0.0.1:" .. srv.port
end)

teardown(function()
    for _, s in ipairs(servers) do stop_serve(s, "KILL") end
    main:wipe()
    staging:wipe()
    os.execute("rm -rf " .. h.quote(dir))
end)

-- ---- the page -----------------------------------------------------------------------------------

describe("the status page in headless Chromium", function()
    it("shows per day what Orthanc holds: verified green, refused red, left for later grey", function()
        local dom = chromium({"--dump-dom"}, base .. "/")
        assert.matches("<h1>rtbackup status</h1>", dom)
        local aria = dom:match('<article class="source" id="src%-CLINIC%-ARIA".-</article>')
        assert.is_string(aria, "no ARIA section in:\n" .. dom:sub(1, 2000))
        assert.matches('data%-state="bad"', aria)
        local held = held_per_day()
        local seen, failed, pending = 0, 0, 0
        for day, known, verified, f, p in aria:gmatch('data%-day="([%d-]+)" data%-known="(%d+)" data%-verified="(%d+)" ' ..
                                                      'data%-failed="(%d+)" data%-pending="(%d+)"') do
            seen = seen + 1
            assert.are.equal(PER_STUDY, tonumber(known), day)
            assert.are.equal(held[day] or 0, tonumber(verified), day)
            failed, pending = failed + tonumber(f), pending + tonumber(p)
        end
        assert.are.equal(DAYS, seen)
        assert.are.equal(#FAILING, failed)
        local total = 0
        for _, n in pairs(held) do total = total + n end
        assert.are.equal(DAYS * PER_STUDY - total - failed, pending) -- the rest: left for later
        assert.is_true(pending >= PER_STUDY)
        -- each refused RTDOSE named, with its patient
        assert.matches("Open failures %(2%)", aria)
        for _, back in ipairs(FAILING) do
            assert.matches(string.format("SRV%03d", back), aria)
        end
        assert.matches("RTDOSE", aria)
        -- the drill and the runs
        assert.matches("last restore drill</dt><dd><span class=\"badge ok\">ok</span>", aria)
        local mosaiq = dom:match('<article class="source" id="src%-CLINIC%-Mosaiq".-</article>')
        assert.matches("records per treatment date", mosaiq)
        assert.matches('data%-state="ok"', mosaiq)
        -- peer health
        local health = dom:match('<article class="source health".-</article>')
        assert.matches("c%-echo</td><td>ARIA</td><td><span class=\"badge ok\">ok</span>", health)
        assert.matches("odbc</td><td>Mosaiq</td><td><span class=\"badge ok\">ok</span>", health)
        -- nothing from anywhere else, no script
        assert.is_nil(dom:find("<script", 1, true))
        assert.is_nil(dom:find("<link", 1, true))
        assert.is_nil(dom:find(" src=", 1, true))
        assert.is_nil(dom:find('href="http', 1, true))
    end)

    it("renders on a desktop, on a phone and in print", function()
        local desktop = dir .. "/status-page.png"
        chromium({"--window-size=1280,1900", "--screenshot=" .. desktop}, base .. "/")
        local w, hgt = png_size(desktop)
        assert.are.equal(1280, w)
        assert.are.equal(1900, hgt)
        if os.getenv("RTB_UPDATE_SCREENSHOT") then
            assert(os.execute("cp " .. h.quote(desktop) .. " " .. h.quote(h.source .. "/docs/status-page.png")))
        end
        local phone = dir .. "/phone.png"
        chromium({"--window-size=390,844", "--screenshot=" .. phone}, base .. "/")
        assert.are.equal(390, (png_size(phone)))
        local pdf = dir .. "/status.pdf"
        chromium({"--print-to-pdf=" .. pdf, "--no-pdf-header-footer"}, base .. "/")
        assert.are.equal("%PDF-", (slurp(pdf) or ""):sub(1, 5))
        -- how long the page takes (printed for the record; no assertion on time)
        local r = curl(base .. "/")
        assert.are.equal(200, r.status)
        print(string.format("# status page: %d bytes in %.3f s", #r.body, r.seconds))
    end)

    it("says what the headers promise: no caching, no framing, nothing but inline style", function()
        local r = curl(base .. "/")
        assert.matches("Content%-Type: text/html; charset=utf%-8", r.headers)
        assert.matches("Cache%-Control: no%-store", r.headers)
        assert.matches("X%-Frame%-Options: DENY", r.headers)
        assert.matches("Content%-Security%-Policy: default%-src 'none'; style%-src 'unsafe%-inline'", r.headers)
        assert.are.equal(400, curl(base .. "/?days=0").status)
        assert.are.equal(404, curl(base .. "/?env=NOPE").status)
        assert.are.equal(200, curl(base .. "/?days=3").status)
    end)
end)

-- ---- metrics, probes, api ---------------------------------------------------------------------

describe("/metrics", function()
    it("passes promtool check metrics and says what the journal, the drill and Orthanc say", function()
        local r = curl(base .. "/metrics")
        assert.are.equal(200, r.status)
        assert.matches("Content%-Type: text/plain; version=0%.0%.4", r.headers)
        local file = h.write_file(dir .. "/metrics.txt", r.body)
        if sh("command -v promtool") ~= 0 then return pending("promtool is not installed (Debian package prometheus)") end
        local code, out = sh("promtool check metrics < " .. h.quote(file))
        assert.are.equal(0, code, out)
        local function value(series)
            local v = r.body:match("\n" .. series:gsub("[%-%.%[%]%(%)%+%*%?%^%$]", "%%%0") .. " (%S+)\n")
            return tonumber(v)
        end
        local held, total = held_per_day(), 0
        for _, n in pairs(held) do total = total + n end
        assert.are.equal(total, value('rtbackup_coverage_instances{env="CLINIC",source="ARIA",state="verified"}'))
        assert.are.equal(#FAILING, value('rtbackup_coverage_instances{env="CLINIC",source="ARIA",state="failed"}'))
        assert.are.equal(#FAILING, value('rtbackup_open_failures{env="CLINIC",source="ARIA"}'))
        assert.are.equal(1, value('rtbackup_last_run_exit_code{env="CLINIC",source="ARIA"}'))
        assert.are.equal(0, value('rtbackup_last_run_exit_code{env="CLINIC",source="Mosaiq"}'))
        local drill = cjson.decode(slurp(state .. "/CLINIC-ARIA-last-drill.json"))
        assert.are.equal(drill.compared, value('rtbackup_drill_instances_compared{env="CLINIC",source="ARIA",command="drill"}'))
        assert.are.equal(0, value('rtbackup_drill_instances_different{env="CLINIC",source="ARIA",command="drill"}'))
        assert.is_true(value('rtbackup_last_success_timestamp_seconds{env="CLINIC",source="Mosaiq"}') > 0)
        assert.are.equal(1, value('rtbackup_health_check_up{env="CLINIC",check="c-echo",target="MAIN"}'))
        assert.is_true(value("process_start_time_seconds") > 0)
        assert.is_true(value('rtbackup_serve_requests_total{route="/",code="200"}') >= 1)
    end)
end)

describe("/healthz, /readyz and /api", function()
    it("answer probes and tools", function()
        local r = curl(base .. "/healthz")
        assert.are.equal(200, r.status)
        assert.are.equal("ok\n", r.body)
        r = curl(base .. "/readyz")
        assert.are.equal(200, r.status)
        local ready = cjson.decode(r.body)
        assert.is_true(ready.ready)
        assert.are.equal("CLINIC", ready.environments[1].env)
        assert.is_true(#ready.environments[1].checks >= 4)

        -- /api/status says what `rtbackup status` says
        local api = cjson.decode(curl(base .. "/api/status/CLINIC/ARIA").body)
        local cli = cjson.decode(rtb{"status", "CLINIC", "ARIA", "--days", tostring(DAYS), "--format", "json"}.stdout)
        assert.are.same(cli.sources[1].days, api.source.days)
        assert.are.same(cli.sources[1].totals, api.source.totals)
        local all = cjson.decode(curl(base .. "/api/status").body)
        assert.are.equal(2, #all.environments[1].sources)
        local runs = cjson.decode(curl(base .. "/api/runs/CLINIC/ARIA?limit=2").body)
        assert.are.equal(2, #runs.runs)
        assert.are.equal("drill", runs.runs[1].command)
        assert.is_table(cjson.decode(curl(base .. "/api").body).endpoints)
        assert.are.equal(404, curl(base .. "/api/status/NOPE").status)
        assert.are.equal(404, curl(base .. "/api/status/CLINIC/NOPE").status)
        assert.are.equal(404, curl(base .. "/nothing/here").status)
        assert.are.equal(405, curl(base .. "/", {"-X", "POST", "--data", "x"}).status)
        assert.are.equal(400, curl(base .. "/api/runs/CLINIC/ARIA?limit=0").status)
    end)

    it("/readyz says 503 and names the check when a peer is down", function()
        local cfg = write_env(dir .. "/down.toml", "")
        -- the same clinic, with its archive on a port nobody listens on
        h.write_file(cfg, (slurp(cfg):gsub("port = " .. tb.MAIN_PORT, "port = " .. tb.CLOSED_PORT)))
        local down = start_serve(cfg, "down")
        local r = curl("http://127.0.0.1:" .. down.port .. "/readyz")
        assert.are.equal(503, r.status)
        local body = cjson.decode(r.body)
        assert.is_false(body.ready)
        local failed
        for _, c in ipairs(body.environments[1].checks) do
            if not c.ok then failed = c end
        end
        assert.are.equal("MAIN", failed.target)
        assert.are.equal("c-echo", failed.check)
        assert.are.equal(200, curl("http://127.0.0.1:" .. down.port .. "/healthz").status)
        -- the page still renders, and says so
        local page = curl("http://127.0.0.1:" .. down.port .. "/")
        assert.are.equal(200, page.status)
        assert.matches("c%-echo</td><td>MAIN</td><td><span class=\"badge bad\">failed</span>", page.body)
        stop_serve(down)
    end)
end)

describe("serving while a backup writes the journal", function()
    it("answers every request meanwhile, and shows the new numbers once the backup is done", function()
        -- the three studies of the last days still to do: two of them pending
        local before = cjson.decode(curl(base .. "/api/status/CLINIC/ARIA").body).source.totals
        assert.is_true(before.pending >= PER_STUDY)
        os.execute(string.format("%s --config %s backup CLINIC ARIA --since %s --until %s >%s 2>&1 & echo $! > %s",
                                 h.quote(h.bin), h.quote(CONFIG), day_back(2), day_back(0), h.quote(dir .. "/bg.log"),
                                 h.quote(dir .. "/bg.pid")))
        local answered = 0
        local pid = slurp(dir .. "/bg.pid"):match("%d+")
        repeat
            local r = curl(base .. "/api/status/CLINIC/ARIA")
            assert.are.equal(200, r.status, r.body)
            assert.is_table(cjson.decode(r.body).source)
            answered = answered + 1
        until sh("kill -0 " .. pid .. " 2>/dev/null") ~= 0 and answered >= 3
        local after
        for _ = 1, 100 do -- the status is read again at most every 5 s while journals change
            after = cjson.decode(curl(base .. "/api/status/CLINIC/ARIA").body).source.totals
            if after.pending == 0 then break end
            task.sleep(100)
        end
        assert.are.equal(0, after.pending)
        assert.are.equal(before.verified + before.pending, after.verified)
        assert.are.equal(#FAILING, after.failed)
    end)
end)

-- ---- access ---------------------------------------------------------------------------------------

describe("basic auth, TLS and hidden patient IDs", function()
    local secure, url, cert
    setup(function()
        local hash = h.run({"--config", CONFIG, "serve", "--hash-password"}, {stdin = PASSWORD .. "\n"})
        assert(hash.code == 0, hash.output)
        local stored = hash.stdout:match("^(%S+)\n$")
        assert(stored and stored:match("^pbkdf2%-sha256%$"), hash.stdout)
        cert = dir .. "/cert.pem"
        assert(os.execute(string.format("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost " ..
            "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null", h.quote(dir .. "/key.pem"),
            h.quote(cert))))
        local cfg = write_env(dir .. "/secure.toml", string.format([[
serve_user = "physics"
serve_password_hash_env_var = "RTB_SERVE_HASH"
serve_tls_cert = "%s"
serve_tls_key = "%s"
serve_hide_patient_ids = true
]], cert, dir .. "/key.pem"))
        secure = start_serve(cfg, "secure", {RTB_SERVE_HASH = stored})
        url = "https://127.0.0.1:" .. secure.port
    end)
    teardown(function() if secure then stop_serve(secure) end end)

    it("asks for the password everywhere but /healthz, and /readyz tells strangers only yes or no", function()
        local r = curl(url .. "/", {"--cacert", cert})
        assert.are.equal(401, r.status)
        assert.matches('WWW%-Authenticate: Basic realm="rtbackup"', r.headers)
        assert.are.equal(401, curl(url .. "/metrics", {"--cacert", cert}).status)
        assert.are.equal(401, curl(url .. "/api/status", {"--cacert", cert}).status)
        assert.are.equal(401, curl(url .. "/", {"--cacert", cert, "-u", "physics:wrong password"}).status)
        assert.are.equal(401, curl(url .. "/", {"--cacert", cert, "-u", "someone:" .. PASSWORD}).status)
        assert.are.equal(200, curl(url .. "/healthz", {"--cacert", cert}).status)
        r = curl(url .. "/readyz", {"--cacert", cert})
        assert.are.equal(200, r.status)
        assert.are.equal('{"ready":true}\n', r.body)
        r = curl(url .. "/readyz", {"--cacert", cert, "-u", "physics:" .. PASSWORD})
        assert.is_table(cjson.decode(r.body).environments)
        for _ = 1, 3 do -- the first costs a PBKDF2 round, the next are remembered
            assert.are.equal(200, curl(url .. "/metrics", {"--cacert", cert, "-u", "physics:" .. PASSWORD}).status)
        end
    end)

    it("speaks HTTPS only, and shows no patient ID", function()
        assert.are_not.equal(200, curl("http://127.0.0.1:" .. secure.port .. "/healthz").status)
        assert.are.equal(60, curl(url .. "/healthz").code) -- a certificate curl was not told to trust
        local r = curl(url .. "/", {"--cacert", cert, "-u", "physics:" .. PASSWORD})
        assert.are.equal(200, r.status)
        assert.matches("Open failures %(2%)", r.body)
        assert.is_nil(r.body:find("SRV0", 1, true))
        assert.is_nil(r.body:find("patient ID", 1, true))
        local api = curl(url .. "/api/status", {"--cacert", cert, "-u", "physics:" .. PASSWORD})
        assert.is_nil(api.body:find("SRV0", 1, true))
        assert.is_nil(api.body:find("MRN", 1, true))
    end)
end)

describe("rtbackup serve itself", function()
    it("refuses environments that disagree on a serve setting, and a port that is taken (exit 2)", function()
        local two = dir .. "/two.toml"
        write_env(two, "serve_port = 9999")
        local text = slurp(two) .. (slurp(CONFIG):gsub("%[CLINIC", "[OTHER"))
        h.write_file(two, text)
        local r = h.run({"--config", two, "serve"})
        assert.are.equal(2, r.code, r.output)
        assert.matches("serve_port differs between", r.stderr)
        r = h.run({"--config", CONFIG, "serve", "CLINIC", "--port", tostring(srv.port)})
        assert.are.equal(2, r.code, r.output)
        assert.matches("cannot serve on 127%.0%.0%.1 port " .. srv.port, r.stderr)
    end)

    it("stops on SIGTERM with exit 143", function()
        local s = start_serve(CONFIG, "stopping")
        assert.are.equal(200, curl("http://127.0.0.1:" .. s.port .. "/healthz").status)
        assert.are.equal(143, stop_serve(s, "TERM"))
        assert.matches("stopping", slurp(dir .. "/stopping.log"))
        assert.are.equal(7, curl("http://127.0.0.1:" .. s.port .. "/healthz").code) -- nobody listens
    end)
end)

describe("deploy/ for serve and alerts", function()
    it("the systemd unit passes systemd-analyze verify and security", function()
        if sh("command -v systemd-analyze") ~= 0 then return pending("systemd-analyze is not installed") end
        local tmp = dir .. "/units"
        os.execute("mkdir -p " .. h.quote(tmp))
        h.write_file(tmp .. "/rtbackup-serve.service",
                     (slurp(h.source .. "/deploy/systemd/rtbackup-serve.service"):gsub("/usr/local/bin/rtbackup", h.bin)))
        local code, out = sh("cd " .. h.quote(tmp) .. " && systemd-analyze verify rtbackup-serve.service")
        assert.are.equal(0, code, out)
        assert.are.equal("", out)
        code, out = sh("cd " .. h.quote(tmp) .. " && systemd-analyze security --offline=true --threshold=25 " ..
                       "rtbackup-serve.service")
        assert.are.equal(0, code, out)
    end)

    it("the Prometheus rules pass promtool check rules and their unit tests", function()
        if sh("command -v promtool") ~= 0 then return pending("promtool is not installed (Debian package prometheus)") end
        local rules = h.source .. "/deploy/prometheus"
        local code, out = sh("promtool check rules " .. h.quote(rules .. "/rtbackup-rules.yml"))
        assert.are.equal(0, code, out)
        code, out = sh("cd " .. h.quote(rules) .. " && promtool test rules rtbackup-rules.test.yml")
        assert.are.equal(0, code, out)
    end)
end)
