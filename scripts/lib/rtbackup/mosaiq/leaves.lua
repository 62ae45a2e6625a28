--- rtbackup.mosaiq.leaves: Mosaiq MLC leaf sets (TxFieldPoint.A_Leaf_Set /
-- B_Leaf_Set, binary) -> leaf positions in mm. Two encodings are known and they
-- are incompatible (reference §4.7); which one a site's database uses is a site
-- setting, to be verified on real data:
--   "float32_mm"    little-endian IEEE float32 per leaf, in mm (the old repository's reading)
--   "int16_0.01cm"  little-endian int16 per leaf in 0.01 cm (pymedphys' reading), a
--                   fixed-width record of which only the first MLC_Leaves values are
--                   leaves; SQL Server may drop its trailing zero byte
local M = {}

-- The short names rtbackup.mosaiq.synth uses for the same encodings.
local ALIASES = {float32 = "float32_mm", int16 = "int16_0.01cm"}

local unpack_formats = {} -- "<i2i2..." by type and count: one unpack per leaf set
local float32_short, float32_cached = {}, 0 -- float32 value -> its short decimal (bounded)

--- Decodes a leaf set into out[offset + 1 .. offset + n], each value times sign.
-- count: use only the first count leaves. Returns n, or nil and a message.
-- One pass, no intermediate list: a VMAT record has ~40 000 leaf positions.
function M.decode_into(out, offset, sign, bytes, encoding, count)
    if type(bytes) ~= "string" then return nil, "leaf set is not binary data" end
    local kind, size, scale
    encoding = ALIASES[encoding] or encoding
    if encoding == "float32_mm" then
        if #bytes % 4 ~= 0 then
            return nil, string.format("%d bytes is not a whole number of float32 leaves", #bytes)
        end
        kind, size = "f", 4
    elseif encoding == "int16_0.01cm" then
        if #bytes % 2 == 1 then bytes = bytes .. "\0" end -- SQL Server drops a trailing zero byte
        kind, size, scale = "i2", 2, 10                   -- 0.01 cm = 0.1 mm
    else
        return nil, string.format("unknown MLC encoding %q (float32_mm or int16_0.01cm)", tostring(encoding))
    end
    local n = #bytes // size
    if count then
        if n < count then return nil, string.format("%d leaves decoded, %d expected", n, count) end
        n = count -- a fixed-width record: only the first MLC_Leaves values are leaves
    end
    local key = kind .. n
    local fmt = unpack_formats[key]
    if not fmt then
        fmt = "<" .. string.rep(kind, n)
        unpack_formats[key] = fmt
    end
    local values = table.pack(string.unpack(fmt, bytes))
    if scale then
        for i = 1, n do out[offset + i] = sign * values[i] / scale end
        return n
    end
    -- A float32 has ~7 significant digits: -20.55 stored as float32 reads back
    -- as -20.549999237..., which %.7g turns back into -20.55. Leaves repeat a
    -- few positions many times: format each value once.
    local short = float32_short
    for i = 1, n do
        local v = values[i]
        local d = short[v]
        if d == nil then
            if v ~= v or v == math.huge or v == -math.huge then
                return nil, string.format("leaf %d is not a finite number", i)
            end
            d = tonumber(string.format("%.7g", v))
            if float32_cached < 4096 then short[v], float32_cached = d, float32_cached + 1 end
        end
        out[offset + i] = sign * d
    end
    return n
end

--- Decodes one leaf set into a new list of positions in mm (nil and a message if
-- it cannot be read as `encoding`).
function M.decode(bytes, encoding, count)
    local out = {}
    local n, err = M.decode_into(out, 0, 1, bytes, encoding, count)
    if not n then return nil, err end
    return out
end

return M
