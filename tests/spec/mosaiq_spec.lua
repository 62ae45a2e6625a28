-- rtbackup.mosaiq on SQLite: the day's deliveries on a hand-made fixture and on a
-- generated clinic (the old system's bugs must stay fixed), the treatment summary, and
-- the `report` and `mosaiq-db` commands.
local odbc = require "rtbackup.odbc"
local mosaiq = require "rtbackup.mosaiq.query"
local synth = require "rtbackup.mosaiq.synth"
local dates = require "rtbackup.clock"
local pretty = require "rtbackup.pretty"
local h = require "helpers"

local function new_db(path)
    local db = odbc.connect({odbc_driver = "SQLite3", db_database = path}, nil, {create = true})
    mosaiq.create_schema(db)
    return db
end

local failure = h.failure

-- The coherent fixture of reference §9.2: one patient, one IMRT site (and an HDR site),
-- one plan, two beams, fraction 12 of 28 on 2025-06-12; older rows that must not count.
local function fixture()
    local uid = "1.2.826.0.1.3680043.8.498."
    local function point(fld, n, mu)
        return {FLD_ID = fld, Point = n, Energy = 6, Energy_Unit_Enum = 2, Gantry_Ang = 180,
                Gantry_Dir_Enum = 3, Coll_Ang = 0, Coll_Dir_Enum = 3, Couch_Ang = 0,
                Couch_Roll_Dir_Enum = 3, Couch_Top_Axis_Distance = 0, Couch_Top = 0,
                Couch_Top_Dir_Enum = 3, Couch_Vrt = -12.4, Couch_Lng = 98.1, Couch_Lat = 0.3,
                Coll_Y1 = -5.0, Coll_Y2 = 5.0, MLC_Leaves = 60,
                A_Leaf_Set = odbc.binary(string.rep("\0\0\128\191", 60)),
                B_Leaf_Set = odbc.binary(string.rep("\0\0\128\63", 60)),
                SpecifiedMeterset = mu, Meterset = mu, Meterset_Rate = 600,
                Create_DtTm = "2025-05-21 10:02:00"}
    end
    local function field(fld, version, number, name, mu, fx, last)
        return {FLD_ID = fld, Version = version, Pat_ID1 = 10001, SIT_Set_ID = 70001,
                OriginalPlanUID = uid .. "1003", OriginalBeamName = name, OriginalBeamNumber = number,
                Field_Name = name, Field_Label = tostring(number), Cgray = 250, Meterset = mu,
                IndexReference_Enum = 1, ControlPoints = 2, Sad = 100, Beam_Type_Flag = 2,
                Modality_Enum = 1, Type_Enum = 14, Fractions_Tx = fx, Start_DtTm = "2025-05-28 09:30:00",
                Last_Tx_DtTm = last, Machine_ID_Staff_ID = 501, Inst_ID = 1, MachineCharID = "LINAC1",
                Mlc = 1, Wdg_Appl = 0, Comp_Fda = 0, Bolus = 0, Block = 0}
    end
    local function dose(id, fld, fx, at, status)
        return {DHS_ID = id, FLD_ID = fld, Fractions_Tx = fx, Tx_DtTm = at, TerminationCode = 0,
                Termination_Status_Enum = status or 1, Termination_Verify_Status_Enum = 1,
                Dose_Addtl_Projected = 0, DeliveredTreatmentTimeBeam = 0.8}
    end
    return {
        Patient = {{Pat_ID1 = 10001, Last_Name = "DOE", First_Name = "JANE", MIddle_Name = "Q",
                    Sex = "FEMALE", Birth_DtTm = "1961-04-12 00:00:00"}},
        Ident = {{Pat_Id1 = 10001, IDA = "MRN0012345"}},
        Staff = {{Staff_ID = 501, Last_Name = "LINAC1", Machine_Type = 1},
                 {Staff_ID = 502, Last_Name = "TRUEBEAM2", Machine_Type = 2},
                 {Staff_ID = 700, Last_Name = "SMITH", Machine_Type = 0}},
        Machine = {{MAC_ID = 501, Source_Name = "LINAC1", Source_Model = "Versa HD"}},
        Config = {{CFG_ID = 1, Inst_Name = "Radiation Oncology"}},
        CPT = {{Hsp_Code = "77412", Short_Desc = "Tx Delivery IMRT"},
               {Hsp_Code = "99213", Short_Desc = "Follow-up Visit"}},
        Site = {{SIT_ID = 1, SIT_SET_ID = 70001, Pat_ID1 = 10001, Site_Name = "PROSTATE", Version = 0,
                 Technique = "IMRT", Edit_DtTm = "2025-05-20 14:00:00", Fractions = 28, Dose_Ttl = 7000},
                {SIT_ID = 2, SIT_SET_ID = 70002, Pat_ID1 = 10001, Site_Name = "CERVIX", Version = 0,
                 Technique = "HDR", Fractions = 5, Dose_Ttl = 3000}},
        SiteSetup = {{Sit_Set_ID = 70001, Version = 0, Setup_Note = "Knee sponge; full bladder"}},
        Schedule = {{Sch_Id = 900001, Sch_Set_Id = 900001, Pat_ID1 = 10001, App_DtTm = "2025-06-12 09:30:00",
                     Edit_DtTm = "2025-06-12 09:41:00", Location = 501, Activity = "77412", Version = 0},
                    {Sch_Id = 900002, Sch_Set_Id = 900002, Pat_ID1 = 10001, App_DtTm = "2025-06-12 21:00:00",
                     Location = 501, Activity = "77412", Version = 0},
                    {Sch_Id = 900003, Sch_Set_Id = 900003, Pat_ID1 = 10001, App_DtTm = "2025-06-12 11:00:00",
                     Location = 700, Activity = "99213", Version = 0}},
        DCMStudy = {{DCMStudy_ID = 3001, StudyInstanceUID = uid .. "1001", StudyID = "PLAN1",
                     StudyDescription = "Prostate IMRT", Study_DtTm = "2025-05-21 10:00:00",
                     Create_DtTm = "2025-05-21 10:00:00"}},
        DCMSeries = {{DCMSeries_ID = 4001, DCMStudy_ID = 3001, SeriesInstanceUID = uid .. "1002",
                      SeriesNumber = 1, SeriesDescription = "RT Plan", Series_DtTm = "2025-05-21 10:05:00"}},
        DCMInstance = {{DCMInstance_ID = 5001, DCMSeries_ID = 4001, SOPInstanceUID = uid .. "1003"}},
        RtPlan = {{DCMInstance_ID = 5001, Pat_ID1 = 10001, Label = "PROS_IMRT"}},
        TxField = {field(60001, 0, 1, "G180", 152.3, 12, "2025-06-12 09:52:10"),
                   field(60002, 0, 2, "G000", 147.9, 12, "2025-06-12 09:54:40"),
                   field(60001, 1, 1, "G180", 140.0, 11, "2025-06-11 09:50:00"),
                   {FLD_ID = 60009, Version = 0, Pat_ID1 = 10001, SIT_Set_ID = 70002, OriginalBeamNumber = 1,
                    Field_Name = "CH1", Fractions_Tx = 2, Last_Tx_DtTm = "2025-06-12 14:00:00"}},
        TxFieldPoint = {point(60001, 0, 0), point(60001, 1, 152.3), point(60002, 0, 0), point(60002, 1, 147.9)},
        Dose_Hst = {dose(80012, 60001, 12, "2025-06-12 09:52:10"), dose(80011, 60001, 11, "2025-06-11 09:50:00"),
                    dose(80022, 60002, 12, "2025-06-12 09:54:40", 2), dose(80091, 60009, 2, "2025-06-12 14:00:00")},
    }
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

    it("gives one delivery: fraction 12, two beams of two control points, current values", function()
        local list = mosaiq.deliveries(db, "2025-06-12")
        assert.are.equal(1, #list)
        local d = list[1]
        assert.is_nil(d.error)
        assert.are.equal(12, d.fraction)
        assert.are.same({Pat_ID1 = 10001, IDA = "MRN0012345", Last_Name = "DOE", First_Name = "JANE",
                         MIddle_Name = "Q", Suffix = odbc.NULL, Sex = "FEMALE",
                         Birth_DtTm = "1961-04-12T00:00:00"}, d.patient)
        assert.are.equal(70001, d.site.SIT_SET_ID)
        assert.are.equal("PROSTATE", d.site.Site_Name)
        assert.are.equal("Knee sponge; full bladder", d.site.Setup_Note)
        assert.are.equal("Tx Delivery IMRT", d.site.Activity) -- not the follow-up in room 700
        assert.are.equal(28, d.site.Fractions)
        assert.are.equal("1.2.826.0.1.3680043.8.498.1003", d.plan.OriginalPlanUID)
        assert.are.equal("1.2.826.0.1.3680043.8.498.1001", d.plan.StudyInstanceUID)
        assert.are.equal("PROS_IMRT", d.plan.Label)
        assert.are.equal("LINAC1", d.machine.Source_Name)
        assert.are.equal("Versa HD", d.machine.Source_Model)
        assert.are.equal("Radiation Oncology", d.machine.Inst_Name)
        assert.are.equal(2, #d.fields)
        local f1, f2 = d.fields[1], d.fields[2]
        assert.are.same({1, 2}, {f1.OriginalBeamNumber, f2.OriginalBeamNumber})
        assert.are.equal(152.3, f1.Meterset) -- Version 0, not the 140.0 of Version 1
        assert.are.same({80012, 80022}, {f1.dose.DHS_ID, f2.dose.DHS_ID}) -- not 80011
        assert.are.equal(2, f2.dose.Termination_Status_Enum)
        assert.are.equal("2025-06-12T09:52:10", f1.dose.Tx_DtTm)
        for _, f in ipairs(d.fields) do
            assert.are.equal(12, f.dose.Fractions_Tx)
            assert.are.same({0, 1}, {f.points[1].Point, f.points[2].Point})
            assert.are.equal(string.rep("\0\0\128\191", 60), f.points[1].A_Leaf_Set)
            assert.are.equal(-12.4, f.points[1].Couch_Vrt) -- raw cm
            assert.are.equal(odbc.NULL, f.points[1].Coll_X1)
        end
    end)

    it("gives the previous day's fraction on the previous day, and nothing on a quiet day", function()
        local d = mosaiq.deliveries(db, "2025-06-11")
        assert.are.equal(1, #d)
        assert.are.equal(11, d[1].fraction)
        assert.are.equal(1, #d[1].fields)
        assert.are.equal(80011, d[1].fields[1].dose.DHS_ID)
        assert.are.same({}, mosaiq.deliveries(db, "2025-06-13"))
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
        assert.matches("fraction, site__SIT_SET_ID", err.message)
    end)

    it("marks a delivery whose rows disagree, as the old query without Version = 0 made them", function()
        local sql = mosaiq.day_query("sqlite"):gsub(" AND FLD%.Version = 0", "")
        local d = mosaiq.deliveries(db, "2025-06-12", {sql = sql})
        assert.are.equal(1, #d)
        assert.matches("disagree on field%.", d[1].error)
        assert.matches("Version = 0", d[1].error)
    end)

    it("uses a site's own query, with extra columns landing in their group", function()
        local sql = mosaiq.day_query("sqlite"):gsub('AS "point__Create_DtTm"',
            'AS "point__Create_DtTm", TFP.FLD_ID * 0 + 7 AS "point__Extra"')
        local d = mosaiq.deliveries(db, "2025-06-12", {sql = sql})
        assert.are.equal(7, d[1].fields[1].points[1].Extra)
        -- a placeholder made of comments only means "use the shipped query"
        assert.are.equal(1, #mosaiq.deliveries(db, "2025-06-12", {sql = "-- defined later\n"}))
    end)

    it("summarises the course for an MRN and nothing for an injection attempt", function()
        local courses = mosaiq.treatment_summary(db, "MRN0012345")
        assert.are.equal(2, #courses) -- the IMRT course and the HDR course
        local c = courses[1]
        assert.are.same({PatientName = "DOE, JANE Q", MRN = "MRN0012345", Site = "PROSTATE",
                         SIT_SET_ID = 70001, Start = "2025-05-28", End = "2025-06-12",
                         TotalDose = 7000.0, Fractions = 28, Delivered = 12}, c)
        assert.are.same({}, mosaiq.treatment_summary(db, "x' OR '1'='1"))
        assert.are.equal(1, #mosaiq.treatment_summary(db, "MRN0012345", "2025-06-12", "2025-06-30"))
        assert.are.same({}, mosaiq.treatment_summary(db, "MRN0012345", "2025-06-13"))
        assert.are.same({}, mosaiq.treatment_summary(db, "MRN0012345", nil, "2025-05-27"))
        assert.are.equal("invalid", failure(mosaiq.treatment_summary, db, "MRN0012345", "2025-02-30").kind)
        assert.are.equal("invalid", failure(mosaiq.treatment_summary, db, "MRN0012345",
                                            "2025-06-02", "2025-06-01").kind)
    end)
end)

describe("mosaiq.deliveries on a generated clinic", function()
    local dir, db, clinic
    local START, DAYS = "2025-06-02", 28
    local first = dates.day(START)

    -- An independent count: distinct (site, plan, fraction) of the day's dose rows of
    -- current fields of current, non-HDR sites.
    local function expected_count(day)
        local rows = db:query([[
            SELECT COUNT(*) AS n FROM (
              SELECT DISTINCT S.SIT_SET_ID, F.OriginalPlanUID, D.Fractions_Tx
              FROM Dose_Hst D JOIN TxField F ON F.FLD_ID = D.FLD_ID AND F.Version = 0
              JOIN Site S ON S.SIT_SET_ID = F.SIT_Set_ID AND S.Version = 0
              WHERE D.Tx_DtTm >= ? AND D.Tx_DtTm < ? AND S.Technique <> 'HDR') AS x]],
            {dates.timestamp(day), dates.timestamp(day + 1)})
        return rows[1].n
    end

    local by_day = {}
    local function deliveries(day)
        by_day[day] = by_day[day] or mosaiq.deliveries(db, dates.format_day(day))
        return by_day[day]
    end

    setup(function()
        dir = h.tmpdir()
        db = new_db(dir .. "/clinic.db")
        clinic = synth.generate(db, {seed = 7, patients = 40, start_date = START, days = DAYS})
    end)
    teardown(function()
        db:close()
        os.execute("rm -rf " .. h.quote(dir))
    end)

    it("lists each (site, plan, fraction) of every day exactly once", function()
        local total = 0
        for day = first, first + DAYS - 1 do
            local list, seen = deliveries(day), {}
            assert.are.equal(expected_count(day), #list, dates.format_day(day))
            for _, d in ipairs(list) do
                assert.is_nil(d.error, d.error)
                local key = d.site.SIT_SET_ID .. "/" .. d.plan.OriginalPlanUID .. "/" .. d.fraction
                assert.is_nil(seen[key], "twice: " .. key)
                seen[key] = true
                local fields = {}
                for _, f in ipairs(d.fields) do
                    assert.is_nil(fields[f.FLD_ID], "field listed twice")
                    fields[f.FLD_ID] = true
                    assert.are.equal(d.fraction, f.dose.Fractions_Tx) -- only this fraction
                    assert.are.equal(dates.format_day(day), f.dose.Tx_DtTm:sub(1, 10))
                end
            end
            total = total + #list
        end
        assert.is_true(total > 100, "a clinic this size treats more than " .. total)
    end)

    it("gives a twice-daily patient two deliveries a day, consecutive fractions", function()
        local checked = 0
        for day = first, first + DAYS - 1 do
            local per_plan = {}
            for _, d in ipairs(deliveries(day)) do
                if clinic.kinds[d.patient.Pat_ID1] == "bid" then
                    local list = per_plan[d.plan.OriginalPlanUID] or {}
                    list[#list + 1] = d.fraction
                    per_plan[d.plan.OriginalPlanUID] = list
                end
            end
            for _, fractions in pairs(per_plan) do
                if #fractions == 2 then
                    table.sort(fractions)
                    assert.are.equal(fractions[1] + 1, fractions[2])
                    checked = checked + 1
                else
                    assert.are.equal(1, #fractions) -- the odd last fraction of a course
                end
            end
        end
        assert.is_true(checked > 0, "no twice-daily day in the clinic")
    end)

    it("leaves out HDR deliveries although Dose_Hst has them", function()
        local hdr_rows = db:query([[SELECT COUNT(*) AS n FROM Dose_Hst D JOIN TxField F ON F.FLD_ID = D.FLD_ID
                                    JOIN Site S ON S.SIT_SET_ID = F.SIT_Set_ID WHERE S.Technique = 'HDR'
                                    AND D.Tx_DtTm >= ?]], {START})[1].n
        assert.is_true(hdr_rows > 0)
        for day = first, first + DAYS - 1 do
            for _, d in ipairs(deliveries(day)) do
                assert.are_not.equal("HDR", d.site.Technique)
                assert.are_not.equal("hdr", clinic.kinds[d.patient.Pat_ID1])
            end
        end
    end)

    it("ignores appointments outside treatment machines", function()
        local visits = db:query([[SELECT COUNT(*) AS n FROM Schedule SC JOIN Staff ST ON ST.Staff_ID = SC.Location
                                  WHERE ST.Machine_Type NOT IN (1, 2) AND SC.App_DtTm >= ?]], {START})[1].n
        assert.is_true(visits > 0)
        for day = first, first + DAYS - 1 do
            for _, d in ipairs(deliveries(day)) do
                assert.are_not.equal("followup", clinic.kinds[d.patient.Pat_ID1])
                assert.is_true(d.site.Activity == "Tx Delivery Complex" or d.site.Activity == "Tx Delivery Simple",
                               tostring(d.site.Activity))
            end
        end
    end)

    it("reports the latest fraction on a course's last treatment day", function()
        local fields = db:query([[SELECT FLD_ID AS id, Fractions_Tx AS fx, Last_Tx_DtTm AS last
                                  FROM TxField WHERE Version = 0 AND Fractions_Tx > 0]])
        local checked = 0
        for _, f in ipairs(fields) do
            local day = dates.day(f.last:sub(1, 10))
            if day >= first and day < first + DAYS then
                local latest = 0
                for _, d in ipairs(deliveries(day)) do
                    for _, g in ipairs(d.fields) do
                        if g.FLD_ID == f.id then latest = math.max(latest, d.fraction) end
                    end
                end
                if clinic.kinds[db:query("SELECT Pat_ID1 AS p FROM TxField WHERE FLD_ID = ?", {f.id})[1].p] ~= "hdr" then
                    assert.are.equal(f.fx, latest)
                    checked = checked + 1
                end
            end
        end
        assert.is_true(checked > 0)
    end)

    it("uses the current version of a field that has history", function()
        local edited = db:query([[SELECT F0.FLD_ID AS id, F0.Meterset AS now, F1.Meterset AS old
                                  FROM TxField F0 JOIN TxField F1 ON F1.FLD_ID = F0.FLD_ID AND F1.Version = 1
                                  WHERE F0.Version = 0]])
        assert.is_true(#edited > 0)
        local want = {}
        for _, e in ipairs(edited) do
            assert.are_not.equal(e.now, e.old)
            want[e.id] = e.now
        end
        local seen = 0
        for day = first, first + DAYS - 1 do
            for _, d in ipairs(deliveries(day)) do
                for _, f in ipairs(d.fields) do
                    if want[f.FLD_ID] then
                        assert.are.equal(want[f.FLD_ID], f.Meterset)
                        seen = seen + 1
                    end
                end
            end
        end
        assert.is_true(seen > 0)
    end)

    it("carries static beams with 2 control points and VMAT arcs with 178, in order", function()
        local static, vmat = 0, 0
        for day = first, first + DAYS - 1 do
            for _, d in ipairs(deliveries(day)) do
                for _, f in ipairs(d.fields) do
                    assert.are.equal(f.ControlPoints, #f.points)
                    if f.ControlPoints == 178 then vmat = vmat + 1 else static = static + 1 end
                    for i, p in ipairs(f.points) do
                        assert.are.equal(i - 1, p.Point)
                        assert.are.equal(120, #p.A_Leaf_Set) -- 60 leaves, int16
                    end
                end
            end
        end
        assert.is_true(static > 0 and vmat > 0)
    end)

    it("keeps NULL names as odbc.NULL and non-ASCII names intact", function()
        local names, null_middle, null_suffix = {}, 0, 0
        for day = first, first + DAYS - 1 do
            for _, d in ipairs(deliveries(day)) do
                names[d.patient.Last_Name] = true
                if d.patient.MIddle_Name == odbc.NULL then null_middle = null_middle + 1 end
                if d.patient.Suffix == odbc.NULL then null_suffix = null_suffix + 1 end
            end
        end
        assert.is_true(null_middle > 0 and null_suffix > 0)
        local unicode = 0
        for _, n in ipairs{"Müller", "Nguyễn", "Ó Briain", "Øvergård", "O'Brien"} do
            if names[n] then unicode = unicode + 1 end
        end
        assert.is_true(unicode >= 2, pretty.format(names))
    end)

    it("generates the same clinic from the same seed, another from another seed", function()
        local again = new_db(dir .. "/again.db")
        synth.generate(again, {seed = 7, patients = 40, start_date = START, days = DAYS})
        local other = new_db(dir .. "/other.db")
        synth.generate(other, {seed = 8, patients = 40, start_date = START, days = DAYS})
        local day = dates.format_day(first + 10)
        local text = pretty.format(mosaiq.deliveries(db, day))
        assert.are.equal(text, pretty.format(mosaiq.deliveries(again, day)))
        assert.are_not.equal(text, pretty.format(mosaiq.deliveries(other, day)))
        again:close()
        other:close()
    end)
end)

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
