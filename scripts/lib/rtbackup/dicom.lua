--- rtbackup.dicom: DICOM peers, datasets, UIDs and a storage SCP.
--
--   local aria = dicom.peer(env, "ARIA")           -- calling AE = env.script_ae.aet
--   aria:echo()                                     -- seconds
--   aria:find{level = "SERIES", StudyDate = "20261121-", SeriesInstanceUID = "",
--             NumberOfSeriesRelatedInstances = ""}  -- list of {Keyword = value}
--   aria:find(query, function(match) ... end)       -- streaming; return false to stop
--   aria:move{level = "SERIES", StudyInstanceUID = s, SeriesInstanceUID = x,
--             destination = "ORTHANC_MAIN"}         -- {completed, failed, warning, failed_uids}
--   main:get({level = "IMAGE", ...}, dir | function(ds) end)
--   main:store{ds1, "path/to/file.dcm"}             -- {stored, failed, items}
--   dicom.listen{aet = ..., port = 0, allow = {...}, dir = ..., on_store = fn}
--
-- Query keys are DICOM keywords; an unknown keyword is an error, never dropped.
-- Errors are tables {kind = "connect_failed" | "rejected" | "aborted" | "timeout" |
-- "status" | "negotiation" | "io" | "invalid" | ..., message, peer, alias, status}.
local audit = require "rtbackup.audit"
local core = require "rtbackup.dicom.core"
local errors = require "rtbackup.error"
local host = require "rtbackup.host"
local metrics = require "rtbackup.metrics"
local task = require "rtbackup.task"

local dicom = {
    dataset = core.dataset,
    read = core.read,
    uid = core.uid,
    uid_valid = core.uid_valid,
    uid_name = core.uid_name, -- "MR Image Storage", "RLE Lossless"
    -- Associations this process opened, by operation (summaries and benchmarks).
    associations = {echo = 0, find = 0, move = 0, get = 0, store = 0},
}

-- Keys of a query table that steer the operation rather than match attributes.
local CONTROL = {level = true, model = true, destination = true}

local LEVELS = {PATIENT = 1, STUDY = 2, SERIES = 3, IMAGE = 4}
-- The unique key of each level, which a retrieve identifier must carry for its
-- level and every level above it (PS3.4 C.4.2.2.1, relational retrieve not assumed).
local UNIQUE_KEYS = {
    {level = "STUDY", key = "StudyInstanceUID"},
    {level = "SERIES", key = "SeriesInstanceUID"},
    {level = "IMAGE", key = "SOPInstanceUID"},
}

local Peer = {}
Peer.__index = Peer

function Peer:__tostring()
    return string.format("%s (%s@%s:%d)", self.alias or "peer", self.aet, self.host, self.port)
end

local function level_of(query)
    local level = (query.level or "STUDY"):upper()
    if not LEVELS[level] then
        errors.raise{kind = "invalid", message = "query level must be PATIENT, STUDY, SERIES or IMAGE, got " .. tostring(query.level)}
    end
    return level
end

local function model_of(query, level)
    if query.model then return query.model end
    return level == "PATIENT" and "patient" or "study"
end

local function identifier(query)
    local id = {}
    for k, v in pairs(query) do
        if not CONTROL[k] then id[k] = v end
    end
    return id
end

local function is_wildcard(v)
    return v == nil or v == "" or (type(v) == "string" and v:find("[*?\\]") ~= nil)
end

-- C-MOVE and C-GET below STUDY level need the real UIDs of every level above.
local function check_retrieve_keys(query, level)
    for _, u in ipairs(UNIQUE_KEYS) do
        if LEVELS[u.level] <= LEVELS[level] and LEVELS[level] >= LEVELS.SERIES
           and is_wildcard(query[u.key]) then
            errors.raise{kind = "invalid", message = string.format(
                "%s-level retrieve needs a single %s (got %s)", level, u.key, tostring(query[u.key]))}
        end
    end
end

-- Error kinds that mean the association itself failed: counted per peer and kind
-- in rtbackup_association_failures_total.
local ASSOCIATION_FAILURES = {connect_failed = true, timeout = true, rejected = true, aborted = true,
                              negotiation = true}

-- Operations that touch patient data, by our op name: their audit event's name.
local AUDITED = {find = "c-find", move = "c-move", get = "c-get", store = "c-store"}

-- A single value of a query key, for the audit event's own fields; wildcards and
-- lists stay in `keys` (C-FIND) only.
local function present(v)
    if type(v) ~= "string" or v == "" or v:find("[*?\\]") then return nil end
    return v
end

-- The audit event of one operation (rtbackup.audit does nothing without an audit log).
-- `r` is the operation's result, or nil when `err` says why it failed.
local function audit_event(self, op, query, r, err)
    query = query or {}
    audit.event{op = AUDITED[op], peer = self.alias or self.aet,
                patient_id = present(query.PatientID), study_uid = present(query.StudyInstanceUID),
                series_uid = present(query.SeriesInstanceUID), patient_ids = query.patient_ids,
                destination = query.destination,
                keys = op == "find" and identifier(query) or nil,
                count = type(r) == "table" and (r.completed or r.stored) or (type(r) == "number" and r or nil),
                failed = type(r) == "table" and r.failed or nil, error = err}
end

-- Runs fn as operation `op` of this peer: counts the association, times it for the
-- metrics (rtbackup.metrics), records an audit event for operations on patient data
-- (`query` says which), and adds this peer's alias to any error it raises.
local function annotated(self, op, query, fn, ...)
    dicom.associations[op] = dicom.associations[op] + 1
    local name = self.alias or self.aet
    local started = host.monotonic()
    local results = table.pack(pcall(fn, ...))
    metrics.observe("c-" .. op, name, host.monotonic() - started)
    if results[1] then
        if AUDITED[op] then
            local r = results[2]
            audit_event(self, op, query, (op == "find" and type(r) == "table") and #r or r)
        end
        return table.unpack(results, 2, results.n)
    end
    local a = results[2]
    if type(a) == "table" then
        a.alias = a.alias or self.alias
        if a.peer == nil then a.peer = string.format("%s@%s:%d", self.aet, self.host, self.port) end
        if ASSOCIATION_FAILURES[a.kind] then metrics.count_failure(name, a.kind) end
    end
    if AUDITED[op] then audit_event(self, op, query, nil, a) end
    error(a, 0)
end

--- C-ECHO. Returns the seconds it took.
function Peer:echo()
    return annotated(self, "echo", nil, core.echo, self)
end

--- C-FIND. Without on_match: the list of matches. With on_match(match): called for
-- each as it arrives (return false to stop: C-CANCEL); returns the number delivered.
function Peer:find(query, on_match)
    local level = level_of(query)
    return annotated(self, "find", query, function()
        local stream = core.find_start(self, level, model_of(query, level), identifier(query))
        local all, count = {}, 0
        while true do
            local batch = stream:next()
            if not batch then break end
            for _, match in ipairs(batch) do
                count = count + 1
                if on_match then
                    if on_match(match) == false then stream:cancel() end
                else
                    all[count] = match
                end
            end
        end
        return on_match and count or all
    end)
end

--- C-MOVE to query.destination. Returns {status, completed, failed, warning,
-- remaining, failed_uids}; a failure status raises kind "status" with the same fields.
function Peer:move(query)
    local level = level_of(query)
    if not query.destination then
        errors.raise{kind = "invalid", message = "move: destination (an AE title) is required"}
    end
    check_retrieve_keys(query, level)
    return annotated(self, "move", query, core.move, self, level, model_of(query, level), identifier(query),
                     query.destination)
end

--- C-GET. `into` is a directory (instances land there as <SOPInstanceUID>.dcm) or a
-- function receiving each instance as a dataset. Returns the counts, like move.
function Peer:get(query, into)
    local level = level_of(query)
    check_retrieve_keys(query, level)
    local dir = type(into) == "string" and into or nil
    local fn = type(into) == "function" and into or nil
    return annotated(self, "get", query, function()
        local stream = core.get_start(self, level, model_of(query, level), identifier(query), dir, fn ~= nil)
        while true do
            local batch = stream:next()
            if not batch then break end
            if fn then for _, ds in ipairs(batch) do fn(ds) end end
        end
        return stream:result()
    end)
end

--- C-STORE of paths and datasets over one association. Returns {stored, failed,
-- items = {{ok, status, sop_instance_uid, path, error}}, error}: an item that cannot
-- be read or is refused fails alone; `error` is set when the association failed.
-- opts (optional): {max_reconnects, backoff_ms, max_backoff_ms} when the association is lost.
-- Each item has outcome = "stored" | "refused" | "unreadable" | "not_sent".
function Peer:store(items, opts)
    -- The audit log names the patients whose datasets were sent (paths are not read here).
    local seen, patients = {}, {}
    for _, item in ipairs(items) do
        local id = type(item) ~= "string" and item.PatientID
        if id and not seen[id] then seen[id], patients[#patients + 1] = true, id end
    end
    return annotated(self, "store", {patient_ids = #patients > 0 and patients or nil}, core.store, self, items, opts)
end

local function number_setting(settings, key)
    local v = settings and settings[key]
    return type(v) == "number" and v or nil
end

--- A peer from an environment: dicom.peer(env, alias) looks the alias up in
-- env.sources, then env.backup_targets; calling AE = env.script_ae.aet; timeouts
-- and max PDU from env.settings. Or dicom.peer{aet, host|ip, port, calling_aet, ...}.
function dicom.peer(spec, alias)
    local settings, calling_aet
    if type(alias) == "string" then
        local env = spec
        spec = (env.sources or {})[alias] or (env.backup_targets or {})[alias]
        if not spec then
            errors.raise{kind = "config", message = string.format(
                "%s has no source or backup target named %s", env.name or "environment", alias)}
        end
        settings = env.settings
        calling_aet = env.script_ae and env.script_ae.aet
    end
    local peer = setmetatable({
        alias = alias or spec.alias,
        aet = spec.aet,
        host = spec.host or spec.ip,
        port = spec.port,
        calling_aet = spec.calling_aet or calling_aet,
        connect_timeout = spec.connect_timeout or number_setting(settings, "connect_timeout"),
        acse_timeout = spec.acse_timeout or number_setting(settings, "acse_timeout"),
        dimse_timeout = spec.dimse_timeout or number_setting(settings, "dimse_timeout"),
        max_pdu = spec.max_pdu or number_setting(settings, "max_pdu"),
        tls = spec.tls,
        type = spec.type,
    }, Peer)
    for _, key in ipairs{"aet", "host", "port", "calling_aet"} do
        if peer[key] == nil then
            errors.raise{kind = "config", message = string.format(
                "peer %s: %s is missing", tostring(peer.alias or "?"), key == "host" and "ip (or host)" or key)}
        end
    end
    return peer
end

local Listener = {}
Listener.__index = Listener

--- The port it listens on (useful with port = 0).
function Listener:port() return self.scp:port() end
--- Instances stored so far.
function Listener:stored() return self.scp:stored() end
--- Counters: {stored, associations, refused, rejected, dropped, exec_ran, exec_failed} (final after stop).
function Listener:stats() return self.scp:stats() end

--- Stops accepting, lets running associations end, delivers the last events.
function Listener:stop()
    self.scp:stop()
    if self.drain then self.drain:wait() end
end

--- A storage SCP on its own thread: dicom.listen{aet, port (0 = any free), allow =
-- {calling AE titles}, dir, on_store = function(event) end, request_timeout (s, 5),
-- max_associations (8), max_per_host (4), sort_by_study = bool, tls = {cert, key, ca,
-- require_client_cert = bool}, exec = {program, args...} run per stored instance without a
-- shell, placeholders #p #f #a #c #r}. Each event is
-- {path, sop_class_uid, sop_instance_uid, calling_aet, transfer_syntax_uid}; on_store
-- runs in a task of its own, one event at a time.
function dicom.listen(opts)
    local scp = core.listen{
        aet = opts.aet, port = opts.port, allow = opts.allow, dir = opts.dir,
        events = opts.on_store ~= nil, acse_timeout = opts.acse_timeout,
        dimse_timeout = opts.dimse_timeout, max_pdu = opts.max_pdu,
        max_associations = opts.max_associations,
        request_timeout = opts.request_timeout, max_per_host = opts.max_per_host,
        tls = opts.tls, sort_by_study = opts.sort_by_study, exec = opts.exec,
    }
    local listener = setmetatable({scp = scp}, Listener)
    if opts.on_store then
        listener.drain = task.spawn(function()
            while true do
                local batch = scp:next()
                if not batch then break end
                for _, event in ipairs(batch) do opts.on_store(event) end
            end
        end)
    end
    return listener
end

return dicom
