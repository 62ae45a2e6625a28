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
    if archive.aet == destination.aet and archive.host == destination.host and archive.port == destination.port then
        -- A C-MOVE of the archive to itself: nothing would be restored anywhere.
        errors.raise{kind = "usage", message = string.format(
            "--to %s is the archive restored from (%s): name the system to restore to", opts.to,
            opts.from or env.default_backup)}
    end
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
    local said, misconfigured, refusals, not_restored = {}, false, 0, 0
    for _, err in pairs(failures) do
        not_restored = not_restored + 1
        unreachable = unreachable or exit.is_unreachable(err)
        misconfigured = misconfigured or exit.needs_configuration(err)
        if errors.is(err, "status") and err.operation == "C-MOVE" then refusals = refusals + 1 end
        local text = tostring(err)
        if not said[text] then io.stderr:write("rtbackup restore: ", text, "\n") end
        said[text] = true
    end
    if refusals > 0 and refusals == #studies and not misconfigured then
        -- Every move failed (Orthanc answers 0xC000 for a destination it does not know).
        io.stderr:write(string.format("rtbackup restore: hint: %s moved none of the studies: %s\n", archive.alias,
                                      dicom.check_destination(destination, opts.to)))
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
    -- Only what was counted is said: "missing there" counts the studies moved and
    -- checked; a destination without C-FIND checks nothing; a study whose move failed
    -- is named as such (its error is above).
    local said_of = {}
    if unverified then
        said_of[1] = string.format("not verified: %s answers no C-FIND", opts.to)
    elseif not_restored < #studies then
        said_of[1] = string.format("%d missing there", failed)
    end
    if not_restored > 0 then
        said_of[#said_of + 1] = string.format("%d of %d studies not restored (see above)", not_restored, #studies)
    end
    io.stdout:write(string.format("restored %d of %d instances from %s to %s%s; %s\n", restored, total, archive.alias,
                                  opts.to, unverified and (", as " .. archive.alias .. " reported") or "",
                                  table.concat(said_of, "; ")))
    if exit.stop_code() then return exit.stop_code() end
    if misconfigured then return exit.usage end
    if unreachable then return exit.unreachable end
    return incomplete == 0 and exit.ok or exit.partial
end

return restore
