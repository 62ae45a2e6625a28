--- rtbackup.alerts: tells people that a run needs them, the moment it ends — by a
-- command of the site's (mail, a pager script) and by a webhook (a chat channel, an
-- incident tool). Both get the run's JSON summary, plus:
--   alert = {reason, host, sent_at}   why this alert (see alerts.reason)
--   text  = "rtbackup UCLA ARIA backup: partial — ..."   one line for people; chat
--           webhooks (Mattermost, Slack, Rocket.Chat, Teams' incoming webhooks) show it
--
--   alerts.notify(env, summary)   -- after the summary is recorded; never raises
--
-- Settings (rtbackup.settings): alert_command (an argument vector, split at blanks,
-- '...' and "..." keep one word; {env} {source} {command} {status} {reason} {host} are
-- replaced inside each word; no shell), alert_webhook (POSTed with libcurl, 10 s timeout,
-- 3 tries: a 5xx, 429 or no answer is tried again after 1 s, then 2 s), alert_on_success,
-- alert_locked_after_minutes.
--
-- An alert that cannot be delivered is logged, never raised: a failing mail server must
-- not turn a verified backup into a failed one.
local cjson = require("cjson").new()
local clock = require "rtbackup.clock"
local config = require "rtbackup.config"
local errors = require "rtbackup.error"
local http = require "rtbackup.http"
local log = require "rtbackup.log"
local settings = require "rtbackup.settings"
local sys = require "rtbackup.sys"
local task = require "rtbackup.task"

cjson.encode_sparse_array(true)
cjson.encode_invalid_numbers("null")

local alerts = {
    COMMAND_TIMEOUT = 60,   -- seconds an alert command may run
    WEBHOOK_TIMEOUT = 10,   -- seconds per webhook attempt
    WEBHOOK_TRIES = 3,
    BACKOFF_MS = 1000,      -- before the second try; doubled for the next
}

--- Why summary `s` deserves an alert, or nil:
--   "failed"           the run stopped on an error of its own (exit 2, or a bug)
--   "partial"          something is not backed up (exit 1), discrepancies
--   "unreachable"      a source or target could not be reached (exit 4)
--   "interrupted"      stopped by SIGINT/SIGTERM (130/143)
--   "locked_too_long"  another run has held the source's lock longer than
--                      alert_locked_after_minutes (a hung or forgotten run)
--   "drill_mismatch"   a restore drill found an instance that differs or is missing
--   "success"          everything fine, with alert_on_success
-- Not alerted: a dry run, a run outside its time window (exit 5: on purpose), a lock
-- held for less than the threshold (the previous night's run still finishing).
function alerts.reason(env, s)
    if s.dry_run then return nil end
    local status = s.status
    if s.command == "drill" and ((s.different or 0) > 0 or (s.missing or 0) > 0) then return "drill_mismatch" end
    if status == "ok" then return settings.get(env, "alert_on_success") and "success" or nil end
    if status == "outside_window" then return nil end
    if status == "locked" then
        local limit = settings.get(env, "alert_locked_after_minutes") * 60
        if (s.lock_held_seconds or 0) >= limit then return "locked_too_long" end
        return nil
    end
    if status == "partial" or status == "unreachable" or status == "interrupted" then return status end
    return "failed"
end

local function count(v) return math.tointeger(v) or v or 0 end

-- The one line people read first (mail subject, chat message).
local function text_of(s, reason, host)
    local what = string.format("rtbackup %s %s %s", s.env or "?", s.source or "", s.command or "backup")
    local detail
    if reason == "drill_mismatch" then
        detail = string.format("MISMATCH: %d different, %d missing of %d instances compared", count(s.different),
                               count(s.missing), count(s.compared))
    elseif reason == "locked_too_long" then
        detail = string.format("locked out: another run (PID %s) has held the lock for %d minutes",
                               tostring(s.lock_holder_pid or "?"), math.floor(count(s.lock_held_seconds) / 60))
    elseif s.command == "drill" then
        detail = string.format("%s: %d instances compared, %d equal", s.status or "?", count(s.compared), count(s.equal))
    else
        detail = string.format("%s: %d verified, %d failed, %d moved", s.status or "?", count(s.verified), count(s.failed),
                               count(s.moved))
        local later = count(s.skipped) + count(s.deferred)
        if later > 0 then detail = detail .. string.format(", %d left for later", later) end
    end
    if s.error and s.error.message and reason ~= "locked_too_long" then
        detail = detail .. " (" .. tostring(s.error.message):gsub("%s+", " "):sub(1, 200) .. ")"
    end
    return string.format("%s: %s [exit %s, host %s]", what, detail, tostring(s.exit_code or "?"), host)
end

--- The JSON object both channels get: a copy of the summary with `alert` and `text`.
function alerts.payload(s, reason)
    local host = sys.hostname()
    local p = {}
    for k, v in pairs(s) do p[k] = v end
    p.alert = {reason = reason, host = host, sent_at = clock.iso_utc()}
    p.text = text_of(s, reason, host)
    return p
end

--- The words of a command line: blanks separate, '...' and "..." group (no escapes,
-- no expansion: what is written is what the program gets).
function alerts.words(line)
    local list, word, quote, has = {}, {}, nil, false
    for c in line:gmatch(".") do
        if quote then
            if c == quote then quote = nil else word[#word + 1] = c end
        elseif c == "'" or c == '"' then
            quote, has = c, true
        elseif c:match("%s") then
            if has or #word > 0 then list[#list + 1] = table.concat(word) end
            word, has = {}, false
        else
            word[#word + 1] = c
        end
    end
    if quote then
        errors.raise{kind = "config", message = "alert_command: a quote is not closed: " .. line}
    end
    if has or #word > 0 then list[#list + 1] = table.concat(word) end
    return list
end

local PLACEHOLDERS = {env = true, source = true, command = true, status = true, reason = true, host = true}

-- The argument vector of alert_command for payload p: placeholders replaced inside each
-- word, so a value with blanks or quotes stays one argument and is never interpreted.
local function argv_of(command, p)
    local line = config.is_secret(command) and config.reveal(command) or command
    local values = {env = p.env, source = p.source, command = p.command, status = p.status,
                    reason = p.alert.reason, host = p.alert.host}
    local argv = alerts.words(line)
    for i, a in ipairs(argv) do
        argv[i] = a:gsub("{(%l+)}", function(name)
            if PLACEHOLDERS[name] then return tostring(values[name] or "") end
        end)
    end
    if #argv == 0 then errors.raise{kind = "config", message = "alert_command is empty"} end
    return argv
end

--- Runs alert_command with the payload on stdin. {ok, status, output} (ok: exit 0).
function alerts.run_command(command, body, p)
    local ok, r = pcall(function()
        return sys.run(argv_of(command, p), {stdin = body, timeout = alerts.COMMAND_TIMEOUT, max_output = 4096})
    end)
    if not ok then return {ok = false, error = tostring(r)} end
    local out = {ok = r.status == 0, status = r.status, signal = r.signal, timed_out = r.timed_out or nil,
                 output = r.output ~= "" and r.output or nil}
    if not out.ok then
        out.error = r.timed_out and string.format("still running after %d s (stopped)", alerts.COMMAND_TIMEOUT)
                    or r.signal and ("killed by signal " .. r.signal) or ("exit " .. tostring(r.status))
    end
    return out
end

-- Worth another try: no answer, a server error, or "too many requests".
local function transient(status) return status == nil or status >= 500 or status == 429 end

--- POSTs body to url, WEBHOOK_TRIES times at most. {ok, status, attempts, error}.
function alerts.post(url, body)
    local delay = alerts.BACKOFF_MS
    local result = {ok = false, attempts = 0}
    for attempt = 1, alerts.WEBHOOK_TRIES do
        result.attempts = attempt
        local ok, r = pcall(http.post, url, body, {headers = {["Content-Type"] = "application/json"},
                                                    timeout = alerts.WEBHOOK_TIMEOUT})
        if ok then
            result.status, result.error = r.status, nil
            if r.status >= 200 and r.status < 300 then
                result.ok = true
                return result
            end
            result.error = "HTTP " .. r.status
        else
            result.status, result.error = nil, tostring(r) -- names the origin only, never the path or token
        end
        if not transient(result.status) or attempt == alerts.WEBHOOK_TRIES or task.stopping() then break end
        task.sleep(delay)
        delay = delay * 2
    end
    return result
end

--- Sends the alert a summary deserves, if any, through every configured channel.
-- Returns {reason, command = {...}, webhook = {...}} (nil when there was nothing to
-- send); never raises.
function alerts.notify(env, s)
    local ok, result = pcall(function()
        local reason = alerts.reason(env, s)
        if not reason then return nil end
        local command, webhook = settings.get(env, "alert_command"), settings.get(env, "alert_webhook")
        if not command and not webhook then return nil end
        local p = alerts.payload(s, reason)
        local body = cjson.encode(p)
        local out = {reason = reason}
        local fields = {env = s.env, source = s.source, command = s.command, reason = reason}
        if command then
            out.command = alerts.run_command(command, body, p)
            if out.command.ok then
                log.info("alert command ran", fields)
            else
                fields.error = out.command.error
                fields.output = out.command.output
                log.error("the alert command failed", fields)
                fields.error, fields.output = nil, nil
            end
        end
        if webhook then
            out.webhook = alerts.post(webhook, body)
            fields.attempts = out.webhook.attempts
            if out.webhook.ok then
                log.info("alert webhook delivered", fields)
            else
                fields.error = out.webhook.error
                log.error("the alert webhook failed", fields)
            end
        end
        return out
    end)
    if not ok then
        log.error("cannot send the alert", {env = s.env, source = s.source, error = tostring(result)})
        return nil
    end
    return result
end

return alerts
