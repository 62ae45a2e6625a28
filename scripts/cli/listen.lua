--- run a storage SCP that writes received instances to a directory
local cli = require "rtbackup.cli"
local errors = require "rtbackup.error"

local parser = cli.parser("listen", [[
Receives instances (C-STORE, C-ECHO) and writes them to --out-dir as
<SOPInstanceUID>.dcm, until SIGINT or SIGTERM. A C-STORE is answered with
success only once its file is durable (fsync of the file and of its directory);
a data set that is not the instance its request announces (another SOP Instance
or Class UID, or none) is refused (0xA900) and not kept. An instance received
again with the same bytes is kept once; with other content, the first file is left
as it is and the new one written beside it as <SOPInstanceUID>.2.dcm (.3, ...),
with a warning. While it runs, --out-dir
also holds hidden files (".*"): a few empty ones made ahead to write the next
instances into, removed when it stops, and the ones being received. Those a
listen killed or cut off by a power loss left are removed at the next start
(unless another listen serves the directory then).
Each connection must send its association request within --request-timeout
seconds; connections beyond --max-associations, or beyond --max-per-host from
one address, are refused at once, so idle or slow clients cannot starve it.
With --env, the environment's settings scp_request_timeout,
scp_max_associations and scp_max_per_host apply unless an option says otherwise.
  rtbackup listen --env UCLA --out-dir /var/spool/rtbackup --allow ARIA_UCLA
  rtbackup listen --aet BACKUP --port 2762 --out-dir /srv/in \
      --tls-cert scp.pem --tls-key scp.key --tls-ca ca.pem --require-client-cert
  rtbackup listen --aet BACKUP --port 2762 --out-dir /srv/in --sort-by-study \
      --exec-on-reception "/usr/local/bin/index-instance #p/#f #a"]],
    "130/143 stopped by SIGINT/SIGTERM (the normal end), 1 cannot listen, 2 usage or configuration error")
parser:option("--env", "environment: our AE title and port from its script_ae, limits from its settings")
parser:option("--aet", "our AE title")
parser:option("--port", "port to listen on (0: any free port)"):convert(cli.port("--port", true))
parser:option("--out-dir", "where instances are written (created)")
parser:option("--allow", "calling AE title to accept (repeatable; default: any)"):count("*")
parser:option("--request-timeout", "seconds a new connection has to send its association request " ..
    "(default: the setting scp_request_timeout, 5)")
    :convert(cli.whole_number("--request-timeout", 1))
parser:option("--max-associations", "connections served at once, all hosts together " ..
    "(default: the setting scp_max_associations, 16)")
    :convert(cli.whole_number("--max-associations", 1))
parser:option("--max-per-host", "connections served at once from one remote address " ..
    "(default: the setting scp_max_per_host, 4)")
    :convert(cli.whole_number("--max-per-host", 1))
parser:option("--tls-cert", "DICOM TLS: our certificate (PEM); every connection must then use TLS")
parser:option("--tls-key", "DICOM TLS: the private key of --tls-cert (PEM)")
parser:option("--tls-ca", "DICOM TLS: CA certificates (PEM) a client certificate must chain to")
parser:flag("--require-client-cert", "DICOM TLS: refuse clients without a certificate signed by --tls-ca")
parser:flag("--sort-by-study", "write <out-dir>/<StudyInstanceUID>/<SOPInstanceUID>.dcm")
parser:option("--exec-on-reception", "run CMD for each stored instance, one at a time, without a shell: " ..
    "words split at blanks ('...' or \"...\" keep one word), #p = its directory, #f = file name, " ..
    "#a = calling AE, #c = called AE, #r = peer address"):argname("<cmd>")
local args = cli.parse(parser, {...})

local function usage(message)
    errors.raise{kind = "usage", message = message .. "\n" .. parser:get_usage()}
end

local env = args.env and cli.load_env(args.env)
local aet = args.aet or (env and env.script_ae.aet)
local port = args.port or (env and env.script_ae.port)
if not aet or not port or not args.out_dir then
    usage("give --aet, --port (or --env) and --out-dir")
end

-- An option, else the environment's setting, else the setting's default (the same
-- without --env). Each is checked where it comes from: the option by its converter,
-- the setting by the configuration's validation.
local function limit(option, name) return option or require("rtbackup.settings").get(env or {}, name) end
local request_timeout = limit(args.request_timeout, "scp_request_timeout")
local max_associations = limit(args.max_associations, "scp_max_associations")
local max_per_host = limit(args.max_per_host, "scp_max_per_host")

--- The words of a command line: blanks separate, '...' and "..." group (no escapes,
-- no variables, no globs: it never reaches a shell).
local function words(cmd)
    local out, word, quote, has = {}, {}, nil, false
    for c in cmd:gmatch(".") do
        if quote then
            if c == quote then quote = nil else word[#word + 1] = c end
        elseif c == "'" or c == '"' then
            quote, has = c, true
        elseif c:match("%s") then
            if has or #word > 0 then out[#out + 1] = table.concat(word) end
            word, has = {}, false
        else
            word[#word + 1] = c
        end
    end
    if quote then usage("--exec-on-reception: unmatched " .. quote) end
    if has or #word > 0 then out[#out + 1] = table.concat(word) end
    if #out == 0 then usage("--exec-on-reception: empty command") end
    return out
end
local exec = args.exec_on_reception and words(args.exec_on_reception)

local tls
if args.tls_cert or args.tls_key or args.tls_ca or args.require_client_cert then
    if not (args.tls_cert and args.tls_key) then usage("TLS needs both --tls-cert and --tls-key") end
    if args.require_client_cert and not args.tls_ca then usage("--require-client-cert needs --tls-ca") end
    tls = {cert = args.tls_cert, key = args.tls_key, ca = args.tls_ca, require_client_cert = args.require_client_cert}
end

require("rtbackup.listen").serve{
    aet = aet, port = port, out_dir = args.out_dir, allow = #args.allow > 0 and args.allow or nil,
    request_timeout = request_timeout, max_associations = max_associations, max_per_host = max_per_host,
    tls = tls, sort_by_study = args.sort_by_study, exec = exec,
}
