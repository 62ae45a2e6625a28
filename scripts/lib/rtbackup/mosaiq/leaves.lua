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

-- Decoded leaf sets by encoding, count and bytes: every fraction of a course delivers
-- the same planned control points, so the same leaf sets come back day after day and
-- field after field. Bounded: emptied when full.
local decoded, decoded_count, DECODED_MAX = {}, 0, 16000 -- ~20 MB at most

local function decode(bytes, encoding, count)
    local kind, size, scale
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
        if n < count then
            -- float32 bytes hold half as many leaves as int16 ones: a set too short for
            -- one encoding that the other fills is most likely the site choice.
            local other = encoding == "float32_mm" and "int16_0.01cm" or "float32_mm"
            local fits = (other == "int16_0.01cm" and (#bytes + 1) // 2 or #bytes // 4) >= count
            return nil, string.format("%d leaves decoded, %d expected%s", n, count, fits and string.format(
                " (read as %s, the %d bytes hold %d: is the site choice mosaiq.mlc.encoding right?)", other, #bytes,
                count) or "")
        end
        n = count -- a fixed-width record: only the first MLC_Leaves values are leaves
    end
    local key = kind .. n
    local fmt = unpack_formats[key]
    if not fmt then
        fmt = "<" .. string.rep(kind, n)
        unpack_formats[key] = fmt
    end
    local values = table.pack(string.unpack(fmt, bytes))
    values.n = n
    if scale then
        for i = 1, n do values[i] = values[i] / scale end
        return values
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
        values[i] = d
    end
    return values
end

-- The smallest and largest position of a decoded set (kept with it).
local function range_of(values)
    local lo, hi = math.huge, -math.huge
    for i = 1, values.n do
        local v = values[i]
        if v < lo then lo = v end
        if v > hi then hi = v end
    end
    values.lo, values.hi = lo, hi
end

--- The decoded leaf set, shared and kept: {positions in mm..., n =, lo =, hi =} (n
-- positions, the smallest and largest). Read it, never change it. count: use only the
-- first count leaves. nil and a message if bytes cannot be read as encoding.
function M.decoded(bytes, encoding, count)
    if type(bytes) ~= "string" then return nil, "leaf set is not binary data" end
    encoding = ALIASES[encoding] or encoding
    local by_count = decoded[encoding]
    if not by_count then by_count = {}; decoded[encoding] = by_count end
    local key = count or 0
    local by_bytes = by_count[key]
    if not by_bytes then by_bytes = {}; by_count[key] = by_bytes end
    local values = by_bytes[bytes]
    if not values then
        local err
        values, err = decode(bytes, encoding, count)
        if not values then return nil, err end
        range_of(values)
        if decoded_count >= DECODED_MAX then decoded, decoded_count = {}, 0 end
        by_bytes[bytes], decoded_count = values, decoded_count + 1
    end
    return values
end

--- Decodes a leaf set into out[offset + 1 .. offset + n], each value times sign.
-- count: use only the first count leaves. Returns n and the smallest and largest
-- value written, or nil and a message.
function M.decode_into(out, offset, sign, bytes, encoding, count)
    local values, err = M.decoded(bytes, encoding, count)
    if not values then return nil, err end
    local n = values.n
    if sign == 1 then
        table.move(values, 1, n, offset + 1, out)
        return n, values.lo, values.hi
    end
    for i = 1, n do out[offset + i] = sign * values[i] end
    return n, -values.hi, -values.lo
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
