--- rtbackup.clock: dates in a site's time zone, and time windows.
-- Dates are "YYYY-MM-DD" for people and "YYYYMMDD" for DICOM.
local errors = require "rtbackup.error"

local clock = {}

local function shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Today's date ("YYYY-MM-DD") in time zone tz (e.g. "America/Los_Angeles"; nil:
-- the host's), shifted by offset_days. Uses date(1), which knows the tz database.
function clock.today(tz, offset_days)
    local cmd = string.format("%sdate -d %s +%%Y-%%m-%%d", tz and ("TZ=" .. shell_quote(tz) .. " ") or "",
                              shell_quote(string.format("%+d days", offset_days or 0)))
    local p = io.popen(cmd)
    local out = p:read("l")
    p:close()
    if not out then errors.raise{kind = "config", message = "cannot compute today's date in time zone " .. tostring(tz)} end
    return out
end

--- The current time "HH:MM" in tz.
function clock.now_hhmm(tz)
    local p = io.popen((tz and ("TZ=" .. shell_quote(tz) .. " ") or "") .. "date +%H:%M")
    local out = p:read("l")
    p:close()
    return out
end

--- Validates "YYYY-MM-DD" (a real calendar date); returns it, or raises a usage error
-- naming `what`.
function clock.check_date(s, what)
    local y, m, d = tostring(s):match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
    if y then
        local t = os.time{year = tonumber(y), month = tonumber(m), day = tonumber(d), hour = 12}
        local back = os.date("*t", t)
        if back.year == tonumber(y) and back.month == tonumber(m) and back.day == tonumber(d) then
            return s
        end
    end
    errors.raise{kind = "usage", message = string.format("%s: expected a date YYYY-MM-DD, got %q", what, tostring(s))}
end

function clock.dicom_date(s)
    return (s:gsub("%-", ""))
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

return clock
