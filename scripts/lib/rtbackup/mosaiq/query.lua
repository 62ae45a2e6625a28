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
-- ## deliveries(db, "YYYY-MM-DD", opts) -> groups, skipped
--
-- What Mosaiq recorded as delivered that day (one Dose_Hst row per beam delivery), as
-- treatment records to build: one group per (patient, site, plan, fraction, session).
-- A session is what was delivered in one go: a delivery that continues an interrupted
-- one (Dose_Hst.MetersetPrevDelivered > 0) starts the fraction's next session, so the
-- interrupted and the continuing parts are two records. Values are RAW Mosaiq values
-- under Mosaiq's exact column names: lengths in cm, angles in degrees, enums as
-- integers, leaf sets as the stored bytes, date/times as ISO-8601 text, SQL NULL as
-- mosaiq.NULL (== odbc.NULL). Converting them to DICOM is the mapping's job. A group:
--
--   {
--     patient  = {Pat_ID1, IDA, Last_Name, First_Name, MIddle_Name, Suffix, Gender, Birth_DtTm},
--     site     = {SIT_ID, SIT_SET_ID, Version, Site_Name, Technique, Fractions, Dose_Ttl,
--                 Setup_Note, Activity},      -- the site version in force at the delivery
--     plan     = {OriginalPlanUID, Label, StudyInstanceUID, StudyID, StudyDescription,
--                 Study_DtTm, SeriesInstanceUID, SeriesNumber, SeriesDescription, Series_DtTm},
--     fraction = 7,                           -- Fx_Number_InEffect (else Fractions_Tx)
--     session  = 1,                           -- 2, 3, ...: continuations of interrupted beams
--     machine  = {Staff_ID, Last_Name, Machine_Type, Source_Name, Source_Model, Inst_Name},
--     fields   = {                            -- one per delivery (Dose_Hst row), in time order
--       { FLD_ID, FLD_SET_ID, Version, OriginalBeamNumber, OriginalBeamName, Field_Name,
--         Field_Label, Beam_Type_Flag, Modality_Enum, Type_Enum, ControlPoints, Meterset,
--         Cgray, Sad, Mlc, BackupTimer,               -- TxField: the version in force
--         dose = {DHS_ID, Tx_DtTm, Edit_DtTm, Fractions_Tx, Meterset, MetersetPrevDelivered,
--                 MetersetUnit_Enum, PartiallyTreated, WasQAMode, Modality_Enum, Type_Enum,
--                 TerminationCode, Termination_Status_Enum,
--                 Termination_Verify_Status_Enum, Dose_Addtl_Projected},  -- Dose_Hst
--         delivered = {FHS_ID, Wdg_Appl, Dyn_Wedge, Block, Comp_FDA, Bolus, Beam_Type_Flag,
--                      BackupTimerDelivered, IsFFF},                    -- FLD_HST
--         devices = {{Device_Enum, Type_Enum, Device_ID, Description, Wedge_Angle,
--                     Wedge_Orientation, Barcode_String}, ...},        -- BLDevices_Hst
--         points = {                                                   -- TxFieldPoint, by Point
--           { Point, Index, Energy, Energy_Unit_Enum, Gantry_Ang, Gantry_Dir_Enum, Coll_Ang,
--             Coll_Dir_Enum, Couch_Ang, Couch_Ang_Dir_Enum, Couch_Roll_Ang,
--             Couch_Roll_Dir_Enum, Couch_Pitch_Ang, Couch_Pitch_Dir_Enum,
--             Couch_Top_Axis_Distance, Couch_Top, Couch_Top_Dir_Enum, Couch_Vrt, Couch_Lng,
--             Couch_Lat, Coll_X1, Coll_X2, Coll_Y1, Coll_Y2, MLC_Leaves, A_Leaf_Set,
--             B_Leaf_Set, Meterset_Rate,
--             actual = {Tx_DtTm, Meterset_Rate, Gantry_Ang, Coll_Ang, Couch_Ang, Couch_Vrt,
--                       Couch_Lng, Couch_Lat} },   -- TxFieldPoint_Hst, where recorded
--           ... } }, ... },
--   }
--
-- skipped: the deliveries of the day that are not turned into records, each named
-- with its kind and reason: {patient, plan, fraction, dhs_id, day, kind, reason} —
-- "qa_mode" (a machine QA delivery), "brachytherapy" (an RT Beams Treatment Record
-- cannot describe it), "imaging" (a kV setup, CT or MV CT field), "missing_version" (a field or site version the delivery names
-- but the database lacks), "contradiction" (rows of one delivery disagree), "no_plan".
-- Nothing the query returns leaves silently.
--
-- The query is one SELECT with a single '?' (the date) whose columns are named
-- "<group>__<Column>" (and "fraction"); see mosaiq/day.sql. opts.sql replaces it (a
-- site's settings.mosaiq_backup_sql_query); extra "<group>__X" columns a site adds
-- show up as group.X. Without opts.sql the shipped query for the server's dialect is
-- used (SQLite, PostgreSQL, SQL Server). The accessories come from a second query
-- (mosaiq/devices.sql, or opts.devices_sql), the planned control points from a third,
-- once per field version (mosaiq/points.sql, or opts.points_sql; one '?', the FLD_ID),
-- unless the day query returns them itself as point__ columns (the earlier shape: one
-- row per delivery and control point). opts.points (mosaiq.points_memory()) keeps the
-- control points from one day's call to the next.
--
-- ## treatment_summary(db, mrn, from?, to?) -> list of courses
--
-- One row per course (a current Site of the patient), newest first: {PatientName, MRN,
-- Site, Start, End, TotalDose, Fractions, Delivered}: Start/End are the first and last
-- treatment dates from the delivery history of every version of the site
-- ("YYYY-MM-DD", nil if none yet; QA-mode deliveries left out), TotalDose is
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

-- "Index" is a reserved word: SQL Server quotes it with brackets.
local INDEX = {sqlite = '"Index"', postgres = '"Index"', sqlserver = "[Index]"}

-- A shipped query template (day.sql, devices.sql) for a dialect.
local function shipped(name, dialect, setting)
    local window = DAY_WINDOWS[dialect]
    if not window then
        errors.raise{kind = "config", message = "no shipped Mosaiq " .. name .. " query for a " ..
            tostring(dialect) .. " server: set settings." .. setting}
    end
    local template = read_file(mosaiq.file(name .. ".sql"))
    template = template:gsub("%-%- @DAY_WINDOW@", function() return window end)
    return (template:gsub("@INDEX@", INDEX[dialect]))
end

--- The shipped day query for a dialect ("sqlite", "postgres", "sqlserver").
function mosaiq.day_query(dialect)
    return shipped("day", dialect, "mosaiq_backup_sql_query")
end

--- The shipped control points query (one field version) for a dialect.
function mosaiq.points_query(dialect)
    return shipped("points", dialect, "mosaiq_points_sql_query")
end

--- The shipped accessories query for a dialect.
function mosaiq.devices_query(dialect)
    return shipped("devices", dialect, "mosaiq_devices_sql_query")
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
    for name in read_file(mosaiq.file("schema.sql")):gmatch("CREATE TABLE ([%w_]+)") do
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
                  "dose__DHS_ID", "dose__FLD_ID", "patient__Pat_ID1"}
local GROUPS = {patient = true, site = true, plan = true, machine = true, field = true,
                dose = true, delivered = true, point = true, actual = true}

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
    local g = {patient = {}, site = {}, plan = {}, machine = {}, field = {}, dose = {}, delivered = {},
               point = {}, actual = {}}
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

local sort_points = by(function(p) return p.Point end)
local sort_deliveries = by(function(f) return f.dose.Tx_DtTm end, function(f) return f.dose.DHS_ID end)
local sort_groups = by(function(g) return g.first_delivery end,
                       function(g) return g.patient.Pat_ID1 end,
                       function(g) return g.site.SIT_SET_ID end,
                       function(g) return g.plan.OriginalPlanUID end,
                       function(g) return g.fraction end,
                       function(g) return g.session end)

local function present(v)
    return v ~= nil and v ~= odbc.NULL
end

local function truthy(v)
    return present(v) and v ~= 0 and v ~= false and v ~= "0"
end

-- Type_Enum of fields that make images, not treatment (pymedphys' FIELD_TYPES).
local IMAGING_FIELDS = {[4] = "kV setup", [5] = "CT", [9] = "MV CT"}

-- Why a delivery cannot be an RT Beams Treatment Record: its kind and the reason, or
-- nil when it can.
local function reason_to_skip(d)
    if d.contradiction then return "contradiction", d.contradiction end
    if truthy(d.dose.WasQAMode) then
        return "qa_mode", "a QA-mode delivery (machine check), not a patient treatment"
    end
    local technique = present(d.site.Technique) and tostring(d.site.Technique):upper():match("^%s*(.-)%s*$") or ""
    local modality, kind = d.dose.Modality_Enum, d.dose.Type_Enum
    if modality == 8 or kind == 21 or technique == "HDR" or technique == "LDR" or technique == "PDR" then
        return "brachytherapy", "brachytherapy (" .. (technique ~= "" and technique or "Ir-192") ..
               "): an RT Beams Treatment Record cannot describe it"
    end
    local field_kind = tonumber(present(kind) and kind or (d.field and d.field.Type_Enum) or nil)
    if IMAGING_FIELDS[field_kind] then
        return "imaging", string.format("an imaging field (%s), not a treatment beam", IMAGING_FIELDS[field_kind])
    end
    if not present(d.field.FLD_ID) then
        return "missing_version", string.format(
            "the field version the delivery names (TxField FLD_ID %s) is not in the database", key_text(d.dose.FLD_ID))
    end
    if not present(d.site.SIT_SET_ID) then
        return "missing_version", "the site version the delivery names (Site SIT_ID) is not in the database"
    end
    if not present(d.plan.OriginalPlanUID) or tostring(d.plan.OriginalPlanUID):match("^%s*$") then
        return "no_plan", "the field has no OriginalPlanUID: the record could not reference its plan"
    end
    return nil
end

-- The accessories of the day's deliveries, by DHS_ID.
local function devices_of(db, date, opts)
    local sql = configured(opts.devices_sql) and opts.devices_sql or mosaiq.devices_query(db:dialect())
    local by_dhs = {}
    for row in db:rows(mosaiq.strip_comments(sql), {date}) do
        local list = by_dhs[row.DHS_ID]
        if not list then list = {}; by_dhs[row.DHS_ID] = list end
        list[#list + 1] = row
    end
    return by_dhs
end

--- A memory of field versions' control points across the days of a run (opts.points of
-- mosaiq.deliveries): a version not delivered in `keep` days' queries is forgotten (its
-- course is over), so a year's run holds the fields under treatment, not the year's.
function mosaiq.points_memory(keep)
    return {versions = {}, calls = 0, keep = keep or 14}
end

-- Compares a row with the one seen before for the same thing; the name of the first
-- column where they differ, or nil.
local function disagreement(row, seen, routes)
    for _, r in ipairs(routes) do
        if row[r[1]] ~= seen[r[1]] then return r end
    end
    return nil
end

-- The planned control points of field version fld_id, by Point: {points = {...}} or
-- {contradiction = why}. From the memory, else asked once (mosaiq/points.sql).
local function points_of(db, fld_id, opts, memory)
    local known = memory.versions[fld_id]
    if not known then
        local sql = configured(opts.points_sql) and opts.points_sql or mosaiq.points_query(db:dialect())
        local points, seen, columns = {}, {}, nil
        known = {points = points}
        for row in db:rows(mosaiq.strip_comments(sql), {fld_id}) do
            if not columns then
                columns = {}
                for c in pairs(row) do columns[#columns + 1] = {c} end
            end
            local at = row.Point
            if present(at) then
                local before = seen[at]
                if not before then
                    seen[at] = row
                    points[#points + 1] = row
                elseif not known.contradiction then
                    local r = disagreement(row, before, columns)
                    if r then
                        known.contradiction = string.format("the control points of field version %s disagree " ..
                            "on point.%s (control point %s): a join in the points query multiplies rows",
                            key_text(fld_id), r[1], key_text(at))
                    end
                end
            end
        end
        table.sort(points, sort_points)
        memory.versions[fld_id] = known
    end
    known.used = memory.calls
    return known
end

-- The delivery's control points: the field version's, each with what the console
-- recorded for it (d.actual, by Point) as .actual. Points without a recording are the
-- memory's own tables, shared by every delivery of the version (the mapping only reads).
local function with_recordings(points, actual)
    if next(actual) == nil then return points end
    local list = {}
    for i, p in ipairs(points) do
        local a = actual[p.Point]
        if a then
            local copy = {}
            for k, v in pairs(p) do copy[k] = v end
            copy.actual = a
            list[i] = copy
        else
            list[i] = p
        end
    end
    return list
end

-- The day's groups, what was skipped, and the number of rows the query returned.
local function deliveries_of(db, date, opts)
    opts = opts or {}
    check_date(date, "Mosaiq deliveries")
    local where = configured(opts.sql) and "settings.mosaiq_backup_sql_query"
                  or ("mosaiq/day.sql (" .. tostring(db:dialect()) .. ")")
    local sql = configured(opts.sql) and opts.sql or mosaiq.day_query(db:dialect())
    local memory = opts.points or mosaiq.points_memory()
    memory.calls = memory.calls + 1
    local deliveries, by_dhs, count = {}, {}, 0
    -- all columns; the delivery's; the control point's (point__ and actual__ columns in
    -- a query of the earlier shape, else actual__ only); whether points come in the rows
    local routes, once, per_point, planned_in_rows
    for row in db:rows(mosaiq.strip_comments(sql), {date}) do
        count = count + 1
        if not routes then
            local columns = {}
            for c in pairs(row) do columns[#columns + 1] = c end
            routes = route_columns(columns, where)
            once, per_point = {}, {}
            for _, r in ipairs(routes) do
                local list = (r[2] == "point" or r[2] == "actual") and per_point or once
                list[#list + 1] = r
                if r[2] == "point" then planned_in_rows = true end
            end
        end
        local dhs = row["dose__DHS_ID"]
        local d = by_dhs[dhs]
        if not d then
            local g = split(row, once)
            d = {patient = g.patient, site = g.site, plan = g.plan, machine = g.machine, field = g.field,
                 dose = g.dose, delivered = g.delivered, fraction = row.fraction, points = {}, actual = {},
                 seen = {}, first = row}
            by_dhs[dhs] = d
            deliveries[#deliveries + 1] = d
        elseif not d.contradiction then
            -- Rows of one delivery must agree; a join that multiplies rows with different
            -- values would otherwise let an arbitrary row win. Compared column by column
            -- against the first row: a delivery may come as hundreds of rows.
            local r = disagreement(row, d.first, once)
            if r then
                d.contradiction = string.format("the rows of this delivery disagree on %s.%s: a join in " ..
                    "the day query multiplies rows", r[2], r[3])
            end
        end
        local point = row[planned_in_rows and "point__Point" or "actual__Point"]
        if present(point) then
            local seen = d.seen[point]
            if not seen then
                local g = split(row, per_point)
                d.seen[point] = row
                if planned_in_rows then
                    -- what the console recorded, where it did (a left join's NULLs are not)
                    for _, v in pairs(g.actual) do
                        if present(v) then g.point.actual = g.actual break end
                    end
                    d.points[#d.points + 1] = g.point
                else
                    g.actual.Point = nil -- the key, not something the console recorded
                    d.actual[point] = g.actual
                end
            elseif not d.contradiction then
                -- A join that multiplies control-point rows (every version's points, two
                -- recorded rows for one point) must not let the first row win.
                local r = disagreement(row, seen, per_point)
                if r then
                    d.contradiction = string.format("the rows of this delivery disagree on %s.%s (control " ..
                        "point %s): a join in the day query multiplies rows", r[2], r[3], key_text(point))
                end
            end
        end
    end
    if not planned_in_rows then
        for _, d in ipairs(deliveries) do
            if not reason_to_skip(d) then -- skipped deliveries need no control points
                local known = points_of(db, d.field.FLD_ID, opts, memory)
                if known.contradiction then
                    d.contradiction = known.contradiction
                else
                    d.points = with_recordings(known.points, d.actual)
                end
            end
        end
    end
    for id, known in pairs(memory.versions) do
        if memory.calls - known.used >= memory.keep then memory.versions[id] = nil end
    end
    local devices = devices_of(db, date, opts)
    local groups, by_key, skipped = {}, {}, {}
    table.sort(deliveries, sort_deliveries)
    for _, d in ipairs(deliveries) do
        d.seen, d.first, d.actual = nil, nil, nil
        if planned_in_rows then table.sort(d.points, sort_points) end
        local kind, why = reason_to_skip(d)
        if kind then
            skipped[#skipped + 1] = {patient = key_text(present(d.patient.IDA) and d.patient.IDA or d.patient.Pat_ID1),
                                     plan = present(d.plan.OriginalPlanUID) and key_text(d.plan.OriginalPlanUID) or nil,
                                     fraction = d.fraction,
                                     dhs_id = d.dose.DHS_ID, day = date, kind = kind, reason = why}
        else
            local key = table.concat({key_text(d.patient.Pat_ID1), key_text(d.site.SIT_SET_ID),
                                      key_text(d.plan.OriginalPlanUID), key_text(d.fraction)}, "\0")
            local prev = by_key[key]
            -- The continuation of a beam interrupted in this session starts the
            -- fraction's next session (its own record).
            local continues = present(d.dose.MetersetPrevDelivered) and tonumber(d.dose.MetersetPrevDelivered) > 0
            local beam = key_text(present(d.field.FLD_SET_ID) and d.field.FLD_SET_ID or d.field.FLD_ID)
            local group = prev
            if group and continues and group.beams[beam] then group = nil end
            if not group then
                group = {patient = d.patient, site = d.site, plan = d.plan, machine = d.machine,
                         -- a day that starts with a continuation resumes an earlier day's session
                         fraction = d.fraction, session = prev and prev.session + 1 or (continues and 2 or 1),
                         fields = {},
                         beams = {}, first_delivery = d.dose.Tx_DtTm}
                by_key[key] = group
                groups[#groups + 1] = group
            end
            local f = d.field
            f.dose, f.delivered, f.points = d.dose, d.delivered, d.points
            f.devices = devices[d.dose.DHS_ID] or {}
            group.fields[#group.fields + 1] = f
            group.beams[beam] = true
        end
    end
    table.sort(groups, sort_groups)
    for _, g in ipairs(groups) do g.first_delivery, g.beams = nil, nil end
    return groups, skipped, count
end

--- The day's record groups and skipped deliveries (see the top of this file).
-- opts.sql / opts.devices_sql / opts.points_sql: the queries to run instead of the
-- shipped ones for the server's dialect; opts.points: a mosaiq.points_memory().
-- Audited (op "sql"), whether it succeeds or not.
function mosaiq.deliveries(db, date, opts)
    local ok, groups, skipped, count = pcall(deliveries_of, db, date, opts)
    db:event{op = "sql", query_name = "mosaiq deliveries of the day", params = {date}, rows = count,
             error = not ok and groups or nil}
    if not ok then error(groups, 0) end
    return groups, skipped
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
       MIN(DHS.Tx_DtTm) AS "Start_DtTm", MAX(DHS.Tx_DtTm) AS "Last_Tx_DtTm",
       MAX(DHS.Fractions_Tx) AS "Fractions_Tx"
FROM Ident ID
JOIN Patient PAT ON PAT.Pat_ID1 = ID.Pat_Id1
JOIN Site SIT ON SIT.Pat_ID1 = PAT.Pat_ID1 AND SIT.Version = 0
LEFT JOIN Site SV ON SV.SIT_SET_ID = SIT.SIT_SET_ID
LEFT JOIN Dose_Hst DHS ON DHS.SIT_ID = SV.SIT_ID AND (DHS.WasQAMode IS NULL OR DHS.WasQAMode = 0)
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
