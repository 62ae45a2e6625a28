--- rtbackup.mosaiq.map: one Mosaiq delivery group -> the input of
-- rtbackup.rtrecord.beams_treatment_record (see rtrecord.lua for that table).
--
--   local map = require "rtbackup.mosaiq.map"
--   local ds = map.build(group, opts)        -- the RT Beams Treatment Record (a dataset)
--   local input = map.record(group, opts)    -- just the builder input, to inspect or adjust
--
-- group: what mosaiq.deliveries(db, date) yields, exact Mosaiq column names:
--   {patient = {Pat_ID1, IDA, Last_Name, First_Name, MIddle_Name, Suffix, Sex, Birth_DtTm},
--    site = {SIT_SET_ID, Site_Name, Technique, Fractions, Dose_Ttl, Setup_Note, Activity},
--    plan = {OriginalPlanUID, Label, StudyInstanceUID, StudyID, StudyDescription, Study_DtTm},
--    fraction = <delivered fraction number>,
--    machine = {Source_Name or Last_Name, Source_Model, Inst_Name},
--    fields = {{FLD_ID, OriginalBeamNumber, OriginalBeamName, Field_Name, Field_Label,
--               Beam_Type_Flag, Modality_Enum, Type_Enum, Meterset, Sad (cm), Mlc,
--               ControlPoints, IndexReference_Enum, Last_Tx_DtTm,
--               dose = {DHS_ID, Fractions_Tx, TerminationCode, Termination_Status_Enum,
--                       Termination_Verify_Status_Enum, [Tx_DtTm], [Meterset]},
--               points = {{Point, Energy, Energy_Unit_Enum, Gantry_Ang, Gantry_Dir_Enum,
--                          Coll_Ang, Coll_Dir_Enum, Couch_Ang, Couch_Roll_Dir_Enum,
--                          Couch_Top_Axis_Distance, Couch_Top, Couch_Top_Dir_Enum,
--                          Couch_Vrt, Couch_Lng, Couch_Lat (cm), A_Leaf_Set, B_Leaf_Set,
--                          Meterset, Meterset_Rate, Create_DtTm,
--                          [Coll_X1, Coll_X2, Coll_Y1, Coll_Y2 (cm)], [MLC_Leaves], [Index]}}}}}
--   Timestamps are ISO text; nil and opts.null (the ODBC NULL sentinel) mean missing.
--
-- opts: the site's `mosaiq` choices (scripts/default/site.lua lists them) plus:
--   uid_scope         required: a name unique to this Mosaiq database ("UCLA/MOSAIQ"), so two
--                     clinics' keys never give the same UID
--   null              the value that stands for SQL NULL (require("rtbackup.odbc").NULL)
--   energy_unit_enum  "kv1_mv2_mev3" (src convention, default) | "kv0_mv1_mev2" (res convention)
--   mlc = {encoding = "float32_mm" | "int16_0.01cm" (or "float32" | "int16"), leaf_pairs = N,
--          first_bank = "A" | "B", negate_first_bank = false,
--          leaf_order = "as_stored" | "reversed"}    -- layout in DICOM order, verify per site
--   private_block     {creator, group, elements = {{element, vr, from = "site.Site_Name"}}}, or false
--   control_point_time "delivery" (default: the beam's delivery time) | "point" (Create_DtTm
--                     of the TxFieldPoint row, which is most likely its planning time)
--   primary_dosimeter_unit "MU" (default) | "MINUTE"
--   flat_table_top    true: the couch has no pitch/roll axes, record 0 / NONE for both
--   enums             overrides of ENUMS, e.g. {Modality_Enum = {[7] = "PHOTON"}}
--   equipment, series_number, series_description, institution_name
--
-- Choices made here, per the DICOM standard (reference §4.8):
--   * Unknown enum values are never turned into invented terms: Type 2 attributes
--     get an empty value; Termination_Status_Enum falls back to the defined term
--     UNKNOWN; an unknown radiation type (Type 1) is an error for that record.
--   * Beam_Type_Flag other than 1/2 -> STATIC or DYNAMIC by the standard's own
--     definition: DYNAMIC if a control point attribute changes while meterset is
--     delivered. A missing rotation direction -> from the angles of the next
--     control point (CW/CC/NONE), which is what the direction means (C.8.8.14.5).
--   * Type_Enum (VMAT/IMRT...) says nothing about the fluence mode: no
--     PrimaryFluenceModeSequence. IndexReference_Enum is not a dosimeter unit.
--   * KV energies have no DICOM unit term: the energy is left out.
--   * cm -> mm for SAD, table-top positions, eccentric axis distance, jaws, leaves.
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local leaves = require "rtbackup.mosaiq.leaves"
local rtrecord = require "rtbackup.rtrecord"

local M = {}

M.ENUMS = {
    Modality_Enum = {[1] = "PHOTON", [2] = "ELECTRON", [3] = "PHOTON" --[[ Co-60 ]]},
    Beam_Type_Flag = {[1] = "STATIC", [2] = "DYNAMIC"},
    Termination_Status_Enum = {[0] = "UNKNOWN", [1] = "NORMAL", [2] = "OPERATOR", [3] = "MACHINE"},
    Termination_Verify_Status_Enum = {[1] = "VERIFIED", [2] = "VERIFIED_OVR", [3] = "NOT_VERIFIED"},
    Dir_Enum = {[1] = "CW", [2] = "CC", [3] = "NONE"},
}

-- The two conventions seen for Energy_Unit_Enum (reference §4.8).
M.ENERGY_UNITS = {
    kv1_mv2_mev3 = {[1] = "KV", [2] = "MV", [3] = "MEV"},
    kv0_mv1_mev2 = {[0] = "KV", [1] = "MV", [2] = "MEV"},
}

M.DEFAULTS = {
    energy_unit_enum = "kv1_mv2_mev3",
    control_point_time = "delivery",
    primary_dosimeter_unit = "MU",
    series_description = "Treatment records (Mosaiq)",
    -- The record series is ours to number; a number (rather than the empty Type 2
    -- value) lets DICOMDIR-minded viewers list it.
    series_number = 1,
    mlc = {first_bank = "A", negate_first_bank = false},
}

-- ---- values -----------------------------------------------------------------

local function context(group)
    local p, plan = group.patient or {}, group.plan or {}
    return string.format("patient %s, plan %s, fraction %s", tostring(p.IDA or p.Pat_ID1 or "?"),
                         tostring(plan.OriginalPlanUID or "?"), tostring(group.fraction or "?"))
end

local Mapper = {}
Mapper.__index = Mapper

function Mapper:fail(where, fmt, ...)
    local message = string.format(fmt, ...)
    if where then message = where .. ": " .. message end
    errors.raise{kind = "invalid", message = "Mosaiq record for " .. context(self.group) .. ": " .. message,
                 patient = self.patient_id, plan = self.plan_uid, fraction = self.group.fraction}
end

local SPACE = {[9] = true, [10] = true, [13] = true, [32] = true}

-- nil for NULL, missing, and blank text; text trimmed (CHAR columns come padded).
function Mapper:value(v)
    if v == nil or (self.null ~= nil and v == self.null) then return nil end
    if type(v) == "string" then
        if v == "" then return nil end
        if SPACE[v:byte(1)] or SPACE[v:byte(-1)] then
            v = v:match("^%s*(.-)%s*$")
            if v == "" then return nil end
        end
    end
    return v
end

-- Binary columns: only NULL/missing is "absent", bytes are never trimmed.
function Mapper:binary(v)
    if v == nil or (self.null ~= nil and v == self.null) then return nil end
    return v
end

function Mapper:text(v)
    v = self:value(v)
    if v == nil then return nil end
    if type(v) == "number" and math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2^53 then
        return string.format("%d", v) -- 70001.0 from one driver is 70001 from another
    end
    return tostring(v)
end

function Mapper:number(v, where, column)
    v = self:value(v)
    if v == nil then return nil end
    local n = tonumber(v)
    if n == nil then self:fail(where, "%s is not a number: %q", column, tostring(v)) end
    return n
end

function Mapper:integer(v, where, column)
    local n = self:number(v, where, column)
    if n == nil then return nil end
    local i = math.tointeger(n)
    if i == nil then self:fail(where, "%s is not an integer: %s", column, tostring(n)) end
    return i
end

-- Mosaiq stores cm. The product is rounded to 1 µm: 12.34 * 10 is
-- 123.40000000000001 in binary floating point, and the record should say 123.4.
function Mapper:mm(v, where, column)
    local n = self:number(v, where, column)
    return n and math.floor(n * 10 * 1e3 + 0.5) / 1e3
end

function Mapper:enum(table_name, v, where, column)
    local i = self:integer(v, where, column)
    return i ~= nil and self.enums[table_name][i] or nil
end

-- A key for deterministic UIDs: integers without ".0" whatever the driver returned.
function Mapper:key(v, where, column)
    local t = self:text(v)
    if t == nil then self:fail(where, "%s is missing (needed for the record's UID)", column) end
    return t
end

-- ---- MLC leaf sets ----------------------------------------------------------

--- Decodes one Mosaiq leaf set into positions in mm (see rtbackup.mosaiq.leaves).
M.decode_leaf_set = leaves.decode

function Mapper:mlc(point, where, field_label)
    local a, b = self:binary(point.A_Leaf_Set), self:binary(point.B_Leaf_Set)
    if a == nil or b == nil then return nil end
    local mlc = self.opts.mlc or {}
    if not mlc.encoding then
        self:fail(where, "field %s has MLC leaf sets but the site option mlc.encoding is not set", field_label)
    end
    local count = self:integer(point.MLC_Leaves, where, "MLC_Leaves") or mlc.leaf_pairs
    -- DICOM order: the first bank's N leaves, then the other bank's N.
    local first, second = a, b
    if (mlc.first_bank or "A") == "B" then first, second = b, a end
    local first_name = (mlc.first_bank or "A") == "B" and "B_Leaf_Set" or "A_Leaf_Set"
    local second_name = first_name == "A_Leaf_Set" and "B_Leaf_Set" or "A_Leaf_Set"
    local out = {}
    local n1, err1 = leaves.decode_into(out, 0, mlc.negate_first_bank and -1 or 1, first, mlc.encoding, count)
    if not n1 then self:fail(where, "%s: %s", first_name, err1) end
    local n2, err2 = leaves.decode_into(out, n1, 1, second, mlc.encoding, count)
    if not n2 then self:fail(where, "%s: %s", second_name, err2) end
    if n1 ~= n2 then self:fail(where, "%s has %d leaves, %s %d", first_name, n1, second_name, n2) end
    if mlc.leaf_order == "reversed" then
        -- Leaf 1 of a stored set is DICOM's last leaf of that bank.
        for bank = 0, 1 do
            local lo, hi = bank * n1 + 1, bank * n1 + n1
            while lo < hi do out[lo], out[hi] = out[hi], out[lo]; lo, hi = lo + 1, hi - 1 end
        end
    elseif mlc.leaf_order ~= nil and mlc.leaf_order ~= "as_stored" then
        self:fail(where, "the site choice mlc.leaf_order must be \"as_stored\" or \"reversed\", got %q",
                  tostring(mlc.leaf_order))
    end
    return out, n1
end

-- ---- inference where Mosaiq leaves a Type 1 value unknown -------------------

local DIRECTED = {
    {angle = "gantry_angle", dir = "gantry_direction"},
    {angle = "collimator_angle", dir = "collimator_direction"},
    {angle = "couch_angle", dir = "couch_direction"},
    {angle = "table_top_eccentric_angle", dir = "table_top_eccentric_direction"},
}

-- The direction of the segment after control point k, from the angles.
local function direction_between(a0, a1)
    if a0 == nil or a1 == nil then return nil end
    local delta = (a1 - a0) % 360
    if delta == 0 then return "NONE" end
    return delta < 180 and "CW" or "CC"
end

local function fill_directions(cps)
    for _, d in ipairs(DIRECTED) do
        for k, cp in ipairs(cps) do
            if cp[d.dir] == nil and cp[d.angle] ~= nil then
                local nxt = cps[k + 1]
                cp[d.dir] = nxt and direction_between(cp[d.angle], nxt[d.angle]) or "NONE"
            end
        end
    end
end

local MOVING = {"gantry_angle", "collimator_angle", "couch_angle", "table_top_eccentric_angle",
                "table_top_vertical", "table_top_longitudinal", "table_top_lateral"}

local function same_list(x, y)
    if x == nil or y == nil then return x == y end
    if #x ~= #y then return false end
    for i = 1, #x do if x[i] ~= y[i] then return false end end
    return true
end

-- DICOM: DYNAMIC when a control point attribute changes between consecutive
-- control points with changing meterset.
local function infer_beam_type(cps)
    for k = 1, #cps - 1 do
        local c0, c1 = cps[k], cps[k + 1]
        if c0.delivered_meterset ~= c1.delivered_meterset then
            for _, name in ipairs(MOVING) do
                if c0[name] ~= c1[name] then return "DYNAMIC" end
            end
            for _, name in ipairs{"jaw_x", "jaw_y", "mlc"} do
                if not same_list(c0[name], c1[name]) then return "DYNAMIC" end
            end
        end
    end
    return "STATIC"
end

-- ---- the record -------------------------------------------------------------

-- A site's private block: each element's value read from the delivery group by its
-- `from` path ("site.Site_Name").
function Mapper:private_block(spec)
    if type(spec) ~= "table" or type(spec.creator) ~= "string" or math.type(spec.group) ~= "integer"
       or type(spec.elements) ~= "table" then
        errors.raise{kind = "config", message = "site choice mosaiq.private_block must be false or " ..
                     "{creator = \"...\", group = 0xGGGG, elements = {{element = 0x01, vr = \"LT\", from = \"site.Site_Name\"}}}"}
    end
    local elements = {}
    for i, e in ipairs(spec.elements) do
        local group_name, column = tostring(e.from or ""):match("^(%a+)%.([%w_]+)$")
        local g = group_name and self.group[group_name]
        if type(g) ~= "table" then
            errors.raise{kind = "config", message = string.format(
                "site choice mosaiq.private_block.elements[%d].from must name a delivery value such as " ..
                "\"site.Site_Name\", got %q", i, tostring(e.from))}
        end
        elements[i] = {element = e.element, vr = e.vr or "LT", value = self:text(g[column])}
    end
    return {creator = spec.creator, group = spec.group, block = spec.block, elements = elements}
end

function Mapper:delivery_time(field)
    local dose = field.dose or {}
    return self:text(dose.Tx_DtTm) or self:text(field.Last_Tx_DtTm)
end

function Mapper:control_point(point, field, where, label)
    local cp = {
        index = self:integer(point.Point, where, "Point"),
        specified_meterset = self:number(point.SpecifiedMeterset, where, "SpecifiedMeterset"),
        delivered_meterset = self:number(point.Meterset, where, "Meterset"),
        dose_rate_set = self:number(point.Meterset_Rate, where, "Meterset_Rate"),
        energy = self:number(point.Energy, where, "Energy"),
        energy_unit = self:enum("Energy_Unit_Enum", point.Energy_Unit_Enum, where, "Energy_Unit_Enum"),
        gantry_angle = self:number(point.Gantry_Ang, where, "Gantry_Ang"),
        gantry_direction = self:enum("Dir_Enum", point.Gantry_Dir_Enum, where, "Gantry_Dir_Enum"),
        collimator_angle = self:number(point.Coll_Ang, where, "Coll_Ang"),
        collimator_direction = self:enum("Dir_Enum", point.Coll_Dir_Enum, where, "Coll_Dir_Enum"),
        couch_angle = self:number(point.Couch_Ang, where, "Couch_Ang"),
        couch_direction = self:enum("Dir_Enum", point.Couch_Roll_Dir_Enum, where, "Couch_Roll_Dir_Enum"),
        table_top_eccentric_distance = self:mm(point.Couch_Top_Axis_Distance, where, "Couch_Top_Axis_Distance"),
        table_top_eccentric_angle = self:number(point.Couch_Top, where, "Couch_Top"),
        table_top_eccentric_direction = self:enum("Dir_Enum", point.Couch_Top_Dir_Enum, where, "Couch_Top_Dir_Enum"),
        table_top_vertical = self:mm(point.Couch_Vrt, where, "Couch_Vrt"),
        table_top_longitudinal = self:mm(point.Couch_Lng, where, "Couch_Lng"),
        table_top_lateral = self:mm(point.Couch_Lat, where, "Couch_Lat"),
    }
    if cp.index == nil then self:fail(where, "Point (the control point index) is missing") end
    if self.opts.control_point_time == "point" then
        cp.datetime = self:text(point.Create_DtTm)
    else
        cp.datetime = self:delivery_time(field)
    end
    if cp.datetime == nil then self:fail(where, "no date/time for the control point") end
    if cp.specified_meterset == nil then
        cp.specified_meterset = cp.delivered_meterset
    end
    if cp.delivered_meterset == nil then
        -- [Index] is the cumulative meterset weight in percent of the beam's.
        local index, total = self:number(point.Index, where, "Index"), self:number(field.Meterset, where, "Meterset")
        if index == nil or total == nil then
            self:fail(where, "field %s has no meterset for control point %d", label, cp.index)
        end
        cp.delivered_meterset = index / 100 * total
    end
    local x1, x2 = self:mm(point.Coll_X1, where, "Coll_X1"), self:mm(point.Coll_X2, where, "Coll_X2")
    local y1, y2 = self:mm(point.Coll_Y1, where, "Coll_Y1"), self:mm(point.Coll_Y2, where, "Coll_Y2")
    if x1 and x2 then cp.jaw_x = {x1, x2} end
    if y1 and y2 then cp.jaw_y = {y1, y2} end
    if self.opts.flat_table_top then
        cp.table_top_pitch_angle, cp.table_top_pitch_direction = 0, "NONE"
        cp.table_top_roll_angle, cp.table_top_roll_direction = 0, "NONE"
    end
    return cp
end

function Mapper:beam(field, i)
    local number = self:integer(field.OriginalBeamNumber, nil, "OriginalBeamNumber")
    local name = self:text(field.OriginalBeamName) or self:text(field.Field_Name)
    local label = string.format("%s (FLD_ID %s)", name or tostring(number or i),
                                tostring(self:text(field.FLD_ID) or "?"))
    local where = "field " .. label
    local dose = field.dose or {}
    local radiation = self:enum("Modality_Enum", field.Modality_Enum, where, "Modality_Enum")
    if radiation == nil then
        self:fail(where, "Modality_Enum %s has no DICOM radiation type", tostring(self:value(field.Modality_Enum)))
    end
    local termination = self:enum("Termination_Status_Enum", dose.Termination_Status_Enum, where,
                                  "Termination_Status_Enum") or "UNKNOWN"
    local meterset = self:number(field.Meterset, where, "Meterset")
    local delivered = self:number(dose.Meterset, where, "dose.Meterset")
    if delivered == nil and termination == "NORMAL" then
        delivered = meterset -- a normally terminated beam delivered its whole meterset
    end
    local beam = {
        number = number,
        name = name,
        description = self:text(field.Field_Label),
        radiation_type = radiation,
        beam_type = self:enum("Beam_Type_Flag", field.Beam_Type_Flag, where, "Beam_Type_Flag"),
        termination_status = termination,
        termination_code = self:text(dose.TerminationCode),
        verification_status = self:enum("Termination_Verify_Status_Enum",
                                        dose.Termination_Verify_Status_Enum, where,
                                        "Termination_Verify_Status_Enum"),
        current_fraction = self:integer(dose.Fractions_Tx, where, "Fractions_Tx")
                           or self:integer(self.group.fraction, where, "fraction"),
        specified_meterset = meterset,
        delivered_meterset = delivered,
        sad = self:mm(field.Sad, where, "Sad"),
        n_leaf_pairs = 0,
        control_points = {},
    }
    local points = {}
    for _, p in ipairs(field.points or {}) do points[#points + 1] = p end
    if #points == 0 then self:fail(where, "field %s has no control points (TxFieldPoint rows)", label) end
    table.sort(points, function(a, b)
        return (self:number(a.Point) or -1) < (self:number(b.Point) or -1)
    end)
    local has_mlc = self:value(field.Mlc)
    has_mlc = has_mlc ~= nil and has_mlc ~= 0 and has_mlc ~= false
    for k, p in ipairs(points) do
        local cp_where = string.format("%s, control point %s", where, tostring(self:value(p.Point) or k - 1))
        local cp = self:control_point(p, field, cp_where, label)
        if has_mlc then
            local mlc, pairs_ = self:mlc(p, cp_where, label)
            if mlc then
                if beam.n_leaf_pairs ~= 0 and beam.n_leaf_pairs ~= pairs_ then
                    self:fail(cp_where, "%d MLC leaf pairs, earlier control points had %d", pairs_, beam.n_leaf_pairs)
                end
                beam.n_leaf_pairs, cp.mlc = pairs_, mlc
            end
        end
        beam.control_points[k] = cp
    end
    fill_directions(beam.control_points)
    beam.beam_type = beam.beam_type or infer_beam_type(beam.control_points)
    return beam
end

local function merged_enums(overrides)
    local out = {}
    for name, t in pairs(M.ENUMS) do
        out[name] = {}
        for k, v in pairs(t) do out[name][k] = v end
        for k, v in pairs((overrides or {})[name] or {}) do out[name][k] = v end
    end
    return out
end

local function new_mapper(group, opts)
    opts = opts or {}
    local o = {}
    for k, v in pairs(M.DEFAULTS) do o[k] = v end
    for k, v in pairs(opts) do o[k] = v end
    local self = setmetatable({group = group, opts = o, null = o.null}, Mapper)
    self.enums = merged_enums(o.enums)
    local units = M.ENERGY_UNITS[o.energy_unit_enum]
    if not units then
        errors.raise{kind = "config", message = "mosaiq_map: energy_unit_enum must be kv1_mv2_mev3 or kv0_mv1_mev2, got "
                     .. tostring(o.energy_unit_enum)}
    end
    self.enums.Energy_Unit_Enum = {}
    for k, v in pairs(units) do self.enums.Energy_Unit_Enum[k] = v end
    for k, v in pairs((o.enums or {}).Energy_Unit_Enum or {}) do self.enums.Energy_Unit_Enum[k] = v end
    if type(o.uid_scope) ~= "string" or o.uid_scope == "" then
        errors.raise{kind = "config", message = "mosaiq_map: opts.uid_scope is required (a name unique to this "
                     .. "Mosaiq database, e.g. \"UCLA/MOSAIQ\"), so UIDs of two clinics never collide"}
    end
    return self
end

--- The builder input for one delivery group (raises a clear error for a bad group).
function M.record(group, opts)
    if type(group) ~= "table" then
        errors.raise{kind = "invalid", message = "Mosaiq record: the delivery group must be a table"}
    end
    local self = new_mapper(group, opts)
    local o = self.opts
    if group.error ~= nil then
        -- mosaiq.deliveries found rows that contradict each other: not archivable.
        self:fail(nil, "%s", tostring(group.error))
    end
    local patient, site, plan = group.patient or {}, group.site or {}, group.plan or {}
    local machine = group.machine or {}
    self.patient_id = self:text(patient.IDA)
    self.plan_uid = self:text(plan.OriginalPlanUID)
    if not self.patient_id then self:fail(nil, "the patient has no MRN (Ident.IDA)") end
    if not self.plan_uid then self:fail(nil, "OriginalPlanUID is missing") end
    if not self:text(plan.StudyInstanceUID) then self:fail(nil, "the RT Plan's StudyInstanceUID is missing") end
    local fraction = self:integer(group.fraction, nil, "fraction")
    if fraction == nil then self:fail(nil, "the delivered fraction number is missing") end

    local fields = {}
    for _, f in ipairs(group.fields or {}) do fields[#fields + 1] = f end
    if #fields == 0 then self:fail(nil, "no delivered fields") end
    table.sort(fields, function(a, b)
        -- Beam, field, dose-history row: a total order, so the beams come out the
        -- same way whatever order the rows arrived in.
        for _, column in ipairs{"OriginalBeamNumber", "FLD_ID"} do
            local x, y = self:number(a[column]) or math.huge, self:number(b[column]) or math.huge
            if x ~= y then return x < y end
        end
        return (self:number((a.dose or {}).DHS_ID) or 0) < (self:number((b.dose or {}).DHS_ID) or 0)
    end)

    local beams, dose_keys, first_tx, last_tx = {}, {}, nil, nil
    for i, f in ipairs(fields) do
        beams[i] = self:beam(f, i)
        local where = "field " .. tostring(beams[i].name or i)
        dose_keys[#dose_keys + 1] = self:key((f.dose or {}).DHS_ID, where, "Dose_Hst.DHS_ID")
        local t = self:delivery_time(f)
        if t then
            if not first_tx or t < first_tx then first_tx = t end
            if not last_tx or t > last_tx then last_tx = t end
        end
    end
    table.sort(dose_keys, function(a, b)
        local na, nb = tonumber(a), tonumber(b)
        if na and nb and na ~= nb then return na < nb end
        return a < b
    end)

    local site_key = self:key(site.SIT_SET_ID, nil, "SIT_SET_ID")
    local fraction_key = string.format("%d", fraction)
    local input = {
        -- Deterministic UIDs from the Mosaiq keys: a rerun of the day gives the same
        -- instances, so the archive never holds duplicates.
        sop_instance_uid = dicom.uid(o.uid_scope, "rtrecord", site_key, self.plan_uid, fraction_key,
                                     table.concat(dose_keys, ",")),
        creation_datetime = last_tx,
        instance_number = fraction,
        patient = {
            name = {family = self:text(patient.Last_Name), given = self:text(patient.First_Name),
                    middle = self:text(patient.MIddle_Name), suffix = self:text(patient.Suffix)},
            id = self.patient_id,
            birth_date = self:text(patient.Birth_DtTm),
            sex = ({MALE = "M", M = "M", FEMALE = "F", F = "F", OTHER = "O", O = "O"})[
                (self:text(patient.Sex) or ""):upper()],
        },
        study = {
            instance_uid = self:text(plan.StudyInstanceUID),
            id = self:text(plan.StudyID),
            datetime = self:text(plan.Study_DtTm),
            description = self:text(plan.StudyDescription),
        },
        series = {
            instance_uid = dicom.uid(o.uid_scope, "rtrecord-series", site_key, self.plan_uid),
            number = o.series_number,
            description = o.series_description,
        },
        equipment = o.equipment,
        treatment_datetime = first_tx,
        plan_uid = self.plan_uid,
        machine = {
            -- Treatment Machine Name is SH: 16 characters at most.
            name = self:text(machine.Source_Name) or self:text(machine.Last_Name),
            model_name = self:text(machine.Source_Model),
            institution_name = o.institution_name or self:text(machine.Inst_Name),
        },
        fractions_planned = self:integer(site.Fractions, nil, "Site.Fractions"),
        primary_dosimeter_unit = o.primary_dosimeter_unit,
        beams = beams,
    }
    local name = input.machine.name
    if name and #name > 16 then
        -- Cut before the character that crosses byte 16, never inside one.
        local n = 16
        while n > 0 and (name:byte(n + 1) & 0xC0) == 0x80 do n = n - 1 end
        input.machine.name = name:sub(1, n)
    end
    if o.private_block then input.private_block = self:private_block(o.private_block) end
    if o.adjust_record then input = o.adjust_record(input, group) or input end
    return input
end

--- The RT Beams Treatment Record for one delivery group. Errors name the patient,
-- plan, fraction and field, so a caller can log one line per bad record and go on.
function M.build(group, opts)
    local input = M.record(group, opts)
    local ok, ds = pcall(rtrecord.beams_treatment_record, input)
    if ok then return ds end
    local err = ds
    if errors.is(err) and err.field then
        -- "beams[2].control_points[1].gantry_angle" -> the Mosaiq field it came from.
        local i = err.field:match("^beams%[(%d+)%]")
        local beam = i and input.beams[tonumber(i)]
        local where = beam and string.format("field %s: %s", tostring(beam.name or beam.number), err.message)
                      or err.message
        errors.raise{kind = err.kind, field = err.field,
                     message = "Mosaiq record for " .. context(group) .. ": " .. where,
                     patient = input.patient.id, plan = input.plan_uid, fraction = group.fraction}
    end
    error(err, 0)
end

return M
