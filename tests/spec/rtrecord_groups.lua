-- Synthetic Mosaiq delivery groups, shaped like mosaiq.deliveries() yields them
-- (exact Mosaiq column names, ISO timestamps, binary leaf sets), for the RT
-- record specs and benchmark. Values follow the coherent fixture of reference §9.2.
local groups = {}

-- The stand-in for the ODBC NULL sentinel in these groups.
groups.NULL = setmetatable({}, {__tostring = function() return "NULL" end, __name = "NULL"})

local function float32_leaves(values)
    local parts = {}
    for i, v in ipairs(values) do parts[i] = string.pack("<f", v) end
    return table.concat(parts)
end

local function int16_leaves(values_mm)
    local parts = {}
    for i, v in ipairs(values_mm) do parts[i] = string.pack("<i2", math.floor(v * 10 + 0.5)) end
    return table.concat(parts) -- units of 0.01 cm = 0.1 mm
end
groups.float32_leaves, groups.int16_leaves = float32_leaves, int16_leaves

local function repeat_value(v, n)
    local t = {}
    for i = 1, n do t[i] = v end
    return t
end

local function base(fraction)
    return {
        patient = {Pat_ID1 = 10001, IDA = "MRN0012345", Last_Name = "DOE", First_Name = "JANE",
                   MIddle_Name = "Q", Suffix = groups.NULL, Gender = "Female", Birth_DtTm = "1961-04-12T00:00:00"},
        site = {SIT_SET_ID = 70001, Site_Name = "PROSTATE", Technique = "IMRT", Fractions = 28,
                Dose_Ttl = 7000, Setup_Note = "Knee sponge; full bladder", Activity = "Tx Delivery IMRT"},
        plan = {OriginalPlanUID = "1.2.826.0.1.3680043.8.498.1003", Label = "PROS_IMRT",
                StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1001", StudyID = "PLAN1",
                StudyDescription = "Prostate IMRT", Study_DtTm = "2025-05-21T10:00:00"},
        fraction = fraction or 12,
        machine = {Last_Name = "LINAC1", Source_Name = "LINAC1", Source_Model = "Versa HD",
                   Inst_Name = "Radiation Oncology"},
        fields = {},
    }
end

-- A planned control point (TxFieldPoint); index = the cumulative meterset weight in
-- percent. The first point carries what the console recorded (TxFieldPoint_Hst):
-- the couch where it stood (the plan's position plus the day's shift).
local function static_point(point, gantry, index, leaves_a, leaves_b, tx)
    return {Point = point, Index = index, Energy = 6, Energy_Unit_Enum = 2, Gantry_Ang = gantry,
            Gantry_Dir_Enum = 3, Coll_Ang = 0, Coll_Dir_Enum = 3, Couch_Ang = 0, Couch_Roll_Dir_Enum = 3,
            Couch_Top_Axis_Distance = 0, Couch_Top = 0, Couch_Top_Dir_Enum = 3,
            Couch_Vrt = -12.0, Couch_Lng = 98.0, Couch_Lat = 0.0,
            Coll_Y1 = -5.0, Coll_Y2 = 5.0, MLC_Leaves = 60,
            A_Leaf_Set = leaves_a, B_Leaf_Set = leaves_b, Meterset_Rate = 600,
            Create_DtTm = "2025-05-21T10:02:00",
            actual = point == 0 and {Tx_DtTm = tx, Meterset_Rate = 598, Couch_Vrt = -12.4, Couch_Lng = 98.1,
                                     Couch_Lat = 0.3} or {}}
end

-- A delivery (Dose_Hst): `delivered` MU given, NORMAL unless said otherwise.
local function dose(dhs_id, fraction, tx, delivered, extra)
    local d = {DHS_ID = dhs_id, Tx_DtTm = tx, Edit_DtTm = tx, Fractions_Tx = fraction, Meterset = delivered,
               MetersetPrevDelivered = 0, MetersetUnit_Enum = 1, PartiallyTreated = 0, WasQAMode = 0,
               TerminationCode = 0, Termination_Status_Enum = 1, Termination_Verify_Status_Enum = 1}
    for k, v in pairs(extra or {}) do d[k] = v end
    return d
end
groups.dose = dose

--- Two static beams with two control points each (reference §9.2), float32 leaves.
-- The second beam was stopped by the operator after 98.6 of its 147.9 MU.
function groups.two_beam_static(fraction)
    local g = base(fraction)
    local a = float32_leaves(repeat_value(-20.55, 60))
    local b = float32_leaves(repeat_value(20.55, 60))
    local t1, t2 = "2025-06-12T09:52:10", "2025-06-12T09:54:40"
    g.fields[1] = {FLD_ID = 60001, FLD_SET_ID = 60001, Version = 0, OriginalBeamNumber = 1,
                   OriginalBeamName = "G180", Field_Name = "G180",
                   Field_Label = "1", Beam_Type_Flag = 1, Modality_Enum = 1, Type_Enum = 14,
                   Meterset = 152.3, Sad = 100, Mlc = 1, ControlPoints = 2, IndexReference_Enum = 1,
                   dose = dose(80012, fraction or 12, t1, 152.3),
                   delivered = {FHS_ID = 90012, BackupTimerDelivered = 0.254},
                   points = {static_point(0, 180, 0, a, b, t1), static_point(1, 180, 100, a, b)}}
    g.fields[2] = {FLD_ID = 60002, FLD_SET_ID = 60002, Version = 0, OriginalBeamNumber = 2,
                   OriginalBeamName = "G000", Field_Name = "G000",
                   Field_Label = "2", Beam_Type_Flag = 1, Modality_Enum = 1, Type_Enum = 14,
                   Meterset = 147.9, Sad = 100, Mlc = 1, ControlPoints = 2, IndexReference_Enum = 1,
                   dose = dose(80022, fraction or 12, t2, 98.6, {Termination_Status_Enum = 2, PartiallyTreated = 1,
                                                                 TerminationCode = 17}),
                   delivered = {FHS_ID = 90022, BackupTimerDelivered = 0.164},
                   points = {static_point(0, 0, 0, a, b, t2), static_point(1, 0, 100, a, b)}}
    return g
end

--- A VMAT-like delivery: two arcs of n control points (178 by default), gantry
-- sweeping 181 -> 179 clockwise and back, leaves moving, int16 leaf sets.
function groups.vmat(n, fraction)
    n = n or 178
    local g = base(fraction)
    g.site.Site_Name, g.plan.Label = "H&N", "HN_VMAT"
    for arc = 1, 2 do
        local points = {}
        local total = arc == 1 and 256.7 or 241.3
        for k = 0, n - 1 do
            local t = k / (n - 1)
            local gantry = arc == 1 and (181 + 358 * t) % 360 or (179 - 358 * t) % 360
            local a, b = {}, {}
            for leaf = 1, 60 do
                local open = 5 + 30 * math.abs(math.sin(leaf / 7 + k / 11 + arc))
                a[leaf] = -math.floor(open * 10) / 10
                b[leaf] = math.floor((open + 3) * 10) / 10
            end
            points[k + 1] = {
                Point = k, Index = math.floor(t * 100 * 1e4 + 0.5) / 1e4, Energy = 6, Energy_Unit_Enum = 2,
                Gantry_Ang = math.floor(gantry * 10 + 0.5) / 10, Gantry_Dir_Enum = arc == 1 and 1 or 2,
                Coll_Ang = arc == 1 and 30 or 330, Coll_Dir_Enum = 3, Couch_Ang = 0, Couch_Roll_Dir_Enum = 3,
                Couch_Top_Axis_Distance = 0, Couch_Top = 0, Couch_Top_Dir_Enum = 3,
                Couch_Vrt = -15.2, Couch_Lng = 102.6, Couch_Lat = -0.8,
                Coll_X1 = -8.0, Coll_X2 = 8.5, Coll_Y1 = -10.0, Coll_Y2 = 10.0, MLC_Leaves = 60,
                A_Leaf_Set = int16_leaves(a), B_Leaf_Set = int16_leaves(b), Meterset_Rate = 600,
                Create_DtTm = "2025-05-21T10:02:00",
                actual = k == 0 and {Couch_Vrt = -15.0, Couch_Lng = 102.9, Couch_Lat = -0.8} or {},
            }
        end
        local tx = arc == 1 and "2025-06-12T10:15:02.250" or "2025-06-12T10:17:31"
        g.fields[arc] = {FLD_ID = 61000 + arc, FLD_SET_ID = 61000 + arc, Version = 0, OriginalBeamNumber = arc,
                         OriginalBeamName = "ARC" .. arc,
                         Field_Name = "ARC" .. arc, Field_Label = arc == 1 and "CW" or "CCW",
                         Beam_Type_Flag = 2, Modality_Enum = 1, Type_Enum = 13, Meterset = total,
                         Sad = 100, Mlc = 1, ControlPoints = n, IndexReference_Enum = 1,
                         dose = dose(81000 + arc, fraction or 12, tx, total),
                         delivered = {FHS_ID = 91000 + arc},
                         points = points}
    end
    return g
end

--- Everything optional is NULL: names, birth date, sex, notes, study description and
-- date, directions, verification, dose rates, couch positions (none recorded), SAD,
-- beam type flag, the first beam's termination status.
function groups.null_heavy()
    local g = groups.two_beam_static()
    local N = groups.NULL
    g.patient.MIddle_Name, g.patient.Suffix, g.patient.Gender, g.patient.Birth_DtTm = N, N, N, N
    g.site.Setup_Note, g.site.Activity, g.site.Fractions = N, N, N
    g.plan.StudyDescription, g.plan.Study_DtTm, g.plan.StudyID, g.plan.Label = N, N, N, N
    g.machine.Source_Model, g.machine.Inst_Name = N, N
    for _, f in ipairs(g.fields) do
        f.Beam_Type_Flag, f.Sad, f.Field_Label = N, N, N
        f.dose.TerminationCode, f.dose.Termination_Verify_Status_Enum = N, N
        for _, p in ipairs(f.points) do
            p.Gantry_Dir_Enum, p.Coll_Dir_Enum, p.Couch_Roll_Dir_Enum, p.Couch_Top_Dir_Enum = N, N, N, N
            p.Couch_Vrt, p.Couch_Lng, p.Couch_Lat, p.Couch_Top_Axis_Distance = N, N, N, N
            p.Meterset_Rate, p.Energy_Unit_Enum, p.actual = N, N, nil
            p.MLC_Leaves = N
        end
    end
    g.fields[1].dose.Termination_Status_Enum = N
    return g
end

--- Non-ASCII text in names, site notes and beam names (UTF-8, as the ODBC layer returns it).
function groups.non_ascii()
    local g = groups.two_beam_static()
    g.patient.Last_Name, g.patient.First_Name, g.patient.MIddle_Name = "Müller-Øster", "José", "Ł"
    g.site.Site_Name, g.site.Setup_Note = "Prostata (Bestrahlung)", "Kniekissen; Blase gefüllt"
    g.fields[1].OriginalBeamName, g.fields[1].Field_Label = "G180°", "Feld ä"
    g.machine.Last_Name = "Linac-Süd"
    return g
end

groups.names = {"two_beam_static", "vmat", "null_heavy", "non_ascii"}

return groups
