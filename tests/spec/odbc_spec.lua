-- rtbackup.odbc against SQLite through its ODBC driver (libsqliteodbc, driver "SQLite3"):
-- typed values, NULL, bytes, '?' parameters, streaming, errors, transactions, tasks.
local odbc = require "rtbackup.odbc"
local errors = require "rtbackup.error"
local task = require "rtbackup.task"
local h = require "helpers"

local function connect(path, settings, opts)
    opts = opts or {create = true}
    return odbc.connect({odbc_driver = "SQLite3", db_database = path}, settings, opts)
end

local failure = h.failure

describe("rtbackup.odbc on SQLite", function()
    local dir, db

    before_each(function()
        dir = h.tmpdir()
        db = connect(dir .. "/test.db")
    end)

    after_each(function()
        if db and db:is_open() then db:close() end
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("reads back every type it binds, typed", function()
        db:exec([[CREATE TABLE t (i INTEGER, big BIGINT, f DOUBLE PRECISION, n NUMERIC(10,2),
                  s VARCHAR(64), ts TIMESTAMP, d DATE, b BLOB, flag BOOLEAN)]])
        db:exec("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                {42, 1234567890123, 152.3, 12.5, "Nguyễn Thị Müller", "2025-06-12 09:52:10.25",
                 "2025-06-12", odbc.binary("\0\1\255"), true})
        local rows, columns = db:query("SELECT * FROM t")
        assert.are.same({"i", "big", "f", "n", "s", "ts", "d", "b", "flag"}, columns)
        local r = rows[1]
        assert.are.equal("integer", math.type(r.i)); assert.are.equal(42, r.i)
        assert.are.equal(1234567890123, r.big)
        assert.are.equal("float", math.type(r.f)); assert.are.equal(152.3, r.f)
        assert.are.equal(12.5, r.n)
        assert.are.equal("Nguyễn Thị Müller", r.s)
        assert.are.equal("2025-06-12T09:52:10.250000", r.ts)
        assert.are.equal("2025-06-12", r.d)
        assert.are.equal("\0\1\255", r.b)
        assert.are.equal(true, r.flag)
    end)

    it("gives SQL NULL as odbc.NULL, distinct from a column that does not exist", function()
        db:exec("CREATE TABLE t (a INTEGER, middle VARCHAR(10))")
        db:exec("INSERT INTO t VALUES (?, ?)", {1, odbc.NULL})
        local r = db:query("SELECT a, middle FROM t")[1]
        assert.are.equal(odbc.NULL, r.middle)
        assert.is_nil(r.nope)
        assert.is_nil(odbc.value(r.middle))
        assert.are.equal(1, odbc.value(r.a))
        assert.are.equal("odbc.NULL", tostring(odbc.NULL))
    end)

    it("round-trips every byte value and a blob larger than any read buffer", function()
        db:exec("CREATE TABLE t (k INTEGER, b BLOB, s TEXT)")
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        all = table.concat(all)
        local big = string.rep(all, 4096) -- 1 MiB
        local text = string.rep("Ó Briain — ", 20000)
        db:exec("INSERT INTO t VALUES (?, ?, ?)", {1, odbc.binary(all), text})
        db:exec("INSERT INTO t VALUES (?, ?, ?)", {2, odbc.binary(big), odbc.NULL})
        local rows = db:query("SELECT k, b, s FROM t ORDER BY k")
        assert.are.equal(all, rows[1].b)
        assert.are.equal(text, rows[1].s)
        assert.are.equal(#big, #rows[2].b)
        assert.are.equal(big, rows[2].b)
    end)

    it("binds parameters as values, so an injection attempt is only data", function()
        db:exec("CREATE TABLE ident (IDA VARCHAR(64))")
        local evil = "x'); DROP TABLE ident; --"
        db:exec("INSERT INTO ident VALUES (?)", {"MRN1"})
        db:exec("INSERT INTO ident VALUES (?)", {evil})
        assert.are.equal(0, #db:query("SELECT * FROM ident WHERE IDA = ?", {"x' OR '1'='1"}))
        local found = db:query("SELECT IDA FROM ident WHERE IDA = ?", {evil})
        assert.are.equal(1, #found)
        assert.are.equal(evil, found[1].IDA)
        assert.are.equal(2, #db:query("SELECT * FROM ident")) -- the table is still there
    end)

    it("refuses a parameter list that does not match the markers", function()
        local err = failure(db.query, db, "SELECT ? AS a, ? AS b", {1})
        assert.are.equal("invalid", err.kind)
        assert.matches("2 '%?' parameters but 1 value was given", err.message)
        err = failure(db.query, db, "SELECT ? AS a, ? AS b", {n = 2, 1, nil})
        assert.are.equal("invalid", err.kind)
        assert.matches("parameter 2 is nil; use odbc.NULL", err.message)
        err = failure(db.query, db, "SELECT ? AS a", {{}})
        assert.matches("cannot bind a table", err.message)
        assert.are.equal(odbc.NULL, db:query("SELECT ? AS a", {odbc.NULL})[1].a)
    end)

    it("refuses a result with two columns of the same name", function()
        local err = failure(db.query, db, "SELECT 1 AS x, 2 AS x")
        assert.are.equal("invalid", err.kind)
        assert.matches("two columns named 'x'", err.message)
    end)

    it("streams a large result batch by batch instead of holding it", function()
        local sql = [[WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
                      SELECT i, printf('%0200d', i) AS pad FROM n]]
        collectgarbage("collect")
        local base, peak, count, sum = collectgarbage("count"), 0, 0, 0
        for row in db:rows(sql) do
            count = count + 1
            sum = sum + row.i
            if count % 5000 == 0 then peak = math.max(peak, collectgarbage("count") - base) end
        end
        assert.are.equal(200000, count)
        assert.are.equal(200000 * 200001 // 2, sum)
        -- Holding every row would take well over 50 MB of Lua memory.
        assert.is_true(peak < 16 * 1024, string.format("peak %.0f KiB", peak))
    end)

    it("closes the statement when a rows loop is left early", function()
        db:exec("CREATE TABLE t (a INTEGER)")
        for i = 1, 1000 do db:exec("INSERT INTO t VALUES (?)", {i}) end
        for row in db:rows("SELECT a FROM t ORDER BY a", nil, {batch = 10}) do
            if row.a == 3 then break end
        end
        -- SQLite refuses to drop a table that an open statement still reads.
        db:exec("DROP TABLE t")
        assert.are.equal(0, #db:query("SELECT name FROM sqlite_master WHERE name = 't'"))
    end)

    it("reports driver errors with SQLSTATE, native code and the driver's words", function()
        local err = failure(db.query, db, "SELECT * FROM no_such_table")
        assert.are.equal("sql", err.kind)
        assert.are.equal("HY000", err.sqlstate)
        assert.is_number(err.native)
        assert.matches("no such table: no_such_table", err.message)
        assert.matches(dir, err.source, 1, true)
        assert.matches("no such table", tostring(err))
    end)

    it("never shows the password, even when the driver repeats it", function()
        db:close()
        local password = "Hunter2;x}y{z"
        db = odbc.connect({odbc_driver = "SQLite3", db_database = dir .. "/test.db",
                           db_username = "u", db_password = password}, nil, {create = true})
        -- The driver ignores the password here, so make it quote the text back.
        local err = failure(db.query, db, 'SELECT * FROM "' .. password .. '"')
        assert.is_nil(err.message:find("Hunter2", 1, true), err.message)
        assert.matches("no such table: %*%*%*", err.message)
    end)

    it("says which SQLite file is missing instead of creating an empty one", function()
        local path = dir .. "/typo.db"
        local err = failure(connect, path, nil, {})
        assert.are.equal("connect_failed", err.kind)
        assert.matches("typo.db does not exist", err.message)
        assert.is_nil(io.open(path, "rb"))
    end)

    it("fails to connect through a driver that is not installed", function()
        local err = failure(odbc.connect, {odbc_driver = "No Such Driver", db_server = "x",
                                           db_database = "y", db_username = "u",
                                           db_password = "Hunter2;x}"})
        assert.are.equal("connect_failed", err.kind)
        assert.is_nil(err.message:find("Hunter2", 1, true))
        -- A setting to change, not a server to wait for: a run ends with exit 2, not 4.
        local exit = require "rtbackup.exit"
        assert.are.equal(exit.usage, exit.of_error(err))
    end)

    it("checks the timeouts of the settings", function()
        local err = failure(connect, dir .. "/test.db", {query_timeout = -1})
        assert.are.equal("config", err.kind)
        assert.matches("settings.query_timeout", err.message)
        connect(dir .. "/test.db", {login_timeout = 5, query_timeout = 0}):close()
    end)

    it("commits a transaction, or rolls it back and raises the error", function()
        db:exec("CREATE TABLE t (a INTEGER)")
        assert.are.equal("done", db:transaction(function()
            db:exec("INSERT INTO t VALUES (?)", {1})
            return "done"
        end))
        local err = failure(db.transaction, db, function()
            db:exec("INSERT INTO t VALUES (?)", {2})
            errors.raise{kind = "boom", message = "stop"}
        end)
        assert.are.equal("boom", err.kind)
        local rows = db:query("SELECT a FROM t")
        assert.are.equal(1, #rows)
        assert.are.equal(1, rows[1].a)
    end)

    it("serves one task at a time per connection and refuses a second meanwhile", function()
        local slow = [[WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)
                       SELECT COUNT(*) AS c FROM n]]
        local first = task.spawn(function() return db:query(slow)[1].c end)
        task.sleep(20)
        local err = failure(db.query, db, "SELECT 1 AS x")
        assert.are.equal("busy", err.kind)
        assert.are.equal(3000000, first:wait())
        assert.are.equal(1, db:query("SELECT 1 AS x")[1].x) -- free again
    end)

    it("runs distinct connections at once on the thread pool", function()
        local sql = [[WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                      SELECT SUM(i) AS s FROM n]]
        local results = task.map({100000, 200000, 300000}, function(n)
            local own = connect(dir .. "/test.db")
            local s = own:query(sql, {n})[1].s
            own:close()
            return s
        end, {concurrency = 3})
        assert.are.same({100000 * 100001 // 2, 200000 * 200001 // 2, 300000 * 300001 // 2}, results)
    end)

    it("cleans up a connection and a cursor nobody closed", function()
        db:exec("CREATE TABLE t (a INTEGER)")
        db:exec("INSERT INTO t VALUES (?)", {1})
        do
            local other = connect(dir .. "/test.db")
            local cursor = other.conn:open("SELECT a FROM t")
            assert.are.equal(1, #cursor:next())
        end
        collectgarbage("collect")
        collectgarbage("collect")
        db:exec("DROP TABLE t") -- no statement of the forgotten connection holds it
    end)

    it("refuses a cursor whose connection was closed", function()
        local cursor = db.conn:open("SELECT 1 AS a UNION ALL SELECT 2")
        db:close()
        local err = failure(cursor.next, cursor)
        assert.matches("connection of this cursor is closed", err.message)
    end)

    it("knows the server's dialect and refuses use after close", function()
        assert.are.equal("sqlite", db:dialect())
        assert.matches("SQLite", db:info().dbms_name)
        db:close()
        db:close() -- twice is fine
        local err = failure(db.query, db, "SELECT 1 AS x")
        assert.matches("closed", err.message)
    end)
end)
