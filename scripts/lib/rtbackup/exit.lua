--- rtbackup.exit: the exit codes every command shares, and what an error means for
-- them. The one place where an outcome becomes a number cron can act on.
--
--   0   ok: everything done (backup: every instance verified)
--   1   partial: something failed and is named (instances missing, discrepancies, a
--       record that could not be built, an unresolved reference)
--   2   usage or configuration error: nothing was attempted, or nothing more could be
--       until a setting is changed (ours, or a peer's: a source that does not know
--       the archive as a move destination, accepts no C-MOVE, or rejects an AE title;
--       a database that refuses our login, an ODBC driver not installed)
--   3   another run holds the lock
--   4   a source or target unreachable (the rest waits for the next run)
--   5   outside the source's time window
--   130/143  interrupted by SIGINT/SIGTERM (work in progress finished, nothing new started)
local errors = require "rtbackup.error"
local task = require "rtbackup.task"

local exit = {
    ok = 0, partial = 1, usage = 2, locked = 3, unreachable = 4, outside_window = 5,
    interrupted_int = 130, interrupted_term = 143,
}

-- The status word of each code, as the journal, the summary and the metrics say it.
local STATUS = {[0] = "ok", [1] = "partial", [2] = "usage", [3] = "locked", [4] = "unreachable",
                [5] = "outside_window", [130] = "interrupted", [143] = "interrupted"}

--- "ok", "partial", ..., "interrupted" for an exit code.
function exit.status(code)
    return STATUS[code] or ("exit " .. tostring(code))
end

-- Error kinds that mean a peer (or database) could not be reached or talked to: the
-- work stays queued for the next run.
local UNREACHABLE = {connect_failed = true, timeout = true, rejected = true, aborted = true,
                     unreachable = true, login_failed = true}

--- True when err says a peer or database was not reachable (not that it refused).
function exit.is_unreachable(err)
    return type(err) == "table" and UNREACHABLE[err.kind] == true
end

--- True when err says the peer is there but at its limit for now: an association
-- rejected-transient (A-ASSOCIATE-RJ result 2, e.g. "local limit exceeded" from an
-- archive serving its maximum of associations). Asking again later, or with fewer
-- at once, is the answer; the run does not give the work up for it.
function exit.is_busy(err)
    return type(err) == "table" and err.kind == "rejected" and err.result == 2
end

--- True when err is the "not started: the run is stopping" of task.map.
function exit.is_stopped(err)
    return type(err) == "table" and err.kind == "stopped"
end

--- True when err says nothing can be done until a setting is changed, here or on a
-- peer: our configuration, or a peer that cannot move (a source that does not know
-- the move destination, C-MOVE 0xA801, or one that does not accept C-MOVE at all:
-- rtbackup.dicom marks them). Asking again changes nothing.
function exit.needs_configuration(err)
    return errors.is(err, "usage") or errors.is(err, "config")
        or (type(err) == "table" and err.needs_configuration == true)
        or exit.is_refused_title(err) or exit.is_refused_login(err)
end

--- True when err is a database that refused our credentials, or an ODBC driver or
-- data source that is not installed (IM002, IM003; unixODBC's "Can't open lib", 01000):
-- asking again changes nothing, and a scheduler retrying a refused login may lock the
-- service account out.
function exit.is_refused_login(err)
    if type(err) ~= "table" then return false end
    if err.kind == "login_failed" then return true end
    return err.kind == "connect_failed" and (err.sqlstate == "IM002" or err.sqlstate == "IM003"
        or (type(err.message) == "string" and err.message:find("Can't open lib", 1, true) ~= nil))
end

--- True when err is an association rejected for good because the peer does not know
-- an AE title (A-ASSOCIATE-RJ rejected-permanent by the service user, reason 3
-- "calling AE title not recognized" or 7 "called AE title not recognized", PS3.8
-- 9.3.4): a setting to change, here or on the peer, not a peer to wait for.
function exit.is_refused_title(err)
    return type(err) == "table" and err.kind == "rejected" and err.result == 1 and err.source == 1
        and (err.reason == 3 or err.reason == 7)
end

--- The exit code an error deserves when it ends a command.
function exit.of_error(err)
    if exit.needs_configuration(err) then return exit.usage end
    -- A journal damaged or written by a newer rtbackup: state the operator must fix.
    if errors.is(err, "corrupt") or errors.is(err, "version") then return exit.usage end
    if errors.is(err, "locked") then return exit.locked end
    if exit.is_unreachable(err) then return exit.unreachable end
    return exit.partial
end

--- 130/143 once the run was asked to stop (SIGINT/SIGTERM), else nil.
function exit.stop_code()
    local signal = task.stopping()
    if signal == "SIGINT" then return exit.interrupted_int end
    if signal == "SIGTERM" then return exit.interrupted_term end
    return nil
end

--- The documented list, for --help texts.
exit.HELP = {
    backup = "0 everything verified, 1 some items failed (partial), 2 usage or configuration error, " ..
             "3 another run holds the lock, 4 a source or target unreachable, 5 outside the source's " ..
             "time window, 130/143 interrupted (SIGINT/SIGTERM)",
    common = "0 success, 1 failure, 2 usage or configuration error, 130/143 stopped by SIGINT/SIGTERM",
}

return exit
