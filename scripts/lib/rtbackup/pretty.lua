--- rtbackup.pretty: readable text for any Lua value (the REPL prints with it).
-- Tables print with sorted keys and indentation; cycles are marked; secrets print
-- masked because their __tostring masks them.
local pretty = {}

local function is_identifier(k)
    return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
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
function pretty.format(v)
    local out = {}
    render(v, 0, {}, out)
    return table.concat(out)
end

--- TOML-like text for a configuration table: scalars first, then [sections].
function pretty.toml(t, prefix, out)
    out = out or {}
    local subtables = {}
    for _, k in ipairs(sorted_keys(t)) do
        local v = t[k]
        if type(v) == "table" and not getmetatable(v) and #v == 0 and next(v) ~= nil then
            subtables[#subtables + 1] = k
        elseif type(v) == "table" and not getmetatable(v) then
            local items = {}
            for i, item in ipairs(v) do items[i] = scalar(item) end
            out[#out + 1] = string.format("%s = [%s]", k, table.concat(items, ", "))
        elseif type(v) == "string" then
            out[#out + 1] = string.format("%s = %q", k, v)
        else
            out[#out + 1] = string.format("%s = %s", k, tostring(v))
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
