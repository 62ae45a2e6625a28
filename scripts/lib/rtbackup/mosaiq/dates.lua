--- rtbackup.mosaiq.dates: calendar dates as "YYYY-MM-DD" text, without time zones.
-- Day arithmetic goes through a day number (days since 1970-01-01, proleptic
-- Gregorian), so no clock, locale or DST is involved.
local dates = {}

local function days_from_civil(y, m, d)
    y = m <= 2 and y - 1 or y
    local era = (y >= 0 and y or y - 399) // 400
    local yoe = y - era * 400
    local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
    local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
end

local function civil_from_days(z)
    z = z + 719468
    local era = (z >= 0 and z or z - 146096) // 146097
    local doe = z - era * 146097
    local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    local y = yoe + era * 400
    local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    local mp = (5 * doy + 2) // 153
    local d = doy - (153 * mp + 2) // 5 + 1
    local m = mp < 10 and mp + 3 or mp - 9
    return m <= 2 and y + 1 or y, m, d
end

--- The day number of a "YYYY-MM-DD" text, or nil and a reason when it is not a real date.
function dates.parse(text)
    if type(text) ~= "string" then return nil, "expected a date as YYYY-MM-DD" end
    local y, m, d = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
    if not y then return nil, "expected a date as YYYY-MM-DD, got '" .. text .. "'" end
    y, m, d = tonumber(y), tonumber(m), tonumber(d)
    local n = days_from_civil(y, m, d)
    local y2, m2, d2 = civil_from_days(n)
    if y2 ~= y or m2 ~= m or d2 ~= d or m < 1 or m > 12 or d < 1 then
        return nil, "'" .. text .. "' is not a calendar date"
    end
    return n
end

--- "YYYY-MM-DD" of a day number.
function dates.format(n)
    local y, m, d = civil_from_days(n)
    return string.format("%04d-%02d-%02d", y, m, d)
end

--- Day of the week of a day number: 1 = Monday ... 7 = Sunday (1970-01-01 was a Thursday).
function dates.weekday(n)
    return (n + 3) % 7 + 1
end

--- "YYYY-MM-DD HH:MM:SS" for day number n plus `seconds` into that day.
function dates.timestamp(n, seconds)
    seconds = seconds or 0
    n = n + seconds // 86400
    seconds = seconds % 86400
    return string.format("%s %02d:%02d:%02d", dates.format(n), seconds // 3600,
                         seconds % 3600 // 60, seconds % 60)
end

return dates
