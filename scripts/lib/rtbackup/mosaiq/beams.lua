--- rtbackup.mosaiq.beams: synthetic treatment fields and control points for the
-- generator (synth.lua): 2-beam static plans and VMAT-like 2-arc plans of 178 control
-- points, with MLC leaf sets in either Mosaiq encoding. Raw Mosaiq units: cm, degrees.
local odbc = require "rtbackup.odbc"

local beams = {}

beams.LEAF_PAIRS = 60
beams.ARC_POINTS = 178

--- Leaf positions (cm, one per leaf) as the bytes Mosaiq stores (the names are those
-- of rtbackup.mosaiq.map's mlc.encoding):
--   "int16_0.01cm": little-endian signed 16-bit, 0.01 cm (pymedphys' reading of real data)
--   "float32_mm":   little-endian IEEE float, mm (the old Python system's assumption)
function beams.encode_leaves(positions_cm, encoding)
    local values, fmt = {}, nil
    if encoding == "float32_mm" then
        fmt = "<" .. string.rep("f", #positions_cm)
        for i, p in ipairs(positions_cm) do values[i] = p * 10 end
    elseif encoding == "int16_0.01cm" then
        fmt = "<" .. string.rep("i2", #positions_cm)
        for i, p in ipairs(positions_cm) do values[i] = math.floor(p * 100 + 0.5) end
    else
        error("leaf encoding must be 'int16_0.01cm' or 'float32_mm', got " .. tostring(encoding), 2)
    end
    return string.pack(fmt, table.unpack(values))
end

-- Half-widths (cm) of an elliptic aperture of the given size, leaf pair by leaf pair;
-- pairs outside the field close at the centre line, as a planning system leaves them.
local function aperture(width, height, squeeze)
    local half = {}
    for i = 1, beams.LEAF_PAIRS do
        local y = (i - 0.5 - beams.LEAF_PAIRS / 2) * 0.5 -- 0.5 cm leaves, centred
        local r = y / (height / 2)
        half[i] = math.abs(r) < 1 and (width / 2) * math.sqrt(1 - r * r) * squeeze or 0
    end
    return half
end

local function leaf_sets(half, encoding)
    local a, b = {}, {}
    for i, h in ipairs(half) do
        a[i] = -h
        b[i] = h
    end
    return odbc.binary(beams.encode_leaves(a, encoding)), odbc.binary(beams.encode_leaves(b, encoding))
end

local function round(x, places)
    local m = 10 ^ (places or 1)
    return math.floor(x * m + 0.5) / m
end

-- One TxFieldPoint row.
local function point(f, index, p)
    local a, b = leaf_sets(p.half, f.leaf_encoding)
    return {
        FLD_ID = f.FLD_ID, Point = index, Energy = f.energy, Energy_Unit_Enum = 2,
        Gantry_Ang = round(p.gantry), Gantry_Dir_Enum = p.gantry_dir, Coll_Ang = f.coll,
        Coll_Dir_Enum = 3, Couch_Ang = 0.0, Couch_Ang_Dir_Enum = 3,
        Couch_Roll_Ang = 0.0, Couch_Roll_Dir_Enum = 3, Couch_Pitch_Ang = 0.0, Couch_Pitch_Dir_Enum = 3,
        Couch_Top_Axis_Distance = 0.0, Couch_Top = 0.0, Couch_Top_Dir_Enum = 3,
        Couch_Vrt = f.couch.vrt, Couch_Lng = f.couch.lng, Couch_Lat = f.couch.lat,
        Coll_X1 = -f.width / 2, Coll_X2 = f.width / 2, Coll_Y1 = -f.height / 2,
        Coll_Y2 = f.height / 2, MLC_Leaves = beams.LEAF_PAIRS, A_Leaf_Set = a, B_Leaf_Set = b,
        -- The cumulative meterset weight, in percent of the beam's (as Monaco writes it).
        Index = round(p.weight * 100, 4),
        Meterset_Rate = 600.0, Create_DtTm = f.created,
    }
end

--- The fields of a plan and their control points. plan = {kind = "static" | "vmat",
-- first_fld_id, pat_id, site_set_id, plan_uid, machine, created, energy, couch,
-- leaf_encoding, dose_per_fraction}; rng = the generator's random source.
-- Returns fields (TxField rows, Version 0, without the delivery columns) and points
-- (TxFieldPoint rows without TFP_ID, which the generator numbers).
function beams.plan_fields(plan, rng)
    local specs
    if plan.kind == "vmat" then
        specs = {
            {name = "ARC1", gantry = {181, 179}, dir = 1, coll = 30.0},
            {name = "ARC2", gantry = {179, 181}, dir = 2, coll = 330.0},
        }
    else
        specs = {
            {name = "G180", gantry = {180, 180}, dir = 3, coll = 0.0},
            {name = "G000", gantry = {0, 0}, dir = 3, coll = 0.0},
        }
    end
    local width, height = rng.int(6, 14), rng.int(6, 16)
    local fields, points = {}, {}
    for n, spec in ipairs(specs) do
        local vmat = plan.kind == "vmat"
        local mu = vmat and rng.int(2500, 4000) / 10 or rng.int(900, 2200) / 10
        local f = {
            FLD_ID = plan.first_fld_id + n - 1, FLD_SET_ID = plan.first_fld_id + n - 1, Version = 0,
            Pat_ID1 = plan.pat_id,
            SIT_Set_ID = plan.site_set_id, OriginalPlanUID = plan.plan_uid,
            OriginalBeamNumber = n, OriginalBeamName = spec.name, Field_Name = spec.name,
            Field_Label = tostring(n), Beam_Type_Flag = vmat and 2 or 1, Modality_Enum = 1,
            Type_Enum = vmat and 13 or (plan.imrt and 14 or 1), IndexReference_Enum = 1,
            ControlPoints = vmat and beams.ARC_POINTS or 2, Meterset = mu,
            Cgray = round(plan.dose_per_fraction / #specs, 1), Sad = 100.0, Mlc = 1,
            Wdg_Appl = "", Comp_Fda = "", Bolus = "", Block = "", Dyn_Wedge = "",
            BackupTimer = round(mu / 300 + 0.2, 2),
            MachineCharID = plan.machine.id, Machine_ID_Staff_ID = plan.machine.id,
        }
        fields[n] = f
        local ctx = {FLD_ID = f.FLD_ID, energy = plan.energy, coll = spec.coll, couch = plan.couch,
                     width = width, height = height, created = plan.created,
                     leaf_encoding = plan.leaf_encoding}
        local count = f.ControlPoints
        for i = 0, count - 1 do
            local t = i / (count - 1)
            local gantry = spec.gantry[1]
            if vmat then -- the long way round: 181 -> 179 clockwise, back counter-clockwise
                local travel = spec.dir == 1 and 358 * t or -358 * t
                gantry = (spec.gantry[1] + travel) % 360
            end
            -- VMAT apertures breathe with the gantry; static ones stay put.
            local squeeze = vmat and (0.55 + 0.4 * math.abs(math.sin(3.1 * t + n))) or 1
            points[#points + 1] = point(ctx, i, {
                gantry = gantry, gantry_dir = spec.dir, weight = t,
                half = aperture(width, height, squeeze)})
        end
    end
    return fields, points
end

return beams
