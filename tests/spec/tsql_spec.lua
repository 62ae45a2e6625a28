-- The SQL Server text of every query rtbackup sends to Mosaiq, parsed as T-SQL.
--
-- No SQL Server runs here, and UCLA and TJU run these texts on theirs; so at least
-- their syntax is checked, by node-sql-parser's transactsql grammar (tests/tsql/parse.js,
-- installed by tools/deps.sh: npm ci --prefix tests/tsql). A syntax check catches what
-- SQL Server refuses before reading any table (a lost comma or parenthesis, another
-- dialect's syntax); it cannot catch a column Mosaiq does not have.
--
-- The texts are read live, as rtbackup would send them: mosaiq.deliveries and
-- mosaiq.treatment_summary are run against a connection that only records the SQL it
-- is given and returns no rows (no SQL Server can be started here, and the point is the
-- text, not the rows), for the shipped SQL Server day query and for the query each
-- environment carries (settings.mosaiq_backup_sql_query). Whoever changes day.sql or an
-- environment changes what this spec parses.
--
-- Two facts about the parser, and what the spec does about them (never by changing a
-- query):
--   * It has no ODBC '?' marker. The SQL Server ODBC driver sends a statement with its
--     markers as the parameters @P1, @P2, ...; parse.js does the same substitution
--     outside strings, quoted identifiers and comments, and maps error positions back.
--   * Its transactsql grammar also accepts some things SQL Server does not (LIMIT, '||',
--     '::', IS TRUE, SQLite/PostgreSQL functions such as date() or IFNULL); parse.js
--     refuses those after parsing. CTEs, CAST, DATEADD and "quoted" aliases parse as
--     written.
local mosaiq = require "rtbackup.mosaiq.query"
local h = require "helpers"

local TSQL = h.source .. "/tests/tsql"
local PARSE = TSQL .. "/parse.js"

local function exists(path)
    local f = io.open(path, "rb")
    if f then f:close() end
    return f ~= nil
end

local function read(path)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    return text
end

local function node()
    local env = os.getenv("NODE")
    if env and env ~= "" then return env end
    for _, candidate in ipairs{"/usr/bin/node", "/usr/local/bin/node"} do
        if exists(candidate) then return candidate end
    end
    error("node is not installed (tools/deps.sh installs nodejs)")
end

local dir
setup(function()
    assert(exists(TSQL .. "/node_modules/node-sql-parser/package.json"),
           "node-sql-parser is not installed: run tools/deps.sh (npm ci --prefix tests/tsql)")
    dir = h.tmpdir()
end)
teardown(function() if dir then os.execute("rm -rf " .. h.quote(dir)) end end)

--- Parses texts ({{name =, sql =}, ...}) with parse.js in one run. Returns the exit
-- code and the output, and the output line of each text by name.
local function parse(texts)
    local files = {}
    for i, t in ipairs(texts) do
        local path = string.format("%s/%02d-%s.sql", dir, i, t.name)
        h.write_file(path, t.sql)
        files[#files + 1] = h.quote(path)
    end
    local p = assert(io.popen(string.format("%s %s %s 2>&1; echo \"exit=$?\"",
        h.quote(node()), h.quote(PARSE), table.concat(files, " "))))
    local out = p:read("a")
    p:close()
    local code = tonumber(out:match("exit=(%d+)%s*$"))
    out = out:gsub("exit=%d+%s*$", "")
    return code, out
end

-- A connection that records each SQL text it is asked to run and returns no rows.
local function recorder(dialect)
    local rec = {label = "tsql-spec", sent = {}}
    function rec.dialect() return dialect end
    function rec:rows(sql, params)
        self.sent[#self.sent + 1] = {sql = sql, params = params}
        return function() return nil end
    end
    function rec:query(sql, params)
        self.sent[#self.sent + 1] = {sql = sql, params = params}
        return {}
    end
    function rec.event() end -- the audit event of each query (no context here)
    return rec
end

-- The day query and the accessories query as mosaiq.deliveries sends them (opts.sql:
-- a site's own day query).
local function day_query_sent(sql)
    local rec = recorder("sqlserver")
    mosaiq.deliveries(rec, "2025-06-12", {sql = sql})
    assert.are.equal(2, #rec.sent)
    for _, sent in ipairs(rec.sent) do assert.are.same({"2025-06-12"}, sent.params) end
    return rec.sent[1].sql, rec.sent[2].sql
end

local function summary_sent()
    local rec = recorder("sqlserver")
    mosaiq.treatment_summary(rec, "MRN0012345")
    assert.are.equal(1, #rec.sent)
    return rec.sent[1].sql
end

-- settings.mosaiq_backup_sql_query of an environment file: a TOML multi-line literal
-- string ('''...'''), whose newline right after the opening delimiter is not content.
local function environment_query(site)
    local text = read(h.source .. "/environments/" .. site .. ".toml")
    local sql = text:match("\nmosaiq_backup_sql_query%s*=%s*'''\r?\n(.-)'''")
    assert(sql, "environments/" .. site .. ".toml has no mosaiq_backup_sql_query = '''...'''")
    return sql
end

-- Every text rtbackup sends to a Mosaiq (SQL Server) database.
local function all_texts()
    local day, devices = day_query_sent(nil)
    local texts = {
        {name = "day-query-sqlserver", sql = day},
        {name = "devices-query-sqlserver", sql = devices},
        {name = "points-query-sqlserver", sql = mosaiq.strip_comments(mosaiq.points_query("sqlserver"))},
        {name = "treatment-summary", sql = summary_sent()},
    }
    for _, site in ipairs{"ucla", "tju"} do
        texts[#texts + 1] = {name = site .. "-mosaiq_backup_sql_query",
                             sql = (day_query_sent(environment_query(site)))}
    end
    -- `rtbackup health` asks every ODBC source (Mosaiq included) for SELECT 1.
    local health = read(h.source .. "/scripts/lib/rtbackup/health.lua")
    local n = 0
    for sql in health:gmatch("db:query%(%s*\"([^\"]+)\"") do
        n = n + 1
        texts[#texts + 1] = {name = "health-" .. n, sql = sql}
    end
    assert.is_true(n > 0, "scripts/lib/rtbackup/health.lua: no db:query(\"...\") found")
    return texts
end

describe("T-SQL parse check", function()
    it("parses every SQL text rtbackup sends to Mosaiq, one statement each", function()
        local texts = all_texts()
        local code, out = parse(texts)
        assert.are.equal(0, code, out)
        for i, t in ipairs(texts) do
            local line = out:match(string.format("%02d%%-%s%%.sql: ([^\n]*)", i, t.name:gsub("%-", "%%-")))
            assert.is_truthy(line, t.name .. " missing from:\n" .. out)
            assert.matches("^ok %(1 statement, ", line, t.name)
        end
        -- The day queries bind the date, the summary the MRN: one marker each.
        for _, name in ipairs{"day%-query%-sqlserver", "devices%-query%-sqlserver", "points%-query%-sqlserver",
                              "treatment%-summary",
                              "ucla%-mosaiq_backup_sql_query",
                              "tju%-mosaiq_backup_sql_query"} do
            assert.matches(name .. "%.sql: ok %(1 statement, 1 parameter%)", out)
        end
    end)

    it("parses the read-only checks a site runs on its Mosaiq (docs/mosaiq-site-checks.sql)", function()
        local texts = {}
        local body = mosaiq.strip_comments(read(h.source .. "/docs/mosaiq-site-checks.sql"))
        for statement in body:gmatch("([^;]+);") do
            if statement:match("%S") then
                texts[#texts + 1] = {name = "site-check-" .. (#texts + 1), sql = statement}
            end
        end
        assert.are.equal(7, #texts)
        local code, out = parse(texts)
        assert.are.equal(0, code, out)
        for i, t in ipairs(texts) do
            assert.matches(string.format("%02d%%-%s%%.sql: ok %%(1 statement", i, t.name:gsub("%-", "%%-")), out)
        end
    end)

    it("rejects a broken T-SQL text, naming the line", function()
        -- The live day query with one comma removed between two selected columns.
        local sql = (day_query_sent(nil))
        local at = assert(sql:find("AS \"[%w_]+\",\n"), "no aliased column followed by a comma")
        local comma = sql:find(",", at, true)
        local broken = sql:sub(1, comma - 1) .. sql:sub(comma + 1)
        local line_of_comma = select(2, sql:sub(1, comma):gsub("\n", "")) + 1
        local code, out = parse{{name = "broken-day-query", sql = broken},
                                {name = "fine", sql = "SELECT 1 AS one"},
                                {name = "dangling-and", sql = "SELECT FLD.FLD_ID FROM TxField FLD\nWHERE FLD.Version = ? AND"}}
        assert.are.equal(1, code, out)
        local line = tonumber(out:match("broken%-day%-query%.sql:(%d+):%d+: Expected"))
        assert.is_truthy(line, out)
        assert.is_true(line == line_of_comma or line == line_of_comma + 1,
                       "error at line " .. tostring(line) .. ", comma removed on line " .. line_of_comma .. "\n" .. out)
        assert.matches("fine%.sql: ok", out)
        assert.matches("dangling%-and%.sql:2:%d+: Expected", out)
    end)

    it("rejects what the grammar accepts but SQL Server does not", function()
        local day = (day_query_sent(nil))
        local code, out = parse{
            {name = "limit", sql = day .. "\nLIMIT 10"},
            {name = "concat", sql = "SELECT PAT.Last_Name || ', ' || PAT.First_Name AS n FROM Patient PAT"},
            {name = "sqlite-functions", sql = "SELECT IFNULL(SUBSTR(IDA, 1, 3), '') AS x FROM Ident"},
            {name = "pg-cast", sql = "SELECT FLD.Meterset::float AS mu FROM TxField FLD WHERE FLD.FLD_ID = ?"},
            -- The other two dialects' day windows are not T-SQL either.
            {name = "day-query-postgres", sql = mosaiq.strip_comments(mosaiq.day_query("postgres"))},
            {name = "day-query-sqlite", sql = mosaiq.strip_comments(mosaiq.day_query("sqlite"))},
        }
        assert.are.equal(1, code, out)
        assert.matches("limit%.sql: LIMIT is not T%-SQL", out)
        assert.matches("concat%.sql: '||' is not T%-SQL", out)
        assert.matches("sqlite%-functions%.sql: IFNULL%(%) is not a SQL Server function", out)
        assert.matches("sqlite%-functions%.sql: SUBSTR%(%) is not a SQL Server function", out)
        assert.matches("pg%-cast%.sql: '::' casts are not T%-SQL", out)
        assert.matches("day%-query%-postgres%.sql:%d+:%d+: Expected", out)
        assert.matches("day%-query%-sqlite%.sql: ", out)
        assert.is_nil(out:find("day-query-sqlite.sql: ok", 1, true), out)
    end)

    it("binds '?' markers only outside strings, quoted names and comments", function()
        local code, out = parse{{name = "markers", sql = table.concat({
            "SELECT '?' AS \"a?\", [b?] AS c -- why?",
            "FROM Ident /* ? */ WHERE IDA = ? AND Pat_Id1 = ?"}, "\n")}}
        assert.are.equal(0, code, out)
        assert.matches("markers%.sql: ok %(1 statement, 2 parameters%)", out)
        -- A position after markers is one of the text as given, not of the @P form.
        code, out = parse{{name = "shifted", sql = "SELECT a FROM t WHERE b = ? AND c = ?)"}}
        assert.are.equal(1, code, out)
        assert.matches("shifted%.sql:1:38: ", out)
    end)
end)

describe("the Mosaiq queries' three dialects", function()
    -- The template with the day window and the quoting of the reserved column name
    -- [Index] marked; every dialect must be the template with only those filled in.
    local function check(name, build)
        local template = mosaiq.strip_comments(read(mosaiq.file(name .. ".sql")):gsub("%-%- @DAY_WINDOW@", "\1"))
        local before, after = template:match("^(.-)\1(.*)$")
        assert.is_truthy(before, name .. ".sql has no -- @DAY_WINDOW@ line")
        local windows = {}
        for _, dialect in ipairs{"sqlite", "postgres", "sqlserver"} do
            local index = dialect == "sqlserver" and "[Index]" or '"Index"'
            local sql = mosaiq.strip_comments(build(dialect))
            local tail = after:gsub("@INDEX@", index)
            assert.are.equal(before, sql:sub(1, #before), dialect)
            assert.are.equal(tail, sql:sub(-#tail), dialect)
            windows[dialect] = sql:sub(#before + 1, #sql - #tail)
            assert.matches("tx_day AS", windows[dialect], dialect)
        end
        assert.are_not.equal(windows.sqlserver, windows.postgres)
        assert.are_not.equal(windows.sqlserver, windows.sqlite)
    end
    it("come from one template each, differing only in the day window and quoting", function()
        check("day", mosaiq.day_query)
        check("devices", mosaiq.devices_query)
        -- the control points query has no day window: only the quoting differs
        local template = mosaiq.strip_comments(read(mosaiq.file("points.sql")))
        assert.are.equal((template:gsub("@INDEX@", "[Index]")), mosaiq.strip_comments(mosaiq.points_query("sqlserver")))
        assert.are.equal((template:gsub("@INDEX@", '"Index"')), mosaiq.strip_comments(mosaiq.points_query("sqlite")))
    end)
end)

describe("the SQL rtbackup sends over ODBC", function()
    -- A new call site that reaches Mosaiq needs its text in all_texts() above; this
    -- census fails until it is added (or listed here as never reaching Mosaiq).
    local KNOWN = {
        ["scripts/lib/rtbackup/health.lua"] = 1,     -- SELECT 1: parsed above
        ["scripts/lib/rtbackup/mosaiq/query.lua"] = 9, -- day, devices, points and summary queries:
                                                     -- parsed above; the other five build synthetic
                                                     -- clinics
        ["scripts/lib/rtbackup/mosaiq/synth.lua"] = 2, -- synthetic clinics only
    }

    it("is sent from the known places only", function()
        local p = assert(io.popen("cd " .. h.quote(h.source) .. " && find scripts -name '*.lua' | sort"))
        local found = {}
        for path in p:lines() do
            if path ~= "scripts/lib/rtbackup/odbc.lua" then -- the wrapper itself
                local n = 0
                for line in io.lines(h.source .. "/" .. path) do
                    if not line:match("^%s*%-%-") then
                        for _ in line:gmatch("%f[%w_]db[:.]query%s*[(,]") do n = n + 1 end
                        for _ in line:gmatch("%f[%w_]db[:.]rows%s*[(,]") do n = n + 1 end
                        for _ in line:gmatch("%f[%w_]db[:.]exec%s*[(,]") do n = n + 1 end
                    end
                end
                if n > 0 then found[path] = n end
            end
        end
        p:close()
        assert.are.same(KNOWN, found)
    end)
end)
