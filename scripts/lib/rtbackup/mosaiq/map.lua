--- rtbackup.mosaiq.map: one Mosaiq record group (rtbackup.mosaiq.query.deliveries) ->
-- the input of rtbackup.rtrecord.beams_treatment_record (see rtrecord.lua).
--
--   local map = require "rtbackup.mosaiq.map"
--   local ds, warnings = map.build(group, opts)   -- the RT Beams Treatment Record, and what looked wrong
--   local input, warnings = map.record(group, opts) -- just the builder input
--
-- What was DELIVERED comes from the delivery history, what was PLANNED from the plan,
-- and the record never shows one as the other (docs/mosaiq.md has the column of every
-- attribute and why):
--   * Delivered Primary Meterset = Dose_Hst.Meterset, the MU this delivery gave. Where
--     Mosaiq has none, a NORMAL termination means the beam gave the rest of its
--     planned MU (said in the log); any other termination without it cannot be
--     recorded truthfully and the group is refused.
--   * A delivery that continues an interrupted one (Dose_Hst.MetersetPrevDelivered =
--     MU already given) is Treatment Delivery Type CONTINUATION, and its control points
--     start from there: PS3.3 C.8.8.21.2.2, DelMS[k] = MAX(StartMS, MIN(SpecMS[k],
--     EndMS)), so the interrupted and the continuing records add up to the beam once.
--   * Specified Meterset per control point = TxFieldPoint.[Index] / [Index] of the last
--     point x TxField.Meterset (the plan's cumulative meterset weight).
--   * The field and site are the versions in force at the delivery (the query joins the
--     IDs Dose_Hst recorded).
--   * Accessories: BLDevices_Hst (wedge angle, orientation, IDs), else FLD_HST's
--     accessory columns (an ID without details); Number of Wedges/... = list lengths.
--   * Plausibility: values outside what a linac can do (IEC 61217 ranges) and enum
--     values the tables do not know are warnings naming patient, plan, fraction, field
--     and the raw value; an unknown enum is never silently made UNKNOWN.
--
-- opts: the site's `mosaiq` choices (scripts/default/site.lua lists them) plus
--   uid_scope (required: the Mosaiq database's UID namespace) and null (ODBC's NULL).
-- The record's SOP Instance UID is derived from its content (with the scope): the same
-- deliveries always give the same record, bytes included; a corrected delivery row
-- gives a new record with its own UID. map.record leaves sop_instance_uid to the
-- caller; map.build derives it.
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local leaves = require "rtbackup.mosaiq.leaves"
local rtrecord = require "rtbackup.rtrecord"

local M = {}

M.ENUMS = {
    -- X-rays, electrons, Co-60 (pymedphys' tolerance tables). 8 (Ir-192) and the
    -- other brachytherapy kinds never reach here: the query skips them.
    Modality_Enum = {[1] = "PHOTON", [2] = "ELECTRON", [3] = "PHOTON", [6] = "PROTON"},
    Beam_Type_Flag = {[1] = "STATIC", [2] = "DYNAMIC"},
    Termination_Status_Enum = {[0] = "UNKNOWN", [1] = "NORMAL", [2] = "OPERATOR", [3] = "MACHINE"},
    -- 0 "Unspecified" leaves the Type 2 verification status empty.
    Termination_Verify_Status_Enum = {[0] = false, [1] = "VERIFIED", [2] = "VERIFIED_OVR", [3] = "NOT_VERIFIED"},
    Dir_Enum = {[1] = "CW", [2] = "CC", [3] = "NONE"},
    -- 1 MU, 4 minutes; 2 (mAs), 3 (MP) and 5 (seconds) have no DICOM term.
    MetersetUnit_Enum = {[1] = "MU", [4] = "MINUTE"},
    -- Which accessory a BLDevices_Hst row is: a site confirms its own values (public
    -- sources do not document them; docs/mosaiq.md, query V6).
    Device_Enum = {[1] = "wedge", [2] = "block", [3] = "compensator", [4] = "bolus"},
    Gender = {Male = "M", MALE = "M", M = "M", Female = "F", FEMALE = "F", F = "F", Other = "O",
              OTHER = "O", O = "O"},
}

-- The two conventions seen for Energy_Unit_Enum (pymedphys: 1 KV, 2 MV, 3 MEV).
M.ENERGY_UNITS = {
    kv1_mv2_mev3 = {[1] = "KV", [2] = "MV", [3] = "MEV"},
    kv0_mv1_mev2 = {[0] = "KV", [1] = "MV", [2] = "MEV"},
}

-- TxField.Type_Enum of an MV setup field (pymedphys' FIELD_TYPES): Treatment Delivery
-- Type SETUP. kV setup, CT and MV CT fields are images, never recorded (rtbackup.mosaiq.query).
M.SETUP_FIELD = 3

M.DEFAULTS = {
    energy_unit_enum = "kv1_mv2_mev3",
    control_point_time = "delivery",
    primary_dosimeter_unit = "MU",
    series_description = "Treatment records (Mosaiq)",
    -- The record series is ours to number; a number (rather than the empty Type 2
    -- value) lets DICOMDIR-minded viewers list it.
    series_number = 1,
    mlc = {first_bank = "A", negate_first_bank = false, leaf_order = "as_stored"},
    machines = {},
}

-- What a linac can do (IEC 61217 scales, mm and degrees): outside, a value is a
-- warning, the record is still written as Mosaiq has it.
M.PLAUSIBLE = {
    sad = {500, 1500}, angle = {0, 360}, position = {-2000, 2000}, jaw = {-400, 400}, leaf = {-400, 400},
    energy = {0.01, 50}, meterset = {0, 10000},
}

-- ---- values -----------------------------------------------------------------

local function context(group)
    local p, plan = group.patient or {}, group.plan or {}
    return string.format("patient %s, plan %s, fraction %s", tostring(p.IDA or p.Pat_ID1 or "?"),
                         tostring(plan.OriginalPlanUID or "?"), tostring(group.fraction or "?"))
end

local Mapper = {}
Mapper.__index = Mapper

-- Where a message points. A control point's place is a reusable table {field =, point =}
-- (see Mapper:beam), made into text only when a message names it.
local function where_text(where)
    if type(where) == "table" then
        return string.format("%s, control point %s", where.field, tostring(where.point))
    end
    return where
end

function Mapper:fail(where, fmt, ...)
    local message = string.format(fmt, ...)
    where = where_text(where)
    if where then message = where .. ": " .. message end
    errors.raise{kind = "invalid", message = "Mosaiq record for " .. context(self.group) .. ": " .. message,
                 patient = self.patient_id, plan = self.plan_uid, fraction = self.group.fraction}
end

--- A warning about the record (it is still built): {patient, plan, fraction, field, message}.
function Mapper:warn(where, fmt, ...)
    local message = string.format(fmt, ...)
    self.warnings[#self.warnings + 1] = {patient = self.patient_id, plan = self.plan_uid,
                                         fraction = self.group.fraction, field = where_text(where),
                                         message = message}
end

local SPACE = {[9] = true, [10] = true, [13] = true, [32] = true}
local byte, floor, mathtype, unpack = string.byte, math.floor, math.type, table.unpack
local type, tostring, tonumber = type, tostring, tonumber

-- The column readers below are local functions taking the mapper (self) first: they
-- run a few hundred times per record, and a plain call skips the method look-up.

-- nil for NULL, missing, and blank text; text trimmed (CHAR columns come padded).
local function value(self, v)
    local t = type(v)
    if t == "number" then return v end -- most columns: nothing to look at
    if v == nil or (self.null ~= nil and v == self.null) then return nil end
    if t == "string" then
        if v == "" then return nil end
        if SPACE[byte(v, 1)] or SPACE[byte(v, -1)] then
            v = v:match("^%s*(.-)%s*$")
            if v == "" then return nil end
        end
    end
    return v
end

-- Binary columns: only NULL/missing is "absent", bytes are never trimmed.
local function binary(self, v)
    if v == nil or (self.null ~= nil and v == self.null) then return nil end
    return v
end

local function text(self, v)
    if type(v) == "string" then return value(self, v) end -- trimmed, or nil if blank
    v = value(self, v)
    if v == nil then return nil end
    if type(v) == "number" and math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2^53 then
        return string.format("%d", v) -- 70001.0 from one driver is 70001 from another
    end
    return tostring(v)
end

-- A number, or a failure naming the column and the text that is not one.
local function number(self, v, where, column)
    if v == nil then return nil end
    if type(v) == "number" then return v end
    v = value(self, v)
    if v == nil then return nil end
    local n = tonumber(v)
    if n == nil then self:fail(where, "%s is %q, which is not a number", column, tostring(v)) end
    return n
end

local function integer(self, v, where, column)
    if mathtype(v) == "integer" then return v end
    local n = number(self, v, where, column)
    if n == nil then return nil end
    local i = math.tointeger(n)
    if i == nil then self:fail(where, "%s is %s, which is not an integer", column, tostring(n)) end
    return i
end

-- Mosaiq stores cm. The product is rounded to 1 µm: 12.34 * 10 is
-- 123.40000000000001 in binary floating point, and the record should say 123.4.
local function mm(self, v, where, column)
    local n = v
    if type(n) ~= "number" then n = number(self, v, where, column) end
    return n and floor(n * 10 * 1e3 + 0.5) / 1e3
end

-- An enum's term. A value the table does not know is a warning with the raw value
-- (never an invented term): nil is returned, and the caller decides what the record
-- says (an empty Type 2 value, UNKNOWN where the standard has that term).
local function enum(self, table_name, v, where, column)
    local i = integer(self, v, where, column)
    if i == nil then return nil end
    local term = self.enums[table_name][i]
    if term == nil then
        self:warn(where, "%s = %d is not a value rtbackup knows; kept out of the record", column, i)
        return nil
    end
    return term or nil -- false: known, and deliberately empty
end

-- Warns when n lies outside the plausible range `range` ({lo, hi}).
local function check(self, n, range, where, column, unit)
    if n ~= nil and (n < range[1] or n > range[2]) then
        self:warn(where, "%s = %s%s is outside %s..%s%s: implausible", column, tostring(n), unit or "",
                  tostring(range[1]), tostring(range[2]), unit or "")
    end
    return n
end

-- ---- MLC leaf sets ----------------------------------------------------------

--- Decodes one Mosaiq leaf set into positions in mm (see rtbackup.mosaiq.leaves).
M.decode_leaf_set = leaves.decode

function Mapper:mlc(point, where, field_label, mlc)
    local a, b = binary(self, point.A_Leaf_Set), binary(self, point.B_Leaf_Set)
    if a == nil or b == nil then return nil end
    if not mlc.encoding then
        self:fail(where, "field %s has MLC leaf sets but the site choice mosaiq.mlc.encoding is not set", field_label)
    end
    local count = integer(self, point.MLC_Leaves, where, "MLC_Leaves") or mlc.leaf_pairs
    -- DICOM order: the first bank's N leaves, then the other bank's N.
    local first, second = a, b
    if (mlc.first_bank or "A") == "B" then first, second = b, a end
    local first_name = (mlc.first_bank or "A") == "B" and "B_Leaf_Set" or "A_Leaf_Set"
    local second_name = first_name == "A_Leaf_Set" and "B_Leaf_Set" or "A_Leaf_Set"
    -- The decoded sets are shared (leaves.decoded): copied into a list of the record's
    -- own, the first bank in one step, the second appended.
    local v1, err1 = leaves.decoded(first, mlc.encoding, count)
    if not v1 then self:fail(where, "%s: %s", first_name, err1) end
    local v2, err2 = leaves.decoded(second, mlc.encoding, count)
    if not v2 then self:fail(where, "%s: %s", second_name, err2) end
    local n1, lo1, hi1, n2, lo2, hi2 = v1.n, v1.lo, v1.hi, v2.n, v2.lo, v2.hi
    if n1 ~= n2 then self:fail(where, "%s has %d leaves, %s %d", first_name, n1, second_name, n2) end
    local out = {unpack(v1, 1, n1)}
    if mlc.negate_first_bank then
        for i = 1, n1 do out[i] = -1 * out[i] end
        lo1, hi1 = -hi1, -lo1
    end
    table.move(v2, 1, n2, n1 + 1, out)
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
    local range = M.PLAUSIBLE.leaf
    if math.min(lo1, lo2) < range[1] or math.max(hi1, hi2) > range[2] then
        -- Leaves no MLC can reach, where the other encoding reads both sets within
        -- reach: the site choice is wrong, and every leaf of the record with it. Such a
        -- record is not built (a warning would archive nonsense positions).
        local other = mlc.encoding == "float32_mm" and "int16_0.01cm" or "float32_mm"
        local o1, o2 = leaves.decoded(first, other, count), leaves.decoded(second, other, count)
        if o1 and o2 and o1.n == n1 and o2.n == n2 and math.min(o1.lo, o2.lo) >= range[1]
            and math.max(o1.hi, o2.hi) <= range[2] then
            self:fail(where, "leaf positions outside %s..%s mm read as %s, and all within reach read as %s: is the site choice mosaiq.mlc.encoding right?",
                      range[1], range[2], mlc.encoding, other)
        end
        for i = 1, #out do -- name the first leaf out of range
            if out[i] < range[1] or out[i] > range[2] then
                check(self, out[i], range, where, "leaf position " .. i, " mm")
                break
            end
        end
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
    for i = 1, #DIRECTED do
        local angle, dir = DIRECTED[i].angle, DIRECTED[i].dir
        for k = 1, #cps do
            local cp = cps[k]
            if cp[dir] == nil and cp[angle] ~= nil then
                local nxt = cps[k + 1]
                cp[dir] = nxt and direction_between(cp[angle], nxt[angle]) or "NONE"
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
        if c0.specified_meterset ~= c1.specified_meterset then
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

-- A `from` path ("site.Site_Name") -> {group name, column} ({} if it is not one), read once.
local FROM = setmetatable({}, {__index = function(t, from)
    local parsed = {from:match("^(%a+)%.([%w_]+)$")}
    t[from] = parsed
    return parsed
end})

-- A site's private block: each element's value read from the group by its `from`
-- path ("site.Site_Name").
function Mapper:private_block(spec)
    if type(spec) ~= "table" or type(spec.creator) ~= "string" or math.type(spec.group) ~= "integer"
       or type(spec.elements) ~= "table" then
        errors.raise{kind = "config", message = "site choice mosaiq.private_block must be false or " ..
                     "{creator = \"...\", group = 0xGGGG, elements = {{element = 0x01, vr = \"LT\", from = \"site.Site_Name\"}}}"}
    end
    local elements = {}
    for i, e in ipairs(spec.elements) do
        local from = FROM[tostring(e.from or "")]
        local group_name, column = from[1], from[2]
        local g = group_name and self.group[group_name]
        if type(g) ~= "table" then
            errors.raise{kind = "config", message = string.format(
                "site choice mosaiq.private_block.elements[%d].from must name a delivery value such as " ..
                "\"site.Site_Name\", got %q", i, tostring(e.from))}
        end
        elements[i] = {element = e.element, vr = e.vr or "LT", value = text(self, g[column])}
    end
    return {creator = spec.creator, group = spec.group, block = spec.block, elements = elements}
end

function Mapper:delivery_time(field)
    return text(self, field.dose.Tx_DtTm)
end

-- The meterset a delivery started from and ended at, and the planned total: what the
-- control points' delivered metersets are computed from (C.8.8.21.2.2).
function Mapper:metersets(field, where, termination)
    local dose = field.dose
    local planned = number(self, field.Meterset, where, "TxField.Meterset")
    if planned == nil then self:fail(where, "TxField.Meterset (the planned MU) is missing") end
    local start = number(self, dose.MetersetPrevDelivered, where, "Dose_Hst.MetersetPrevDelivered") or 0
    local delivered = number(self, dose.Meterset, where, "Dose_Hst.Meterset")
    local partial = value(self, dose.PartiallyTreated)
    partial = partial ~= nil and partial ~= 0 and partial ~= "0" and partial ~= false
    if delivered == nil then
        if termination ~= "NORMAL" then
            self:fail(where, "the delivery ended %s and Mosaiq recorded no delivered meterset (Dose_Hst.Meterset): " ..
                      "what it gave is not known", termination or "with no termination status")
        end
        if partial then
            self:fail(where, "Mosaiq marks the delivery partially treated (Dose_Hst.PartiallyTreated) and recorded " ..
                      "no delivered meterset (Dose_Hst.Meterset): what it gave is not known")
        end
        -- A normal termination gives the rest of the planned meterset.
        delivered = math.max(0, planned - start)
        self:warn(where, "Dose_Hst.Meterset is empty: the delivered MU is taken as the planned %s less the %s " ..
                  "delivered before (normal termination)", tostring(planned), tostring(start))
    end
    check(self, planned, M.PLAUSIBLE.meterset, where, "TxField.Meterset", " MU")
    if delivered < 0 then self:warn(where, "Dose_Hst.Meterset = %s is negative: implausible", tostring(delivered)) end
    if start + delivered > planned * 1.02 + 0.5 then
        self:warn(where, "delivered %s MU (+%s before) exceeds the planned %s MU", tostring(delivered),
                  tostring(start), tostring(planned))
    elseif termination == "NORMAL" and start + delivered < planned * 0.98 - 0.5 then
        -- Recorded as Mosaiq has it: the record says what was given, and this says it
        -- falls short of the plan although the beam ended normally.
        self:warn(where, "delivered %s MU (+%s before) of the planned %s MU, yet the termination is NORMAL%s",
                  tostring(delivered), tostring(start), tostring(planned),
                  partial and " (Mosaiq marks it partially treated)" or "")
    end
    return start, start + delivered, planned, delivered
end

-- "TxFieldPoint_Hst.<column>": the name of a column the console recorded.
local RECORDED = setmetatable({}, {__index = function(t, column)
    local name = "TxFieldPoint_Hst." .. column
    t[column] = name
    return name
end})

-- Where the console recorded the couch (TxFieldPoint_Hst: the plan's position plus the
-- day's image-guided shift). At a point it did not record, the couch is where it was if
-- the plan does not move it; otherwise the value stays empty (Type 2): the planned
-- position never poses as the delivered one.
function Mapper:position(point, actual, previous_point, previous_cp, column, key, where)
    local v = mm(self, actual[column], where, RECORDED[column])
    if v == nil and previous_point and previous_cp[key] ~= nil
       and mm(self, point[column], where, column) == mm(self, previous_point[column], where, column) then
        v = previous_cp[key]
    end
    return check(self, v, M.PLAUSIBLE.position, where, column, " mm")
end

-- Angles as recorded where the console did, else as planned: record-and-verify holds
-- the machine to the planned angle within tolerance before it beams on. A point whose
-- plan gives no angle keeps the one before (as an RT Plan's control points give only
-- what changes).
function Mapper:angle(point, actual, column, where, previous_cp, key)
    local v = number(self, actual[column], where, RECORDED[column])
    if v == nil then v = number(self, point[column], where, column) end
    if v == nil and previous_cp then return previous_cp[key] end
    return check(self, v, M.PLAUSIBLE.angle, where, column, "°")
end

function Mapper:jaw(point, column, where)
    return check(self, mm(self, point[column], where, column), M.PLAUSIBLE.jaw, where, column, " mm")
end

local NO_ACTUAL = {} -- a point the console recorded nothing for (only read)

-- previous_point, previous_cp: the control point before (its row and what it became),
-- nil for the first.
function Mapper:control_point(point, field, where, label, ms, previous_point, previous_cp)
    local actual = type(point.actual) == "table" and point.actual or NO_ACTUAL
    local index = number(self, point.Index, where, "TxFieldPoint.Index")
    if index == nil and ms.planned > 0 then
        self:fail(where, "TxFieldPoint.Index (the cumulative meterset weight) is missing")
    end
    local specified = ms.last_index > 0 and index and index / ms.last_index * ms.planned or 0
    specified = floor(specified * 1e4 + 0.5) / 1e4
    local cp = {
        index = integer(self, point.Point, where, "Point"),
        specified_meterset = specified,
        delivered_meterset = math.max(ms.start, math.min(specified, ms.finish)),
        dose_rate_set = number(self, point.Meterset_Rate, where, "Meterset_Rate"),
        dose_rate_delivered = number(self, actual.Meterset_Rate, where, "TxFieldPoint_Hst.Meterset_Rate"),
        energy = check(self, number(self, point.Energy, where, "Energy"), M.PLAUSIBLE.energy, where, "Energy"),
        energy_unit = enum(self, "Energy_Unit_Enum", point.Energy_Unit_Enum, where, "Energy_Unit_Enum"),
        gantry_angle = self:angle(point, actual, "Gantry_Ang", where, previous_cp, "gantry_angle"),
        gantry_direction = enum(self, "Dir_Enum", point.Gantry_Dir_Enum, where, "Gantry_Dir_Enum"),
        collimator_angle = self:angle(point, actual, "Coll_Ang", where, previous_cp, "collimator_angle"),
        collimator_direction = enum(self, "Dir_Enum", point.Coll_Dir_Enum, where, "Coll_Dir_Enum"),
        couch_angle = self:angle(point, actual, "Couch_Ang", where, previous_cp, "couch_angle"),
        couch_direction = enum(self, "Dir_Enum", point.Couch_Ang_Dir_Enum, where, "Couch_Ang_Dir_Enum"),
        table_top_eccentric_distance = mm(self, point.Couch_Top_Axis_Distance, where, "Couch_Top_Axis_Distance"),
        table_top_eccentric_angle = self:angle(point, actual, "Couch_Top", where, previous_cp,
                                               "table_top_eccentric_angle"),
        table_top_eccentric_direction = enum(self, "Dir_Enum", point.Couch_Top_Dir_Enum, where, "Couch_Top_Dir_Enum"),
        table_top_vertical = self:position(point, actual, previous_point, previous_cp, "Couch_Vrt",
                                           "table_top_vertical", where),
        table_top_longitudinal = self:position(point, actual, previous_point, previous_cp, "Couch_Lng",
                                               "table_top_longitudinal", where),
        table_top_lateral = self:position(point, actual, previous_point, previous_cp, "Couch_Lat",
                                          "table_top_lateral", where),
    }
    if cp.index == nil then self:fail(where, "Point (the control point index) is missing") end
    if self.opts.control_point_time == "point" then
        cp.datetime = text(self, point.Create_DtTm)
    else
        -- A point the console did not time is given the time of the one before it
        -- (the beam's start for the first): times never run backwards.
        cp.datetime = text(self, actual.Tx_DtTm) or (previous_cp and previous_cp.datetime)
                      or self:delivery_time(field)
    end
    if cp.datetime == nil then self:fail(where, "no date/time for the control point") end
    local x1, x2 = self:jaw(point, "Coll_X1", where), self:jaw(point, "Coll_X2", where)
    local y1, y2 = self:jaw(point, "Coll_Y1", where), self:jaw(point, "Coll_Y2", where)
    if x1 and x2 then cp.jaw_x = {x1, x2} end
    if y1 and y2 then cp.jaw_y = {y1, y2} end
    if self.opts.flat_table_top then
        cp.table_top_pitch_angle, cp.table_top_pitch_direction = 0, "NONE"
        cp.table_top_roll_angle, cp.table_top_roll_direction = 0, "NONE"
    else
        cp.table_top_pitch_angle = self:angle(point, actual, "Couch_Pitch_Ang", where, previous_cp,
                                              "table_top_pitch_angle")
        cp.table_top_pitch_direction = enum(self, "Dir_Enum", point.Couch_Pitch_Dir_Enum, where, "Couch_Pitch_Dir_Enum")
        cp.table_top_roll_angle = self:angle(point, actual, "Couch_Roll_Ang", where, previous_cp,
                                             "table_top_roll_angle")
        cp.table_top_roll_direction = enum(self, "Dir_Enum", point.Couch_Roll_Dir_Enum, where, "Couch_Roll_Dir_Enum")
    end
    return cp
end

-- FLD_HST's column for each kind of accessory.
local ACCESSORY_COLUMNS = {wedge = "Wdg_Appl", block = "Block", compensator = "Comp_FDA", bolus = "Bolus"}

local function is_none(text)
    return text == nil or text:upper() == "NONE" or text == "0"
end

-- An electron applicator's Applicator Type from its ID: the site's table
-- (mosaiq.applicator_types), else the usual names of square and rectangular cones
-- ("A10", "10x10", "6X10"). Another name cannot be told: the record is refused, since
-- it would otherwise not say the beam had an applicator.
function Mapper:applicator_type(id, where)
    local t = (self.opts.applicator_types or {})[id]
    if t then return t end
    local a, b = id:upper():match("(%d+%.?%d*)%s*X%s*(%d+%.?%d*)")
    if a then return tonumber(a) == tonumber(b) and "ELECTRON_SQUARE" or "ELECTRON_RECT" end
    if id:upper():match("^A%d+$") then return "ELECTRON_SQUARE" end
    self:fail(where, "the electron applicator %q is of a shape rtbackup cannot tell (site choice " ..
              "mosaiq.applicator_types, e.g. {[%q] = \"ELECTRON_CIRC\"})", id, id)
end

-- The accessories of a delivery: BLDevices_Hst rows (with details), else FLD_HST's
-- accessory columns (an ID only). A device of a kind rtbackup cannot tell is a failure:
-- the record would otherwise say the beam had none. Mosaiq keeps a wedge or, for an
-- electron beam, the applicator in one column (Wdg_Appl).
function Mapper:accessories(field, beam, where)
    local kinds = {wedge = {}, block = {}, compensator = {}, bolus = {}, applicator = {}}
    for _, d in ipairs(field.devices or {}) do
        local n = integer(self, d.Device_Enum, where, "BLDevices_Hst.Device_Enum")
        local kind = n and self.enums.Device_Enum[n]
        local id = text(self, d.Device_ID) or text(self, d.Description)
        if not kind then
            self:fail(where, "BLDevices_Hst.Device_Enum = %s (device %s) is not a kind of accessory rtbackup knows " ..
                      "(site choice mosaiq.enums.Device_Enum)", tostring(n), tostring(id))
        end
        local a = {id = id, accessory_code = text(self, d.Barcode_String)}
        if kind == "wedge" then
            a.type = "STANDARD"
            a.angle = number(self, d.Wedge_Angle, where, "Wedge_Angle")
            a.orientation = number(self, d.Wedge_Orientation, where, "Wedge_Orientation")
        elseif kind == "block" then
            a.name = text(self, d.Description)
        elseif kind == "applicator" then
            a.type = self:applicator_type(id or "", where)
        end
        table.insert(kinds[kind], a)
    end
    local delivered = field.delivered or {}
    for kind, column in pairs(ACCESSORY_COLUMNS) do
        local id = text(self, delivered[column])
        if kind == "wedge" and beam.radiation_type == "ELECTRON" then kind = "applicator" end
        if #kinds[kind] == 0 and not is_none(id) then
            if kind == "applicator" then
                kinds[kind][1] = {id = id, type = self:applicator_type(id, where)}
            elseif kind == "block" then
                kinds[kind][1] = {name = id} -- the block's (cutout's) name; the tray is not known
            else
                kinds[kind][1] = {id = id, type = kind == "wedge" and "STANDARD" or nil}
            end
        end
    end
    local dynamic = text(self, delivered.Dyn_Wedge)
    if not is_none(dynamic) then kinds.wedge[#kinds.wedge + 1] = {id = dynamic, type = "DYNAMIC"} end
    beam.wedges, beam.blocks = kinds.wedge, kinds.block
    beam.compensators, beam.boli = kinds.compensator, kinds.bolus
    if #kinds.applicator > 0 then beam.applicators = kinds.applicator end
end

-- The site's MLC choices with the machine's over them: the same for every beam.
function Mapper:mlc_options()
    local mlc_opts = self.mlc_opts
    if not mlc_opts then
        mlc_opts = {}
        for k, v in pairs(self.opts.mlc or {}) do mlc_opts[k] = v end
        for k, v in pairs(self.machine_choice.mlc or {}) do mlc_opts[k] = v end
        self.mlc_opts = mlc_opts
    end
    return mlc_opts
end

function Mapper:beam(field, i)
    local dose, delivered_row = field.dose, field.delivered or {}
    local beam_number = integer(self, field.OriginalBeamNumber, nil, "OriginalBeamNumber")
    local name = text(self, field.OriginalBeamName) or text(self, field.Field_Name)
    local label = string.format("%s (FLD_ID %s)", name or tostring(beam_number or i),
                                tostring(text(self, field.FLD_ID) or "?"))
    local where = "field " .. label
    local modality = value(self, dose.Modality_Enum) ~= nil and dose.Modality_Enum or field.Modality_Enum
    local radiation = enum(self, "Modality_Enum", modality, where, "Modality_Enum")
    if radiation == nil then
        -- A field that neither planned nor gave any MU (an imaging or setup field of
        -- another kind) adds nothing to what was delivered: the record goes on without it.
        if (number(self, field.Meterset) or 0) == 0 and (number(self, dose.Meterset) or 0) == 0 then
            self:warn(where, "Modality_Enum %s has no DICOM radiation type and the field gave no MU: left out of " ..
                      "the record", tostring(value(self, modality)))
            return nil
        end
        self:fail(where, "Modality_Enum %s has no DICOM radiation type", tostring(value(self, modality)))
    end
    local termination = enum(self, "Termination_Status_Enum", dose.Termination_Status_Enum, where,
                                  "Termination_Status_Enum") or "UNKNOWN"
    local start, finish, planned, delivered = self:metersets(field, where, termination)
    local fff = value(self, delivered_row.IsFFF)
    local timer = number(self, delivered_row.BackupTimerDelivered, where, "FLD_HST.BackupTimerDelivered")
    local beam = {
        number = beam_number,
        name = name,
        description = text(self, field.Field_Label),
        radiation_type = radiation,
        beam_type = enum(self, "Beam_Type_Flag", value(self, delivered_row.Beam_Type_Flag) ~= nil and
                              delivered_row.Beam_Type_Flag or field.Beam_Type_Flag, where, "Beam_Type_Flag"),
        delivery_type = start > 0 and "CONTINUATION"
                        or (integer(self, field.Type_Enum) == M.SETUP_FIELD and "SETUP") or "TREATMENT",
        fluence_mode = (fff ~= nil and fff ~= 0) and "NON_STANDARD" or nil,
        fluence_mode_id = (fff ~= nil and fff ~= 0) and "FFF" or nil,
        termination_status = termination,
        termination_code = text(self, dose.TerminationCode),
        verification_status = enum(self, "Termination_Verify_Status_Enum", dose.Termination_Verify_Status_Enum,
                                        where, "Termination_Verify_Status_Enum"),
        current_fraction = integer(self, dose.Fractions_Tx, where, "Fractions_Tx")
                           or integer(self, self.group.fraction, where, "fraction"),
        specified_meterset = planned,
        delivered_meterset = delivered,
        -- FLD_HST's backup timer is in minutes; the record's time is in seconds.
        delivered_time = timer and timer * 60 or nil,
        sad = check(self, mm(self, field.Sad, where, "Sad"), M.PLAUSIBLE.sad, where, "Sad", " mm"),
        n_leaf_pairs = 0,
        control_points = {},
    }
    self:accessories(field, beam, where)
    local points = {}
    for _, p in ipairs(field.points or {}) do points[#points + 1] = p end
    if #points == 0 then self:fail(where, "field %s has no control points (TxFieldPoint rows)", label) end
    if #points > 1 then
        -- By Point; rows mostly come in that order already, and a sorted list is left as it is.
        local key, sorted = {}, true
        for k = 1, #points do
            local p = points[k]
            key[p] = number(self, p.Point) or -1
            if k > 1 and not (key[points[k - 1]] < key[p]) then sorted = false end
        end
        if not sorted then table.sort(points, function(a, b) return key[a] < key[b] end) end
    end
    local ms = {start = start, finish = finish, planned = planned,
                last_index = number(self, points[#points].Index, where, "TxFieldPoint.Index") or 0}
    if ms.last_index <= 0 and planned > 0 then
        self:fail(where, "the last control point's Index is %s: the plan's meterset weights cannot be read",
                  tostring(ms.last_index))
    end
    local has_mlc = value(self, field.Mlc)
    has_mlc = has_mlc ~= nil and has_mlc ~= 0 and has_mlc ~= false
    local mlc_opts = self:mlc_options()
    local previous_point, previous_cp
    -- Made into "<where>, control point <point>" only when a message names it.
    local cp_where = {field = where}
    for k = 1, #points do
        local p = points[k]
        cp_where.point = value(self, p.Point) or k - 1
        local cp = self:control_point(p, field, cp_where, label, ms, previous_point, previous_cp)
        if previous_cp and cp.specified_meterset < previous_cp.specified_meterset then
            self:warn(cp_where, "the cumulative meterset decreases (%s after %s): implausible",
                      tostring(cp.specified_meterset), tostring(previous_cp.specified_meterset))
        end
        previous_point, previous_cp = p, cp
        if has_mlc then
            local mlc, pairs_ = self:mlc(p, cp_where, label, mlc_opts)
            if mlc then
                if beam.n_leaf_pairs ~= 0 and beam.n_leaf_pairs ~= pairs_ then
                    self:fail(cp_where, "%d MLC leaf pairs, earlier control points had %d", pairs_, beam.n_leaf_pairs)
                end
                beam.n_leaf_pairs, cp.mlc = pairs_, mlc
            end
        end
        beam.control_points[k] = cp
    end
    -- An over-delivery shows at the last control point too (C.8.8.21.2.1: the beam's
    -- delivered meterset is what its control points accumulate), not capped at the plan.
    local last = beam.control_points[#points]
    if finish > last.delivered_meterset then last.delivered_meterset = finish end
    fill_directions(beam.control_points)
    beam.beam_type = beam.beam_type or infer_beam_type(beam.control_points)
    return beam
end

-- A beam given more than once in one record (not an interruption and its
-- continuation) adding up to more than its plan: a possible double treatment, said.
function Mapper:warn_repeated_beams(beams)
    local given, times = {}, {}
    for _, b in ipairs(beams) do
        local k = b.number or b.name
        if k ~= nil and b.delivery_type ~= "CONTINUATION" then times[k] = (times[k] or 0) + 1 end
        if k ~= nil then given[k] = (given[k] or 0) + (b.delivered_meterset or 0) end
    end
    for _, b in ipairs(beams) do
        local k = b.number or b.name
        if k ~= nil and times[k] and times[k] > 1 and b.specified_meterset
           and given[k] > b.specified_meterset * 1.02 + 0.5 then
            self:warn("beam " .. tostring(k), "given %d times in this record, %s MU in all of the planned %s MU: " ..
                      "a repeated treatment?", times[k], tostring(given[k]), tostring(b.specified_meterset))
            times[k] = nil -- said once
        end
    end
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

-- The options with their defaults, and the enum tables they make: worked out once per
-- options table (a run maps thousands of groups with the same one).
local prepared = setmetatable({}, {__mode = "k"})

local function prepare(opts)
    local o = {}
    for k, v in pairs(M.DEFAULTS) do o[k] = v end
    for k, v in pairs(opts) do o[k] = v end
    local enums = merged_enums(o.enums)
    local units = M.ENERGY_UNITS[o.energy_unit_enum]
    if not units then
        errors.raise{kind = "config", message = "mosaiq map: energy_unit_enum must be kv1_mv2_mev3 or kv0_mv1_mev2, got "
                     .. tostring(o.energy_unit_enum)}
    end
    enums.Energy_Unit_Enum = {}
    for k, v in pairs(units) do enums.Energy_Unit_Enum[k] = v end
    for k, v in pairs((o.enums or {}).Energy_Unit_Enum or {}) do enums.Energy_Unit_Enum[k] = v end
    if type(o.uid_scope) ~= "string" or o.uid_scope == "" then
        errors.raise{kind = "config", message = "mosaiq map: opts.uid_scope is required (the UID namespace of this "
                     .. "Mosaiq database, e.g. \"UCLA/MOSAIQ\"), so UIDs of two clinics never collide"}
    end
    return {o = o, enums = enums}
end

local function new_mapper(group, opts)
    opts = opts or {}
    local p = prepared[opts]
    if not p then
        p = prepare(opts)
        prepared[opts] = p
    end
    return setmetatable({group = group, opts = p.o, null = p.o.null, warnings = {}, enums = p.enums}, Mapper)
end

--- The builder input for one group (raises a clear error for a group that cannot be
-- recorded truthfully), and its warnings. group.referenced_records (UIDs) are carried.
function M.record(group, opts)
    if type(group) ~= "table" then
        errors.raise{kind = "invalid", message = "Mosaiq record: the delivery group must be a table"}
    end
    local self = new_mapper(group, opts)
    local o = self.opts
    local patient, site, plan, machine = group.patient or {}, group.site or {}, group.plan or {}, group.machine or {}
    self.patient_id = text(self, patient.IDA)
    self.plan_uid = text(self, plan.OriginalPlanUID)
    if not self.patient_id then self:fail(nil, "the patient has no MRN (Ident.IDA)") end
    if not self.plan_uid then self:fail(nil, "OriginalPlanUID is missing") end
    if not text(self, plan.StudyInstanceUID) then self:fail(nil, "the RT Plan's StudyInstanceUID is missing") end
    local fraction = integer(self, group.fraction, nil, "fraction")
    if fraction == nil then self:fail(nil, "the delivered fraction number is missing") end
    local machine_name = text(self, machine.Last_Name) or text(self, machine.Source_Name)
    local model = text(self, machine.Source_Model)
    local choices = o.machines or {}
    self.machine_choice = (machine_name and choices[machine_name]) or (model and choices[model]) or {}

    local fields = {}
    for _, f in ipairs(group.fields or {}) do fields[#fields + 1] = f end
    if #fields == 0 then self:fail(nil, "no delivered fields") end
    table.sort(fields, function(a, b)
        -- Delivery order, then the delivery history row: the beams come out the same
        -- way whatever order the rows arrived in.
        local ta, tb = text(self, a.dose.Tx_DtTm) or "", text(self, b.dose.Tx_DtTm) or ""
        if ta ~= tb then return ta < tb end
        return (number(self, a.dose.DHS_ID) or 0) < (number(self, b.dose.DHS_ID) or 0)
    end)

    local beams, first_tx, last_edit = {}, nil, nil
    for i = 1, #fields do
        local f = fields[i]
        beams[#beams + 1] = self:beam(f, i)
        local t = self:delivery_time(f)
        if t and (not first_tx or t < first_tx) then first_tx = t end
        local e = text(self, f.dose.Edit_DtTm) or t
        if e and (not last_edit or e > last_edit) then last_edit = e end
    end
    local unit = nil
    for i = 1, #fields do
        local f = fields[i]
        local u = enum(self, "MetersetUnit_Enum", f.dose.MetersetUnit_Enum, "field " .. tostring(f.FLD_ID),
                            "MetersetUnit_Enum")
        unit = unit or u
    end

    local site_key = text(self, site.SIT_SET_ID) or "?"
    local sex = text(self, patient.Gender) or text(self, patient.Sex)
    local sex_term = sex and self.enums.Gender[sex]
    if sex and sex_term == nil then
        self:warn(nil, "Admin.Gender = %q is not a value rtbackup knows; Patient's Sex left empty", sex)
    end
    local input = {
        -- When the delivery history last changed: deterministic, and a corrected row
        -- gives the corrected record a later creation time.
        creation_datetime = last_edit,
        instance_number = fraction,
        patient = {
            name = {family = text(self, patient.Last_Name), given = text(self, patient.First_Name),
                    middle = text(self, patient.MIddle_Name), suffix = text(self, patient.Suffix)},
            id = self.patient_id,
            birth_date = text(self, patient.Birth_DtTm),
            sex = sex_term or nil,
        },
        study = {
            instance_uid = text(self, plan.StudyInstanceUID),
            id = text(self, plan.StudyID),
            datetime = text(self, plan.Study_DtTm),
            description = text(self, plan.StudyDescription),
        },
        series = {
            instance_uid = dicom.uid(o.uid_scope, "rtrecord-series", site_key, self.plan_uid),
            number = o.series_number,
            description = o.series_description,
        },
        equipment = {
            manufacturer = self.machine_choice.manufacturer,
            model_name = model,
            serial_number = self.machine_choice.serial_number,
            institution_name = o.institution_name or nil,
            department_name = text(self, machine.Inst_Name),
        },
        treatment_datetime = first_tx,
        plan_uid = self.plan_uid,
        referenced_records = group.referenced_records,
        machine = {
            -- Treatment Machine Name is SH: 16 characters at most.
            name = machine_name,
            manufacturer = self.machine_choice.manufacturer,
            model_name = model,
            serial_number = self.machine_choice.serial_number,
            institution_name = o.institution_name or nil,
            department_name = text(self, machine.Inst_Name),
        },
        fractions_planned = integer(self, site.Fractions, nil, "Site.Fractions"),
        primary_dosimeter_unit = unit or o.primary_dosimeter_unit,
        beams = beams,
    }
    if #beams == 0 then self:fail(nil, "no delivered field has a radiation type: nothing to record") end
    self:warn_repeated_beams(beams)
    local name = self.machine_choice.name or input.machine.name
    if name and (utf8.len(name) or #name) > 16 then
        -- Treatment Machine Name is SH: 16 characters. Cut there (never inside a
        -- character), and said: two machines may share their first 16.
        input.machine.name = name:sub(1, (utf8.offset(name, 17) or #name + 1) - 1)
        self:warn(nil, "the machine %q is recorded as %q (Treatment Machine Name holds 16 characters; the site " ..
                  "choice mosaiq.machines[%q].name names it)", name, input.machine.name, name)
    else
        input.machine.name = name
    end
    if o.private_block then input.private_block = self:private_block(o.private_block) end
    if o.adjust_record then input = o.adjust_record(input, group) or input end
    return input, self.warnings
end

-- Built first under this UID, then given the one its content derives.
local PLACEHOLDER_UID = "2.25.0"

--- The RT Beams Treatment Record for one group, and its warnings. Errors name the
-- patient, plan, fraction and field, so a caller can name one skipped record and go on.
-- Its SOP Instance UID is derived (in the UID scope) from the canonical digest of the
-- record as built: the same rows always give the same UID and bytes, a changed row
-- another UID.
function M.build(group, opts)
    local input, warnings = M.record(group, opts)
    input.sop_instance_uid = PLACEHOLDER_UID
    local ok, ds, notes = pcall(rtrecord.beams_treatment_record, input)
    if ok then
        ds.SOPInstanceUID = dicom.uid(opts.uid_scope, "rtrecord", ds:digest())
        for _, note in ipairs(notes) do
            warnings[#warnings + 1] = {patient = input.patient.id, plan = input.plan_uid, fraction = group.fraction,
                                       message = note}
        end
        return ds, warnings
    end
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
