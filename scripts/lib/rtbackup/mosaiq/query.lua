--- rtbackup.mosaiq: what Mosaiq says was delivered on a day, and treatment summaries.
--
--   local odbc = require "rtbackup.odbc"
--   local mosaiq = require "rtbackup.mosaiq.query"
--   local db = odbc.connect(env.sources.MOSAIQ, env.settings)
--   for _, d in ipairs(mosaiq.deliveries(db, "2025-06-12", {sql = env.settings.mosaiq_backup_sql_query})) do
--       -- d.patient, d.site, d.plan, d.fraction, d.machine, d.fields
--   end
--   local courses = mosaiq.treatment_summary(db, "MRN0012345", "2025-01-01", "2025-12-31")
--
-- ## deliveries(db, "YYYY-MM-DD", opts) -> list of deliveries
--
-- One delivery per (site, plan, delivered fraction) that day: a patient treated twice
-- that day has two, one per fraction; nothing is ever listed twice. Values are RAW
-- Mosaiq values under Mosaiq's exact column names: lengths in cm, angles in degrees,
-- enums as integers, leaf sets as the stored bytes, date/times as ISO-8601 text
-- ("YYYY-MM-DDTHH:MM:SS[.ffffff]"), SQL NULL as mosaiq.NULL (== odbc.NULL; see
-- mosaiq.value). Converting them to DICOM is the mapping's job. Shape:
--
--   {
--     patient  = {Pat_ID1, IDA, Last_Name, First_Name, MIddle_Name, Suffix, Sex, Birth_DtTm},
--     site     = {SIT_SET_ID, Site_Name, Technique, Fractions, Dose_Ttl, Setup_Note,
--                 Activity},           -- Activity: CPT.Short_Desc of that day's machine appointment
--     plan     = {OriginalPlanUID, Label, StudyInstanceUID, StudyID, StudyDescription,
--                 Study_DtTm, SeriesInstanceUID, SeriesNumber, SeriesDescription, Series_DtTm},
--                                      -- all but OriginalPlanUID NULL if the plan is not in DCM*
--     fraction = 7,                    -- Dose_Hst.Fractions_Tx of every field below
--     machine  = {Staff_ID, Last_Name, Machine_Type, Source_Name, Source_Model, Inst_Name},
--                                      -- Staff (Last_Name = machine name), Machine, Config
--     fields   = {                     -- one per Dose_Hst row, by OriginalBeamNumber, FLD_ID, DHS_ID
--       { FLD_ID, OriginalBeamNumber, OriginalBeamName, Field_Name, Field_Label,
--         Beam_Type_Flag, Modality_Enum, Type_Enum, IndexReference_Enum, ControlPoints,
--         Meterset, Cgray, Sad, Mlc, Wdg_Appl, Comp_Fda, Bolus, Block, Start_DtTm,
--         Last_Tx_DtTm, MachineCharID,                       -- TxField, Version 0
--         dose = {DHS_ID, Tx_DtTm, Fractions_Tx, TerminationCode, Termination_Status_Enum,
--                 Termination_Verify_Status_Enum, Dose_Addtl_Projected,
--                 DeliveredTreatmentTimeBeam},               -- Dose_Hst
--         points = {                                         -- TxFieldPoint, by Point
--           { Point, Energy, Energy_Unit_Enum, Gantry_Ang, Gantry_Dir_Enum, Coll_Ang,
--             Coll_Dir_Enum, Couch_Ang, Couch_Roll_Dir_Enum, Couch_Top_Axis_Distance,
--             Couch_Top, Couch_Top_Dir_Enum, Couch_Vrt, Couch_Lng, Couch_Lat, Coll_X1,
--             Coll_X2, Coll_Y1, Coll_Y2, MLC_Leaves, A_Leaf_Set, B_Leaf_Set,
--             SpecifiedMeterset, Meterset, Meterset_Rate, Create_DtTm }, ... } }, ... },
--   }
--
-- The list is ordered by the first delivery time, then patient, site, plan, fraction.
-- A delivery whose rows contradict each other (the query's joins multiply rows with
-- different values) carries `error`, a sentence naming the column; its values are then
-- not reliable and it must be reported, not archived. The other deliveries are fine.
-- The query is one SELECT with a single '?' (the date) whose columns are named
-- "<group>__<Column>" (and "fraction"); see mosaiq/day.sql. opts.sql replaces
-- it (a site's settings.mosaiq_backup_sql_query); extra "<group>__X" columns a site
-- adds show up as group.X. Without opts.sql the shipped query for the server's dialect
-- is used (SQLite, PostgreSQL, SQL Server).
--
-- ## treatment_summary(db, mrn, from?, to?) -> list of courses
--
-- One row per course (a current Site of the patient with current fields), newest first:
-- {PatientName, MRN, Site, Start, End, TotalDose, Fractions, Delivered}: Start/End are
-- the first and last treatment dates ("YYYY-MM-DD", nil if none yet), TotalDose is
-- Site.Dose_Ttl, Fractions the planned number, Delivered the highest Fractions_Tx.
-- from/to ("YYYY-MM-DD", inclusive) keep the courses treated in that period.
local odbc = require "rtbackup.odbc"
local errors = require "rtbackup.error"
local clock = require "rtbackup.clock"

local mosaiq = {NULL = odbc.NULL, value = odbc.value}

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

--- Path of a file shipped in scripts/lib/rtbackup/mosaiq/.
function mosaiq.file(name)
    return HERE .. "/" .. name
end

local function read_file(path)
    local f, err = io.open(path, "rb")
    if not f then errors.raise{kind = "io", message = "cannot read " .. tostring(err)} end
    local text = f:read("a")
    f:close()
    return text
end

--- The SQL with whole-line "--" comments removed: comments are for people, and some
-- drivers' own scanners (they look for '?' markers) stumble on quotes inside them.
function mosaiq.strip_comments(sql)
    local lines = {}
    for line in (sql .. "\n"):gmatch("(.-)\r?\n") do
        if not line:match("^%s*%-%-") and line:match("%S") then lines[#lines + 1] = line end
    end
    return table.concat(lines, "\n")
end

-- The day's bounds, the one part of the day query (mosaiq/day.sql) each dialect
-- writes its own way: from the '?' date to the next day, as timestamps.
local DAY_WINDOWS = {
    sqlite = [[
param AS (SELECT ? AS d),
tx_day AS (
    SELECT date(d) || ' 00:00:00' AS day_start,
           date(d, '+1 day') || ' 00:00:00' AS day_end
    FROM param),]],
    postgres = [[
param AS (SELECT CAST(? AS DATE) AS d),
tx_day AS (
    SELECT CAST(d AS TIMESTAMP) AS day_start,
           CAST(d AS TIMESTAMP) + INTERVAL '1 day' AS day_end
    FROM param),]],
    sqlserver = [[
param AS (SELECT CAST(? AS DATE) AS d),
tx_day AS (
    SELECT CAST(d AS DATETIME) AS day_start,
           DATEADD(DAY, 1, CAST(d AS DATETIME)) AS day_end
    FROM param),]],
}

--- The shipped day query for a dialect ("sqlite", "postgres", "sqlserver").
function mosaiq.day_query(dialect)
    local window = DAY_WINDOWS[dialect]
    if not window then
        errors.raise{kind = "config", message = "no shipped Mosaiq day query for a " ..
            tostring(dialect) .. " server: set settings.mosaiq_backup_sql_query"}
    end
    local template = read_file(mosaiq.file("day.sql"))
    return (template:gsub("%-%- @DAY_WINDOW@", function() return window end))
end

-- A configured query counts only if it is more than comments (the shipped environments
-- carry a placeholder comment until a site writes its own).
local function configured(sql)
    return type(sql) == "string" and mosaiq.strip_comments(sql):match("%S") ~= nil
end

--- Creates the tables of mosaiq/schema.sql (synthetic clinics: demo and tests).
function mosaiq.create_schema(db)
    if db:dialect() == "postgres" then
        -- PostgreSQL has no BLOB type; a domain keeps schema.sql the same for both.
        local rows = db:query("SELECT 1 AS x FROM pg_type WHERE typname = 'blob'")
        if #rows == 0 then db:exec("CREATE DOMAIN BLOB AS BYTEA") end
    end
    local sql = mosaiq.strip_comments(read_file(mosaiq.file("schema.sql")))
    for statement in sql:gmatch("(.-);%s*\n") do db:exec(statement) end
    local last = sql:match(";%s*\n?([^;]*)$")
    if last and last:match("%S") then db:exec(last) end
end

--- Drops the tables of mosaiq/schema.sql that exist (replacing a synthetic clinic).
function mosaiq.drop_schema(db)
    local names = {}
    for name in read_file(mosaiq.file("schema.sql")):gmatch("CREATE TABLE (%w+)") do
        table.insert(names, 1, name)
    end
    for _, name in ipairs(names) do db:exec("DROP TABLE IF EXISTS " .. name) end
end

local function check_date(text, what)
    local n, why = clock.day(text)
    if not n then errors.raise{kind = "invalid", message = what .. ": " .. why} end
    return n
end

-- Columns the grouping cannot do without.
local REQUIRED = {"fraction", "site__SIT_SET_ID", "plan__OriginalPlanUID", "field__FLD_ID",
                  "dose__DHS_ID", "patient__Pat_ID1"}
local GROUPS = {patient = true, site = true, plan = true, machine = true, field = true,
                dose = true, point = true}

-- "group__Column" -> group, Column; checked once per query, not per row.
local function route_columns(columns, where)
    local have, routes = {}, {}
    for _, c in ipairs(columns) do
        have[c] = true
        local group, name = c:match("^(%a+)__(.+)$")
        if group and GROUPS[group] then routes[#routes + 1] = {c, group, name} end
    end
    local missing = {}
    for _, c in ipairs(REQUIRED) do
        if not have[c] then missing[#missing + 1] = c end
    end
    if #missing > 0 then
        errors.raise{kind = "config", message = string.format(
            "the Mosaiq day query (%s) does not return the column%s %s",
            where, #missing == 1 and "" or "s", table.concat(missing, ", "))}
    end
    return routes
end

local function split(row, routes)
    local g = {patient = {}, site = {}, plan = {}, machine = {}, field = {}, dose = {}, point = {}}
    for _, r in ipairs(routes) do g[r[2]][r[3]] = row[r[1]] end
    return g
end

local function key_text(v)
    return v == odbc.NULL and "" or tostring(v)
end

local function by(...)
    local keys = {...}
    return function(a, b)
        for _, k in ipairs(keys) do
            local x, y = k(a), k(b)
            if x ~= y then -- NULL (or a column a site's query left out) sorts first
                if x == nil or x == odbc.NULL then return true end
                if y == nil or y == odbc.NULL then return false end
                if type(x) ~= type(y) then return tostring(x) < tostring(y) end
                return x < y
            end
        end
        return false
    end
end

local sort_fields = by(function(f) return f.OriginalBeamNumber end,
                       function(f) return f.FLD_ID end, function(f) return f.dose.DHS_ID end)
local sort_points = by(function(p) return p.Point end)
local sort_deliveries = by(function(d) return d.first_delivery end,
                           function(d) return d.patient.Pat_ID1 end,
                           function(d) return d.site.SIT_SET_ID end,
                           function(d) return d.plan.OriginalPlanUID end,
                           function(d) return d.fraction end)

-- The first column in which `new` (a group from another row) contradicts `old`.
local function differs(old, new)
    for k, v in pairs(new) do
        if old[k] ~= v then return k end
    end
end

-- Rows of one delivery must agree; a join that multiplies rows with different values
-- (a history version without "Version = 0", a plan stored twice) would otherwise let
-- an arbitrary row win. The delivery is marked, the rest of the day goes on.
local function check_same(d, what, old, new)
    local column = not d.error and differs(old, new)
    if column then
        d.error = string.format("the rows of this delivery disagree on %s.%s: a join in the " ..
            "day query multiplies rows (a missing Version = 0 condition, or a plan stored twice?)",
            what, column)
    end
end

-- The day's deliveries and the number of rows the query returned.
local function deliveries_of(db, date, opts)
    opts = opts or {}
    check_date(date, "Mosaiq deliveries")
    local where = configured(opts.sql) and "settings.mosaiq_backup_sql_query"
                  or ("mosaiq/day.sql (" .. tostring(db:dialect()) .. ")")
    local sql = configured(opts.sql) and opts.sql or mosaiq.day_query(db:dialect())
    local list, by_key, fields_by_dhs, routes = {}, {}, {}, nil
    local count = 0
    for row in db:rows(mosaiq.strip_comments(sql), {date}) do
        count = count + 1
        if not routes then
            local columns = {}
            for c in pairs(row) do columns[#columns + 1] = c end
            routes = route_columns(columns, where)
        end
        local g = split(row, routes)
        local key = table.concat({key_text(g.site.SIT_SET_ID), key_text(g.plan.OriginalPlanUID),
                                  key_text(row.fraction)}, "\0")
        local d = by_key[key]
        if not d then
            d = {patient = g.patient, site = g.site, plan = g.plan, machine = g.machine,
                 fraction = row.fraction, fields = {}, first_delivery = g.dose.Tx_DtTm}
            by_key[key] = d
            list[#list + 1] = d
        else
            for _, what in ipairs{"patient", "site", "plan", "machine"} do
                check_same(d, what, d[what], g[what])
            end
        end
        local f = fields_by_dhs[g.dose.DHS_ID]
        if not f then
            f = g.field
            f.dose, f.points, f.seen = g.dose, {}, {}
            fields_by_dhs[g.dose.DHS_ID] = f
            d.fields[#d.fields + 1] = f
            if g.dose.Tx_DtTm ~= odbc.NULL and (d.first_delivery == odbc.NULL
                    or g.dose.Tx_DtTm < d.first_delivery) then
                d.first_delivery = g.dose.Tx_DtTm
            end
        else
            check_same(d, "field", f, g.field)
            check_same(d, "dose", f.dose, g.dose)
        end
        local point = g.point.Point
        if point ~= nil and point ~= odbc.NULL then
            if f.seen[point] then
                check_same(d, "point", f.seen[point], g.point)
            else
                f.seen[point] = g.point
                f.points[#f.points + 1] = g.point
            end
        end
    end
    for _, d in ipairs(list) do
        for _, f in ipairs(d.fields) do
            f.seen = nil
            table.sort(f.points, sort_points)
        end
        table.sort(d.fields, sort_fields)
    end
    table.sort(list, sort_deliveries)
    for _, d in ipairs(list) do d.first_delivery = nil end
    return list, count
end

--- The day's deliveries (see the top of this file for the shape). opts.sql: the day
-- query to run instead of the shipped one for the server's dialect. Audited (op "sql"),
-- whether it succeeds or not.
function mosaiq.deliveries(db, date, opts)
    local ok, list, count = pcall(deliveries_of, db, date, opts)
    db:event{op = "sql", query_name = "mosaiq deliveries of the day", params = {date}, rows = count,
             error = not ok and list or nil}
    if not ok then error(list, 0) end
    return list
end

-- Portable across SQLite, PostgreSQL and SQL Server: no concatenation, no date
-- functions, the MRN bound as a parameter. The period is applied to the few courses
-- afterwards, because date literals compare differently on each server (SQL Server
-- reads '2025-06-01' by the session's DATEFORMAT; SQLite compares stored text).
local SUMMARY_SQL = [[
SELECT PAT.Last_Name AS "Last_Name", PAT.First_Name AS "First_Name",
       PAT.MIddle_Name AS "MIddle_Name", PAT.Suffix AS "Suffix", ID.IDA AS "IDA",
       SIT.SIT_SET_ID AS "SIT_SET_ID", SIT.Site_Name AS "Site_Name",
       SIT.Dose_Ttl AS "Dose_Ttl", SIT.Fractions AS "Fractions",
       MIN(FLD.Start_DtTm) AS "Start_DtTm", MAX(FLD.Last_Tx_DtTm) AS "Last_Tx_DtTm",
       MAX(FLD.Fractions_Tx) AS "Fractions_Tx"
FROM Ident ID
JOIN Patient PAT ON PAT.Pat_ID1 = ID.Pat_Id1
JOIN Site SIT ON SIT.Pat_ID1 = PAT.Pat_ID1 AND SIT.Version = 0
JOIN TxField FLD ON FLD.SIT_Set_ID = SIT.SIT_SET_ID AND FLD.Version = 0
WHERE ID.IDA = ?
GROUP BY PAT.Last_Name, PAT.First_Name, PAT.MIddle_Name, PAT.Suffix, ID.IDA,
         SIT.SIT_SET_ID, SIT.Site_Name, SIT.Dose_Ttl, SIT.Fractions]]

-- SQLite hands aggregates of timestamps back as their stored text; the others as
-- timestamps. The date part is the same in both.
local function day_of(v)
    if v == nil or v == odbc.NULL then return nil end
    return tostring(v):sub(1, 10)
end

local function person_name(r)
    local name = {}
    for _, k in ipairs{"First_Name", "MIddle_Name", "Suffix"} do
        local v = odbc.value(r[k])
        if v and v ~= "" then name[#name + 1] = v end
    end
    local last = odbc.value(r.Last_Name) or ""
    return #name > 0 and (last .. ", " .. table.concat(name, " ")) or last
end

--- Treatment courses of one patient (see the top of this file). mrn is bound as a
-- parameter, never pasted into the SQL; from/to (inclusive) must be real dates.
function mosaiq.treatment_summary(db, mrn, from, to)
    if type(mrn) ~= "string" or mrn == "" then
        errors.raise{kind = "invalid", message = "treatment summary: give an MRN"}
    end
    local from_day = from and check_date(from, "--from")
    local to_day = to and check_date(to, "--to")
    if from_day and to_day and from_day > to_day then
        errors.raise{kind = "invalid", message = "--from " .. from .. " is after --to " .. to}
    end
    local ok, rows = pcall(db.query, db, SUMMARY_SQL, {mrn})
    db:event{op = "sql", query_name = "mosaiq treatment summary", params = {mrn}, patient_id = mrn,
             rows = ok and #rows or nil, error = not ok and rows or nil}
    if not ok then error(rows, 0) end
    local first = from_day and clock.format_day(from_day)
    local last = to_day and clock.format_day(to_day)
    local courses = {}
    for _, r in ipairs(rows) do
        local c = {
            PatientName = person_name(r), MRN = odbc.value(r.IDA),
            Site = odbc.value(r.Site_Name), SIT_SET_ID = r.SIT_SET_ID,
            Start = day_of(r.Start_DtTm), End = day_of(r.Last_Tx_DtTm),
            TotalDose = odbc.value(r.Dose_Ttl), Fractions = odbc.value(r.Fractions),
            Delivered = odbc.value(r.Fractions_Tx),
        }
        -- In the period: treated on or after `from` and started on or before `to`. A
        -- course not started yet has no treatment dates and is outside any period.
        local inside = (not first or (c.End and c.End >= first)) and
                       (not last or (c.Start and c.Start <= last))
        if inside then courses[#courses + 1] = c end
    end
    table.sort(courses, function(a, b)
        if (a.Start or "") ~= (b.Start or "") then return (a.Start or "") > (b.Start or "") end
        return a.SIT_SET_ID < b.SIT_SET_ID
    end)
    return courses
end

return mosaiq
