--- rtbackup.text: text that every JSON reader accepts.
--
-- Values reach rtbackup's JSON (the run summary, the journal, the audit log) from
-- databases and peers that may not speak UTF-8 (a Latin-1 Mosaiq column, a DICOM
-- value in another character set). lua-cjson writes a string's bytes as they are, and
-- a strict reader (Python's json, jq) then refuses the whole file. Each byte that is
-- not part of valid UTF-8 becomes U+FFFD (the replacement character) here instead.
--
--   text.utf8(s)      -> s, or s with its invalid bytes replaced
--   text.clean(value) -> value, or a copy whose strings (keys too) are valid UTF-8
local text = {}

local REPLACEMENT = "\u{FFFD}"

function text.utf8(s)
    if utf8.len(s) then return s end -- the usual case: nothing to copy
    local out, i = {}, 1
    while true do
        local ok, bad = utf8.len(s, i)
        if ok then
            out[#out + 1] = s:sub(i)
            return table.concat(out)
        end
        out[#out + 1] = s:sub(i, bad - 1)
        out[#out + 1] = REPLACEMENT
        i = bad + 1
    end
end

local function needs_cleaning(v, seen)
    local t = type(v)
    if t == "string" then return utf8.len(v) == nil end
    if t ~= "table" or seen[v] then return false end
    seen[v] = true
    for k, x in pairs(v) do
        if needs_cleaning(k, seen) or needs_cleaning(x, seen) then return true end
    end
    return false
end

local function copy(v, done)
    local t = type(v)
    if t == "string" then return text.utf8(v) end
    if t ~= "table" or getmetatable(v) ~= nil then return v end -- odbc.NULL and secrets keep their identity
    if done[v] then return done[v] end
    local out = {}
    done[v] = out
    for k, x in pairs(v) do out[copy(k, done)] = copy(x, done) end
    return out
end

function text.clean(value)
    if not needs_cleaning(value, {}) then return value end
    return copy(value, {})
end

return text
