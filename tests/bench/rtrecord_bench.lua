-- RT record generation benchmark, rtbackup side (see rtrecord.bench.sh).
--   rtbackup run rtrecord_bench.lua export FILE          the synthetic groups as a Python literal
--   rtbackup run rtrecord_bench.lua run CASE N DIR [nosave]
-- run: maps, builds and writes N records of CASE (two_beam_static | vmat) into DIR
-- (nosave: builds only) and prints the wall time of that loop in ms.
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
package.path = here .. "/../spec/?.lua;" .. package.path
local groups = require "rtrecord_groups"
local map = require "rtbackup.mosaiq.map"
local host = require "rtbackup.host"

-- TJU's private block, as its site folder chooses it.
local TJU = dofile(here .. "/../../scripts/tju/site.lua").mosaiq.private_block
local OPTIONS = {
    two_beam_static = {uid_scope = "BENCH/MOSAIQ", null = groups.NULL, mlc = {encoding = "float32_mm"},
                       private_block = TJU},
    vmat = {uid_scope = "BENCH/MOSAIQ", null = groups.NULL, mlc = {encoding = "int16_0.01cm"},
            private_block = TJU},
}

-- A Python literal of a group (dicts, lists, numbers, str, bytes, None for NULL):
-- both sides start from the same data, loaded before their clocks start.
local BINARY = {A_Leaf_Set = true, B_Leaf_Set = true}

local function python_literal(v, key)
    if v == groups.NULL or v == nil then return "None" end
    local t = type(v)
    if t == "number" then
        return math.type(v) == "integer" and string.format("%d", v) or string.format("%.17g", v)
    elseif t == "string" and BINARY[key] then
        return "b'" .. v:gsub(".", function(c) return string.format("\\x%02x", c:byte()) end) .. "'"
    elseif t == "string" then
        return "'" .. v:gsub("[\\']", "\\%0"):gsub("\n", "\\n") .. "'"
    elseif t == "table" then
        local parts = {}
        if #v > 0 or next(v) == nil then
            for _, x in ipairs(v) do parts[#parts + 1] = python_literal(x) end
            return "[" .. table.concat(parts, ", ") .. "]"
        end
        local keys = {}
        for k in pairs(v) do keys[#keys + 1] = k end
        table.sort(keys)
        for _, k in ipairs(keys) do parts[#parts + 1] = "'" .. k .. "': " .. python_literal(v[k], k) end
        return "{" .. table.concat(parts, ", ") .. "}"
    end
    error("cannot write a " .. t)
end

local mode = arg[1]
if mode == "export" then
    local f = assert(io.open(arg[2], "w"))
    f:write("{'two_beam_static': ", python_literal(groups.two_beam_static()), ",\n 'vmat': ",
            python_literal(groups.vmat()), "}\n")
    f:close()
elseif mode == "run" then
    local case, n, dir, nosave = arg[2], tonumber(arg[3]), arg[4], arg[5] == "nosave"
    local group, opts = groups[case](), OPTIONS[case]
    local t0 = host.monotonic()
    for i = 1, n do
        local ds = map.build(group, opts)
        if not nosave then ds:save(string.format("%s/%d.dcm", dir, i)) end
    end
    print(string.format("%.0f", (host.monotonic() - t0) * 1000))
else
    error("usage: rtrecord_bench.lua export FILE | run CASE N DIR [nosave]")
end
