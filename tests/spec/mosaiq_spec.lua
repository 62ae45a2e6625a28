-- rtbackup.mosaiq on SQLite: the day's deliveries (groups per patient, site, plan,
-- fraction and session; every other delivery named as skipped) on a hand-made fixture
-- and on generated clinics, the treatment summary, and the `report` and `mosaiq-db`
-- commands.
local odbc = require "rtbackup.odbc"
local mosaiq = require "rtbackup.mosaiq.query"
local synth = require "rtbackup.mosaiq.synth"
local dates = require "rtbackup.clock"
local pretty = require "rtbackup.pretty"
local h = require "helpers"

local NULL = odbc.NULL

local function new_db(path)
    local db = odbc.connect({odbc_driver = "SQLite3", db_database = path}, nil, {create = true})
    mosaiq.create_schema(db)
    return db
end

local failure = h.failure

local function present(v)
    return v ~= nil and v ~= NULL
end

-- The DHS_IDs of a group's fields, in order.
local function dhs_ids(g)
    local list = {}
    for i, f in ipairs(g.fields) do list[i] = f.dose.DHS_ID end
    return list
end

-- The skipped entries by DHS_ID.
local function skipped_by_id(skipped)
    local by = {}
    for _, s in ipairs(skipped) do
        assert.is_nil(by[s.dhs_id], "skipped twice: " .. tostring(s.dhs_id))
        by[s.dhs_id] = s
    end
    return by
end

-- 60 leaves at one position, as int16 in 0.01 cm (the bytes, not yet odbc.binary).
local function int16_leaves(cm)
    return string.rep(string.pack("<i2", math.floor(cm * 100 + 0.5)), 60)
end

-- The reference fixture, on the real table shapes: one patient with an IMRT site (two
-- versions: the prescription changed on 2025-06-12) and an HDR site; one plan of two
-- beams, beam 1 in three versions (FLD_ID 60010 Version 31999 delivered on 06-11,
-- 60011 Version 32000 on 06-12, 60012 current from 06-13). Days:
--   06-11  fraction 11 (the old field and site versions)
--   06-12  fraction 12, and an HDR session of the other site
--   06-13  fraction 13: beam 1 interrupted, continued minutes later, then beam 2
--   06-16  fraction 14: beam 2 interrupted at the end of the day ...
--   06-17  ... continued first thing (fraction 14), then fraction 15
--   06-18  fraction 16 with beam 1 naming a field version the database lacks; a QA delivery
local UID = "1.2.826.0.1.3680043.8.498."
local LEAVES_A, LEAVES_B = int16_leaves(-2.5), int16_leaves(2.5)

local function fixture()
    local tfp = 90000
    local function points(fld, coll)
        local list = {}
        for n, index in ipairs{0, 100} do
            tfp = tfp + 1
            list[n] = {TFP_ID = tfp, FLD_ID = fld, Point = n - 1, Index = index, Energy = 6,
                Energy_Unit_Enum = 2, Gantry_Ang = 180, Gantry_Dir_Enum = 3, Coll_Ang = coll,
                Coll_Dir_Enum = 3, Couch_Ang = 0, Couch_Ang_Dir_Enum = 3, Couch_Roll_Dir_Enum = 3,
                Couch_Top_Axis_Distance = 0, Couch_Top = 0, Couch_Top_Dir_Enum = 3, Couch_Vrt = -12.4,
                Couch_Lng = 98.1, Couch_Lat = 0.3, Coll_Y1 = -5.0, Coll_Y2 = 5.0, MLC_Leaves = 60,
                A_Leaf_Set = odbc.binary(LEAVES_A), B_Leaf_Set = odbc.binary(LEAVES_B), Meterset_Rate = 600,
                Create_DtTm = "2025-05-21 10:02:00"}
        end
        return list
    end
    local function field(fld, set, version, number, name, mu, fx, last)
        return {FLD_ID = fld, FLD_SET_ID = set, Version = version, Pat_ID1 = 10001, SIT_Set_ID = 70001,
                OriginalPlanUID = UID .. "1003", OriginalBeamName = name, OriginalBeamNumber = number,
                Field_Name = name, Field_Label = tostring(number), Cgray = 125, Meterset = mu,
                IndexReference_Enum = 1, ControlPoints = 2, Sad = 100, Beam_Type_Flag = 1,
                Modality_Enum = 1, Type_Enum = 14, Fractions_Tx = fx, Start_DtTm = "2025-05-28 09:30:00",
                Last_Tx_DtTm = last, Machine_ID_Staff_ID = 501, MachineCharID = 501, BackupTimer = 0.7,
                Mlc = 1, Wdg_Appl = "", Comp_Fda = "", Bolus = "", Block = "", Dyn_Wedge = ""}
    end
    -- A delivery: the IMRT site's current versions unless told otherwise.
    local function dose(id, fld, fx, at, mu, extra)
        local row = {DHS_ID = id, Pat_ID1 = 10001, FLD_ID = fld, SIT_ID = 71001, SIS_ID = 72001, Tx_DtTm = at,
                     Create_DtTm = at, Edit_DtTm = at, Fractions_Tx = fx, Fx_Number_InEffect = fx,
                     Meterset = mu, MetersetPrevDelivered = 0, MetersetUnit_Enum = 1, PartiallyTreated = 0,
                     WasQAMode = 0, Modality_Enum = 1, Type_Enum = 14, Energy = 6, Energy_Unit_Enum = 2,
                     TerminationCode = 0, Termination_Status_Enum = 1, Termination_Verify_Status_Enum = 1,
                     Dose_Addtl_Projected = 0, Machine_ID_Staff_ID = 501, MAC_ID = 11, Inst_ID = 1}
        for k, v in pairs(extra or {}) do row[k] = v end
        return row
    end
    local rows = {
        Patient = {{Pat_ID1 = 10001, Last_Name = "DOE", First_Name = "JANE", MIddle_Name = "Q",
                    Birth_DtTm = "1961-04-12 00:00:00"}},
        Admin = {{Pat_ID1 = 10001, Gender = "Female"}},
        Ident = {{Pat_Id1 = 10001, IDA = "MRN0012345"}},
        Staff = {{Staff_ID = 501, Last_Name = "LINAC1", Machine_Type = 1},
                 {Staff_ID = 502, Last_Name = "TRUEBEAM2", Machine_Type = 2},
                 {Staff_ID = 503, Last_Name = "HDR1", Machine_Type = 1},
                 {Staff_ID = 700, Last_Name = "SMITH", Machine_Type = 0}},
        Machine = {{MAC_ID = 11, MAC_Set_ID = 11, Version = 0, Source_Name = "LINAC1", Source_Model = "Versa HD"},
                   {MAC_ID = 12, MAC_Set_ID = 12, Version = 0, Source_Name = "TRUEBEAM2",
                    Source_Model = "TrueBeam"},
                   {MAC_ID = 13, MAC_Set_ID = 13, Version = 0, Source_Name = "HDR1", Source_Model = "Flexitron"}},
        Config = {{CFG_ID = 1, Inst_ID = 1, Inst_Name = "Radiation Oncology"},
                  {CFG_ID = 2, Inst_ID = 2, Inst_Name = "Satellite Clinic"}},
        CPT = {{Hsp_Code = "77412", Short_Desc = "Tx Delivery IMRT"},
               {Hsp_Code = "99213", Short_Desc = "Follow-up Visit"}},
        Site = {{SIT_ID = 71000, SIT_SET_ID = 70001, Pat_ID1 = 10001, Site_Name = "PROSTATE", Version = 32000,
                 Technique = "IMRT", Edit_DtTm = "2025-05-20 14:00:00", Fractions = 27, Dose_Ttl = 6750},
                {SIT_ID = 71001, SIT_SET_ID = 70001, Pat_ID1 = 10001, Site_Name = "PROSTATE", Version = 0,
                 Technique = "IMRT", Edit_DtTm = "2025-06-12 08:00:00", Fractions = 28, Dose_Ttl = 7000},
                {SIT_ID = 71002, SIT_SET_ID = 70002, Pat_ID1 = 10001, Site_Name = "CERVIX", Version = 0,
                 Technique = "HDR", Fractions = 5, Dose_Ttl = 3000}},
        SiteSetup = {{SIS_ID = 72000, SIS_Set_ID = 70001, SIT_Set_ID = 70001, Version = 32000,
                      Setup_Note = "Knee sponge"},
                     {SIS_ID = 72001, SIS_Set_ID = 70001, SIT_Set_ID = 70001, Version = 0,
                      Setup_Note = "Knee sponge; full bladder"},
                     {SIS_ID = 72002, SIS_Set_ID = 70002, SIT_Set_ID = 70002, Version = 0,
                      Setup_Note = "Lithotomy"}},
        -- On 06-12: the treatment on LINAC1, a late one on LINAC1 too (one activity per
        -- patient all the same), and a follow-up visit with Dr SMITH, which is no treatment
        -- ("Follow-up Visit" sorts before "Tx Delivery IMRT": it would win a MIN()).
        Schedule = {{Sch_Id = 900001, Sch_Set_Id = 900001, Pat_ID1 = 10001, App_DtTm = "2025-06-12 09:30:00",
                     Edit_DtTm = "2025-06-12 09:41:00", Location = 501, Activity = "77412", Version = 0},
                    {Sch_Id = 900002, Sch_Set_Id = 900002, Pat_ID1 = 10001, App_DtTm = "2025-06-12 21:00:00",
                     Location = 501, Activity = "77412", Version = 0},
                    {Sch_Id = 900003, Sch_Set_Id = 900003, Pat_ID1 = 10001, App_DtTm = "2025-06-12 11:00:00",
                     Location = 700, Activity = "99213", Version = 0}},
        DCMStudy = {{DCMStudy_ID = 3001, StudyInstanceUID = UID .. "1001", StudyID = "PLAN1",
                     StudyDescription = "Prostate IMRT", Study_DtTm = "2025-05-21 10:00:00",
                     Create_DtTm = "2025-05-21 10:00:00"}},
        DCMSeries = {{DCMSeries_ID = 4001, DCMStudy_ID = 3001, SeriesInstanceUID = UID .. "1002",
                      SeriesNumber = 1, SeriesDescription = "RT Plan", Series_DtTm = "2025-05-21 10:05:00"}},
        DCMInstance = {{DCMInstance_ID = 5001, DCMSeries_ID = 4001, SOPInstanceUID = UID .. "1003"}},
        RtPlan = {{DCMInstance_ID = 5001, Pat_ID1 = 10001, Label = "PROS_IMRT"}},
        TxField = {field(60010, 60001, 31999, 1, "G180", 140.0, 11, "2025-06-11 09:50:00"),
                   field(60011, 60001, 32000, 1, "G180", 152.3, 12, "2025-06-12 09:52:10"),
                   field(60012, 60001, 0, 1, "G180", 155.0, 16, "2025-06-17 09:43:00"),
                   field(60021, 60002, 0, 2, "G000", 147.9, 16, "2025-06-18 09:42:30"),
                   {FLD_ID = 60091, FLD_SET_ID = 60091, Version = 0, Pat_ID1 = 10001, SIT_Set_ID = 70002,
                    OriginalPlanUID = UID .. "2003", OriginalBeamNumber = 1, Field_Name = "CH1",
                    Modality_Enum = 8, Type_Enum = 21, ControlPoints = 0, Mlc = 0, Fractions_Tx = 2,
                    Last_Tx_DtTm = "2025-06-12 14:00:00"}},
        TxFieldPoint = {},
        Dose_Hst = {
            dose(80011, 60010, 11, "2025-06-11 09:50:00", 140.0, {SIT_ID = 71000, SIS_ID = 72000}),
            dose(80021, 60021, 11, "2025-06-11 09:52:30", 147.9, {SIT_ID = 71000, SIS_ID = 72000}),
            dose(80012, 60011, 12, "2025-06-12 09:52:10", 152.3, {Edit_DtTm = "2025-06-12 10:15:00"}),
            dose(80022, 60021, 12, "2025-06-12 09:54:40", 147.9, {Termination_Verify_Status_Enum = 2}),
            dose(80091, 60091, 2, "2025-06-12 14:00:00", 0, {SIT_ID = 71002, SIS_ID = 72002, Modality_Enum = 8,
                 Type_Enum = 21, Machine_ID_Staff_ID = 503, MAC_ID = 13}),
            dose(80131, 60012, 13, "2025-06-13 09:40:00", 60.0, {PartiallyTreated = 1, Termination_Status_Enum = 3,
                 TerminationCode = 17}),
            dose(80132, 60012, 13, "2025-06-13 09:48:00", 95.0, {MetersetPrevDelivered = 60.0}),
            dose(80133, 60021, 13, "2025-06-13 09:50:30", 147.9),
            dose(80141, 60012, 14, "2025-06-16 09:40:00", 155.0),
            dose(80142, 60021, 14, "2025-06-16 09:42:30", 50.0, {PartiallyTreated = 1, Termination_Status_Enum = 2,
                 TerminationCode = 4}),
            dose(80151, 60021, 14, "2025-06-17 09:40:00", 97.9, {MetersetPrevDelivered = 50.0}),
            dose(80152, 60012, 15, "2025-06-17 09:43:00", 155.0),
            dose(80153, 60021, 15, "2025-06-17 09:45:30", 147.9),
            dose(80181, 69999, 16, "2025-06-18 09:40:00", 155.0),
            dose(80182, 60021, 16, "2025-06-18 09:42:30", 147.9),
            dose(80189, 60012, 0, "2025-06-18 18:00:00", 155.0, {WasQAMode = 1, Fx_Number_InEffect = NULL}),
        },
        FLD_HST = {},
        TxFieldPoint_Hst = {{TPH_ID = 82012, FHS_ID = 81012, Point = 0, Index = 0,
                             Tx_DtTm = "2025-06-12 09:52:10", Meterset_Rate = 598, Gantry_Ang = 180,
                             Coll_Ang = 0, Couch_Ang = 0, Couch_Vrt = -12.1, Couch_Lng = 98.3, Couch_Lat = 0.2}},
        BLDevices_Hst = {{BDH_ID = 83012, FHS_ID = 81012, Device_Enum = 4, Type_Enum = 1, Device_ID = "BOLUS5",
                          Description = "0.5 cm bolus", Barcode_String = "BOL-10001"},
                         {BDH_ID = 83022, FHS_ID = 81022, Device_Enum = 1, Type_Enum = 1, Device_ID = "W30IN",
                          Description = "30 degree wedge", Wedge_Angle = 30, Wedge_Orientation = 90,
                          Barcode_String = "WDG-30"}},
    }
    for _, fld in ipairs{{60010, 5}, {60011, 0}, {60012, 10}, {60021, 0}} do
        for _, p in ipairs(points(fld[1], fld[2])) do table.insert(rows.TxFieldPoint, p) end
    end
    -- One FLD_HST row per delivery (FHS_ID = DHS_ID + 1000); beam 2 carries a wedge,
    -- both carry the bolus from 06-12 on.
    for _, d in ipairs(rows.Dose_Hst) do
        local beam2 = d.FLD_ID == 60021
        table.insert(rows.FLD_HST, {FHS_ID = d.DHS_ID + 1000, DHS_ID = d.DHS_ID, Tx_DtTm = d.Tx_DtTm,
            Wdg_Appl = beam2 and "W30" or "", Dyn_Wedge = "", Block = "", Comp_FDA = "",
            Bolus = d.Tx_DtTm >= "2025-06-12" and "0.5 cm bolus" or "", Beam_Type_Flag = 1,
            Control_Points = 2, Meterset = d.Meterset, BackupTimerDelivered = 0.26, IsFFF = 0})
    end
    return rows
end

describe("mosaiq.deliveries on the reference fixture", function()
    local dir, db
    setup(function()
        dir = h.tmpdir()
        db = new_db(dir .. "/fixture.db")
        db:transaction(synth.insert, db, fixture())
    end)
    teardown(function()
        db:close()
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("gives one group on 2025-06-12: fraction 12, session 1, the versions in force, what was delivered",
       function()
        local groups, skipped = mosaiq.deliveries(db, "2025-06-12")
        assert.are.equal(1, #groups)
        local g = groups[1]
        assert.are.equal(12, g.fraction)
        assert.are.equal(1, g.session)
        assert.are.same({Pat_ID1 = 10001, IDA = "MRN0012345", Last_Name = "DOE", First_Name = "JANE",
                         MIddle_Name = "Q", Suffix = NULL, Gender = "Female",
                         Birth_DtTm = "1961-04-12T00:00:00"}, g.patient)
        -- the site version the delivery names, the setup it names, the activity of the
        -- treatment-machine appointment (not the follow-up visit with Dr SMITH)
        assert.are.same({SIT_ID = 71001, SIT_SET_ID = 70001, Version = 0, Site_Name = "PROSTATE",
                         Technique = "IMRT", Fractions = 28, Dose_Ttl = 7000, Setup_Note = "Knee sponge; full bladder",
                         Activity = "Tx Delivery IMRT"}, g.site)
        assert.are.same({OriginalPlanUID = UID .. "1003", Label = "PROS_IMRT", StudyInstanceUID = UID .. "1001",
                         StudyID = "PLAN1", StudyDescription = "Prostate IMRT", Study_DtTm = "2025-05-21T10:00:00",
                         SeriesInstanceUID = UID .. "1002", SeriesNumber = 1, SeriesDescription = "RT Plan",
                         Series_DtTm = "2025-05-21T10:05:00"}, g.plan)
        assert.are.same({Staff_ID = 501, Last_Name = "LINAC1", Machine_Type = 1, Source_Name = "LINAC1",
                         Source_Model = "Versa HD", Inst_Name = "Radiation Oncology"}, g.machine)

        assert.are.same({80012, 80022}, dhs_ids(g))
        local f1, f2 = g.fields[1], g.fields[2]
        -- beam 1 as the delivery names it (FLD_ID 60011, Version 32000), although a newer
        -- version (60012, 155.0 MU) is current now and an older one (60010) exists
        assert.are.same({60011, 60001, 32000, 1, "G180", 152.3}, {f1.FLD_ID, f1.FLD_SET_ID, f1.Version,
                        f1.OriginalBeamNumber, f1.OriginalBeamName, f1.Meterset})
        assert.are.same({60021, 60002, 0, 2, "G000", 147.9}, {f2.FLD_ID, f2.FLD_SET_ID, f2.Version,
                        f2.OriginalBeamNumber, f2.OriginalBeamName, f2.Meterset})
        assert.are.same({DHS_ID = 80012, FLD_ID = 60011, Tx_DtTm = "2025-06-12T09:52:10",
                         Edit_DtTm = "2025-06-12T10:15:00", Fractions_Tx = 12, Meterset = 152.3,
                         MetersetPrevDelivered = 0, MetersetUnit_Enum = 1, PartiallyTreated = 0, WasQAMode = 0,
                         Modality_Enum = 1, Type_Enum = 14, TerminationCode = 0, Termination_Status_Enum = 1,
                         Termination_Verify_Status_Enum = 1, Dose_Addtl_Projected = 0}, f1.dose)
        assert.are.equal(2, f2.dose.Termination_Verify_Status_Enum)
        assert.are.same({FHS_ID = 81012, Wdg_Appl = "", Dyn_Wedge = "", Block = "", Comp_FDA = "",
                         Bolus = "0.5 cm bolus", Beam_Type_Flag = 1, BackupTimerDelivered = 0.26, IsFFF = 0},
                        f1.delivered)
        assert.are.equal("W30", f2.delivered.Wdg_Appl)
        assert.are.same({{DHS_ID = 80012, BDH_ID = 83012, Device_Enum = 4, Type_Enum = 1, Device_ID = "BOLUS5",
                          Description = "0.5 cm bolus", Wedge_Angle = NULL, Wedge_Orientation = NULL,
                          Barcode_String = "BOL-10001"}}, f1.devices)
        assert.are.same({{DHS_ID = 80022, BDH_ID = 83022, Device_Enum = 1, Type_Enum = 1, Device_ID = "W30IN",
                          Description = "30 degree wedge", Wedge_Angle = 30, Wedge_Orientation = 90,
                          Barcode_String = "WDG-30"}}, f2.devices)
        for _, f in ipairs(g.fields) do
            assert.are.same({0, 1}, {f.points[1].Point, f.points[2].Point})
            assert.are.same({0, 100}, {f.points[1].Index, f.points[2].Index})
            assert.are.equal(0, f.points[1].Coll_Ang) -- 60011's points, not 60010's (5) or 60012's (10)
            assert.are.equal(LEAVES_A, f.points[1].A_Leaf_Set)
            assert.are.equal(LEAVES_B, f.points[2].B_Leaf_Set)
            assert.are.equal(-12.4, f.points[1].Couch_Vrt) -- planned, raw cm
            assert.are.equal(NULL, f.points[1].Coll_X1)
            -- no console record of the second control point
            assert.is_true(f.points[2].actual == nil or f.points[2].actual.Tx_DtTm == NULL)
        end
        -- the console recorded beam 1's first control point, and only that
        assert.are.same({Tx_DtTm = "2025-06-12T09:52:10", Meterset_Rate = 598, Gantry_Ang = 180, Coll_Ang = 0,
                         Couch_Ang = 0, Couch_Vrt = -12.1, Couch_Lng = 98.3, Couch_Lat = 0.2},
                        f1.points[1].actual)
        assert.is_true(f2.points[1].actual == nil or f2.points[1].actual.Tx_DtTm == NULL)

        -- the HDR session of the other site is named, not dropped
        assert.are.equal(1, #skipped)
        local s = skipped[1]
        assert.are.same({"MRN0012345", UID .. "2003", 2, 80091, "2025-06-12", "brachytherapy"},
                        {s.patient, s.plan, s.fraction, s.dhs_id, s.day, s.kind})
        assert.matches("brachytherapy %(HDR%)", s.reason)
    end)

    it("names an imaging field's delivery as skipped and records the fraction's treatment beams", function()
        -- kV setup (Type_Enum 4 of pymedphys' FIELD_TYPES): an image, not a treatment beam.
        db:exec("UPDATE Dose_Hst SET Type_Enum = 4 WHERE DHS_ID = 80022")
        local ok, groups, skipped = pcall(mosaiq.deliveries, db, "2025-06-12")
        db:exec("UPDATE Dose_Hst SET Type_Enum = 14 WHERE DHS_ID = 80022")
        assert.is_true(ok, tostring(groups))
        local by = skipped_by_id(skipped)
        assert.are.same({"imaging", "an imaging field (kV setup), not a treatment beam"},
                        {by[80022].kind, by[80022].reason})
        assert.are.equal(1, #groups)
        assert.are.same({80012}, dhs_ids(groups[1]))
    end)

    it("gives the older versions on 2025-06-11, and nothing on a quiet day", function()
        local groups, skipped = mosaiq.deliveries(db, "2025-06-11")
        assert.are.same({}, skipped)
        assert.are.equal(1, #groups)
        local g = groups[1]
        assert.are.same({11, 1}, {g.fraction, g.session})
        assert.are.same({71000, 32000, 27, 6750, "Knee sponge"},
                        {g.site.SIT_ID, g.site.Version, g.site.Fractions, g.site.Dose_Ttl, g.site.Setup_Note})
        assert.are.equal(NULL, g.site.Activity) -- no appointment that day
        assert.are.same({80011, 80021}, dhs_ids(g))
        local f = g.fields[1]
        assert.are.same({60010, 60001, 31999, 140.0, 140.0}, {f.FLD_ID, f.FLD_SET_ID, f.Version, f.Meterset,
                        f.dose.Meterset})
        assert.are.same({5, 5}, {f.points[1].Coll_Ang, f.points[2].Coll_Ang})
        assert.are.equal("", f.delivered.Bolus)
        assert.are.same({}, f.devices)
        local groups2, skipped2 = mosaiq.deliveries(db, "2025-06-14")
        assert.are.same({}, groups2)
        assert.are.same({}, skipped2)
    end)

    it("makes an interrupted beam continued the same day two sessions of the fraction", function()
        local groups, skipped = mosaiq.deliveries(db, "2025-06-13")
        assert.are.same({}, skipped)
        assert.are.equal(2, #groups)
        local one, two = groups[1], groups[2]
        assert.are.same({13, 1, {80131}}, {one.fraction, one.session, dhs_ids(one)})
        assert.are.same({13, 2, {80132, 80133}}, {two.fraction, two.session, dhs_ids(two)})
        local stopped, rest = one.fields[1], two.fields[1]
        assert.are.same({1, 3, 60.0}, {stopped.dose.PartiallyTreated, stopped.dose.Termination_Status_Enum,
                        stopped.dose.Meterset})
        assert.are.same({60012, 60012}, {stopped.FLD_ID, rest.FLD_ID})
        assert.are.equal(stopped.dose.Meterset, rest.dose.MetersetPrevDelivered)
        assert.are.equal(rest.Meterset, stopped.dose.Meterset + rest.dose.Meterset)
        assert.are.equal(1, two.fields[1].OriginalBeamNumber)
        assert.are.equal(2, two.fields[2].OriginalBeamNumber) -- the fraction's remaining beam
        assert.are.same(one.patient, two.patient)
        assert.are.same(one.plan, two.plan)
    end)

    it("makes a day that starts with a continuation begin with session 2", function()
        local groups, skipped = mosaiq.deliveries(db, "2025-06-16")
        assert.are.same({}, skipped)
        assert.are.equal(1, #groups)
        assert.are.same({14, 1, {80141, 80142}}, {groups[1].fraction, groups[1].session, dhs_ids(groups[1])})
        assert.are.equal(1, groups[1].fields[2].dose.PartiallyTreated)

        groups, skipped = mosaiq.deliveries(db, "2025-06-17")
        assert.are.same({}, skipped)
        assert.are.equal(2, #groups)
        assert.are.same({14, 2, {80151}}, {groups[1].fraction, groups[1].session, dhs_ids(groups[1])})
        assert.are.same({15, 1, {80152, 80153}}, {groups[2].fraction, groups[2].session, dhs_ids(groups[2])})
        assert.are.equal(50.0, groups[1].fields[1].dose.MetersetPrevDelivered)
    end)

    it("skips a QA-mode delivery and one naming a missing field version, each with its reason", function()
        local groups, skipped = mosaiq.deliveries(db, "2025-06-18")
        assert.are.equal(1, #groups)
        assert.are.same({16, 1, {80182}}, {groups[1].fraction, groups[1].session, dhs_ids(groups[1])})
        assert.are.equal(2, #skipped)
        local by = skipped_by_id(skipped)
        assert.are.equal("missing_version", by[80181].kind)
        assert.matches("FLD_ID 69999", by[80181].reason)
        assert.matches("not in the database", by[80181].reason)
        assert.are.same({"MRN0012345", 16, "2025-06-18"}, {by[80181].patient, by[80181].fraction, by[80181].day})
        assert.is_nil(by[80181].plan) -- the plan is named by the field the database lacks
        assert.are.equal("qa_mode", by[80189].kind)
        assert.matches("QA%-mode", by[80189].reason)
        assert.are.same({"MRN0012345", UID .. "1003", 0}, {by[80189].patient, by[80189].plan, by[80189].fraction})
    end)

    it("refuses a date that is not YYYY-MM-DD or not on the calendar", function()
        for _, bad in ipairs{"2025-6-12", "2025-06-31", "12/06/2025", "2025-06-12' OR 1=1 --"} do
            assert.are.equal("invalid", failure(mosaiq.deliveries, db, bad).kind)
        end
    end)

    it("names the columns a site's own query is missing", function()
        local err = failure(mosaiq.deliveries, db, "2025-06-12",
                            {sql = [[SELECT DHS_ID AS "dose__DHS_ID" FROM Dose_Hst WHERE Tx_DtTm > ?]]})
        assert.are.equal("config", err.kind)
        assert.matches("mosaiq_backup_sql_query", err.message)
        assert.matches("fraction, site__SIT_SET_ID, plan__OriginalPlanUID, field__FLD_ID, dose__FLD_ID, " ..
                       "patient__Pat_ID1", err.message, 1, true)
        assert.is_nil(err.message:find("dose__DHS_ID", 1, true))
    end)

    it("skips a delivery whose rows disagree (a join by FLD_SET_ID brings every version)", function()
        local sql, n = mosaiq.day_query("sqlite"):gsub(
            "LEFT JOIN TxField FLD ON FLD%.FLD_ID = DHS%.FLD_ID",
            "LEFT JOIN TxField F0 ON F0.FLD_ID = DHS.FLD_ID LEFT JOIN TxField FLD ON FLD.FLD_SET_ID = F0.FLD_SET_ID")
        assert.are.equal(1, n)
        local groups, skipped = mosaiq.deliveries(db, "2025-06-12", {sql = sql})
        -- beam 2 has one version: still a record; beam 1 has three: named, not guessed
        assert.are.equal(1, #groups)
        assert.are.same({80022}, dhs_ids(groups[1]))
        local by = skipped_by_id(skipped)
        assert.are.equal(2, #skipped)
        assert.are.equal("contradiction", by[80012].kind)
        assert.matches("disagree on field%.", by[80012].reason)
        assert.matches("multiplies rows", by[80012].reason)
        assert.are.equal("brachytherapy", by[80091].kind)
    end)

    -- Fails with query.lua as of 8cda0c1: the rows of one delivery are compared group by
    -- group (patient, site, plan, machine, field, dose, delivered) but not point by
    -- point, so a join that multiplies the control-point rows lets the first one win.
    it("skips a delivery whose control-point rows disagree (TxFieldPoint joined through every version)",
       function()
        local sql, n = mosaiq.points_query("sqlite"):gsub(
            "FROM TxFieldPoint TFP\nWHERE TFP%.FLD_ID = %?",
            "FROM TxField F0 JOIN TxField FV ON FV.FLD_SET_ID = F0.FLD_SET_ID " ..
            "JOIN TxFieldPoint TFP ON TFP.FLD_ID = FV.FLD_ID WHERE F0.FLD_ID = ?")
        assert.are.equal(1, n)
        local groups, skipped = mosaiq.deliveries(db, "2025-06-12", {points_sql = sql})
        -- beam 1 has three versions: each of its control points comes three times, with
        -- collimator angles 5, 0 and 10; beam 2 has one version and stays a record
        assert.are.equal(1, #groups)
        assert.are.same({80022}, dhs_ids(groups[1]))
        local by = skipped_by_id(skipped)
        assert.is_truthy(by[80012], "recorded with one of its disagreeing control points")
        assert.are.equal("contradiction", by[80012].kind)
        assert.matches("disagree on point%.Coll_Ang", by[80012].reason)
    end)

    -- The day query of the earlier shape: the planned control points joined in, as
    -- point__ columns, one row per delivery and control point (a site's own query
    -- written before points.sql).
    local function earlier_shape(extra)
        local columns = {}
        for line in mosaiq.points_query("sqlite"):gmatch("[^\n]+") do
            local expr, name = line:match("^%s+(TFP%.%S+)%s+AS \"([%w_]+)\",?$")
            if expr and name ~= "FLD_ID" then columns[#columns + 1] = "    " .. expr .. ' AS "point__' .. name .. '",' end
        end
        local sql, n = mosaiq.day_query("sqlite"):gsub('    TPH%.Point%s+AS "actual__Point",\n', function()
            return table.concat(columns, "\n") .. "\n" .. (extra or "")
        end)
        assert.are.equal(1, n)
        sql, n = sql:gsub("LEFT JOIN TxFieldPoint_Hst TPH ON TPH%.FHS_ID = FH%.FHS_ID",
            "LEFT JOIN TxFieldPoint TFP ON TFP.FLD_ID = DHS.FLD_ID " ..
            "LEFT JOIN TxFieldPoint_Hst TPH ON TPH.FHS_ID = FH.FHS_ID AND TPH.Point = TFP.Point")
        assert.are.equal(1, n)
        return (sql:gsub("DHS%.DHS_ID, TPH%.Point", "DHS.DHS_ID, TFP.Point"))
    end

    it("reads a site's day query of the earlier shape (control points as point__ columns) as before", function()
        local shipped = mosaiq.deliveries(db, "2025-06-12")
        local groups, skipped = mosaiq.deliveries(db, "2025-06-12", {sql = earlier_shape()})
        assert.are.equal(pretty.format(shipped), pretty.format(groups))
        assert.are.equal(1, #skipped)
        -- the points query is not asked: a points query that cannot run changes nothing
        local again = mosaiq.deliveries(db, "2025-06-12", {sql = earlier_shape(), points_sql = "SELECT nonsense"})
        assert.are.equal(pretty.format(shipped), pretty.format(again))
    end)

    it("asks for a field version's control points once while it is delivered", function()
        local asked = 0
        local counting = setmetatable({rows = function(self, sql, params)
            if sql:find("FROM TxFieldPoint TFP", 1, true) and not sql:find("Dose_Hst", 1, true) then
                asked = asked + 1
            end
            return db:rows(sql, params)
        end}, {__index = function(_, k)
            local v = db[k]
            if type(v) == "function" then return function(_, ...) return v(db, ...) end end
            return v
        end})
        local memory = mosaiq.points_memory(2)
        local first = mosaiq.deliveries(counting, "2025-06-12", {points = memory})
        assert.are.equal(2, asked) -- the two field versions delivered that day
        local second = mosaiq.deliveries(counting, "2025-06-12", {points = memory})
        assert.are.equal(2, asked)
        assert.are.equal(pretty.format(first), pretty.format(second))
        -- two days' queries without a delivery of them: forgotten, asked again
        mosaiq.deliveries(counting, "2025-06-13", {points = memory})
        mosaiq.deliveries(counting, "2025-06-14", {points = memory})
        mosaiq.deliveries(counting, "2025-06-12", {points = memory})
        assert.are.equal(4, asked)
    end)

    it("uses a site's own queries, with extra columns landing in their group", function()
        local sql, n = mosaiq.day_query("sqlite"):gsub('AS "delivered__IsFFF",', [[AS "delivered__IsFFF",
    DHS.Create_DtTm AS "dose__Create_DtTm",
    SIT.Edit_DtTm AS "site__Edit_DtTm", DHS.Pat_ID1 * 0 + 7 AS "nogroup__Seven",]])
        assert.are.equal(1, n)
        local points_sql
        points_sql, n = mosaiq.points_query("sqlite"):gsub('AS "Meterset_Rate"', 'AS "Meterset_Rate", TFP.TFP_ID AS "TFP_ID"')
        assert.are.equal(1, n)
        local groups = mosaiq.deliveries(db, "2025-06-12", {sql = sql, points_sql = points_sql})
        assert.are.equal(1, #groups)
        local g = groups[1]
        assert.are.equal("2025-06-12T08:00:00", g.site.Edit_DtTm)
        -- 60011's points were inserted 3rd and 4th (TFP_ID 90003, 90004), 60021's 7th and 8th
        assert.are.same({90003, 90004}, {g.fields[1].points[1].TFP_ID, g.fields[1].points[2].TFP_ID})
        assert.are.same({90007, 90008}, {g.fields[2].points[1].TFP_ID, g.fields[2].points[2].TFP_ID})
        assert.are.equal("2025-06-12T09:52:10", g.fields[1].dose.Create_DtTm)
        assert.is_nil(g.nogroup)
        assert.is_nil(g.Seven)
        -- the same extra point column from a day query of the earlier shape
        local old = mosaiq.deliveries(db, "2025-06-12", {sql = earlier_shape('    TFP.TFP_ID AS "point__TFP_ID",\n')})
        assert.are.same({90003, 90004}, {old[1].fields[1].points[1].TFP_ID, old[1].fields[1].points[2].TFP_ID})
        -- everything else as the shipped query gives it
        local shipped = mosaiq.deliveries(db, "2025-06-12")
        assert.are.equal(shipped[1].fields[1].Meterset, g.fields[1].Meterset)
        assert.are.same(shipped[1].patient, g.patient)
        -- a placeholder made of comments only means "use the shipped query"
        local again, skipped = mosaiq.deliveries(db, "2025-06-12", {sql = "-- defined later\n  -- by the site\n"})
        assert.are.equal(pretty.format(shipped), pretty.format(again))
        assert.are.equal(1, #skipped)
    end)

    it("summarises the course for an MRN and nothing for an injection attempt", function()
        local courses = mosaiq.treatment_summary(db, "MRN0012345")
        assert.are.equal(2, #courses) -- the IMRT course and the HDR course, newest first
        assert.are.same({"CERVIX", "PROSTATE"}, {courses[1].Site, courses[2].Site})
        -- dates from the delivery history of every version of the site (not TxField's
        -- Start_DtTm of the current version, which an edit moves), QA mode left out
        assert.are.same({PatientName = "DOE, JANE Q", MRN = "MRN0012345", Site = "PROSTATE",
                         SIT_SET_ID = 70001, Start = "2025-06-11", End = "2025-06-18",
                         TotalDose = 7000.0, Fractions = 28, Delivered = 16}, courses[2])
        assert.are.same({}, mosaiq.treatment_summary(db, "x' OR '1'='1"))
        assert.are.equal(2, #mosaiq.treatment_summary(db, "MRN0012345", "2025-06-12", "2025-06-30"))
        assert.are.equal(1, #mosaiq.treatment_summary(db, "MRN0012345", "2025-06-13", "2025-06-30"))
        assert.are.same({}, mosaiq.treatment_summary(db, "MRN0012345", "2025-06-19"))
        assert.are.same({}, mosaiq.treatment_summary(db, "MRN0012345", nil, "2025-05-27"))
        assert.are.equal("invalid", failure(mosaiq.treatment_summary, db, "MRN0012345", "2025-02-30").kind)
        assert.are.equal("invalid", failure(mosaiq.treatment_summary, db, "MRN0012345",
                                            "2025-06-02", "2025-06-01").kind)
    end)
end)

-- Generated clinics of two shapes, so that what is tested is the mechanism, not one
-- database: the shape the demo uses, and a small one with the other leaf encoding;
-- both with faults (deliveries naming a field version the database lacks). `every`
-- lists the situations the shape must hold (synth places each at least once when a
-- course can hold it; the small clinic has no VMAT course starting in its 10 days, so
-- no QA-mode delivery).
local SHAPES = {
    {seed = 7, patients = 40, days = 28, leaf_encoding = "int16_0.01cm", leaf_bytes = 120, min_groups = 300,
     every = {"interrupted_same_day", "interrupted_next_day", "field_edit", "site_edit", "hdr", "qa_mode",
              "wedge", "bolus", "missing_field", "corrected", "late_row"}, names = true},
    {seed = 3, patients = 12, days = 10, leaf_encoding = "float32_mm", leaf_bytes = 240, min_groups = 40,
     every = {"interrupted_same_day", "interrupted_next_day", "field_edit", "site_edit", "hdr", "wedge",
              "bolus", "missing_field", "corrected", "late_row"}},
}
local START = "2025-06-02"

local function near(a, b)
    return math.abs(a - b) < 1e-6
end

for _, shape in ipairs(SHAPES) do
describe(string.format("mosaiq.deliveries on a generated clinic (seed %d, %d patients, %d days, %s)",
                       shape.seed, shape.patients, shape.days, shape.leaf_encoding), function()
    local dir, db, clinic
    local first = dates.day(START)
    local last = first + shape.days - 1
    local function options(seed)
        return {seed = seed, patients = shape.patients, start_date = START, days = shape.days,
                leaf_encoding = shape.leaf_encoding, faults = true}
    end

    local cache = {}
    -- {groups, skipped} of a day number (the database does not change until the last test).
    local function day_of(n)
        if not cache[n] then
            local groups, skipped = mosaiq.deliveries(db, dates.format_day(n))
            cache[n] = {groups = groups, skipped = skipped}
        end
        return cache[n].groups, cache[n].skipped
    end
    local function on(text) return day_of(dates.day(text)) end

    -- The group and field of a delivery on a day, or nil.
    local function find(text, dhs_id)
        for _, g in ipairs((on(text))) do
            for i, f in ipairs(g.fields) do
                if f.dose.DHS_ID == dhs_id then return g, f, i end
            end
        end
    end

    -- Pat_ID1 of each MRN (skipped entries name the patient by MRN).
    local pat_of_mrn = {}

    setup(function()
        dir = h.tmpdir()
        db = new_db(dir .. "/clinic.db")
        clinic = synth.generate(db, options(shape.seed))
        for _, r in ipairs(db:query("SELECT Pat_Id1 AS pat, IDA AS mrn FROM Ident")) do pat_of_mrn[r.mrn] = r.pat end
    end)
    teardown(function()
        db:close()
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("holds every situation the shape must have", function()
        for _, name in ipairs(shape.every) do
            assert.is_true(#clinic.situations[name] > 0, "no " .. name)
        end
    end)

    it("puts every Dose_Hst row of each day in exactly one group or in skipped", function()
        local total = 0
        for n = first, last do
            local day = dates.format_day(n)
            local groups, skipped = day_of(n)
            local where = {}
            local identities = {}
            for _, g in ipairs(groups) do
                local identity = table.concat({g.patient.Pat_ID1, g.site.SIT_SET_ID, g.plan.OriginalPlanUID,
                                               g.fraction, g.session}, "/")
                assert.is_nil(identities[identity], day .. ": two groups " .. identity)
                identities[identity] = true
                assert.is_true(#g.fields > 0)
                for _, f in ipairs(g.fields) do
                    local id = f.dose.DHS_ID
                    assert.is_nil(where[id], day .. ": twice " .. tostring(id))
                    where[id] = "group"
                    assert.are.equal(day, f.dose.Tx_DtTm:sub(1, 10))
                    assert.are.equal(f.dose.FLD_ID, f.FLD_ID) -- the version the delivery names
                    assert.are.equal(g.fraction, f.dose.Fractions_Tx)
                    assert.is_true(present(f.FLD_SET_ID))
                end
            end
            for _, s in ipairs(skipped) do
                assert.is_nil(where[s.dhs_id], day .. ": twice " .. tostring(s.dhs_id))
                where[s.dhs_id] = "skipped"
                assert.are.equal(day, s.day)
                assert.is_true(type(s.reason) == "string" and #s.reason > 10)
            end
            -- independently: the day's rows as the table has them
            local rows = db:query("SELECT DHS_ID AS id FROM Dose_Hst WHERE Tx_DtTm >= ? AND Tx_DtTm < ?",
                                  {dates.timestamp(n), dates.timestamp(n + 1)})
            local listed = 0
            for _ in pairs(where) do listed = listed + 1 end
            assert.are.equal(#rows, listed, day)
            for _, r in ipairs(rows) do assert.is_truthy(where[r.id], day .. ": left out " .. r.id) end
            total = total + #groups
        end
        assert.is_true(total >= shape.min_groups, "a clinic this size treats more than " .. total)
    end)

    it("skips the HDR, QA-mode and missing-field deliveries with their reasons, and nothing else", function()
        local hdr_rows = {}
        for _, r in ipairs(db:query([[SELECT DHS_ID AS id, Pat_ID1 AS pat FROM Dose_Hst
                                      WHERE Tx_DtTm >= ? AND Tx_DtTm < ?]],
                                    {dates.timestamp(first), dates.timestamp(last + 1)})) do
            if clinic.kinds[r.pat] == "hdr" then hdr_rows[r.id] = true end
        end
        local expected = {} -- dhs_id -> {kind, pattern of the reason}
        for id in pairs(hdr_rows) do expected[id] = {"brachytherapy", "brachytherapy %(HDR%)"} end
        local in_period = function(e) local d = dates.day(e.day); return d >= first and d <= last end
        local counts = {hdr = 0, qa_mode = 0, missing_field = 0}
        for _, e in ipairs(clinic.situations.hdr) do
            if in_period(e) then
                assert.is_truthy(hdr_rows[e.dhs_id])
                counts.hdr = counts.hdr + 1
            end
        end
        for _, e in ipairs(clinic.situations.qa_mode) do
            if in_period(e) then
                for _, id in ipairs(e.dhs_ids) do expected[id] = {"qa_mode", "QA%-mode"} end
                counts.qa_mode = counts.qa_mode + 1
            end
        end
        for _, e in ipairs(clinic.situations.missing_field) do
            if in_period(e) then
                expected[e.dhs_id] = {"missing_version", "FLD_ID " .. e.fld_id .. "%) is not in the database"}
                counts.missing_field = counts.missing_field + 1
            end
        end
        for name, count in pairs(counts) do
            for _, must in ipairs(shape.every) do
                if must == name then assert.is_true(count > 0, "no " .. name .. " in the period") end
            end
        end
        -- the QA-mode rows the table has are the ones the generator placed
        for _, r in ipairs(db:query("SELECT DHS_ID AS id FROM Dose_Hst WHERE WasQAMode = 1")) do
            assert.are.equal("qa_mode", expected[r.id][1])
        end
        local seen = 0
        for n = first, last do
            local _, skipped = day_of(n)
            for _, s in ipairs(skipped) do
                local want = expected[s.dhs_id]
                assert.is_truthy(want, "skipped, not expected: " .. pretty.format(s))
                assert.are.equal(want[1], s.kind)
                assert.matches(want[2], s.reason)
                assert.is_truthy(pat_of_mrn[s.patient], "skipped names the patient by MRN: " .. tostring(s.patient))
                seen = seen + 1
            end
        end
        local want = 0
        for _ in pairs(expected) do want = want + 1 end
        assert.are.equal(want, seen)
    end)

    it("gives a twice-daily patient two consecutive fractions a day, others one", function()
        local checked = 0
        for n = first, last do
            local fractions = {} -- plan -> {fraction = true}: of the sessions that start a fraction
            local kind_of = {}
            for _, g in ipairs((day_of(n))) do
                local uid = g.plan.OriginalPlanUID
                kind_of[uid] = clinic.kinds[g.patient.Pat_ID1]
                assert.is_truthy(kind_of[uid] == "bid" or kind_of[uid] == "daily", tostring(kind_of[uid]))
                if g.session == 1 then
                    fractions[uid] = fractions[uid] or {}
                    fractions[uid][g.fraction] = true
                end
            end
            for uid, set in pairs(fractions) do
                local list = {}
                for fx in pairs(set) do list[#list + 1] = fx end
                table.sort(list)
                if kind_of[uid] == "bid" and #list == 2 then
                    assert.are.equal(list[1] + 1, list[2])
                    checked = checked + 1
                else
                    assert.are.equal(1, #list, dates.format_day(n) .. " " .. kind_of[uid])
                end
            end
        end
        assert.is_true(checked > 0, "no twice-daily day in the clinic")
    end)

    it("takes the activity from treatment-machine appointments only", function()
        local visits = db:query([[SELECT COUNT(*) AS n FROM Schedule SC JOIN Staff ST ON ST.Staff_ID = SC.Location
                                  WHERE ST.Machine_Type NOT IN (1, 2) AND SC.App_DtTm >= ?]], {START})[1].n
        assert.is_true(visits > 0)
        for n = first, last do
            for _, g in ipairs((day_of(n))) do
                assert.is_truthy(g.site.Activity == "Tx Delivery Complex" or g.site.Activity == "Tx Delivery Simple",
                                 tostring(g.site.Activity))
            end
        end
    end)

    it("gives the field and site versions in force: old before the edit day, new from it", function()
        local function planned(fld_id)
            return db:query("SELECT Version AS v, Meterset AS mu FROM TxField WHERE FLD_ID = ?", {fld_id})[1]
        end
        local total_before, total_after = 0, 0
        for _, e in ipairs(clinic.situations.field_edit) do
            local edit = dates.day(e.edit_day)
            local versions = {}
            for _, fe in ipairs(e.fields) do
                local old, new = planned(fe.old), planned(fe.new)
                assert.are.same({32000, 0}, {old.v, new.v})
                assert.are_not.equal(old.mu, new.mu)
                versions[fe.fld_set_id] = {old = {id = fe.old, v = 32000, mu = old.mu},
                                           new = {id = fe.new, v = 0, mu = new.mu}}
            end
            local before, after = 0, 0
            for n = math.max(edit - 10, first - 30), math.min(edit + 10, last) do
                local groups = day_of(n)
                local starts = {} -- fractions of the plan with a first session this day
                for _, g in ipairs(groups) do
                    if g.plan.OriginalPlanUID == e.plan_uid and g.session == 1 then starts[g.fraction] = true end
                end
                for _, g in ipairs(groups) do
                    -- (a continuation of an earlier day's fraction keeps that day's versions)
                    if g.plan.OriginalPlanUID == e.plan_uid and starts[g.fraction] then
                        local which = n < edit and "old" or "new"
                        assert.are.equal(which == "old" and e.old_sit_id or e.new_sit_id, g.site.SIT_ID)
                        assert.are.equal(which == "old" and 32000 or 0, g.site.Version)
                        -- the setup version the delivery names (the edit adds a shift)
                        assert.are.equal(which == "new", g.site.Setup_Note:find("; shift 3 mm sup", 1, true) ~= nil)
                        for _, f in ipairs(g.fields) do
                            local want = versions[f.FLD_SET_ID][which]
                            assert.are.same({want.id, want.v, want.mu}, {f.FLD_ID, f.Version, f.Meterset})
                            if f.dose.PartiallyTreated == 0 and f.dose.MetersetPrevDelivered == 0 then
                                assert.are.equal(want.mu, f.dose.Meterset)
                            end
                        end
                        if which == "old" then before = before + 1 else after = after + 1 end
                    end
                end
            end
            assert.is_true(after > 0, "no delivery from the edit day on: " .. pretty.format(e))
            total_before, total_after = total_before + before, total_after + after
        end
        assert.is_true(total_before > 0 and total_after > 0)
        -- the site edits are the same courses' (synth edits both at once)
        assert.are.equal(#clinic.situations.field_edit, #clinic.situations.site_edit)
        for i, e in ipairs(clinic.situations.site_edit) do
            assert.are.equal(clinic.situations.field_edit[i].plan_uid, e.plan_uid)
            assert.are_not.equal(e.old_sit_id, e.new_sit_id)
        end
    end)

    -- The group and field of the interrupted delivery of entry e, checked.
    local function interrupted_part(e)
        local g, f, i = find(e.day, e.interrupted)
        assert.is_truthy(g, "interrupted delivery not in a group: " .. pretty.format(e))
        assert.are.equal(#g.fields, i) -- the session ends with it
        assert.are.same({1, e.given, e.status, e.fraction},
                        {f.dose.PartiallyTreated, f.dose.Meterset, f.dose.Termination_Status_Enum, g.fraction})
        assert.are.equal(e.fld_set_id, f.FLD_SET_ID)
        for k, other in ipairs(g.fields) do -- the beams before it, in order
            assert.are.equal(k + f.OriginalBeamNumber - i, other.OriginalBeamNumber)
        end
        return g, f
    end

    -- The continuation group of entry e, checked against the interrupted delivery f.
    local function continuation(e, f, session)
        local c, cf, i = find(e.continued_day, e.continued[1])
        assert.is_truthy(c, "continuation not in a group: " .. pretty.format(e))
        assert.are.equal(1, i) -- the continuation starts its session
        assert.are.same({e.fraction, session}, {c.fraction, c.session})
        assert.are.equal(f.FLD_SET_ID, cf.FLD_SET_ID)
        assert.are.equal(f.dose.Meterset, cf.dose.MetersetPrevDelivered)
        assert.are.equal(0, cf.dose.PartiallyTreated)
        assert.is_true(near(f.Meterset, f.dose.Meterset + cf.dose.Meterset), pretty.format(e))
        assert.is_true(near(e.planned, cf.Meterset))
        local beams = db:query("SELECT COUNT(*) AS n FROM TxField WHERE OriginalPlanUID = ? AND Version = 0",
                               {e.plan_uid})[1].n
        for k, other in ipairs(c.fields) do -- then the fraction's remaining beams, in order
            assert.are.equal(f.OriginalBeamNumber + k - 1, other.OriginalBeamNumber)
            assert.are.equal(e.fraction, other.dose.Fractions_Tx)
        end
        assert.are.equal(beams, c.fields[#c.fields].OriginalBeamNumber)
        return c
    end

    it("makes a beam interrupted and continued the same day two sessions of its fraction", function()
        for _, e in ipairs(clinic.situations.interrupted_same_day) do
            local g, f = interrupted_part(e)
            assert.are.equal(e.day, e.continued_day)
            local c = continuation(e, f, g.session + 1)
            assert.are.same(g.patient, c.patient)
            assert.are.same(g.site, c.site)
        end
    end)

    it("makes a beam continued at the next session start that day with session 2", function()
        local continued = 0
        for _, e in ipairs(clinic.situations.interrupted_next_day) do
            local _, f = interrupted_part(e)
            if e.continued then -- (not when the course or the database ends first)
                assert.is_true(dates.day(e.continued_day) > dates.day(e.day))
                local c = continuation(e, f, 2)
                assert.are.same(e.continued, dhs_ids(c))
                -- the next fraction that day is a session 1 of its own, after the continuation
                for _, g in ipairs((on(e.continued_day))) do
                    if g.plan.OriginalPlanUID == e.plan_uid and g ~= c then
                        assert.are.same({e.fraction + 1, 1}, {g.fraction, g.session})
                        assert.is_true(g.fields[1].dose.Tx_DtTm > c.fields[#c.fields].dose.Tx_DtTm)
                    end
                end
                continued = continued + 1
            end
        end
        assert.is_true(continued > 0)
    end)

    it("carries the accessories: wedges as device rows with their details, boli as text and device", function()
        for _, e in ipairs(clinic.situations.wedge) do
            local _, f = find(e.day, e.dhs_id)
            assert.is_truthy(f, pretty.format(e))
            assert.are.equal(e.fld_set_id, f.FLD_SET_ID)
            assert.are.equal("W" .. e.angle, f.delivered.Wdg_Appl)
            local wedges = 0
            for _, d in ipairs(f.devices) do
                if d.Device_Enum == 1 then
                    assert.are.same({e.dhs_id, e.angle, e.orientation}, {d.DHS_ID, d.Wedge_Angle, d.Wedge_Orientation})
                    wedges = wedges + 1
                end
            end
            assert.are.equal(1, wedges)
        end
        local forced = 0
        for _, e in ipairs(clinic.situations.bolus) do
            local _, f = find(e.day, e.dhs_id)
            assert.is_truthy(f, pretty.format(e))
            assert.are.equal(e.text, f.delivered.Bolus)
            for _, d in ipairs(f.devices) do
                if d.Device_Enum == 4 then
                    assert.are.equal(e.text, d.Description)
                    forced = forced + 1
                end
            end
        end
        assert.is_true(forced > 0, "no bolus device row")
    end)

    it("carries static beams with 2 control points and VMAT arcs with 178, in order, leaf sets whole", function()
        local static, vmat = 0, 0
        for n = first, last do
            for _, g in ipairs((day_of(n))) do
                for _, f in ipairs(g.fields) do
                    assert.are.equal(f.ControlPoints, #f.points)
                    if f.ControlPoints == 178 then vmat = vmat + 1 else static = static + 1 end
                    assert.are.equal(f.ControlPoints == 178 and 2 or 1, f.Beam_Type_Flag)
                    for i, p in ipairs(f.points) do
                        assert.are.equal(i - 1, p.Point)
                        assert.are.equal(shape.leaf_bytes, #p.A_Leaf_Set)
                        assert.are.equal(shape.leaf_bytes, #p.B_Leaf_Set)
                        if i > 1 then assert.is_true(p.Index >= f.points[i - 1].Index) end
                        -- the console recorded the first control point of each delivery
                        local recorded = type(p.actual) == "table" and present(p.actual.Tx_DtTm)
                        assert.are.equal(i == 1, recorded)
                    end
                    assert.are.same({0, 100}, {f.points[1].Index, f.points[#f.points].Index})
                    assert.are.equal(f.dose.Tx_DtTm, f.points[1].actual.Tx_DtTm)
                end
            end
        end
        assert.is_true(static > 0 and vmat > 0, static .. " static, " .. vmat .. " VMAT")
    end)

    if shape.names then
        it("keeps NULL names as odbc.NULL and non-ASCII names intact", function()
            local names, null_middle, null_suffix = {}, 0, 0
            for n = first, last do
                for _, g in ipairs((day_of(n))) do
                    names[g.patient.Last_Name] = true
                    if g.patient.MIddle_Name == NULL then null_middle = null_middle + 1 end
                    if g.patient.Suffix == NULL then null_suffix = null_suffix + 1 end
                end
            end
            assert.is_true(null_middle > 0 and null_suffix > 0)
            local unicode = 0
            for _, name in ipairs{"Müller", "Nguyễn", "Ó Briain", "Øvergård", "O'Brien"} do
                if names[name] then unicode = unicode + 1 end
            end
            assert.is_true(unicode >= 2, pretty.format(names))
        end)
    end

    it("generates the same clinic from the same seed, another from another seed", function()
        local again = new_db(dir .. "/again.db")
        synth.generate(again, options(shape.seed))
        -- another seed, and without faults: no delivery names a field version the
        -- database lacks
        local other = new_db(dir .. "/other.db")
        local opts = options(shape.seed + 1)
        opts.faults = nil
        local other_clinic = synth.generate(other, opts)
        assert.are.same({}, other_clinic.situations.missing_field)
        assert.are.equal(0, other:query([[SELECT COUNT(*) AS n FROM Dose_Hst D LEFT JOIN TxField F
                                          ON F.FLD_ID = D.FLD_ID WHERE F.FLD_ID IS NULL]])[1].n)
        assert.are.equal(1, db:query([[SELECT COUNT(*) AS n FROM Dose_Hst D LEFT JOIN TxField F
                                       ON F.FLD_ID = D.FLD_ID WHERE F.FLD_ID IS NULL]])[1].n)
        local weekday = last
        while dates.weekday(weekday) > 5 do weekday = weekday - 1 end
        for _, n in ipairs{first + 3, weekday} do
            local day = dates.format_day(n)
            local groups, skipped = day_of(n)
            assert.is_true(#groups > 0, day)
            local text = pretty.format({groups, skipped})
            assert.are.equal(text, pretty.format({mosaiq.deliveries(again, day)}))
            assert.are_not.equal(text, pretty.format({mosaiq.deliveries(other, day)}))
        end
        again:close()
        other:close()
    end)

    -- Fails with query.lua/synth.lua as of 8cda0c1: treatment_summary takes Start as
    -- MIN(TxField.Start_DtTm) of the Version 0 rows only, and the generator gives each
    -- version the Start_DtTm of its own first delivery, so an edited course "starts" on
    -- its edit day.
    it("summarises an edited course from its first treatment day to its last", function()
        assert.is_true(#clinic.situations.field_edit > 0)
        for _, e in ipairs(clinic.situations.field_edit) do
            local span = db:query([[SELECT MIN(D.Tx_DtTm) AS first, MAX(D.Tx_DtTm) AS last,
                                           MAX(D.Fractions_Tx) AS fx
                                    FROM Dose_Hst D JOIN Site S ON S.SIT_ID = D.SIT_ID
                                    WHERE S.SIT_SET_ID = ? AND D.WasQAMode = 0]], {e.site_set})[1]
            local course
            for _, c in ipairs(mosaiq.treatment_summary(db, e.mrn)) do
                if c.SIT_SET_ID == e.site_set then course = c end
            end
            assert.is_truthy(course, e.mrn)
            assert.are.same({Start = span.first:sub(1, 10), End = span.last:sub(1, 10), Delivered = span.fx},
                            {Start = course.Start, End = course.End, Delivered = course.Delivered})
        end
    end)

    -- Last: it changes the database.
    it("shows what is charted after the day: the late delivery in its fraction, the corrected row", function()
        local late, fix = clinic.situations.late_row[1], clinic.situations.corrected[1]
        assert.are.equal(late.day, fix.day)
        assert.are.equal(late.plan_uid, fix.plan_uid)
        local function fraction_group(groups)
            local found
            for _, g in ipairs(groups) do
                if g.plan.OriginalPlanUID == late.plan_uid and g.fraction == late.fraction then
                    assert.is_nil(found, "two sessions")
                    found = g
                end
            end
            return found
        end
        local function field_of(g, id)
            for _, f in ipairs(g.fields) do if f.dose.DHS_ID == id then return f end end
        end
        local groups, skipped = mosaiq.deliveries(db, late.day)
        local before = fraction_group(groups)
        assert.is_truthy(before)
        assert.is_nil(field_of(before, late.dhs_id))
        assert.is_nil(skipped_by_id(skipped)[late.dhs_id])
        local corrected_before = field_of(before, fix.dhs_id).dose

        synth.apply_corrections(db, clinic)

        groups = mosaiq.deliveries(db, late.day)
        local after = fraction_group(groups)
        assert.are.same({late.fraction, 1}, {after.fraction, after.session})
        assert.are.equal(#before.fields + 1, #after.fields)
        local added = field_of(after, late.dhs_id)
        assert.is_truthy(added)
        -- with its history rows: the field as delivered and the recorded control point
        assert.is_true(present(added.delivered.FHS_ID))
        assert.are.equal(added.dose.Tx_DtTm, added.points[1].actual.Tx_DtTm)
        local corrected = field_of(after, fix.dhs_id).dose
        assert.are.equal(fix.set.Termination_Verify_Status_Enum, corrected.Termination_Verify_Status_Enum)
        assert.are.equal((fix.set.Edit_DtTm:gsub(" ", "T")), corrected.Edit_DtTm)
        assert.are_not.equal(corrected_before.Edit_DtTm, corrected.Edit_DtTm)
        assert.are_not.equal(corrected_before.Termination_Verify_Status_Enum,
                             corrected.Termination_Verify_Status_Enum)
    end)
end)
end

describe("the generator's leaf sets", function()
    local beams = require "rtbackup.mosaiq.beams"
    it("stores positions in either Mosaiq encoding", function()
        assert.are.equal(string.pack("<i2i2", -250, 125), beams.encode_leaves({-2.5, 1.25}, "int16_0.01cm"))
        assert.are.equal(string.pack("<ff", -25.0, 12.5), beams.encode_leaves({-2.5, 1.25}, "float32_mm"))
        assert.has_error(function() beams.encode_leaves({1}, "int16") end)
    end)
end)

describe("the shipped day queries", function()
    it("have exactly one parameter in every dialect", function()
        for _, dialect in ipairs{"sqlite", "postgres", "sqlserver"} do
            local sql = mosaiq.strip_comments(mosaiq.day_query(dialect))
            local _, markers = sql:gsub("%?", "")
            assert.are.equal(1, markers, dialect)
            assert.is_nil(sql:find("@DAY_WINDOW@", 1, true))
        end
    end)

    it("are what the UCLA and TJU environments carry (SQL Server dialect)", function()
        local shipped = mosaiq.strip_comments(mosaiq.day_query("sqlserver"))
        for _, site in ipairs{"ucla", "tju"} do
            local f = assert(io.open(h.source .. "/environments/" .. site .. ".toml"))
            local sql = f:read("a"):match("mosaiq_backup_sql_query = '''\n(.-)'''")
            f:close()
            assert.is_truthy(sql, site)
            assert.are.equal(shipped, mosaiq.strip_comments(sql), site)
        end
    end)
end)

describe("rtbackup report and mosaiq-db", function()
    local dir, config
    setup(function()
        dir = h.tmpdir()
        config = h.write_file(dir .. "/site.toml", string.format([[
[SITE]
description = "report tests"
default_source = "ARIA"
default_backup = "MAIN"
[SITE.script_ae]
aet = "SITE_BACKUP"
[SITE.sources.ARIA]
type = "aria"
aet = "ARIA"
ip = "127.0.0.1"
port = 11112
[SITE.sources.MQ]
type = "mosaiq"
odbc_driver = "SQLite3"
db_server = "ignored"
db_database = "%s/db/mosaiq.db"
db_username = "report"
db_password = "__SITE_MQ_PASSWORD__"
[SITE.backup_targets.MAIN]
type = "orthanc"
aet = "MAIN"
ip = "127.0.0.1"
port = 14242
]], dir))
    end)
    teardown(function() os.execute("rm -rf " .. h.quote(dir)) end)

    local function run(args)
        local full = {"--config", config}
        for _, a in ipairs(args) do full[#full + 1] = a end
        return h.run(full, {env = {SITE_MQ_PASSWORD = "Sw0rd;fish}"}})
    end

    it("creates the synthetic database once, and again only with --force", function()
        local r = run{"mosaiq-db", "create", "SITE", "--patients", "0", "--from", "2025-06-02"}
        assert.are.equal(2, r.code, r.output)
        assert.is_nil(io.open(dir .. "/db/mosaiq.db", "rb")) -- a bad option creates nothing
        r = run{"mosaiq-db", "create", "SITE", "--patients", "12", "--from", "2025-06-02", "--days", "20"}
        assert.are.equal(0, r.code, r.output)
        assert.matches("SITE MQ: 12 patients", r.stdout)
        r = run{"mosaiq-db", "create", "SITE", "--patients", "12", "--from", "2025-06-02", "--days", "20"}
        assert.are.equal(1, r.code, r.output)
        assert.matches("exists; use %-%-force", r.stderr)
        r = run{"mosaiq-db", "create", "SITE", "MQ", "--patients", "12", "--from", "2025-06-02",
                "--days", "20", "--force"}
        assert.are.equal(0, r.code, r.output)
    end)

    it("prints one row per course, in each format", function()
        local r = run{"report", "SITE", "--mrn", "MRN0100037", "--format", "csv"}
        assert.are.equal(0, r.code, r.output)
        local lines = {}
        for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
        assert.are.equal("PatientName,MRN,Site,Start,End,TotalDose,Fractions,Delivered", lines[1])
        assert.is_true(#lines >= 2)
        assert.matches(",MRN0100037,", lines[2])
        r = run{"report", "SITE", "MQ", "--mrn", "MRN0100037", "--format", "json"}
        assert.are.equal(0, r.code, r.output)
        local rows = require("cjson").decode(r.stdout)
        assert.are.equal("MRN0100037", rows[1].MRN)
        assert.matches("^%d%d%d%d%-%d%d%-%d%d$", rows[1].Start)
        r = run{"report", "SITE", "--mrn", "MRN0100037", "--format", "table"}
        assert.matches("PatientName%s+MRN", r.stdout)
        assert.is_nil(r.output:find("Sw0rd", 1, true))
    end)

    it("says clearly when nothing matches, an injection attempt included", function()
        local r = run{"report", "SITE", "--mrn", "x' OR '1'='1"}
        assert.are.equal(3, r.code, r.output)
        assert.matches("no treatment course found for MRN x' OR '1'='1", r.stderr)
        r = run{"report", "SITE", "--mrn", "MRN0100037", "--from", "2030-01-01", "--format", "json"}
        assert.are.equal(3, r.code)
        assert.are.equal("[]\n", r.stdout)
    end)

    it("rejects bad dates, a non-Mosaiq source and a missing MRN as usage errors", function()
        local r = run{"report", "SITE", "--mrn", "M", "--from", "2025-13-01"}
        assert.are.equal(2, r.code)
        assert.matches("2025%-13%-01", r.stderr)
        assert.are.equal(2, run{"report", "SITE", "--mrn", "M", "--from", "2025-06-10", "--to", "2025-06-01"}.code)
        r = run{"report", "SITE", "ARIA", "--mrn", "M"}
        assert.are.equal(2, r.code)
        assert.matches("not mosaiq", r.stderr)
        assert.are.equal(2, run{"report", "SITE"}.code)
        r = run{"report", "--help"}
        assert.are.equal(0, r.code)
        assert.matches("3 no course matched", r.stdout)
    end)
end)
