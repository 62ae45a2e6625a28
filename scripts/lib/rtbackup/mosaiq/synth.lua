--- rtbackup.mosaiq.synth: a synthetic clinic in a Mosaiq-shaped database (schema.sql),
-- for the demo, the tests and the benchmarks. No real patient data: every value comes
-- from a seeded generator, so a seed always gives the same database.
--
--   local clinic = synth.generate(db, {seed = 1, patients = 20, start_date = "2025-06-02", days = 30})
--   -- clinic.kinds[Pat_ID1], clinic.situations.<name>, clinic.counts.<table>
--   synth.apply_corrections(db, clinic)   -- what the department charts after a first backup
--
-- What a clinic holds, so the day's query meets every case it must handle:
--   * external-beam patients on two linacs, one fraction per weekday; some treated twice
--     daily (BID); some with two sites treated the same day; 2-beam static plans and
--     VMAT-like plans (2 arcs of 178 control points); NULL middle names and suffixes,
--     non-ASCII names; follow-up patients seen only in clinic rooms during the period;
--   * every delivery as Mosaiq records it: a Dose_Hst row (the MU it gave), its FLD_HST
--     row, the control point the console recorded (TxFieldPoint_Hst) and its
--     accessories (BLDevices_Hst), pointing at the field, site and setup versions in
--     force that day.
-- And the situations a truthful record must survive, each listed in
-- result.situations (so a spec can find them; an entry's `day` may precede the period
-- for a course already under way) and placed at least once in the period when the
-- clinic has a course that can hold it:
--   interrupted_same_day  a beam stops early (PartiallyTreated, MACHINE/OPERATOR) and is
--                         completed minutes later (MetersetPrevDelivered = MU given)
--   interrupted_next_day  ... and completed at the next session, before the next fraction
--   field_edit            a field edited mid-course: deliveries before the edit name the
--                         old version (its own FLD_ID, Version 32000), later ones the new
--   site_edit             the same for the site (prescription changed mid-course)
--   hdr                   brachytherapy sessions (Technique HDR, Ir-192), which an RT
--                         Beams Treatment Record cannot describe
--   qa_mode               patient-specific QA deliveries before a VMAT course (WasQAMode)
--   wedge, bolus          accessories, as device rows with details and as FLD_HST text
--   missing_field         a delivery naming a field version the database no longer has
--                         (only with opts.faults: data a clinic must repair)
--   corrected, late_row   changes charted after the day (synth.apply_corrections):
--                         a delivery row corrected after review, and a delivery charted
--                         late for a fraction already backed up
--
-- opts: seed (1), patients (20), start_date (required, "YYYY-MM-DD"), days (30),
-- vmat_share (0.4), bid_share (0.15), hdr_share (0.1), followup_share (0.1),
-- two_site_share (0.1), history_share (0.3: courses with a mid-course edit),
-- interrupted_share (0.01 per beam delivery), wedge_share (0.3 of static fields),
-- bolus_share (0.2 of courses), qa_share (0.5 of VMAT courses),
-- leaf_encoding ("int16_0.01cm" | "float32_mm"), faults (false: true adds missing data).
local odbc = require "rtbackup.odbc"
local errors = require "rtbackup.error"
local clock = require "rtbackup.clock"
local beams = require "rtbackup.mosaiq.beams"
local mosaiq = require "rtbackup.mosaiq.query"

local synth = {}

-- SplitMix64: a small generator with its own state, so nothing else that uses
-- math.random (in this task or another) can change what a seed produces.
local function new_rng(seed)
    local state = seed
    local function next64()
        state = state + 0x9E3779B97F4A7C15
        local z = state
        z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ~ (z >> 27)) * 0x94D049BB133111EB
        return z ~ (z >> 31)
    end
    local r = {}
    function r.int(a, b) return a + (next64() >> 1) % (b - a + 1) end
    function r.float() return (next64() >> 11) * 2.0 ^ -53 end
    function r.chance(p) return r.float() < p end
    function r.pick(list) return list[r.int(1, #list)] end
    -- "2.25." and 36 digits: a UUID-style OID (ITU-T X.667), 41 characters.
    function r.uid()
        return string.format("2.25.%d%018d", r.int(100000000000000000, 999999999999999999),
                             r.int(0, 999999999999999999))
    end
    return r
end

-- Treatment machines (Staff rows with Machine_Type 1 or 2) and their Machine rows.
local MACHINES = {
    {id = 501, mac = 11, name = "LINAC1", type = 1, model = "Versa HD"},
    {id = 502, mac = 12, name = "TRUEBEAM2", type = 2, model = "TrueBeam"},
    {id = 503, mac = 13, name = "HDR1", type = 1, model = "Flexitron"},
}
-- People and rooms: appointments here are not treatments.
local PLACES = {
    {id = 700, name = "SMITH", type = 0},       -- a physician
    {id = 701, name = "EXAM 3", type = 0},
    {id = 702, name = "CT SIM", type = 3},      -- a machine, but not a treatment machine
}
local INSTITUTION = 1
local CPT = {
    {"77412", "Tx Delivery Complex"}, {"77402", "Tx Delivery Simple"},
    {"77427", "Weekly OTV"}, {"99213", "Follow-up Visit"}, {"77770", "HDR Brachy"},
}
local LAST = {"Müller", "Nguyễn", "Ó Briain", "García", "O'Brien", "Øvergård", "Kowalczyk",
              "Smith", "Johnson", "Doe", "Dubois", "Yamamoto", "Schäfer", "Núñez", "Li"}
local FIRST = {"Zoë", "José", "Anh", "Siobhán", "Jürgen", "Mary", "John", "Wei", "Ana",
               "Bjørn", "François", "Ayşe", "Jane", "Peter"}
local MIDDLE = {"Q", "Marie", "J", "Thị", "Ann", "Lee"}
local SUFFIX = {"Jr", "Sr", "III"}
local SITES = {
    {"PROSTATE", "Knee sponge; full bladder"}, {"LUNG_L", "Arms up; wing board"},
    {"BREAST_R", "Breast board 15°"}, {"BRAIN", "Mask #12"}, {"H&N", "5-point mask"},
    {"PELVIS", "Vac-lok"}, {"SPINE_T8", "Knee sponge"},
}
-- BLDevices_Hst.Device_Enum as the shipped mapping reads it (site.lua can change it).
local DEVICE = {wedge = 1, block = 2, compensator = 3, bolus = 4}
-- Superseded versions count down from 32000 (the current one is Version 0).
local SUPERSEDED = 32000

-- The tables in schema.sql's order.
local function table_names()
    local f = assert(io.open(mosaiq.file("schema.sql"), "rb"))
    local text = f:read("a")
    f:close()
    local names = {}
    for name in text:gmatch("CREATE TABLE ([%w_]+)") do names[#names + 1] = name end
    return names
end

-- A column name as SQL: "Index" is a reserved word.
local function column_sql(name)
    return name == "Index" and '"Index"' or name
end

--- Inserts rows ({table = {row, ...}}) with one prepared INSERT per table, over the
-- union of the columns its rows name; a value a row lacks is NULL. Used by the
-- generator and by tests that build a fixture by hand.
function synth.insert(db, rows)
    local known = {}
    for _, name in ipairs(table_names()) do known[name] = true end
    for name in pairs(rows) do
        if not known[name] then error("synth.insert: no table " .. tostring(name) .. " in schema.sql", 2) end
    end
    for _, name in ipairs(table_names()) do
        local list = rows[name] or {}
        local seen, columns = {}, {}
        for _, row in ipairs(list) do
            for c in pairs(row) do
                if not seen[c] then seen[c] = true; columns[#columns + 1] = c end
            end
        end
        table.sort(columns)
        if #list > 0 then
            local quoted = {}
            for i, c in ipairs(columns) do quoted[i] = column_sql(c) end
            local sql = "INSERT INTO " .. name .. " (" .. table.concat(quoted, ", ") ..
                        ") VALUES (" .. string.rep("?", #columns, ", ") .. ")"
            for _, row in ipairs(list) do
                local values = {}
                for i, c in ipairs(columns) do
                    local v = row[c]
                    if v == nil then v = odbc.NULL end
                    values[i] = v
                end
                db:exec(sql, values)
            end
        end
    end
end

local function add(rows, name, row)
    rows[name] = rows[name] or {}
    rows[name][#rows[name] + 1] = row
    return row
end

local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
end

local function round(x, places)
    local m = 10 ^ (places or 1)
    return math.floor(x * m + 0.5) / m
end

-- The next weekday on or after day number n.
local function weekday_on_or_after(n)
    while clock.weekday(n) > 5 do n = n + 1 end
    return n
end

-- Slots of a course: {day, at = seconds into the day} from `first` until `fractions`
-- are given or the period ends. BID courses treat twice a day, at least 6 hours
-- apart; HDR courses once a week.
local function slots(first, fractions, last_day, kind, rng)
    local list, day = {}, first
    local morning = rng.int(7 * 60, 10 * 60) * 60
    while #list < fractions and day <= last_day do
        if clock.weekday(day) <= 5 then
            list[#list + 1] = {day = day, at = morning + rng.int(-10, 10) * 60}
            if kind == "bid" and #list < fractions then
                list[#list + 1] = {day = day, at = morning + 6 * 3600 + rng.int(0, 90) * 60}
            end
        end
        day = day + (kind == "hdr" and 7 or 1)
    end
    return list
end

local function counter(start)
    local n = start - 1
    return function() n = n + 1; return n end
end

-- ---- a course: site, plan, fields ------------------------------------------------

-- Plans a course: its site versions, plan, field versions and slots. Nothing is
-- delivered yet (deliver() does that, once the situations are placed).
local function plan_course(c, rows, ids, rng, opts)
    local site_name, setup = table.unpack(rng.pick(SITES))
    local technique = c.kind == "hdr" and "HDR" or (c.vmat and "VMAT" or rng.pick{"3D", "IMRT"})
    if c.kind == "hdr" then site_name, setup = "CERVIX", "Lithotomy; tandem and ring" end
    local fractions = c.kind == "hdr" and 5 or rng.pick{5, 15, 20, 25, 28, 30}
    local dpf = c.kind == "hdr" and 600 or (fractions == 5 and 800 or rng.pick{180, 200, 250})
    c.technique, c.site_name, c.fractions = technique, site_name, fractions
    c.site_set = ids.site_set()
    c.created = clock.timestamp(c.first - 5, 10 * 3600)
    c.slots = slots(c.first, fractions, c.last_day, c.kind, rng)
    -- The site as first written; an edited course gets a second version later.
    c.site_versions = {{SIT_ID = ids.site(), SIS_ID = ids.setup(), from = -math.huge, setup = setup,
                        Fractions = fractions, Dose_Ttl = fractions * dpf}}

    local study, series, instance = ids.study(), ids.series(), ids.instance()
    c.plan_uid = rng.uid()
    add(rows, "DCMStudy", {DCMStudy_ID = study, StudyInstanceUID = rng.uid(), StudyID = "PLAN" .. c.n,
        StudyDescription = site_name .. " " .. technique, Study_DtTm = c.created, Create_DtTm = c.created})
    add(rows, "DCMSeries", {DCMSeries_ID = series, DCMStudy_ID = study, SeriesInstanceUID = rng.uid(),
        SeriesNumber = 1, SeriesDescription = "RT Plan", Series_DtTm = c.created})
    add(rows, "DCMInstance", {DCMInstance_ID = instance, DCMSeries_ID = series, SOPInstanceUID = c.plan_uid})
    add(rows, "RtPlan", {DCMInstance_ID = instance, Pat_ID1 = c.pat,
        Label = (site_name:sub(1, 4) .. "_" .. technique):upper()})

    local fields, points = beams.plan_fields({
        kind = c.vmat and "vmat" or "static", imrt = technique == "IMRT", first_fld_id = ids.field_block(),
        pat_id = c.pat, site_set_id = c.site_set, plan_uid = c.plan_uid, machine = c.machine,
        created = c.created, energy = rng.pick{6.0, 6.0, 10.0, 15.0}, leaf_encoding = opts.leaf_encoding,
        dose_per_fraction = dpf,
        couch = {vrt = rng.int(-200, -80) / 10, lng = rng.int(800, 1100) / 10, lat = rng.int(-20, 20) / 10},
    }, rng)
    if c.kind == "hdr" then -- an afterloader: no MLC, no control points
        for _, f in ipairs(fields) do
            f.Mlc, f.ControlPoints, f.Beam_Type_Flag, f.Type_Enum, f.Modality_Enum = 0, 0, 1, 21, 8
        end
        points = {}
    end
    c.fields = {}
    for n, f in ipairs(fields) do
        local mine = {}
        for _, p in ipairs(points) do
            if p.FLD_ID == f.FLD_ID then mine[#mine + 1] = p end
        end
        -- Each field: its versions in time order ({row, points, from = first day in force}).
        c.fields[n] = {set = f.FLD_SET_ID, versions = {{row = f, points = mine, from = -math.huge}}}
    end
    if c.kind ~= "hdr" and not c.vmat and #c.fields > 0 and rng.chance(opts.wedge_share) then
        c.wedge = {field = 1, angle = rng.pick{15, 30, 45, 60}, orientation = rng.pick{0, 90, 180, 270}}
    end
    if c.kind ~= "hdr" and rng.chance(opts.bolus_share) then c.bolus = {thickness = rng.pick{0.5, 1.0}} end
    c.cpt = c.kind == "hdr" and "77770" or (technique == "3D" and "77402" or "77412")
    return c
end

-- A mid-course edit from slot `k` on: a new version of every field (its own FLD_ID,
-- the MU and collimator changed) and of the site (one more fraction prescribed).
local function edit_course(c, k, ids, rng)
    local day = c.slots[k].day
    for _, field in ipairs(c.fields) do
        local old = field.versions[#field.versions]
        local row = copy(old.row)
        row.FLD_ID = ids.field_version()
        row.Meterset = round(old.row.Meterset * (1 + rng.int(2, 6) / 100), 1)
        local points = {}
        for i, p in ipairs(old.points) do
            points[i] = copy(p)
            points[i].FLD_ID = row.FLD_ID
            points[i].Coll_Ang = (p.Coll_Ang + 5) % 360
        end
        field.versions[#field.versions + 1] = {row = row, points = points, from = day}
    end
    local site = c.site_versions[#c.site_versions]
    c.site_versions[#c.site_versions + 1] = {SIT_ID = ids.site(), SIS_ID = ids.setup(), from = day,
        setup = site.setup .. "; shift 3 mm sup", Fractions = site.Fractions + 1,
        Dose_Ttl = site.Dose_Ttl / site.Fractions * (site.Fractions + 1)}
    c.edit = {slot = k, day = day}
end

local function in_force(versions, day)
    local chosen = versions[1]
    for _, v in ipairs(versions) do if v.from <= day then chosen = v end end
    return chosen
end

-- Writes the site, setup, field and point rows of a course: the last version is
-- current (Version 0), earlier ones count down from 32000.
local function write_versions(c, rows, ids)
    local created = c.created
    for i, s in ipairs(c.site_versions) do
        local version = i == #c.site_versions and 0 or SUPERSEDED - (#c.site_versions - 1 - i)
        local edited = s.from == -math.huge and created or clock.timestamp(s.from, 7 * 3600)
        add(rows, "Site", {SIT_ID = s.SIT_ID, SIT_SET_ID = c.site_set, Pat_ID1 = c.pat, Version = version,
            Site_Name = c.site_name, Technique = c.technique, Fractions = s.Fractions, Dose_Ttl = s.Dose_Ttl,
            Edit_DtTm = edited})
        add(rows, "SiteSetup", {SIS_ID = s.SIS_ID, SIS_Set_ID = c.site_set, SIT_Set_ID = c.site_set,
            Version = version, Setup_Note = s.setup})
    end
    for _, field in ipairs(c.fields) do
        for i, v in ipairs(field.versions) do
            v.row.Version = i == #field.versions and 0 or SUPERSEDED - (#field.versions - 1 - i)
            local given = v.given or {count = 0}
            v.row.Fractions_Tx, v.row.Start_DtTm, v.row.Last_Tx_DtTm = given.count, given.first, given.last
            add(rows, "TxField", v.row)
            for _, p in ipairs(v.points) do
                local point = copy(p)
                point.TFP_ID = ids.point()
                add(rows, "TxFieldPoint", point)
            end
        end
    end
end

-- ---- deliveries ----------------------------------------------------------------

local function dicom_day(n)
    return clock.format_day(n)
end

-- One delivery: its Dose_Hst, FLD_HST, TxFieldPoint_Hst and BLDevices_Hst rows.
-- d = {field, version, fraction, tx (seconds into the day), day, site, meterset,
--      prev, partial, status, qa, fld_id (override: a version the database lacks)}.
local function delivery(c, d, rows, ids, rng)
    local f = d.version.row
    local tx = clock.timestamp(d.day, d.tx)
    local dhs = {
        DHS_ID = ids.dose(), Pat_ID1 = c.pat, FLD_ID = d.fld_id or f.FLD_ID, SIT_ID = d.site.SIT_ID,
        SIS_ID = d.site.SIS_ID, Tx_DtTm = tx, Create_DtTm = clock.timestamp(d.day, d.tx + 60),
        Edit_DtTm = clock.timestamp(d.day, d.tx + 60),
        Fractions_Tx = d.qa and 0 or d.fraction, Fx_Number_InEffect = (not d.qa) and d.fraction or nil,
        Meterset = d.meterset, MetersetPrevDelivered = d.prev or 0, MetersetUnit_Enum = 1,
        PartiallyTreated = d.partial and 1 or 0, WasQAMode = d.qa and 1 or 0,
        Modality_Enum = f.Modality_Enum, Type_Enum = f.Type_Enum,
        Energy = #d.version.points > 0 and d.version.points[1].Energy or nil,
        Energy_Unit_Enum = #d.version.points > 0 and 2 or nil,
        TerminationCode = d.status == 1 and 0 or rng.int(1, 99), Termination_Status_Enum = d.status,
        Termination_Verify_Status_Enum = d.verify or 1, Dose_Addtl_Projected = 0.0,
        Machine_ID_Staff_ID = c.machine.id, MAC_ID = c.machine.mac, Inst_ID = INSTITUTION,
    }
    add(rows, "Dose_Hst", dhs)
    local wedge = c.wedge and c.wedge.field == d.field and ("W" .. c.wedge.angle) or nil
    local bolus = c.bolus and string.format("%.1f cm bolus", c.bolus.thickness) or nil
    local fhs = add(rows, "FLD_HST", {FHS_ID = ids.field_history(), DHS_ID = dhs.DHS_ID, Tx_DtTm = tx,
        Wdg_Appl = wedge or "", Dyn_Wedge = "", Block = "", Comp_FDA = "", Bolus = bolus or "",
        Beam_Type_Flag = f.Beam_Type_Flag, Control_Points = f.ControlPoints, Meterset = f.Meterset,
        -- the beam-on time (minutes): 600 MU/min
        BackupTimerDelivered = round(d.meterset / 600, 3), IsFFF = 0})
    if d.version.points[1] then
        -- The console records where the couch was (planned position plus the day's
        -- image-guided shift) and the dose rate, at the start of the delivery.
        local p = d.version.points[1]
        add(rows, "TxFieldPoint_Hst", {TPH_ID = ids.point_history(), FHS_ID = fhs.FHS_ID, Point = p.Point,
            Index = p.Index, Tx_DtTm = tx, Meterset_Rate = p.Meterset_Rate - rng.int(0, 4),
            Gantry_Ang = p.Gantry_Ang, Coll_Ang = p.Coll_Ang, Couch_Ang = p.Couch_Ang,
            Couch_Vrt = round(p.Couch_Vrt + rng.int(-3, 3) / 10, 2),
            Couch_Lng = round(p.Couch_Lng + rng.int(-3, 3) / 10, 2),
            Couch_Lat = round(p.Couch_Lat + rng.int(-3, 3) / 10, 2)})
    end
    if wedge then
        add(rows, "BLDevices_Hst", {BDH_ID = ids.device(), FHS_ID = fhs.FHS_ID, Device_Enum = DEVICE.wedge,
            Type_Enum = 1, Device_ID = wedge .. "IN", Description = c.wedge.angle .. " degree wedge",
            Wedge_Angle = c.wedge.angle, Wedge_Orientation = c.wedge.orientation,
            Barcode_String = "WDG-" .. c.wedge.angle})
    end
    if bolus and c.bolus.device then
        add(rows, "BLDevices_Hst", {BDH_ID = ids.device(), FHS_ID = fhs.FHS_ID, Device_Enum = DEVICE.bolus,
            Type_Enum = 1, Device_ID = "BOLUS" .. math.floor(c.bolus.thickness * 10),
            Description = bolus, Barcode_String = "BOL-" .. c.pat})
    end
    if not d.qa and not d.fld_id then
        local given = d.version.given or {count = 0}
        given.count, given.first, given.last = math.max(given.count, d.fraction), given.first or tx, tx
        d.version.given = given
    end
    return dhs
end

-- What one slot delivers: the fraction's beams, after any continuation carried over
-- from the previous slot. Returns the continuation to carry to the next slot, if any.
local function deliver_slot(c, k, slot, carry, rows, ids, rng, opts, situations)
    local site = in_force(c.site_versions, slot.day)
    local at = slot.at + 5 * 60
    local mrn, day = c.mrn, dicom_day(slot.day)
    local function next_time(gap) local t = at; at = at + (gap or 150); return t end
    local function log(name, entry)
        entry.pat, entry.mrn, entry.day, entry.site_set, entry.plan_uid = c.pat, mrn, day, c.site_set, c.plan_uid
        local list = situations[name]
        list[#list + 1] = entry
    end
    -- The rest of an earlier fraction, interrupted at the previous slot.
    if carry then
        local rest = {}
        for n = carry.field, #c.fields do
            local field = c.fields[n]
            local version = in_force(field.versions, carry.version_day)
            local mu, prev = version.row.Meterset, 0
            if n == carry.field then prev = carry.given end
            local dhs = delivery(c, {field = n, version = version, fraction = carry.fraction, tx = next_time(),
                day = slot.day, site = carry.site, meterset = round(mu - prev, 1), prev = prev, status = 1},
                rows, ids, rng)
            rest[#rest + 1] = dhs.DHS_ID
        end
        carry.entry.continued = rest
        carry.entry.continued_day = day
        at = at + 120
    end
    local out
    for n, field in ipairs(c.fields) do
        local version = in_force(field.versions, slot.day)
        local mu = version.row.Meterset
        local planned = c.plans[k]
        if not planned then planned = {}; c.plans[k] = planned end
        local interrupt = planned.interrupt == n or (not planned.interrupt and not out and c.kind ~= "hdr"
                          and rng.chance(opts.interrupted_share) and "random")
        if interrupt and not out then
            planned.interrupted = true
            local given = round(mu * rng.int(15, 85) / 100, 1)
            local status = rng.pick{2, 3}
            local dhs = delivery(c, {field = n, version = version, fraction = k, tx = next_time(), day = slot.day,
                site = site, meterset = given, partial = true, status = status}, rows, ids, rng)
            -- (a BID course's next session may be the same afternoon: completed in place)
            local mode = planned.mode or (c.kind == "bid" and "same_day" or rng.pick{"same_day", "next_day"})
            local entry = {fraction = k, fld_set_id = field.set, interrupted = dhs.DHS_ID, given = given,
                           planned = mu, status = status}
            if mode == "same_day" then
                local cont = delivery(c, {field = n, version = version, fraction = k, tx = next_time(8 * 60),
                    day = slot.day, site = site, meterset = round(mu - given, 1), prev = given, status = 1},
                    rows, ids, rng)
                entry.continued, entry.continued_day = {cont.DHS_ID}, day
                log("interrupted_same_day", entry)
            else
                -- The machine is down for the day: this beam and the fraction's later
                -- ones are given at the next slot.
                log("interrupted_next_day", entry)
                out = {field = n, given = given, fraction = k, version_day = slot.day, site = site, entry = entry}
            end
        elseif not out then
            local dhs = delivery(c, {field = n, version = version, fraction = k, tx = next_time(), day = slot.day,
                site = site, meterset = c.kind == "hdr" and 0 or mu, status = 1,
                verify = rng.chance(0.05) and 2 or 1,
                fld_id = planned.missing_field == n and ids.field_version() or nil}, rows, ids, rng)
            if planned.missing_field == n then
                log("missing_field", {fraction = k, dhs_id = dhs.DHS_ID, fld_id = dhs.FLD_ID})
            end
            if c.kind == "hdr" and n == 1 then log("hdr", {fraction = k, dhs_id = dhs.DHS_ID}) end
            local in_period = slot.day >= opts.start
            if c.wedge and c.wedge.field == n and in_period and not situations.wedge_logged[c] then
                situations.wedge_logged[c] = true
                log("wedge", {fraction = k, dhs_id = dhs.DHS_ID, fld_set_id = field.set, angle = c.wedge.angle,
                              orientation = c.wedge.orientation})
            end
            if c.bolus and n == 1 and in_period and not situations.bolus_logged[c] then
                situations.bolus_logged[c] = true
                log("bolus", {fraction = k, dhs_id = dhs.DHS_ID, text = string.format("%.1f cm bolus",
                                                                                       c.bolus.thickness)})
            end
            planned.delivered = planned.delivered or {}
            planned.delivered[n] = dhs
        end
    end
    return out
end

-- The working day before a course's first fraction: when its plan is checked.
local function qa_day(c)
    local day = c.first - 1
    while clock.weekday(day) > 5 do day = day - 1 end
    return day
end

-- Patient-specific QA of a VMAT plan, the working day before the first fraction.
local function qa_deliveries(c, rows, ids, rng, situations, first_day)
    local day = qa_day(c)
    if day < first_day then return end
    local site = in_force(c.site_versions, day)
    local list = {}
    for n, field in ipairs(c.fields) do
        local version = field.versions[1]
        local dhs = delivery(c, {field = n, version = version, fraction = 0, tx = 18 * 3600 + n * 300, day = day,
            site = site, meterset = version.row.Meterset, status = 1, qa = true}, rows, ids, rng)
        list[#list + 1] = dhs.DHS_ID
    end
    local entry = {pat = c.pat, mrn = c.mrn, day = dicom_day(day), dhs_ids = list, plan_uid = c.plan_uid}
    situations.qa_mode[#situations.qa_mode + 1] = entry
end

local function deliver(c, rows, ids, rng, opts, situations, first_day)
    if c.vmat and c.kind ~= "hdr" and (c.force_qa or rng.chance(opts.qa_share)) then
        qa_deliveries(c, rows, ids, rng, situations, first_day)
    end
    local carry
    for k, slot in ipairs(c.slots) do
        -- Appointments: the treatment, and a weekly visit with the physician.
        local sch = ids.schedule()
        add(rows, "Schedule", {Sch_Id = sch, Sch_Set_Id = sch, Pat_ID1 = c.pat,
            App_DtTm = clock.timestamp(slot.day, slot.at),
            Edit_DtTm = clock.timestamp(slot.day, slot.at + 11 * 60), Location = c.machine.id,
            Activity = c.cpt, Version = 0})
        if k % 5 == 2 and c.kind ~= "hdr" then
            local otv = ids.schedule()
            add(rows, "Schedule", {Sch_Id = otv, Sch_Set_Id = otv, Pat_ID1 = c.pat,
                App_DtTm = clock.timestamp(slot.day, 12 * 3600 + rng.int(0, 8) * 900),
                Location = 700, Activity = "77427", Version = 0})
        end
        carry = deliver_slot(c, k, slot, carry, rows, ids, rng, opts, situations)
    end
    if c.edit then
        local e = {fraction = c.edit.slot, edit_day = dicom_day(c.edit.day)}
        e.pat, e.mrn, e.site_set, e.plan_uid = c.pat, c.mrn, c.site_set, c.plan_uid
        e.fields = {}
        for _, field in ipairs(c.fields) do
            e.fields[#e.fields + 1] = {fld_set_id = field.set, old = field.versions[#field.versions - 1].row.FLD_ID,
                                       new = field.versions[#field.versions].row.FLD_ID}
        end
        e.old_sit_id = c.site_versions[#c.site_versions - 1].SIT_ID
        e.new_sit_id = c.site_versions[#c.site_versions].SIT_ID
        situations.field_edit[#situations.field_edit + 1] = e
        situations.site_edit[#situations.site_edit + 1] = e
    end
end

-- ---- situations placed on purpose -------------------------------------------------

-- Slots of a course inside the period, from the third on (a course's first fractions
-- stay plain), as indexes into c.slots.
local function slots_in_period(c, first_day, last_day)
    local list = {}
    for k, s in ipairs(c.slots) do
        if k >= 3 and s.day >= first_day and s.day <= last_day and k < #c.slots then list[#list + 1] = k end
    end
    return list
end

-- Places each situation at least once, on the courses that can hold it, at slots in
-- the period no other situation uses; then the random ones by their shares.
local function place_situations(courses, first_day, last_day, rng, opts)
    local function candidates(test)
        local list = {}
        for _, c in ipairs(courses) do
            if c.kind ~= "hdr" and c.kind ~= "followup" and test(c) then list[#list + 1] = c end
        end
        return list
    end
    local function free_slot(c)
        for _, k in ipairs(slots_in_period(c, first_day, last_day)) do
            if not c.plans[k] and not (c.edit and c.edit.slot == k) then return k end
        end
    end
    local function place(test, apply)
        local list = candidates(test)
        if #list == 0 then return end
        local start = rng.int(1, #list)
        for i = 0, #list - 1 do
            local c = list[(start + i - 1) % #list + 1]
            local k = free_slot(c)
            if k then apply(c, k); return c end
        end
    end
    place(function() return true end, function(c, k) c.plans[k] = {interrupt = 1, mode = "same_day"} end)
    -- next day: not at a BID course's morning slot (the next slot is the same day)
    place(function(c) return c.kind ~= "bid" end, function(c, k) c.plans[k] = {interrupt = #c.fields, mode = "next_day"} end)
    if opts.faults then
        place(function(c) return #c.fields > 1 end, function(c, k) c.plans[k] = {missing_field = 2} end)
    end
    return place
end

--- The options with their defaults filled in; raises {kind = "invalid"} for a bad one.
function synth.options(opts)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    local start = clock.day(o.start_date)
    if not start then
        errors.raise{kind = "invalid", message = "synthetic clinic: start_date must be YYYY-MM-DD, got " ..
                     tostring(o.start_date)}
    end
    o.start, o.seed = start, o.seed or 1
    o.patients, o.days = o.patients or 20, o.days or 30
    if math.type(o.patients) ~= "integer" or o.patients < 1 or math.type(o.days) ~= "integer" or o.days < 1 then
        errors.raise{kind = "invalid", message = "synthetic clinic: patients and days must be positive integers"}
    end
    local defaults = {vmat_share = 0.4, bid_share = 0.15, hdr_share = 0.1, followup_share = 0.1,
                      two_site_share = 0.1, history_share = 0.3, interrupted_share = 0.01, wedge_share = 0.3,
                      bolus_share = 0.2, qa_share = 0.5, leaf_encoding = "int16_0.01cm"}
    for k, v in pairs(defaults) do if o[k] == nil then o[k] = v end end
    beams.encode_leaves({0}, o.leaf_encoding) -- rejects an unknown encoding now
    return o
end

-- Patient kinds: at least one HDR, one follow-up and one BID patient when there are
-- enough patients, placed at seeded positions.
local function kinds(o, rng)
    local n = o.patients
    local function count(share) return n >= 6 and math.max(1, math.floor(n * share + 0.5)) or 0 end
    local list = {}
    for _ = 1, count(o.hdr_share) do list[#list + 1] = "hdr" end
    for _ = 1, count(o.followup_share) do list[#list + 1] = "followup" end
    for _ = 1, count(o.bid_share) do list[#list + 1] = "bid" end
    while #list < n do list[#list + 1] = "daily" end
    for i = n, 2, -1 do
        local j = rng.int(1, i)
        list[i], list[j] = list[j], list[i]
    end
    return list
end

-- A delivery charted after the day and a correction after review, on the last day
-- of the period that has deliveries: taken out of `rows` now, put back by
-- synth.apply_corrections.
local function plan_corrections(rows, situations, courses, last_day)
    local latest
    for _, c in ipairs(courses) do
        if c.kind ~= "hdr" and c.kind ~= "followup" and #c.fields > 1 then
            for k, slot in ipairs(c.slots) do
                local p = c.plans[k]
                if slot.day <= last_day and p and p.delivered and p.delivered[1] and p.delivered[2]
                   and not p.interrupted and not p.missing_field then
                    if not latest or slot.day > latest.day or (slot.day == latest.day and c.pat < latest.c.pat) then
                        latest = {c = c, k = k, day = slot.day, plan = p}
                    end
                end
            end
        end
    end
    if not latest then return {} end
    local c, p = latest.c, latest.plan
    -- The fraction's second beam is charted late: the row and its history leave the
    -- initial database.
    local late = p.delivered[2]
    local held = {}
    for _, name in ipairs{"Dose_Hst", "FLD_HST", "TxFieldPoint_Hst", "BLDevices_Hst"} do held[name] = {} end
    local fhs = {}
    local keep = {}
    for _, r in ipairs(rows.Dose_Hst) do
        if r == late then held.Dose_Hst[1] = r else keep[#keep + 1] = r end
    end
    rows.Dose_Hst = keep
    for _, name in ipairs{"FLD_HST", "TxFieldPoint_Hst", "BLDevices_Hst"} do
        keep = {}
        for _, r in ipairs(rows[name] or {}) do
            if (r.DHS_ID == late.DHS_ID) or (r.FHS_ID and fhs[r.FHS_ID]) then
                if r.DHS_ID then fhs[r.FHS_ID] = true end
                table.insert(held[name], r)
            else
                keep[#keep + 1] = r
            end
        end
        rows[name] = keep
    end
    local first = p.delivered[1]
    local when = clock.timestamp(latest.day + 1, 9 * 3600)
    local base = {pat = c.pat, mrn = c.mrn, day = dicom_day(latest.day), fraction = latest.k,
                  site_set = c.site_set, plan_uid = c.plan_uid}
    local late_entry = copy(base)
    late_entry.dhs_id = late.DHS_ID
    situations.late_row[#situations.late_row + 1] = late_entry
    local fix = copy(base)
    fix.dhs_id, fix.set = first.DHS_ID, {Termination_Verify_Status_Enum = 2, Edit_DtTm = when}
    situations.corrected[#situations.corrected + 1] = fix
    return {{insert = held}, {update = "Dose_Hst", key = "DHS_ID", id = first.DHS_ID, set = fix.set}}
end

--- Fills db (tables from schema.sql, empty) with a synthetic clinic; see the top.
-- Returns {kinds = {[Pat_ID1] = kind}, situations = {name = {entry, ...}}, counts,
-- corrections (for synth.apply_corrections)}.
function synth.generate(db, opts)
    local o = synth.options(opts)
    local rng = new_rng(o.seed)
    local rows = {}
    for _, m in ipairs(MACHINES) do
        add(rows, "Staff", {Staff_ID = m.id, Last_Name = m.name, Machine_Type = m.type})
        add(rows, "Machine", {MAC_ID = m.mac, MAC_Set_ID = m.mac, Version = 0, Source_Name = m.name,
                              Source_Model = m.model, Description = m.model})
    end
    for _, p in ipairs(PLACES) do add(rows, "Staff", {Staff_ID = p.id, Last_Name = p.name, Machine_Type = p.type}) end
    add(rows, "Config", {CFG_ID = 1, Inst_ID = INSTITUTION, Inst_Name = "Radiation Oncology"})
    for _, c in ipairs(CPT) do add(rows, "CPT", {Hsp_Code = c[1], Short_Desc = c[2]}) end

    local fld = counter(6000)
    local ids = {site_set = counter(70001), site = counter(71001), setup = counter(72001), study = counter(3001),
                 series = counter(4001), instance = counter(5001), schedule = counter(900001),
                 dose = counter(800001), field_history = counter(810001), point_history = counter(820001),
                 device = counter(830001), point = counter(1), field_version = counter(95001),
                 field_block = function() return fld() * 10 end}
    local first_day, last_day = o.start, o.start + o.days - 1
    local result = {kinds = {}, situations = {}}
    local situations = {wedge_logged = {}, bolus_logged = {}}
    for _, name in ipairs{"interrupted_same_day", "interrupted_next_day", "field_edit", "site_edit", "hdr",
                          "qa_mode", "wedge", "bolus", "missing_field", "corrected", "late_row"} do
        situations[name] = {}
    end
    local courses = {}
    for i, kind in ipairs(kinds(o, rng)) do
        local pat = 10000 + i
        result.kinds[pat] = kind
        local mrn = string.format("MRN%07d", 100000 + i * 37)
        add(rows, "Patient", {Pat_ID1 = pat, Last_Name = LAST[(i - 1) % #LAST + 1],
            First_Name = rng.pick(FIRST), MIddle_Name = rng.chance(0.6) and rng.pick(MIDDLE) or nil,
            Suffix = rng.chance(0.15) and rng.pick(SUFFIX) or nil,
            Birth_DtTm = clock.timestamp(clock.day("1935-01-01") + rng.int(0, 65 * 365))})
        add(rows, "Admin", {Pat_ID1 = pat, Gender = rng.pick{"Male", "Female"}})
        add(rows, "Ident", {Pat_Id1 = pat, IDA = mrn})
        local c = {pat = pat, mrn = mrn, n = 1, kind = kind, vmat = rng.chance(o.vmat_share),
                   machine = MACHINES[rng.int(1, 2)], last_day = last_day, plans = {}}
        if kind == "hdr" then c.machine = MACHINES[3] end
        if kind == "followup" then -- treated before the period, seen in a clinic room during it
            c.first = weekday_on_or_after(first_day - rng.int(60, 120))
            c.last_day = first_day - 1
            for _ = 1, rng.int(1, 3) do
                local day, sch = weekday_on_or_after(first_day + rng.int(0, o.days - 1)), ids.schedule()
                add(rows, "Schedule", {Sch_Id = sch, Sch_Set_Id = sch, Pat_ID1 = pat,
                    App_DtTm = clock.timestamp(day, rng.int(8, 16) * 3600), Location = rng.pick{700, 701, 702},
                    Activity = "99213", Version = 0})
            end
        else -- some courses are under way when the period starts, some start during it
            c.first = weekday_on_or_after(first_day + rng.int(-25, math.max(0, o.days - 5)))
        end
        courses[#courses + 1] = plan_course(c, rows, ids, rng, o)
        if kind == "daily" and rng.chance(o.two_site_share) then -- a second site, same days
            local second = {pat = pat, mrn = mrn, n = 2, kind = kind, vmat = not c.vmat, machine = c.machine,
                            last_day = c.last_day, first = c.first, plans = {}}
            courses[#courses + 1] = plan_course(second, rows, ids, rng, o)
        end
    end
    -- Situations: each at least once where a course can hold it, then by their shares.
    local place = place_situations(courses, first_day, last_day, rng, o)
    local edited = place(function(c) return #c.slots >= 4 end, function(c, k) edit_course(c, k, ids, rng) end)
    place(function(c) return not c.vmat end, function(c)
        c.wedge = c.wedge or {field = 1, angle = 30, orientation = 90}
    end)
    place(function() return true end, function(c) c.bolus = c.bolus or {thickness = 0.5}; c.bolus.device = true end)
    for _, c in ipairs(courses) do -- a VMAT course whose plan is checked in the period
        if c.vmat and c.kind ~= "hdr" and c.kind ~= "followup" and qa_day(c) >= first_day then
            c.force_qa = true
            break
        end
    end
    for _, c in ipairs(courses) do
        if c ~= edited and c.kind ~= "hdr" and c.kind ~= "followup" and #c.slots >= 4
           and rng.chance(o.history_share) then
            local k = rng.int(2, #c.slots - 1)
            if not c.plans[k] then edit_course(c, k, ids, rng) end
        end
    end
    for _, c in ipairs(courses) do deliver(c, rows, ids, rng, o, situations, first_day) end
    for _, c in ipairs(courses) do write_versions(c, rows, ids) end
    result.corrections = plan_corrections(rows, situations, courses, last_day)
    situations.wedge_logged, situations.bolus_logged = nil, nil
    result.situations = situations
    db:transaction(synth.insert, db, rows)
    result.counts = {}
    for name, list in pairs(rows) do result.counts[name] = #list end
    return result
end

--- Applies what the clinic charts after the day (result.corrections of generate): the
-- late delivery rows are inserted, the corrected row updated.
function synth.apply_corrections(db, result)
    db:transaction(function()
        for _, change in ipairs(result.corrections or {}) do
            if change.insert then
                synth.insert(db, change.insert)
            else
                local names, values = {}, {}
                for column, v in pairs(change.set) do
                    names[#names + 1] = column .. " = ?"
                    values[#values + 1] = v
                end
                values[#values + 1] = change.id
                db:exec("UPDATE " .. change.update .. " SET " .. table.concat(names, ", ") .. " WHERE " ..
                        change.key .. " = ?", values)
            end
        end
    end)
end

return synth
