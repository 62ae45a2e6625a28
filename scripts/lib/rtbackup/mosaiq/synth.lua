--- rtbackup.mosaiq.synth: a synthetic clinic in a Mosaiq-shaped database (schema.sql),
-- for the demo, the tests and the benchmarks. No real patient data: every value comes
-- from a seeded generator, so a seed always gives the same database.
--
--   synth.generate(db, {seed = 1, patients = 20, start_date = "2025-06-02", days = 30})
--
-- What a clinic holds, so the day's query meets every case it must handle:
--   * external-beam patients on two linacs (Staff.Machine_Type 1 and 2), one fraction
--     per weekday; some treated twice daily (BID: 08:xx and 14:xx); some with two sites
--     treated the same day; 2-beam static plans (2 control points per beam) and
--     VMAT-like plans (2 arcs of 178 control points);
--   * HDR patients (Site.Technique 'HDR', delivered on an afterloader), to be excluded;
--   * follow-up patients: a course that ended before start_date and, in the period,
--     appointments only in non-machine places (a physician, an exam room);
--   * weekly on-treatment visits (a non-machine appointment on a treatment day);
--   * history rows: older TxField, Site and SiteSetup versions (Version > 0);
--   * NULL middle names and suffixes, non-ASCII names ("Müller", "Nguyễn", "Ó Briain").
--
-- opts: seed (1), patients (20), start_date (required, "YYYY-MM-DD"), days (30),
-- vmat_share (0.4), bid_share (0.15), hdr_share (0.1), followup_share (0.1),
-- two_site_share (0.1), history_share (0.3), leaf_encoding ("int16_0.01cm" | "float32_mm").
-- Returns counts per table and the patients by kind ({kinds = {[Pat_ID1] = kind}}).
local odbc = require "rtbackup.odbc"
local errors = require "rtbackup.error"
local clock = require "rtbackup.clock"
local beams = require "rtbackup.mosaiq.beams"

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

local MACHINES = {
    {id = 501, name = "LINAC1", type = 1, model = "Versa HD"},
    {id = 502, name = "TRUEBEAM2", type = 2, model = "TrueBeam"},
    {id = 503, name = "HDR1", type = 1, model = "Flexitron"},
}
-- People and rooms: appointments here are not treatments.
local PLACES = {
    {id = 700, name = "SMITH", type = 0},       -- a physician
    {id = 701, name = "EXAM 3", type = 0},
    {id = 702, name = "CT SIM", type = 3},      -- a machine, but not a treatment machine
}
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

-- Insert order and columns of every table the generator fills.
local COLUMNS = {
    {"Patient", {"Pat_ID1", "Last_Name", "First_Name", "MIddle_Name", "Suffix", "Sex", "Birth_DtTm"}},
    {"Ident", {"Pat_Id1", "IDA"}},
    {"Staff", {"Staff_ID", "Last_Name", "Machine_Type"}},
    {"Machine", {"MAC_ID", "Source_Name", "Source_Model"}},
    {"Config", {"CFG_ID", "Inst_Name"}},
    {"CPT", {"Hsp_Code", "Short_Desc"}},
    {"Site", {"SIT_ID", "SIT_SET_ID", "Pat_ID1", "Version", "Site_Name", "Technique", "Fractions",
              "Dose_Ttl", "Edit_DtTm"}},
    {"SiteSetup", {"Sit_Set_ID", "Version", "Setup_Note"}},
    {"Schedule", {"Sch_Id", "Sch_Set_Id", "Pat_ID1", "App_DtTm", "Edit_DtTm", "Location",
                  "Activity", "Version"}},
    {"DCMStudy", {"DCMStudy_ID", "StudyInstanceUID", "StudyID", "StudyDescription", "Study_DtTm",
                  "Create_DtTm"}},
    {"DCMSeries", {"DCMSeries_ID", "DCMStudy_ID", "SeriesInstanceUID", "SeriesNumber",
                   "SeriesDescription", "Series_DtTm"}},
    {"DCMInstance", {"DCMInstance_ID", "DCMSeries_ID", "SOPInstanceUID"}},
    {"RtPlan", {"DCMInstance_ID", "Pat_ID1", "Label"}},
    {"TxField", {"FLD_ID", "Version", "Pat_ID1", "SIT_Set_ID", "OriginalPlanUID",
                 "OriginalBeamNumber", "OriginalBeamName", "Field_Name", "Field_Label",
                 "Beam_Type_Flag", "Modality_Enum", "Type_Enum", "IndexReference_Enum",
                 "ControlPoints", "Meterset", "Cgray", "Sad", "Mlc", "Wdg_Appl", "Comp_Fda",
                 "Bolus", "Block", "Fractions_Tx", "Start_DtTm", "Last_Tx_DtTm", "MachineCharID",
                 "Machine_ID_Staff_ID", "Inst_ID"}},
    {"TxFieldPoint", {"FLD_ID", "Point", "Energy", "Energy_Unit_Enum", "Gantry_Ang",
                      "Gantry_Dir_Enum", "Coll_Ang", "Coll_Dir_Enum", "Couch_Ang",
                      "Couch_Roll_Dir_Enum", "Couch_Top_Axis_Distance", "Couch_Top",
                      "Couch_Top_Dir_Enum", "Couch_Vrt", "Couch_Lng", "Couch_Lat", "Coll_X1",
                      "Coll_X2", "Coll_Y1", "Coll_Y2", "MLC_Leaves", "A_Leaf_Set", "B_Leaf_Set",
                      "SpecifiedMeterset", "Meterset", "Meterset_Rate", "Create_DtTm"}},
    {"Dose_Hst", {"DHS_ID", "FLD_ID", "Tx_DtTm", "Fractions_Tx", "TerminationCode",
                  "Termination_Status_Enum", "Termination_Verify_Status_Enum",
                  "Dose_Addtl_Projected", "DeliveredTreatmentTimeBeam"}},
}

--- Inserts rows ({table = {row, ...}}) with one prepared INSERT per table; a missing
-- value is NULL. Used by the generator and by tests that build a fixture by hand.
function synth.insert(db, rows)
    for _, t in ipairs(COLUMNS) do
        local name, columns = t[1], t[2]
        local marks = string.rep("?", #columns, ", ")
        local sql = "INSERT INTO " .. name .. " (" .. table.concat(columns, ", ") ..
                    ") VALUES (" .. marks .. ")"
        for _, row in ipairs(rows[name] or {}) do
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

local function add(rows, name, row)
    rows[name] = rows[name] or {}
    rows[name][#rows[name] + 1] = row
end

-- The next weekday on or after day number n.
local function weekday_on_or_after(n)
    while clock.weekday(n) > 5 do n = n + 1 end
    return n
end

-- Sessions of a course: {day, seconds into the day} from `first` until `fractions` are
-- given or the period ends. BID courses treat twice a day, at least 6 hours apart;
-- HDR courses once a week.
local function sessions(first, fractions, last_day, kind, rng)
    local list, day = {}, first
    local morning = rng.int(7 * 60, 10 * 60) * 60
    while #list < fractions and day <= last_day do
        if clock.weekday(day) <= 5 then
            local jitter = rng.int(-10, 10) * 60
            list[#list + 1] = {day = day, at = morning + jitter}
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

-- One course: site (and its history), plan, fields, points, appointments, dose history.
local function course(c, rows, ids, rng, opts)
    local site_name, setup = table.unpack(rng.pick(SITES))
    local technique = c.kind == "hdr" and "HDR" or (c.vmat and "VMAT" or rng.pick{"3D", "IMRT"})
    if c.kind == "hdr" then site_name, setup = "CERVIX", "Lithotomy; tandem and ring" end
    local fractions = c.kind == "hdr" and 5 or rng.pick{5, 15, 20, 25, 28, 30}
    local dpf = c.kind == "hdr" and 600 or (fractions == 5 and 800 or rng.pick{180, 200, 250})
    local site_set = ids.site_set()
    local created = clock.timestamp(c.first - 5, 10 * 3600)
    if rng.chance(opts.history_share) then -- the prescription as first written
        add(rows, "Site", {SIT_ID = ids.site(), SIT_SET_ID = site_set, Pat_ID1 = c.pat, Version = 1,
            Site_Name = site_name, Technique = technique, Fractions = fractions,
            Dose_Ttl = (fractions - 1) * dpf, Edit_DtTm = clock.timestamp(c.first - 7, 9 * 3600)})
        add(rows, "SiteSetup", {Sit_Set_ID = site_set, Version = 1, Setup_Note = "(draft) " .. setup})
    end
    add(rows, "Site", {SIT_ID = ids.site(), SIT_SET_ID = site_set, Pat_ID1 = c.pat, Version = 0,
        Site_Name = site_name, Technique = technique, Fractions = fractions,
        Dose_Ttl = fractions * dpf, Edit_DtTm = created})
    add(rows, "SiteSetup", {Sit_Set_ID = site_set, Version = 0, Setup_Note = setup})

    local study, series, instance, plan_uid = ids.study(), ids.series(), ids.instance(), rng.uid()
    add(rows, "DCMStudy", {DCMStudy_ID = study, StudyInstanceUID = rng.uid(), StudyID = "PLAN" .. c.n,
        StudyDescription = site_name .. " " .. technique, Study_DtTm = created, Create_DtTm = created})
    add(rows, "DCMSeries", {DCMSeries_ID = series, DCMStudy_ID = study, SeriesInstanceUID = rng.uid(),
        SeriesNumber = 1, SeriesDescription = "RT Plan", Series_DtTm = created})
    add(rows, "DCMInstance", {DCMInstance_ID = instance, DCMSeries_ID = series, SOPInstanceUID = plan_uid})
    add(rows, "RtPlan", {DCMInstance_ID = instance, Pat_ID1 = c.pat,
        Label = (site_name:sub(1, 4) .. "_" .. technique):upper()})

    local first_fld = ids.field_block()
    local fields, points = beams.plan_fields({
        kind = c.vmat and "vmat" or "static", imrt = technique == "IMRT", first_fld_id = first_fld,
        pat_id = c.pat, site_set_id = site_set, plan_uid = plan_uid, machine = c.machine,
        created = created, energy = rng.pick{6.0, 6.0, 10.0, 15.0}, leaf_encoding = opts.leaf_encoding,
        dose_per_fraction = dpf,
        couch = {vrt = rng.int(-200, -80) / 10, lng = rng.int(800, 1100) / 10, lat = rng.int(-20, 20) / 10},
    }, rng)
    if c.kind == "hdr" then -- an afterloader: no MLC, no control points
        for _, f in ipairs(fields) do
            f.Mlc, f.ControlPoints, f.Beam_Type_Flag, f.Type_Enum = 0, 0, 1, 1
        end
        points = {}
    end
    for _, p in ipairs(points) do add(rows, "TxFieldPoint", p) end

    local cpt = c.kind == "hdr" and "77770" or (technique == "3D" and "77402" or "77412")
    local given = {} -- per field: fraction count, first and last delivery
    for k, s in ipairs(sessions(c.first, fractions, c.last_day, c.kind, rng)) do
        local at = clock.timestamp(s.day, s.at)
        local sch = ids.schedule()
        add(rows, "Schedule", {Sch_Id = sch, Sch_Set_Id = sch, Pat_ID1 = c.pat, App_DtTm = at,
            Edit_DtTm = clock.timestamp(s.day, s.at + 11 * 60), Location = c.machine.id,
            Activity = cpt, Version = 0})
        if k % 5 == 2 and c.kind ~= "hdr" then -- weekly visit, same day, not a treatment
            local otv = ids.schedule()
            add(rows, "Schedule", {Sch_Id = otv, Sch_Set_Id = otv, Pat_ID1 = c.pat,
                App_DtTm = clock.timestamp(s.day, 12 * 3600 + rng.int(0, 8) * 900),
                Location = 700, Activity = "77427", Version = 0})
        end
        for n, f in ipairs(fields) do
            local tx = clock.timestamp(s.day, s.at + 5 * 60 + (n - 1) * 150)
            local status = rng.chance(0.03) and rng.pick{2, 3} or 1
            add(rows, "Dose_Hst", {DHS_ID = ids.dose(), FLD_ID = f.FLD_ID, Tx_DtTm = tx, Fractions_Tx = k,
                TerminationCode = status == 1 and 0 or rng.int(1, 99), Termination_Status_Enum = status,
                Termination_Verify_Status_Enum = rng.chance(0.05) and 2 or 1, Dose_Addtl_Projected = 0.0,
                DeliveredTreatmentTimeBeam = math.floor(f.Meterset + 0.5) / 10}) -- s at 600 MU/min
            given[n] = {count = k, first = given[n] and given[n].first or tx, last = tx}
        end
    end
    for n, f in ipairs(fields) do
        local g = given[n] or {count = 0}
        if g.count > 2 and rng.chance(opts.history_share) then -- edited mid-course
            local old = {}
            for k, v in pairs(f) do old[k] = v end
            old.Version, old.Meterset = 1, math.floor(f.Meterset * 0.97 * 10) / 10
            old.Fractions_Tx, old.Start_DtTm, old.Last_Tx_DtTm = g.count // 2, g.first, g.first
            add(rows, "TxField", old)
        end
        f.Fractions_Tx, f.Start_DtTm, f.Last_Tx_DtTm = g.count, g.first, g.last
        add(rows, "TxField", f)
    end
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
                      two_site_share = 0.1, history_share = 0.3, leaf_encoding = "int16_0.01cm"}
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

--- Fills db (tables from schema.sql, empty) with a synthetic clinic; see the top.
function synth.generate(db, opts)
    local o = synth.options(opts)
    local rng = new_rng(o.seed)
    local rows = {}
    for _, m in ipairs(MACHINES) do
        add(rows, "Staff", {Staff_ID = m.id, Last_Name = m.name, Machine_Type = m.type})
        add(rows, "Machine", {MAC_ID = m.id, Source_Name = m.name, Source_Model = m.model})
    end
    for _, p in ipairs(PLACES) do add(rows, "Staff", {Staff_ID = p.id, Last_Name = p.name, Machine_Type = p.type}) end
    add(rows, "Config", {CFG_ID = 1, Inst_Name = "Radiation Oncology"})
    for _, c in ipairs(CPT) do add(rows, "CPT", {Hsp_Code = c[1], Short_Desc = c[2]}) end

    local fld = counter(6000)
    local ids = {site_set = counter(70001), site = counter(71001), study = counter(3001),
                 series = counter(4001), instance = counter(5001), schedule = counter(900001),
                 dose = counter(800001), field_block = function() return fld() * 10 end}
    local last_day = o.start + o.days - 1
    local result = {kinds = {}}
    for i, kind in ipairs(kinds(o, rng)) do
        local pat = 10000 + i
        result.kinds[pat] = kind
        add(rows, "Patient", {Pat_ID1 = pat, Last_Name = LAST[(i - 1) % #LAST + 1],
            First_Name = rng.pick(FIRST), MIddle_Name = rng.chance(0.6) and rng.pick(MIDDLE) or nil,
            Suffix = rng.chance(0.15) and rng.pick(SUFFIX) or nil, Sex = rng.pick{"MALE", "FEMALE"},
            Birth_DtTm = clock.timestamp(clock.day("1935-01-01") + rng.int(0, 65 * 365))})
        add(rows, "Ident", {Pat_Id1 = pat, IDA = string.format("MRN%07d", 100000 + i * 37)})
        local c = {pat = pat, n = 1, kind = kind, vmat = rng.chance(o.vmat_share),
                   machine = MACHINES[rng.int(1, 2)], last_day = last_day}
        if kind == "hdr" then c.machine = MACHINES[3] end
        if kind == "followup" then -- treated before the period, seen in a clinic room during it
            c.first = weekday_on_or_after(o.start - rng.int(60, 120))
            c.last_day = o.start - 1
            for _ = 1, rng.int(1, 3) do
                local day, sch = weekday_on_or_after(o.start + rng.int(0, o.days - 1)), ids.schedule()
                add(rows, "Schedule", {Sch_Id = sch, Sch_Set_Id = sch, Pat_ID1 = pat,
                    App_DtTm = clock.timestamp(day, rng.int(8, 16) * 3600), Location = rng.pick{700, 701, 702},
                    Activity = "99213", Version = 0})
            end
        else -- some courses are under way when the period starts, some start during it
            c.first = weekday_on_or_after(o.start + rng.int(-25, math.max(0, o.days - 5)))
        end
        course(c, rows, ids, rng, o)
        if kind == "daily" and rng.chance(o.two_site_share) then -- a second site, same days
            c.n, c.vmat = 2, not c.vmat
            course(c, rows, ids, rng, o)
        end
    end
    db:transaction(synth.insert, db, rows)
    result.counts = {}
    for name, list in pairs(rows) do result.counts[name] = #list end
    return result
end

return synth
