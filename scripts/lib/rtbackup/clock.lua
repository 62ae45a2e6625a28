--- rtbackup.clock: dates and times, the one module for them.
--
-- Calendar days are "YYYY-MM-DD" text for people and "YYYYMMDD" for DICOM. Day
-- arithmetic goes through a day number (days since 1970-01-01, proleptic Gregorian),
-- so no clock, locale or DST is involved. "Today" and the time of day are read in a
-- site's time zone (setting `timezone`, a tz database name) by rtbackup.sys, never by
-- running date(1).
local errors = require "rtbackup.error"
local sys = require "rtbackup.sys"

local clock = {}

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
function clock.day(text)
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
function clock.format_day(n)
    local y, m, d = civil_from_days(n)
    return string.format("%04d-%02d-%02d", y, m, d)
end

--- Day of the week of a day number: 1 = Monday ... 7 = Sunday (1970-01-01 was a Thursday).
function clock.weekday(n)
    return (n + 3) % 7 + 1
end

--- "YYYY-MM-DD HH:MM:SS" for day number n plus `seconds` into that day.
function clock.timestamp(n, seconds)
    seconds = seconds or 0
    n = n + seconds // 86400
    seconds = seconds % 86400
    return string.format("%s %02d:%02d:%02d", clock.format_day(n), seconds // 3600,
                         seconds % 3600 // 60, seconds % 60)
end

--- Validates "YYYY-MM-DD" (a real calendar date); returns it, or raises a usage error
-- naming `what` (an option such as "--since").
function clock.check_date(s, what)
    local n, why = clock.day(s)
    if not n then errors.raise{kind = "usage", message = string.format("%s: %s", what, why)} end
    return s
end

--- Checks an optional period given on the command line: each a real date, and the
-- first not after the last. Returns since, till (unchanged).
function clock.check_period(since, till, since_name, till_name)
    if since then clock.check_date(since, since_name) end
    if till then clock.check_date(till, till_name) end
    if since and till and since > till then
        errors.raise{kind = "usage", message = string.format("%s %s is after %s %s: the period is empty",
                                                             since_name, since, till_name, till)}
    end
    return since, till
end

--- A command's period: --since and --until as given, else from `back` days before the
-- last day (--until, else today in time zone tz) to that day.
function clock.lookback(since, till, tz, back)
    till = till or clock.today(tz, 0)
    return since or clock.format_day(assert(clock.day(till)) - back), till
end

--- "YYYYMMDD" for "YYYY-MM-DD".
function clock.dicom_date(s)
    return (s:gsub("%-", ""))
end

--- Every day from first to last ("YYYY-MM-DD", inclusive).
function clock.days(first, last)
    local list = {}
    local a, b = assert(clock.day(first)), assert(clock.day(last))
    for n = a, b do list[#list + 1] = clock.format_day(n) end
    return list
end

--- Wall-clock seconds since the epoch, with a fraction.
clock.now = sys.now

--- Today's date ("YYYY-MM-DD") in time zone tz (nil: the host's), shifted by offset_days.
function clock.today(tz, offset_days)
    local t = sys.localtime(nil, tz)
    return clock.format_day(days_from_civil(t.year, t.month, t.day) + (offset_days or 0))
end

--- The current time "HH:MM" in tz.
function clock.now_hhmm(tz)
    local t = sys.localtime(nil, tz)
    return string.format("%02d:%02d", t.hour, t.min)
end

local function minutes(hhmm)
    local h, m = hhmm:match("^(%d%d):(%d%d)$")
    return tonumber(h) * 60 + tonumber(m)
end

--- True when "HH:MM" `now` lies in window "HH:MM-HH:MM" (which may span midnight).
function clock.in_window(window, now)
    local a, b = window:match("^(%d%d:%d%d)%-(%d%d:%d%d)$")
    if not a then errors.raise{kind = "config", message = "bad time window " .. window} end
    local s, e, n = minutes(a), minutes(b), minutes(now)
    if s < e then return n >= s and n < e end
    return n >= s or n < e
end

--- "2026-11-21T02:00:00.123Z" for seconds since the epoch (default: now).
function clock.iso_utc(t)
    t = t or sys.now()
    local whole = math.floor(t)
    local ms = math.floor((t - whole) * 1000 + 0.5)
    if ms >= 1000 then whole, ms = whole + 1, ms - 1000 end
    return os.date("!%Y-%m-%dT%H:%M:%S", whole) .. string.format(".%03dZ", ms)
end

--- Seconds since the epoch of "YYYY-MM-DDTHH:MM:SS[.fff]Z"; nil for anything else.
function clock.parse_utc(text)
    if type(text) ~= "string" then return nil end
    local y, mo, d, h, mi, s, frac = text:match("^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)(%.?%d*)Z$")
    if not y then return nil end
    local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
              + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
    if #frac > 1 then t = t + tonumber("0" .. frac) end
    return t
end

return clock
