--- rtbackup.serve.password: `rtbackup serve --hash-password` — a password read from
-- stdin (the first line; never from the command line, where `ps` and shell history
-- would show it) becomes the PBKDF2-SHA256 hash serve_password_hash holds.
local errors = require "rtbackup.error"
local http = require "rtbackup.http"

local password = {}

--- Reads the password from `input`, writes its hash (and a line saying where it
-- goes) to `output`. Returns the exit code.
function password.print_hash(input, output)
    local line = input:read("l")
    if line == nil or line == "" then
        errors.raise{kind = "usage", message = "--hash-password: write the password on stdin (one line)"}
    end
    line = line:gsub("\r$", "")
    if #line < 8 then
        errors.raise{kind = "usage", message = "--hash-password: use a password of at least 8 characters"}
    end
    output:write(http.hash_password(line), "\n")
    io.stderr:write("Keep it as a secret: serve_password_hash = \"__NAME__\" (or serve_password_hash_env_var = ",
                    "\"NAME\") and, in /etc/rtbackup/secrets.env, NAME='<the line above>' (in single quotes: it ",
                    "contains $ signs a shell would expand).\n")
    return 0
end

return password
