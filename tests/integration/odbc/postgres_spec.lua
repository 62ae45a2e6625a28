-- rtbackup.odbc and rtbackup.mosaiq against PostgreSQL through psqlODBC, a networked
-- server with a real login. Started by run_postgres.sh, which passes the server's port,
-- the test role's password and the server log in RTB_PG_* variables.
local odbc = require "rtbackup.odbc"
local mosaiq = require "rtbackup.mosaiq.query"
local synth = require "rtbackup.mosaiq.synth"
local dates = require "rtbackup.clock"
local pretty = require "rtbackup.pretty"
local h = require "helpers"

local PORT = assert(os.getenv("RTB_PG_PORT"), "run through run_postgres.sh")
local PASSWORD = os.getenv("RTB_PG_PASSWORD")
local DRIVER = os.getenv("RTB_PG_DRIVER") or "PostgreSQL Unicode"

local function source(overrides)
    local s = {type = "mosaiq", odbc_driver = DRIVER, db_server = "127.0.0.1", db_database = "mosaiq",
               db_username = "rtb_test", db_password = PASSWORD, odbc_attributes = {Port = PORT}}
    for k, v in pairs(overrides or {}) do s[k] = v end
    return s
end

local failure = h.failure

local function read(path)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    return text
end

describe("PostgreSQL through psqlODBC", function()
    it("logs in with a password full of ; { } = and non-ASCII", function()
        local db = odbc.connect(source(), {login_timeout = 5}, {alias = "PG"})
        assert.are.equal("postgres", db:dialect())
        assert.are.equal("rtb_test", db:query("SELECT current_user AS u")[1].u)
        local r = db:query([[SELECT CAST(12.5 AS NUMERIC(10,2)) AS n, CAST(42 AS NUMERIC(10,0)) AS i,
                                    CAST(? AS TIMESTAMP) AS t, CAST(NULL AS BYTEA) AS b]],
                           {"2025-06-12 09:52:10.25"})[1]
        assert.are.equal(12.5, r.n)
        assert.are.equal("integer", math.type(r.i))
        assert.are.equal(42, r.i)
        assert.are.equal("2025-06-12T09:52:10.250000", r.t)
        assert.are.equal(odbc.NULL, r.b)
        db:close()
    end)

    it("refuses a wrong password: login_failed, never the password in the message", function()
        local wrong = "Wr0ng;pass}word{"
        local err = failure(odbc.connect, source{db_password = wrong}, {login_timeout = 5}, {alias = "PG"})
        assert.are.equal("login_failed", err.kind)
        -- psqlODBC reports every failed connection as 08001: libpq exposes no SQLSTATE
        -- for it. The server's reason, 28P01, is in its log.
        assert.are.equal("08001", err.sqlstate)
        assert.matches("password authentication failed for user \"rtb_test\"", err.message)
        assert.is_nil(err.message:find("Wr0ng", 1, true))
        assert.is_nil(err.message:find(PASSWORD, 1, true))
        assert.are.equal("PG", err.source)
        assert.matches("28P01 FATAL:%s+password authentication failed for user \"rtb_test\"",
                       read(os.getenv("RTB_PG_LOG")))
    end)

    it("fails fast with connect_failed when no server listens", function()
        local started = os.time()
        local err = failure(odbc.connect, source{odbc_attributes = {Port = os.getenv("RTB_PG_DOWN_PORT")}},
                            {login_timeout = 3})
        assert.are.equal("connect_failed", err.kind)
        assert.matches("Connection refused", err.message)
        assert.is_true(os.time() - started <= 5, "took " .. (os.time() - started) .. " s")
    end)

    it("stops a query at query_timeout with kind timeout", function()
        local db = odbc.connect(source(), {query_timeout = 1})
        local err = failure(db.query, db, "SELECT pg_sleep(5) AS x")
        assert.are.equal("timeout", err.kind)
        assert.are.equal("57014", err.sqlstate)
        assert.are.equal(1, db:query("SELECT 1 AS x")[1].x) -- the connection is still usable
        db:close()
    end)

    it("answers the day's query exactly as SQLite does for the same clinic", function()
        local opts = {seed = 11, patients = 16, start_date = "2025-06-02", days = 15}
        local pg = odbc.connect(source())
        mosaiq.drop_schema(pg)
        mosaiq.create_schema(pg)
        synth.generate(pg, opts)
        local dir = h.tmpdir()
        local lite = odbc.connect({odbc_driver = "SQLite3", db_database = dir .. "/m.db"}, nil, {create = true})
        mosaiq.create_schema(lite)
        synth.generate(lite, opts)
        local first, compared = dates.day(opts.start_date), 0
        for day = first, first + opts.days - 1 do
            local a = mosaiq.deliveries(pg, dates.format_day(day))
            local b = mosaiq.deliveries(lite, dates.format_day(day))
            assert.are.equal(pretty.format(b), pretty.format(a), dates.format_day(day))
            compared = compared + #a
        end
        assert.is_true(compared > 20, "compared only " .. compared)
        local mrn = "MRN0100074"
        assert.are.same(mosaiq.treatment_summary(lite, mrn), mosaiq.treatment_summary(pg, mrn))
        assert.are.same({}, mosaiq.treatment_summary(pg, "x' OR '1'='1"))
        local names = pg:query("SELECT Last_Name AS n FROM Patient WHERE Last_Name = ?", {"Nguyễn"})
        assert.are.equal("Nguyễn", names[1].n)
        pg:close()
        lite:close()
        os.execute("rm -rf " .. h.quote(dir))
    end)
end)
