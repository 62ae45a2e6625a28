--- rtbackup.pretty: readable text for any Lua value (the REPL prints with pretty.show).
-- Tables print with sorted keys and indentation; cycles are marked; secrets print
-- masked because their __tostring masks them.
local pretty = {}

local function is_identifier(k)
    return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t or {}) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
        local ta, tb = type(a), type(b)
        if ta ~= tb then return ta < tb end
        if ta == "number" or ta == "string" then return a < b end
        return tostring(a) < tostring(b)
    end)
    return keys
end

local function scalar(v)
    if type(v) == "string" then return string.format("%q", v) end
    return tostring(v)
end

local function render(v, indent, seen, out)
    if type(v) ~= "table" or (getmetatable(v) and getmetatable(v).__tostring) then
        out[#out + 1] = scalar(v)
        return
    end
    if seen[v] then
        out[#out + 1] = "<cycle>"
        return
    end
    seen[v] = true
    local keys = sorted_keys(v)
    if #keys == 0 then
        out[#out + 1] = "{}"
        seen[v] = nil
        return
    end
    local n = #v
    out[#out + 1] = "{\n"
    local pad = string.rep("  ", indent + 1)
    for _, k in ipairs(keys) do
        out[#out + 1] = pad
        if not (math.type(k) == "integer" and k >= 1 and k <= n) then
            out[#out + 1] = is_identifier(k) and k or ("[" .. scalar(k) .. "]")
            out[#out + 1] = " = "
        end
        render(v[k], indent + 1, seen, out)
        out[#out + 1] = ",\n"
    end
    out[#out + 1] = string.rep("  ", indent) .. "}"
    seen[v] = nil
end

--- Text for a value.
--- The keys of t, sorted (numbers before strings, then by value).
pretty.sorted_keys = sorted_keys

function pretty.format(v)
    local out = {}
    render(v, 0, {}, out)
    return table.concat(out)
end

-- ---- how the REPL shows a result -------------------------------------------------

local function is_error(v)
    local mt = getmetatable(v)
    return type(v) == "table" and type(mt) == "table" and mt.__name == "rtbackup.error"
end

local function is_dataset(v)
    local mt = getmetatable(v)
    return type(mt) == "table" and mt.__name == "dataset"
end

-- C-FIND matches: a non-empty list of plain tables keyed by DICOM keywords.
local function is_matches(v)
    if type(v) ~= "table" or getmetatable(v) or #v == 0 then return false end
    for k in pairs(v) do
        if math.type(k) ~= "integer" then return false end
    end
    for _, row in ipairs(v) do
        if type(row) ~= "table" or getmetatable(row) then return false end
        for k in pairs(row) do
            if type(k) ~= "string" or not k:match("^%u[%w]*$") then return false end
        end
    end
    return true
end

-- Columns of matches: the identifying keywords first, then the rest by name.
local FIRST = {"PatientID", "PatientName", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
               "SOPInstanceUID"}
local function columns_of(rows)
    local seen, columns, rest = {}, {}, {}
    for _, row in ipairs(rows) do
        for k in pairs(row) do seen[k] = true end
    end
    -- What every C-FIND response carries about the protocol, not the data.
    seen.QueryRetrieveLevel, seen.RetrieveAETitle, seen.SpecificCharacterSet = nil, nil, nil
    for _, k in ipairs(FIRST) do
        if seen[k] then columns[#columns + 1] = k; seen[k] = nil end
    end
    for k in pairs(seen) do rest[#rest + 1] = k end
    table.sort(rest)
    for _, k in ipairs(rest) do columns[#columns + 1] = k end
    return columns
end

-- A C-MOVE/C-GET result: counts with their names.
local function is_retrieve_result(v)
    return type(v) == "table" and not getmetatable(v) and math.type(v.completed) == "integer"
           and math.type(v.failed) == "integer"
end

local function plural(n, word)
    return string.format("%d %s%s", n, word, n == 1 and "" or (word:match("[sxh]$") and "es" or "s"))
end

--- Text for a result as the REPL shows it: errors as their message and kind, C-FIND
-- matches as the table `find` prints, datasets as a dcmdump-like listing, C-MOVE and
-- C-GET results as counts, fractions with 6 significant digits; anything else as
-- pretty.format. `hint = "seconds"` shows a number as a duration.
function pretty.show(v, hint)
    if is_error(v) then
        return string.format("%s  [%s]", tostring(v), tostring(v.kind))
    end
    if is_dataset(v) then
        return v:dump()
    end
    if is_matches(v) then
        local text = require("rtbackup.dicom_cli").render_table(v, columns_of(v))
        return text .. "(" .. plural(#v, "match") .. ")"
    end
    if is_retrieve_result(v) then
        local parts = {string.format("%s completed, %d failed, %d warning", plural(v.completed, "instance"),
                                     v.failed, v.warning or 0)}
        if (v.remaining or 0) > 0 then parts[#parts + 1] = string.format(", %d remaining", v.remaining) end
        if v.status then parts[#parts + 1] = string.format(" (status 0x%04X)", v.status) end
        for _, uid in ipairs(v.failed_uids or {}) do parts[#parts + 1] = "\n  failed: " .. tostring(uid) end
        return table.concat(parts)
    end
    if math.type(v) == "float" then
        if hint == "seconds" then
            return v < 1 and string.format("%.1f ms", v * 1000) or string.format("%.3f s", v)
        end
        return string.format("%.6g", v)
    end
    return pretty.format(v)
end

-- A TOML basic string: quotes, backslashes and control characters escaped (Lua's %q
-- writes a newline as backslash-newline, which TOML does not read).
local ESCAPES = {['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r"}
local function toml_string(v)
    return '"' .. tostring(v):gsub('[%c"\\]', function(c)
        return ESCAPES[c] or string.format("\\u%04X", c:byte())
    end) .. '"'
end

local function toml_scalar(v)
    if type(v) == "string" or type(v) == "userdata" then return toml_string(v) end
    return tostring(v)
end

--- TOML text for a configuration table: scalars first, then [sections].
function pretty.toml(t, prefix, out)
    out = out or {}
    local subtables = {}
    for _, k in ipairs(sorted_keys(t)) do
        local v = t[k]
        if type(v) == "table" and not getmetatable(v) and #v == 0 and next(v) ~= nil then
            subtables[#subtables + 1] = k
        elseif type(v) == "table" and not getmetatable(v) then
            local items = {}
            for i, item in ipairs(v) do items[i] = toml_scalar(item) end
            out[#out + 1] = string.format("%s = [%s]", k, table.concat(items, ", "))
        else -- a secret prints its mask, quoted: the text stays TOML
            out[#out + 1] = k .. " = " .. toml_scalar(v)
        end
    end
    for _, k in ipairs(subtables) do
        local name = prefix and (prefix .. "." .. k) or k
        out[#out + 1] = ""
        out[#out + 1] = "[" .. name .. "]"
        pretty.toml(t[k], name, out)
    end
    return out
end

return pretty
