--- rtbackup.odbc: SQL databases over ODBC — Mosaiq on SQL Server in the clinics, SQLite
-- for the demo and the tests, PostgreSQL in the integration tests.
--
--   local odbc = require "rtbackup.odbc"
--   local db = odbc.connect(env.sources.MOSAIQ, env.settings)
--   local rows, columns = db:query("SELECT IDA FROM Ident WHERE Pat_Id1 = ?", {pat_id})
--   for row in db:rows(sql, {"2025-06-12"}) do ... end   -- streams, batch by batch
--   db:exec("INSERT INTO t VALUES (?, ?, ?)", {1, odbc.NULL, odbc.binary(bytes)})
--   db:transaction(function() ... end)                   -- commit, or roll back and raise
--   db:close()
--
-- Parameters are '?' markers bound to values, never text pasted into the SQL. A list
-- of parameters may hold strings, integers, floats, booleans, odbc.NULL and
-- odbc.binary(bytes); a nil hole is an error (use odbc.NULL).
--
-- Rows are tables keyed by column name (the alias with AS). Values: integers, floats,
-- booleans, strings (UTF-8), binary columns as byte strings, and date/time columns as
-- ISO-8601 text: "YYYY-MM-DDTHH:MM:SS" plus ".ffffff" when there is a fraction of a
-- second ("YYYY-MM-DD" for DATE, "HH:MM:SS" for TIME). SQL NULL is odbc.NULL, so
-- `row.MIddle_Name == odbc.NULL` (a NULL column) differs from `row.Nope == nil` (no
-- such column). odbc.value(v) turns odbc.NULL into nil when that is what you want.
--
-- Errors are tables {kind, message, sqlstate, native, source}: kind "connect_failed",
-- "login_failed", "timeout", "sql", "invalid", "busy" (the connection is in use by
-- another task: open one per task) or "config". Messages never contain the password.
local core = require "rtbackup.odbc.core"
local errors = require "rtbackup.error"

local odbc = {
    NULL = core.NULL,
    binary = core.binary,
    -- Seconds, when the environment's settings do not say.
    DEFAULT_LOGIN_TIMEOUT = 15,
    DEFAULT_QUERY_TIMEOUT = 300,
}

--- nil for odbc.NULL, the value otherwise.
function odbc.value(v)
    if v == core.NULL then return nil end
    return v
end

local Db = {}
Db.__index = Db

function Db:__tostring()
    return "odbc database " .. self.label
end

-- Runs fn, adding which database it was to any error it raises.
local function annotated(self, fn, ...)
    local results = table.pack(pcall(fn, ...))
    if results[1] then return table.unpack(results, 2, results.n) end
    local e = results[2]
    if type(e) == "table" and e.source == nil then e.source = self.label end
    error(e, 0)
end

--- rows, column names
function Db:query(sql, params)
    return annotated(self, self.conn.query, self.conn, sql, params)
end

--- Number of rows affected (-1 when the driver cannot tell).
function Db:exec(sql, params)
    return annotated(self, self.conn.exec, self.conn, sql, params)
end

--- Iterator over the rows, fetched opts.batch (default 256) at a time on the thread
-- pool, so a large result never sits in memory whole. Breaking out of the loop closes
-- the statement (the iterator's closing value).
function Db:rows(sql, params, opts)
    local size = opts and opts.batch or 256
    local cursor = annotated(self, self.conn.open, self.conn, sql, params)
    local batch, i = nil, 0
    local function next_row()
        if batch == nil or i >= #batch then
            batch = annotated(self, cursor.next, cursor, size)
            if batch == nil then return nil end
            i = 0
        end
        i = i + 1
        return batch[i]
    end
    return next_row, nil, nil, cursor
end

--- Runs fn(...) in a transaction: commits when it returns, rolls back and raises again
-- when it fails. Returns what fn returned.
function Db:transaction(fn, ...)
    annotated(self, self.conn.begin, self.conn)
    local results = table.pack(pcall(fn, ...))
    if results[1] then
        annotated(self, self.conn.commit, self.conn)
        return table.unpack(results, 2, results.n)
    end
    pcall(self.conn.rollback, self.conn) -- the first failure is the one to report
    error(results[2], 0)
end

--- {dbms_name, dbms_version, driver_name}
function Db:info()
    if not self._info then self._info = annotated(self, self.conn.info, self.conn) end
    return self._info
end

--- "sqlite", "postgres", "sqlserver" or "other": which SQL dialect the server speaks.
function Db:dialect()
    local name = self:info().dbms_name:lower()
    if name:find("sqlite", 1, true) then return "sqlite" end
    if name:find("postgres", 1, true) then return "postgres" end
    if name:find("sql server", 1, true) then return "sqlserver" end
    return "other"
end

--- Records an audit event about this database (op "sql": query_name, params, rows,
-- patient_id...) in the context it was opened with; nothing without one.
function Db:event(e)
    if self.ctx then
        e.peer = e.peer or self.label
        self.ctx:event(e)
    end
end

function Db:close()
    return self.conn:close()
end

function Db:is_open()
    return self.conn:is_open()
end

local function config_error(message)
    errors.raise{kind = "config", message = message}
end

local function is_sqlite(driver)
    return driver ~= nil and driver:lower():find("sqlite", 1, true) ~= nil
end

local function timeout(settings, key, default)
    local v = settings and settings[key]
    if v == nil then return default end
    if math.type(v) ~= "integer" or v < 0 then
        config_error(string.format("settings.%s must be a whole number of seconds (0 = none), got %s",
                                   key, tostring(v)))
    end
    return v
end

--- Connects to an environment source {odbc_driver, db_server, db_database, db_username,
-- db_password (secret or string), dsn?, odbc_attributes? = {Port = 5432, Encrypt =
-- "yes", ...}}. settings (the environment's) may give login_timeout and query_timeout
-- in seconds. opts: alias (named in errors), create (SQLite: make the file if missing;
-- otherwise a missing file is an error, not a new empty database), ctx (the run's
-- rtbackup.context: queries are audited there).
-- For SQLite, db_database is the file path (relative to the working directory) and
-- db_server is not used; the driver ignores user and password.
function odbc.connect(source, settings, opts)
    opts = opts or {}
    if type(source) ~= "table" then config_error("odbc.connect: expected a source table") end
    local alias = opts.alias or source.alias
    local where = alias and ("sources." .. alias .. ".") or ""
    if not source.dsn and not source.odbc_driver then
        config_error("missing " .. where .. "odbc_driver (or dsn) for an ODBC source")
    end
    local params = {
        dsn = source.dsn,
        driver = source.odbc_driver,
        database = source.db_database,
        username = source.db_username,
        password = source.db_password,
        login_timeout = timeout(settings, "login_timeout", odbc.DEFAULT_LOGIN_TIMEOUT),
        query_timeout = timeout(settings, "query_timeout", odbc.DEFAULT_QUERY_TIMEOUT),
        attributes = source.odbc_attributes,
    }
    if is_sqlite(source.odbc_driver) then
        if not source.db_database or source.db_database == "" then
            config_error("missing " .. where .. "db_database: the SQLite file's path")
        end
        -- The driver would create an empty database for a mistyped path.
        local f = io.open(source.db_database, "rb")
        if f then f:close() elseif not opts.create then
            errors.raise{kind = "connect_failed", source = alias,
                         message = "SQLite database " .. source.db_database .. " does not exist"}
        end
        -- The driver ignores UID and PWD; they still go along so that a password
        -- repeated in any message is masked like with every other driver.
    else
        params.server = source.db_server
    end
    local label = alias or (params.dsn and ("DSN " .. params.dsn)) or
                  ((params.database or "?") .. (params.server and ("@" .. params.server) or ""))
    local db = setmetatable({label = label, ctx = opts.ctx}, Db)
    local ok, conn = pcall(annotated, db, core.connect, params)
    if not ok then
        -- A refused login is an access attempt to patient data: in the audit trail too.
        db:event{op = "sql", query_name = "connect", error = conn}
        error(conn, 0)
    end
    db.conn = conn
    return db
end

return odbc
