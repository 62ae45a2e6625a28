--- rtbackup.restore: disaster recovery — a patient's studies (or one study) sent from
-- the backup archive to a destination (C-MOVE), and every instance checked there
-- when the destination answers C-FIND. Audited as a whole (op "restore", the patient)
-- and operation by operation.
local context = require "rtbackup.context"
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local exit = require "rtbackup.exit"
local log = require "rtbackup.log"
local plan = require "rtbackup.qr.plan"
local settings = require "rtbackup.settings"
local task = require "rtbackup.task"

local restore = {}

-- Instance UIDs per study in a peer: what must arrive.
local function instances(peer, study, patient)
    local set, n = {}, 0
    local series = peer:find{level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = "", patient = patient}
    for _, s in ipairs(plan.unique(series, "SeriesInstanceUID", peer.alias)) do
        local uids = plan.instance_uids(peer, study, s.SeriesInstanceUID, patient)
        for u in pairs(uids) do set[u] = true; n = n + 1 end
    end
    return set, n
end

-- What a restore names must name one patient or one study: a blank value, or a UID
-- with wildcards, would match everything in the archive's C-FIND and C-MOVE. (The
-- command's options are checked by the same rules; this keeps scripts to them.)
local function check_selection(opts)
    local function usage(message) errors.raise{kind = "usage", message = "restore: " .. message} end
    if (opts.patient == nil) == (opts.study == nil) then usage("give exactly one of patient and study") end
    if opts.patient ~= nil and not dicom.names_one_patient(opts.patient) then
        usage("patient must be one patient's ID, not blank")
    end
    if opts.study ~= nil and not dicom.names_one_uid(opts.study) then
        usage("study must be one StudyInstanceUID, got " .. tostring(opts.study))
    end
end

--- Restores from `from` (an alias; default the environment's default_backup) to `to`:
-- opts.patient or opts.study; opts.dry_run lists only. Returns the exit code.
function restore.run(env, opts)
    check_selection(opts)
    local ctx = context.new(env, {command = "restore"})
    local archive, destination = ctx:peer(opts.from or env.default_backup), ctx:peer(opts.to)
    local ok, studies = pcall(archive.find, archive, {level = "STUDY", PatientID = opts.patient or "*",
                                                      StudyInstanceUID = opts.study or "", StudyDate = "",
                                                      NumberOfStudyRelatedInstances = "", patient = opts.patient})
    if not ok then
        io.stderr:write("rtbackup restore: ", tostring(studies), "\n")
        ctx:flush()
        return exit.is_unreachable(studies) and exit.unreachable or exit.partial
    end
    studies = plan.unique(plan.of_patient(studies, opts.patient, archive.alias), "StudyInstanceUID", archive.alias)
    if #studies == 0 then
        io.stderr:write(string.format("rtbackup restore: %s holds nothing for %s\n", archive.alias,
                                      opts.patient and ("patient " .. opts.patient) or ("study " .. opts.study)))
        ctx:flush()
        return exit.partial
    end
    local failed, total, restored, unverified, unreachable = 0, 0, 0, false, false
    local results, failures = task.map(studies, function(study)
        local uid, patient = study.StudyInstanceUID, study.PatientID
        local wanted, n = instances(archive, uid, patient)
        total = total + n
        if opts.dry_run then
            io.stdout:write(string.format("would restore %s study %s (%s): %d instances\n", patient or "?", uid,
                                          study.StudyDate or "", n))
            return true
        end
        local r = archive:move{level = "STUDY", StudyInstanceUID = uid, destination = destination.aet, patient = patient}
        restored = restored + (r.completed or 0)
        local fine, there = pcall(instances, destination, uid, patient)
        if not fine then
            unverified = true
            log.warn("the destination does not answer C-FIND: restore not verified there",
                     {destination = opts.to, error = tostring(there)})
            return (r.failed or 0) == 0
        end
        local missing = 0
        for u in pairs(wanted) do if not there[u] then missing = missing + 1 end end
        failed = failed + missing
        log.info("study restored", {study = uid, instances = n, moved = r.completed, missing = missing})
        return missing == 0
    end, {concurrency = settings.get(env, "max_associations", opts.from or env.default_backup), errors = "return"})
    local said, misconfigured = {}, false
    for _, err in pairs(failures) do
        unreachable = unreachable or exit.is_unreachable(err)
        misconfigured = misconfigured or exit.needs_configuration(err)
        local text = tostring(err)
        if not said[text] then io.stderr:write("rtbackup restore: ", text, "\n") end
        said[text] = true
    end
    if opts.dry_run then
        ctx:flush()
        return exit.ok
    end
    local incomplete = failed
    for i = 1, #studies do if results[i] ~= true then incomplete = incomplete + 1 end end
    ctx:event{op = "restore", peer = archive.alias, destination = opts.to, patient_id = opts.patient,
              study_uid = opts.study, count = restored, failed = failed,
              outcome = incomplete == 0 and "ok" or "incomplete"}
    ctx:flush()
    if unverified then
        -- Nothing could be counted there: say what the archive reported, not "0 missing".
        io.stdout:write(string.format("restored %d of %d instances from %s to %s, as %s reported; not verified: %s answers no C-FIND\n",
                                      restored, total, archive.alias, opts.to, archive.alias, opts.to))
    else
        io.stdout:write(string.format("restored %d of %d instances from %s to %s; %d missing there\n", restored, total,
                                      archive.alias, opts.to, failed))
    end
    if exit.stop_code() then return exit.stop_code() end
    if misconfigured then return exit.usage end
    if unreachable then return exit.unreachable end
    return incomplete == 0 and exit.ok or exit.partial
end

return restore
