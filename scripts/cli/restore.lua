--- restore a patient or a study from the backup archive to a destination
local cli = require "rtbackup.cli"
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local log = require "rtbackup.log"
local task = require "rtbackup.task"

local parser = cli.parser("restore", [[
Disaster recovery: asks the backup archive to send a patient's studies (or one study)
to a destination (C-MOVE), then checks every instance arrived when the destination
answers C-FIND. The destination must know the archive and the archive must know the
destination's AE title (its own configuration).
  rtbackup restore UCLA --to ARIA --patient 12345678 --dry-run
  rtbackup restore UCLA --to ARIA --study 1.2.840.113619.2.55.3]],
    "0 restored (and verified where the destination answers C-FIND), 1 some instances not restored, " ..
    "2 usage or configuration error, 4 the archive or the destination unreachable")
parser:argument("env", "environment")
parser:option("--to", "destination: a source or backup target alias of the environment")
parser:option("--from", "the archive to restore from (default: default_backup)")
parser:option("--patient", "every study of this PatientID")
parser:option("--study", "this StudyInstanceUID")
parser:flag("--dry-run", "list what would be restored, move nothing")
local args = cli.parse(parser, {...})
if not args.to then errors.raise{kind = "usage", message = "--to ALIAS is required\n" .. parser:get_usage()} end
if not (args.patient or args.study) or (args.patient and args.study) then
    errors.raise{kind = "usage", message = "give exactly one of --patient MRN or --study UID\n" .. parser:get_usage()}
end

local env = cli.load_env(args.env)
local audit = require "rtbackup.audit"
audit.for_env(env) -- the C-FINDs and C-MOVEs audit themselves; the restore as a whole too
local archive = dicom.peer(env, args.from or env.default_backup)
local destination = dicom.peer(env, args.to)

local function unreachable(err)
    return require("rtbackup.qr_backup").is_unreachable(err)
end

local ok, studies = pcall(archive.find, archive, {level = "STUDY", PatientID = args.patient or "*",
                                                  StudyInstanceUID = args.study or "", StudyDate = "",
                                                  NumberOfStudyRelatedInstances = ""})
if not ok then
    io.stderr:write("rtbackup restore: ", tostring(studies), "\n")
    return unreachable(studies) and 4 or 1
end
if #studies == 0 then
    io.stderr:write(string.format("rtbackup restore: %s holds nothing for %s\n", archive.alias,
                                  args.patient and ("patient " .. args.patient) or ("study " .. args.study)))
    return cli.EXIT.failure
end

-- Instance UIDs per study in the archive: what must arrive.
local function instances(peer, study)
    local set, n = {}, 0
    for _, s in ipairs(peer:find{level = "SERIES", StudyInstanceUID = study, SeriesInstanceUID = ""}) do
        peer:find({level = "IMAGE", StudyInstanceUID = study, SeriesInstanceUID = s.SeriesInstanceUID,
                   SOPInstanceUID = ""}, function(m) set[m.SOPInstanceUID] = true; n = n + 1 end)
    end
    return set, n
end

local failed, total, restored, unverified = 0, 0, 0, false
local results = task.map(studies, function(study)
    local uid = study.StudyInstanceUID
    local wanted, n = instances(archive, uid)
    total = total + n
    if args.dry_run then
        io.stdout:write(string.format("would restore %s study %s (%s): %d instances\n", study.PatientID or "?",
                                      uid, study.StudyDate or "", n))
        return true
    end
    local r = archive:move{level = "STUDY", StudyInstanceUID = uid, destination = destination.aet}
    restored = restored + (r.completed or 0)
    local fine, there = pcall(instances, destination, uid)
    if not fine then
        unverified = true
        log.warn("the destination does not answer C-FIND: restore not verified there",
                 {destination = args.to, error = tostring(there)})
        return r.failed == 0
    end
    local missing = 0
    for u in pairs(wanted) do if not there[u] then missing = missing + 1 end end
    failed = failed + missing
    log.info("study restored", {study = uid, instances = n, moved = r.completed, missing = missing})
    return missing == 0
end, {concurrency = 2, errors = "return"})

if args.dry_run then return cli.EXIT.ok end
audit.event{op = "restore", peer = archive.alias, destination = args.to, patient_id = args.patient,
            study_uid = args.study, count = restored, failed = failed,
            outcome = failed == 0 and "ok" or "incomplete"}
audit.close()
io.stdout:write(string.format("restored %d of %d instances from %s to %s%s; %d missing there\n", restored, total,
                              archive.alias, args.to, unverified and " (not verified: no C-FIND)" or "", failed))
for i = 1, #studies do if results[i] ~= true then failed = failed + 1 end end
return failed == 0 and cli.EXIT.ok or cli.EXIT.failure
