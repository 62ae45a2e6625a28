--- rtbackup.settings: every setting rtbackup reads, in one table — its name, type,
-- range, default, where it may be set, and what it does. The table validates the
-- environments (`rtbackup config check`), resolves values for a run, and writes the
-- settings reference (docs/settings.md). Adding a setting is adding one entry here.
--
-- Where a setting may be set (`on`):
--   settings  [ENV.settings], for the whole environment
--   dicom     a DICOM source ([ENV.sources.X] of type aria or mim), for that source
--   mosaiq    a Mosaiq source ([ENV.sources.X] of type mosaiq)
--   target    a backup target ([ENV.backup_targets.X])
-- A value on a source or target wins over [ENV.settings] for that peer; that is the
-- one documented precedence. Site folders (scripts/<site>/site.lua) cannot set these.
--
--   local settings = require "rtbackup.settings"
--   settings.get(env, "max_retries")                -- [ENV.settings] or the default
--   settings.get(env, "max_associations", "ARIA")    -- the source's own value first
local errors = require "rtbackup.error"
local sys = require "rtbackup.sys"

local settings = {}

local PEERS = {"settings", "dicom", "target"}
local SOURCES = {"settings", "dicom", "mosaiq"}
local ENV_ONLY = {"settings"}

local function check_window(v)
    local h1, m1, h2, m2 = v:match("^(%d%d):(%d%d)%-(%d%d):(%d%d)$")
    h1, m1, h2, m2 = tonumber(h1), tonumber(m1), tonumber(h2), tonumber(m2)
    if not h1 or h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 then
        return string.format("expected a time window \"HH:MM-HH:MM\" on the 24-hour clock, got %q", v)
    end
    if h1 * 60 + m1 == h2 * 60 + m2 then
        return string.format("time window %q starts and ends at the same time", v)
    end
end

local function check_timezone(v)
    local ok, err = pcall(sys.localtime, 0, v)
    if not ok then return tostring(type(err) == "table" and err.message or err) end
end

local function check_url(v)
    if not v:match("^https?://[^%s]+$") then return string.format("expected an http:// or https:// URL, got %q", v) end
end

local function check_uid_root(v)
    if not v:match("^[%w%-_.]+$") or #v > 64 then
        return "expected a short name of letters, digits, '-', '_' or '.' (at most 64 characters)"
    end
end

-- type: integer | number | boolean | string | table | enum (values) ; min/max for numbers;
-- check(value) -> message for strings; secret = true: may come from a placeholder.
settings.SCHEMA = {
    -- selection and scale
    {name = "max_uids_per_run", type = "integer", min = 1, on = ENV_ONLY,
     doc = "At most this many instances (or records) per run, counted by whole series: a series larger than the cap is moved whole (the run's first, so that it is ever moved), and nothing more that run; the rest waits for the next runs, oldest first. Unset: no cap."},
    {name = "lookback_days", type = "integer", min = 0, max = 3660, on = SOURCES,
     doc = "Days before today that a backup (and validate) looks at when no --since is given. Unset: 90 for a DICOM source, whose studies are selected by StudyDate: an object added to an earlier study (the plan of last week's CT, a course's daily treatment records) is found while the course runs. 7 for a Mosaiq source, by treatment date: a run after midnight still backs up the evening's deliveries, and a row corrected at the week's chart check is archived again. 0: today only."},
    {name = "undated_sweep_days", type = "integer", min = 0, max = 3660, default = 7, on = {"settings", "dicom"},
     doc = "A study without a StudyDate (the attribute may be empty) matches no date range, so a backup by dates never sees it. Once every this many days a backup of a DICOM source also lists every study of the source and takes those without a date (their series are compared like any other's); a run with --patient always does, for that patient. 0: never."},
    {name = "dicom_query_keys", type = "table", default = {}, on = {"settings", "dicom"},
     doc = "Extra C-FIND keys that select what a backup, validate and query look at, e.g. { Modality = \"RTPLAN\" }. Study-level keys go to the study query, the others to the series query."},
    {name = "dicom_query_level", type = "enum", values = {"PATIENT", "STUDY", "SERIES", "IMAGE"}, default = "STUDY",
     on = {"settings", "dicom"}, doc = "Default level of `rtbackup query`."},
    {name = "modality_to_query", type = "string", on = {"settings", "dicom"},
     doc = "Default --modality of `rtbackup query` below STUDY level (e.g. RTRECORD)."},
    {name = "complete_references", type = "boolean", default = true, on = ENV_ONLY,
     doc = "Follow the references of backed-up RT objects (record and dose to plan, plan to structure set, structure set to images) and back up what the archive lacks."},
    -- load on peers
    {name = "max_associations", type = "integer", min = 1, default = 8, on = PEERS,
     doc = "Associations at once to a peer, for every operation of this process (backup, validate, restore, query, health, store). A ceiling: with adaptive_associations the backup starts at 4 and adapts below it."},
    {name = "adaptive_associations", type = "boolean", default = true, on = PEERS,
     doc = "true: a backup (and store) keeps as many associations going as makes it faster (one more while throughput grows, half as many when the peer struggles or queues associations instead of serving them), never above max_associations, and logs what it chose; false: always max_associations."},
    {name = "window", type = "string", check = check_window, on = {"settings", "dicom", "mosaiq", "target"},
     doc = "Backup window \"HH:MM-HH:MM\" in the site's time zone (may cross midnight). Outside it a backup does nothing (exit 5) and a running one starts no new work."},
    {name = "circuit_breaker_failures", type = "integer", min = 1, default = 3, on = ENV_ONLY,
     doc = "After this many connection failures in a row, a peer is skipped for the rest of the run (a peer answering that it is at its limit of associations is not failing: it is asked again)."},
    -- retries
    {name = "max_retries", type = "integer", min = 0, default = 3, on = SOURCES,
     doc = "Times the instances still missing after a move are moved again (with backoff) before they count as failed."},
    {name = "retry_backoff_ms", type = "integer", min = 0, default = 1000, on = ENV_ONLY,
     doc = "Wait before the first retry; doubled for each next one."},
    -- DICOM network
    {name = "connect_timeout", type = "integer", min = 1, default = 10, on = PEERS, doc = "Seconds to open a TCP connection."},
    {name = "acse_timeout", type = "integer", min = 1, default = 30, on = PEERS, doc = "Seconds to wait for association negotiation."},
    {name = "dimse_timeout", type = "integer", min = 1, default = 60, on = PEERS,
     doc = "Seconds to wait for the next DIMSE message (C-MOVE: see move_timeout)."},
    {name = "move_timeout", type = "integer", min = 1, max = 86400, default = 1800, on = PEERS,
     doc = "Seconds to wait for the next response of a C-MOVE. Pending responses are optional: " ..
           "a source may answer only once the whole move is done, so this is as long as the longest move may take."},
    {name = "max_pdu", type = "integer", min = 4096, max = 131072, zero_ok = true, on = ENV_ONLY,
     doc = "Our maximum receive PDU in bytes (0: DCMTK's default, 116794)."},
    -- the storage SCP (listen)
    {name = "scp_request_timeout", type = "integer", min = 1, default = 5, on = ENV_ONLY,
     doc = "Seconds a connection to `rtbackup listen` may take to send its association request."},
    {name = "scp_max_associations", type = "integer", min = 1, default = 16, on = ENV_ONLY,
     doc = "Associations `rtbackup listen` serves at once."},
    {name = "scp_max_per_host", type = "integer", min = 1, default = 4, on = ENV_ONLY,
     doc = "Associations `rtbackup listen` serves at once from one remote address."},
    -- Mosaiq
    {name = "mosaiq_backup_sql_query", type = "string", on = {"settings", "mosaiq"},
     doc = "The day query (one '?', the date) that lists the day's deliveries; unset: the shipped query for the server's dialect."},
    {name = "mosaiq_devices_sql_query", type = "string", on = {"settings", "mosaiq"},
     doc = "The accessories query (one '?', the date) that lists the wedges, blocks, compensators and boli of the day's deliveries; unset: the shipped query for the server's dialect."},
    {name = "mosaiq_points_sql_query", type = "string", on = {"settings", "mosaiq"},
     doc = "The control points query (one '?', a field version's TxField FLD_ID) that lists its planned control points, asked once per field version in a run; unset: the shipped query for the server's dialect. Not asked when the day query returns point__ columns itself."},
    {name = "mosaiq_remove_superseded", type = "boolean", default = false, on = {"settings", "mosaiq"},
     doc = "When Mosaiq corrects a delivery, the corrected record is a new version with its own UID. true: once it is verified, the superseded version is deleted from the backup target through its Orthanc REST API (the target's http_url); false: kept and reported."},
    {name = "login_timeout", type = "integer", min = 0, default = 15, on = {"settings", "mosaiq"},
     doc = "Seconds to log in to the database (0: no limit)."},
    {name = "query_timeout", type = "integer", min = 0, default = 300, on = {"settings", "mosaiq"},
     doc = "Seconds a query may run (0: no limit)."},
    {name = "uid_namespace", type = "string", check = check_uid_root, on = {"settings", "mosaiq"},
     doc = "The stable name that scopes the UIDs of records built from this Mosaiq database. Unset: derived from the database (its DSN, or server and database) and kept in the journal, so renaming an environment or a source never re-archives a record."},
    -- time
    {name = "timezone", type = "string", check = check_timezone, on = ENV_ONLY,
     doc = "The site's time zone (tz database name, e.g. America/Los_Angeles): what \"today\" and the window mean. Unset: the host's."},
    -- files
    {name = "state_dir", type = "string", on = ENV_ONLY,
     doc = "Journal, locks, summaries and spool (created 0700). A relative path is taken from the working directory: give an absolute one for cron and systemd, or each place a run starts from keeps a journal of its own. Unset: $RTBACKUP_STATE_DIR, else /var/lib/rtbackup when installed (<prefix>/var/lib/rtbackup under a prefix other than /usr and /usr/local), ./state in a checkout."},
    {name = "spool_dir", type = "string", on = ENV_ONLY, doc = "Where received instances wait (default: inside state_dir)."},
    {name = "audit_log", type = "string", on = ENV_ONLY,
     doc = "Append-only JSON-lines audit trail of every operation on patient data (created 0600)."},
    {name = "run_history_days", type = "integer", min = 1, default = 400, on = ENV_ONLY,
     doc = "Days of run history the journal keeps (status, trends)."},
    {name = "progress_interval", type = "integer", min = 1, default = 60, on = ENV_ONLY,
     doc = "Seconds between progress lines in the log when not on a terminal (cron, systemd)."},
    -- alerts
    {name = "alert_command", type = "string", on = ENV_ONLY,
     doc = "A command run (no shell) with the run's JSON summary on stdin when a run fails, is partial, interrupted, locked out or a drill finds a mismatch."},
    {name = "alert_webhook", type = "string", check = check_url, secret = true, on = ENV_ONLY,
     doc = "A URL the same JSON is POSTed to (10 s timeout, 3 tries). A failing webhook never fails the run."},
    {name = "alert_on_success", type = "boolean", default = false, on = ENV_ONLY,
     doc = "Also alert when a run succeeds."},
    {name = "alert_locked_after_minutes", type = "integer", min = 1, default = 360, on = ENV_ONLY,
     doc = "A backup that finds its source locked by another run alerts once that run has held the lock this long (a hung or forgotten run); a shorter overlap is not alerted."},
    -- restore drills
    {name = "drill_sample", type = "integer", min = 1, default = 3, on = {"settings", "dicom", "mosaiq"},
     doc = "Verified studies (Mosaiq: records) a `rtbackup drill` restores and compares when --sample is not given."},
    {name = "drill_scratch_dir", type = "string", on = ENV_ONLY,
     doc = "Where a drill writes what it retrieves from the archive (a private directory of its own inside, removed at the end). Unset: inside state_dir."},
    -- rtbackup serve
    {name = "serve_address", type = "string", default = "127.0.0.1", on = ENV_ONLY,
     doc = "Address `rtbackup serve` listens on (status page, /metrics, /healthz, /readyz, /api). Loopback by default; \"0.0.0.0\" or \"::\" for every interface."},
    {name = "serve_port", type = "integer", min = 1, max = 65535, default = 9110, on = ENV_ONLY,
     doc = "TCP port of `rtbackup serve`."},
    {name = "serve_tls_cert", type = "string", on = ENV_ONLY,
     doc = "PEM certificate (chain) file: `rtbackup serve` speaks HTTPS only. Needs serve_tls_key."},
    {name = "serve_tls_key", type = "string", on = ENV_ONLY,
     doc = "PEM private key file of serve_tls_cert."},
    {name = "serve_user", type = "string", on = ENV_ONLY,
     doc = "User name of HTTP basic auth for `rtbackup serve` (every path but /healthz). Needs serve_password_hash."},
    {name = "serve_password_hash", type = "string", secret = true, on = ENV_ONLY,
     doc = "The password of serve_user as `rtbackup serve --hash-password` prints it (PBKDF2-SHA256), as a secret (\"__NAME__\" or serve_password_hash_env_var)."},
    {name = "serve_hide_patient_ids", type = "boolean", default = false, on = ENV_ONLY,
     doc = "Show no patient IDs on the status page and in /api (failures are named by study, series or record only)."},
    {name = "serve_health_cache_seconds", type = "integer", min = 1, default = 15, on = ENV_ONLY,
     doc = "How long `rtbackup serve` reuses the result of the health checks (/readyz, the status page, /metrics) before checking the peers again."},
    {name = "serve_days", type = "integer", min = 1, max = 3660, default = 30, on = ENV_ONLY,
     doc = "Days of coverage the status page shows (?days=N overrides it per request)."},
}

local BY_NAME = {}
for _, s in ipairs(settings.SCHEMA) do
    local on = {}
    for _, where in ipairs(s.on) do on[where] = true end
    s.where = on
    BY_NAME[s.name] = s
end
settings.BY_NAME = BY_NAME

--- The names a peer table of the given kind ("dicom", "mosaiq", "target") may carry,
-- for the structural check in C (which leaves their values to this module).
function settings.names(kind)
    local list = {}
    for _, s in ipairs(settings.SCHEMA) do
        if kind == nil or s.where[kind] then list[#list + 1] = s.name end
    end
    return list
end

local function describe(v)
    if type(v) == "string" then return string.format("%q", #v > 40 and v:sub(1, 40) .. "..." or v) end
    return tostring(v)
end

--- The problem with value v for setting s (a sentence), or nil when it is fine.
local function check_value(s, v)
    local config = require "rtbackup.config"
    if config.is_secret(v) then
        if s.secret or s.type == "string" then return nil end
        return "expected " .. s.type .. ", got a secret"
    end
    local t = s.type
    if t == "integer" or t == "number" then
        if type(v) ~= "number" or (t == "integer" and math.type(v) ~= "integer") then
            return string.format("expected %s, got %s %s", t == "integer" and "an integer" or "a number",
                                 type(v), describe(v))
        end
        if s.zero_ok and v == 0 then return nil end
        if (s.min and v < s.min) or (s.max and v > s.max) then
            if s.max then
                return string.format("must be %sbetween %s and %s, got %s", s.zero_ok and "0 or " or "",
                                     s.min, s.max, v)
            end
            return string.format("must be at least %s, got %s", s.min, v)
        end
    elseif t == "boolean" then
        if type(v) ~= "boolean" then return string.format("expected true or false, got %s", describe(v)) end
    elseif t == "table" then
        if type(v) ~= "table" then return string.format("expected a table, got %s", describe(v)) end
    elseif t == "enum" then
        local ok = false
        for _, allowed in ipairs(s.values) do ok = ok or allowed == v end
        if not ok then return string.format("expected one of %s, got %s", table.concat(s.values, ", "), describe(v)) end
    else -- string
        if type(v) ~= "string" then return string.format("expected a string, got %s", describe(v)) end
        if s.check then return s.check(v) end
    end
end

local sorted_keys = require("rtbackup.pretty").sorted_keys

local function peer_kind(section, entry)
    if section == "backup_targets" then return "target" end
    return entry.type == "mosaiq" and "mosaiq" or "dicom"
end

--- Problems with the settings of one loaded environment (a table from
-- config.load_raw): {severity, key, message} with key the dotted path. `locate(key)`
-- may return file and line for each.
function settings.check(env, locate)
    local problems = {}
    local function add(severity, key, message)
        local file, line
        if locate then file, line = locate(key) end
        problems[#problems + 1] = {severity = severity, env = env.name, key = key, message = message,
                                   file = file, line = line}
    end
    local function check_table(t, where_kind, path)
        for _, name in ipairs(sorted_keys(t)) do
            local s = BY_NAME[name]
            local key = path .. "." .. name
            if s == nil then
                -- `<setting>_env_var = "NAME"` of a string setting is known: core/config
                -- checks the variable and resolves it into <setting>.
                local of = BY_NAME[name:match("^(.+)_env_var$") or ""]
                local env_var = of and (of.secret or of.type == "string")
                if where_kind == "settings" and not env_var then add("warning", key, "unknown setting (ignored)") end
            elseif not s.where[where_kind] then
                local allowed = {}
                for _, w in ipairs(s.on) do allowed[#allowed + 1] = w == "settings" and "[settings]" or w end
                add("error", key, string.format("%s cannot be set here; it belongs in %s", name,
                                                table.concat(allowed, ", ")))
            else
                local problem = check_value(s, t[name])
                if problem then add("error", key, problem) end
            end
        end
    end
    if type(env.settings) == "table" then check_table(env.settings, "settings", "settings") end
    for _, section in ipairs{"sources", "backup_targets"} do
        for _, alias in ipairs(sorted_keys(env[section])) do
            local entry = env[section][alias]
            if type(entry) == "table" then
                local own = {}
                for k, v in pairs(entry) do if BY_NAME[k] then own[k] = v end end
                check_table(own, peer_kind(section, entry), section .. "." .. alias)
            end
        end
    end
    return problems
end

local function copy(v)
    if type(v) ~= "table" then return v end
    local t = {}
    for k, x in pairs(v) do t[k] = copy(x) end
    return t
end

local function peer_table(env, alias)
    if alias == nil then return nil end
    return (env.sources or {})[alias] or (env.backup_targets or {})[alias]
end

--- The value of setting `name` for environment env: the peer's own value (when alias
-- names a source or target and the setting may be set there), else [ENV.settings],
-- else the default. An unknown name is a bug in the caller.
function settings.get(env, name, alias)
    local s = BY_NAME[name]
    if not s then errors.raise{kind = "invalid", message = "settings.get: no setting named " .. tostring(name)} end
    local peer = peer_table(env, alias)
    if peer and peer[name] ~= nil then return peer[name] end
    local v = (env.settings or {})[name]
    if v ~= nil then return v end
    return copy(s.default)
end

--- Every setting of env (for a peer, with its own values) as one table.
function settings.resolve(env, alias)
    local out = {}
    for _, s in ipairs(settings.SCHEMA) do out[s.name] = settings.get(env, s.name, alias) end
    return out
end

--- The settings reference as Markdown (docs/settings.md is generated from this).
function settings.markdown()
    local lines = {"# Settings", "",
        "Generated from `scripts/lib/rtbackup/settings.lua` (`rtbackup config settings`). A setting is set in",
        "`[ENV.settings]` for the whole environment; where the \"where\" column allows it, also on a source",
        "(`[ENV.sources.X]`) or backup target (`[ENV.backup_targets.X]`), which then wins for that peer.", "",
        "| setting | type | default | where | what it does |", "|---|---|---|---|---|"}
    for _, s in ipairs(settings.SCHEMA) do
        local t = s.type == "enum" and table.concat(s.values, " \\| ") or s.type
        if s.min or s.max then t = t .. string.format(" (%s%s..%s)", s.zero_ok and "0 or " or "", s.min or "", s.max or "") end
        local default = s.default
        if type(default) == "table" then default = "{}" end
        lines[#lines + 1] = string.format("| `%s` | %s | %s | %s | %s |", s.name, t,
                                          default == nil and "—" or ("`" .. tostring(default) .. "`"),
                                          table.concat(s.on, ", "), s.doc)
    end
    return table.concat(lines, "\n") .. "\n"
end

return settings
