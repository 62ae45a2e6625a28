--- serve the status page, /metrics, /healthz, /readyz and /api over HTTP (read-only)
local cli = require "rtbackup.cli"

local parser = cli.parser("serve", [[
Serves, until SIGINT/SIGTERM, on serve_address:serve_port (default 127.0.0.1:9110):
  /          the status page: per environment and source, coverage per day, the last
             runs, open failures, peer health, the last restore drill (HTML, no script)
  /metrics   Prometheus metrics (the textfile's names, from the journals, plus the
             process's own)
  /healthz   liveness; /readyz  the health checks (cached), 503 when one fails
  /api/...   the same as JSON (/api lists the endpoints)
Read-only: it reads the journals while backups write them, and moves nothing.
Optional HTTPS (serve_tls_cert, serve_tls_key) and HTTP basic auth (serve_user,
serve_password_hash as a secret); serve_hide_patient_ids leaves patient IDs out.
  rtbackup serve                      # every environment of the configuration
  rtbackup serve UCLA --port 9110 --address 0.0.0.0
  rtbackup serve --hash-password < password.txt   # prints a serve_password_hash]],
    "0 the password hash was printed, 2 usage or configuration error (e.g. the port is taken), " ..
    "130/143 stopped by SIGINT/SIGTERM (the normal end)")
parser:argument("env", "environments to serve (default: every one in the configuration)"):args("*")
parser:option("--address", "address to listen on (overrides serve_address)")
parser:option("--port", "TCP port (overrides serve_port; 0: any free port)"):convert(cli.port("--port", true))
parser:option("--port-file", "write the port listened on to this file once serving (with --port 0)")
parser:flag("--hash-password", "read a password on stdin, print its hash for serve_password_hash, exit")
local args = cli.parse(parser, {...})

if args.hash_password then return require("rtbackup.serve.password").print_hash(io.stdin, io.stdout) end
local names = #args.env > 0 and args.env or require("rtbackup.config").environments()
if #names == 0 then cli.usage("no environment to serve in " .. tostring(require("rtbackup.config").path())) end
local envs = {}
for i, name in ipairs(names) do envs[i] = cli.load_env(name) end
return require("rtbackup.serve").run(envs, {address = args.address, port = args.port,
                                            port_file = args.port_file})
