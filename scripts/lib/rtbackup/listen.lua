--- rtbackup.listen: the storage SCP of `rtbackup listen`, run until SIGINT or SIGTERM,
-- saying in the log what it stored, what it kept nothing of, and its counts at the end.
--
--   listen.serve{aet, port, out_dir, allow, request_timeout, max_associations,
--                max_per_host, tls, sort_by_study, exec}
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local files = require "rtbackup.files"
local log = require "rtbackup.log"
local task = require "rtbackup.task"

local listen = {}

-- The log line of one stored instance.
local function stored(e, opts)
    local fields = {sop_instance_uid = e.sop_instance_uid, from = e.calling_aet, path = e.path}
    if e.path:match("[^/]*$") ~= e.sop_instance_uid .. ".dcm" then
        -- Received before with other content: both kept, the first untouched.
        log.warn("stored beside an earlier instance with the same SOP Instance UID and other content", fields)
    elseif opts.sort_by_study and e.path:match("^(.*)/[^/]*$") == opts.out_dir:gsub("/+$", "") then
        log.warn("stored in --out-dir itself: the instance has no valid StudyInstanceUID to sort it by", fields)
    else
        log.info("stored", fields)
    end
end

-- The log line of a C-STORE it kept nothing of.
local function refused(e)
    log.warn(e.status == 0xFFFF and "a transfer broke off: nothing kept" or "refused a C-STORE: nothing kept",
             {sop_instance_uid = e.sop_instance_uid, sop_class_uid = e.sop_class_uid, from = e.calling_aet,
              status = e.status ~= 0xFFFF and string.format("0x%04X", e.status) or nil})
end

--- Serves until the process is asked to stop.
function listen.serve(opts)
    -- Received instances name patients: a directory we create is private (0700); one
    -- that exists keeps the mode the operator gave it.
    local made, mkdir_err = pcall(files.private_dir, opts.out_dir)
    if not made then
        errors.raise{kind = "config", message = "cannot create --out-dir " .. opts.out_dir .. ": " ..
                     (errors.is(mkdir_err) and mkdir_err.message or tostring(mkdir_err))}
    end
    local ok, scp = pcall(dicom.listen, {
        aet = opts.aet, port = opts.port, dir = opts.out_dir, allow = opts.allow,
        request_timeout = opts.request_timeout, max_associations = opts.max_associations,
        max_per_host = opts.max_per_host, tls = opts.tls, sort_by_study = opts.sort_by_study, exec = opts.exec,
        on_store = function(e) stored(e, opts) end,
        on_refused = refused,
    })
    if not ok then
        -- A setting the SCP refuses (unreadable certificate, bad value) is a configuration error.
        if errors.is(scp) and scp.kind == "invalid" then scp.kind = "config" end
        error(scp, 0)
    end
    log.info("listening", {aet = opts.aet, port = scp:port(), dir = opts.out_dir, tls = opts.tls ~= nil,
                           request_timeout = opts.request_timeout, max_associations = opts.max_associations,
                           max_per_host = opts.max_per_host})
    while not task.stopping() do task.sleep(200) end
    scp:stop()
    local s = scp:stats()
    log.info("stopped", {stored = s.stored, associations = s.associations, refused = s.refused,
                         rejected = s.rejected, dropped = s.dropped,
                         exec_ran = opts.exec and s.exec_ran or nil, exec_failed = opts.exec and s.exec_failed or nil})
end

return listen
