--- restore a patient or a study from the backup archive to a destination
local cli = require "rtbackup.cli"

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
      :convert(cli.patient_id("--patient"))
parser:option("--study", "this StudyInstanceUID")
      :convert(cli.uid("--study"))
parser:flag("--dry-run", "list what would be restored, move nothing")
local args = cli.parse(parser, {...})
if not args.to then cli.usage("--to ALIAS is required\n" .. parser:get_usage()) end
if not (args.patient or args.study) or (args.patient and args.study) then
    cli.usage("give exactly one of --patient MRN or --study UID\n" .. parser:get_usage())
end

return require("rtbackup.restore").run(cli.load_env(args.env), {
    to = args.to, from = args.from, patient = args.patient, study = args.study, dry_run = args.dry_run})
