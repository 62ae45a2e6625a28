--- list the references a source's RT objects make that the archive cannot hold yet
local cli = require "rtbackup.cli"

local parser = cli.parser("refs", [[
Lists the references of RT objects (record -> plan, plan -> structure set and dose,
structure set -> images) that the backup archive does not hold and the source could
not provide: each stays open, is re-checked by every backup, and makes it partial
(exit 1) until it resolves or an operator acknowledges it here (the archive may then
lack it: a plan whose structure set was deleted on purpose, say).
  rtbackup refs UCLA                       # the open references of default_source
  rtbackup refs UCLA ARIA --ack 2.25.1234  # references to or from this UID may stay open
  rtbackup refs UCLA --all --format json   # resolved and acknowledged ones too]],
    "0 listed (or acknowledged), 1 an --ack UID has no open reference, 2 usage or configuration error")
parser:argument("env", "environment")
parser:argument("source", "source alias (default: default_source)"):args("?")
parser:option("--ack", "acknowledge the open references to or from this SOP Instance UID"):count("*")
      :convert(cli.uid("--ack"))
parser:flag("--all", "also the resolved and acknowledged references")
parser:option("--shard", "I/N: the journal of that shard")
cli.add_format_option(parser)
local args = cli.parse(parser, {...})

local env = cli.load_env(args.env)
return require("rtbackup.qr.references").command(env, args.source or env.default_source, {
    ack = args.ack, all = args.all, shard = args.shard and cli.shard(args.shard), format = args.format})
