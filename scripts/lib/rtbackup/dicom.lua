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
--   ctx:peer("ARIA")                                 -- the same, in a run's context (rtbackup.context)
--
-- Every operation holds one of the peer's association slots while it runs (setting
-- max_associations, held process-wide by rtbackup.limits), and is counted, timed and
-- audited through the peer's context.
--   dicom.listen{aet = ..., port = 0, allow = {...}, dir = ..., on_store = fn}
--
-- Query keys are DICOM keywords; an unknown keyword is an error, never dropped.
-- Errors are tables {kind = "connect_failed" | "rejected" | "aborted" | "timeout" |
-- "status" | "negotiation" | "io" | "invalid" | ..., message, peer, alias, status,
-- operation ("C-FIND", "C-MOVE", ...)}.
local core = require "rtbackup.dicom.core"
local errors = require "rtbackup.error"
local exit = require "rtbackup.exit"
local host = require "rtbackup.host"
local limits = require "rtbackup.limits"
local log = require "rtbackup.log"
local settings = require "rtbackup.settings"
local task = require "rtbackup.task"

local dicom = {
    dataset = core.dataset,
    read = core.read,
    parse = core.parse, -- the dataset of a file's bytes (dicom.parse(bytes, name))
    uid = core.uid,
    uid_valid = core.uid_valid,
    uid_name = core.uid_name, -- "MR Image Storage", "RLE Lossless"
}

--- Whether text names one UID as a query or retrieve key: digits in components
-- separated by dots, at most 64 characters. Lenient about a component's leading zero
-- (archives hold such UIDs, and they must be named); an empty value (which would match
-- everything) or a wildcard is not one.
function dicom.names_one_uid(text)
    return type(text) == "string" and #text <= 64 and text:find("..", 1, true) == nil
        and (text:match("^%d+$") or text:match("^%d+%.[%d.]*%d$")) ~= nil
end

--- Whether text names one patient's ID as a key: not blank (C-FIND reads an empty
-- value as every patient), no '\' (a list of IDs), at most 64 characters. ('*' and '?'
-- are wildcards there too; answers are kept to the ID named: rtbackup.qr.plan.of_patient.)
function dicom.names_one_patient(text)
    return type(text) == "string" and text:find("%S") ~= nil and not text:find("\\", 1, true) and #text <= 64
end

-- Keys of a query table that steer the operation rather than match attributes.
-- `patient`: who the operation concerns, for the audit log, when the identifier does
-- not say it (a C-MOVE by study UID); never sent.
local CONTROL = {level = true, model = true, destination = true, patient = true}

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

-- The patients an operation concerns, as one ID or a list: what the caller said
-- (query.patient), else the identifier's PatientID, else what the answers carried.
local function patients_of(query, seen)
    if query.patient ~= nil then return query.patient end
    local id = present(query.PatientID)
    if id then return id end
    if seen and #seen > 0 then return #seen == 1 and seen[1] or seen end
    return nil
end

-- A set-and-list of patient IDs met in answers (datasets or C-FIND matches).
local function patient_collector()
    local set, list = {}, {}
    return list, function(id)
        if type(id) == "string" and id ~= "" and not set[id] then
            set[id] = true
            list[#list + 1] = id
        end
    end
end

-- The audit event of one operation (nothing is written without an audit log).
-- `r` is the operation's result, or nil when `err` says why it failed.
local function audit_event(self, op, query, seen, r, err)
    query = query or {}
    local patient = patients_of(query, seen)
    self.ctx:event{op = AUDITED[op], peer = self.alias or self.aet,
                   patient_id = type(patient) == "string" and patient or nil,
                   patient_ids = type(patient) == "table" and patient or nil,
                   study_uid = present(query.StudyInstanceUID), series_uid = present(query.SeriesInstanceUID),
                   destination = query.destination,
                   keys = op == "find" and identifier(query) or nil,
                   count = type(r) == "table" and (r.completed or r.stored) or (type(r) == "number" and r or nil),
                   failed = type(r) == "table" and r.failed or nil, error = err}
end

-- Queries and retrievals an archive refused because it serves its maximum of
-- associations (exit.is_busy: nothing was done) are asked again after a pause that
-- doubles, BUSY_RETRIES times (3 s in all). Moves and stores are not: their callers
-- (rtbackup.run, rtbackup.parallel_store) put the work back in their queue and take
-- the refusal as a sign to run fewer at once.
local ASKED_AGAIN_WHEN_BUSY = {echo = true, find = true, get = true}
local BUSY_RETRIES, BUSY_WAIT_MS = 5, 100

-- Runs fn(seen) as operation `op` of this peer: holds one of the peer's association
-- slots (rtbackup.limits) for its whole length, counts the association, times it for
-- the metrics, records an audit event for operations on patient data (`query` says
-- which; `seen` collects the patients met in the answers), and adds this peer's
-- alias to any error it raises. A query refused by a busy archive is asked again.
local function annotated(self, op, query, fn)
    local breaker = self.breaker
    if breaker and breaker.open then
        errors.raise{kind = "unreachable", alias = self.alias, message = string.format(
            "%s skipped: %d connection failures in a row (circuit_breaker_failures)", tostring(self),
            breaker.failures)}
    end
    local seen, note = patient_collector()
    local function attempt()
        return table.pack(self.limiter:run(function()
            self.ctx.associations[op] = self.ctx.associations[op] + 1
            local started = host.monotonic()
            local r = table.pack(pcall(fn, note))
            if r[1] then self.limiter:note_ok() elseif exit.is_busy(r[2]) then self.limiter:note_busy() end
            local seconds = host.monotonic() - started
            self.ctx:observe("c-" .. op, self.alias or self.aet, seconds)
            if log.enabled("debug") then
                log.debug("C-" .. op:upper(), {peer = tostring(self), level = type(query) == "table" and query.level or nil,
                                               ms = math.floor(seconds * 1000 + 0.5),
                                               outcome = r[1] and "ok" or tostring(r[2])})
            end
            return table.unpack(r, 1, r.n)
        end))
    end
    local results, wait = attempt(), BUSY_WAIT_MS
    for _ = 1, ASKED_AGAIN_WHEN_BUSY[op] and BUSY_RETRIES or 0 do
        if results[1] or not exit.is_busy(results[2]) or task.stopping() then break end
        task.sleep(wait)
        wait = wait * 2
        results = attempt()
    end
    if results[1] then
        if breaker then breaker.failures = 0 end
        local r = results[2]
        -- A store returns its per-file outcomes even when its association failed (the
        -- rest "not sent"): that failure is counted and audited as such all the same.
        local failed = op == "store" and type(r) == "table" and r.error or nil
        if failed and ASSOCIATION_FAILURES[failed.kind] then self.ctx:count_failure(self.alias or self.aet, failed.kind) end
        if AUDITED[op] then
            audit_event(self, op, query, seen, (op == "find" and type(r) == "table") and #r or r, failed)
        end
        return table.unpack(results, 2, results.n)
    end
    local a = results[2]
    if type(a) == "table" then
        a.alias = a.alias or self.alias
        if a.peer == nil then a.peer = string.format("%s@%s:%d", self.aet, self.host, self.port) end
        a.operation = a.operation or ("C-" .. op:upper()) -- what was attempted, for summaries
        if ASSOCIATION_FAILURES[a.kind] then self.ctx:count_failure(self.alias or self.aet, a.kind) end
        if breaker and exit.is_unreachable(a) and not exit.is_busy(a) then
            -- A peer that cannot be reached again and again is skipped for the rest of
            -- the context (the run), so a dead system is not hammered. One that answers
            -- it is at its limit of associations is there: the caller asks again later.
            breaker.failures = breaker.failures + 1
            if breaker.failures >= breaker.limit and not breaker.open then
                breaker.open = true
                log.error("peer unreachable, skipping it for the rest of the run",
                                              {peer = tostring(self), failures = breaker.failures, error = tostring(a)})
            end
        end
    end
    if AUDITED[op] then audit_event(self, op, query, seen, nil, a) end
    error(a, 0)
end

--- C-ECHO. Returns the seconds it took.
function Peer:echo()
    return annotated(self, "echo", nil, function() return core.echo(self) end)
end

-- A peer that accepted the association but not the operation in this model (a plain
-- storage SCP named as a source, staging or archive, or an archive without that
-- Query/Retrieve model): only a change of configuration mends it (rtbackup.exit: exit 2).
local function not_served(self, err, operation, model)
    local name = self.alias or self.aet
    err.needs_configuration = true
    err.message = string.format("%s does not accept %s (%s Root Query/Retrieve): check %s's entry (AE title, port) or its configuration (%s)",
                                name, operation, model == "patient" and "Patient" or "Study", name, err.message)
end

--- Where to look when `source` sent nothing to the peer `target` (alias
-- `target_alias`): the sentence the summaries and restore end their hints with.
function dicom.check_destination(target, target_alias)
    return string.format("check that it knows %s (%s port %d) as a move destination, and that %s accepts its stores",
                         target.aet, target.host, target.port, target_alias)
end

--- C-FIND. Without on_match: the list of matches. With on_match(match): called for
-- each as it arrives (return false to stop: C-CANCEL); returns the number delivered.
function Peer:find(query, on_match)
    local level = level_of(query)
    local ok, r = pcall(annotated, self, "find", query, function(note)
        local stream = core.find_start(self, level, model_of(query, level), identifier(query))
        local all, count = {}, 0
        while true do
            local batch = stream:next()
            if not batch then break end
            for _, match in ipairs(batch) do
                count = count + 1
                note(match.PatientID)
                if on_match then
                    if on_match(match) == false then stream:cancel() end
                else
                    all[count] = match
                end
            end
        end
        return on_match and count or all
    end)
    if ok then return r end
    if errors.is(r, "negotiation") then not_served(self, r, "C-FIND", model_of(query, level)) end
    error(r, 0)
end

--- C-MOVE to query.destination. Returns {status, completed, failed, warning,
-- remaining, failed_uids}; a failure status raises kind "status" with the same fields.
-- query.patient names the patient(s) for the audit log when the identifier does not.
function Peer:move(query)
    local level = level_of(query)
    local destination = query.destination
    if not destination then
        errors.raise{kind = "invalid", message = "move: destination (an AE title) is required"}
    end
    check_retrieve_keys(query, level)
    -- What only a change of configuration can mend (see below) stays so for the rest
    -- of a run (a batched context): later moves fail at once, without asking again. An
    -- operator at the REPL, who may be mending it, is answered afresh.
    self.unmovable = self.unmovable or {}
    local known = self.unmovable[destination]
    if known then error(known, 0) end
    -- A C-MOVE's responses are awaited for move_timeout: a source need not send pending
    -- responses, and one that sends none answers only when the whole move is done
    -- (with dimse_timeout, a move longer than a minute would never succeed).
    local wire = self.move_timeout and setmetatable({dimse_timeout = self.move_timeout}, {__index = self}) or self
    local ok, r = pcall(annotated, self, "move", query, function()
        return core.move(wire, level, model_of(query, level), identifier(query), destination)
    end)
    if ok then return r end
    local name = self.alias or self.aet
    if errors.is(r, "timeout") and type(r.message) == "string" and r.message:find("DIMSE", 1, true) then
        r.message = string.format("%s (no response within %d s: move_timeout)", r.message, wire.dimse_timeout or 0)
    elseif errors.is(r, "status") and r.status == 0xA801 then
        r.needs_configuration = true -- rtbackup.exit: exit 2
        r.message = string.format(
            "%s does not know the move destination %s (C-MOVE status 0xA801): add %s, with its host and port, to %s's move destinations, or correct the AE title in the environment",
            name, destination, destination, name)
        if self.ctx.batched then self.unmovable[destination] = r end
    elseif errors.is(r, "negotiation") then
        not_served(self, r, "C-MOVE", model_of(query, level))
        if self.ctx.batched then self.unmovable[destination] = r end
    end
    error(r, 0)
end

--- C-GET. `into` is a directory (instances land there as <SOPInstanceUID>.dcm) or a
-- function receiving each instance as a dataset. Returns the counts, like move.
function Peer:get(query, into)
    local level = level_of(query)
    check_retrieve_keys(query, level)
    local dir = type(into) == "string" and into or nil
    local fn = type(into) == "function" and into or nil
    return annotated(self, "get", query, function(note)
        local stream = core.get_start(self, level, model_of(query, level), identifier(query), dir, fn ~= nil)
        while true do
            local batch = stream:next()
            if not batch then break end
            if fn then
                for _, ds in ipairs(batch) do
                    note(ds.PatientID)
                    fn(ds)
                end
            end
        end
        return stream:result()
    end)
end

--- C-STORE of paths and datasets over one association. Returns {stored, failed,
-- items = {{ok, status, sop_instance_uid, path, error}}, error}: an item that cannot
-- be read or is refused fails alone; `error` is set when the association failed.
-- opts (optional): {max_reconnects, backoff_ms, max_backoff_ms} when the association is
-- lost, patient (for the audit log). Each item has outcome = "stored" | "refused" |
-- "unreadable" | "not_sent". A dataset is lent to the store, not copied: until it
-- returns, another task that touches the dataset gets an error ("being sent").
function Peer:store(items, opts)
    return annotated(self, "store", {patient = opts and opts.patient}, function(note)
        for _, item in ipairs(items) do
            if type(item) ~= "string" then note(item.PatientID) end
        end
        return core.store(self, items, opts)
    end)
end

local function check_spec(peer)
    for _, key in ipairs{"aet", "host", "port", "calling_aet"} do
        if peer[key] == nil then
            errors.raise{kind = "config", message = string.format(
                "peer %s: %s is missing", tostring(peer.alias or "?"), key == "host" and "ip (or host)" or key)}
        end
    end
end

local function new_peer(ctx, fields)
    local peer = setmetatable(fields, Peer)
    peer.ctx = ctx
    check_spec(peer)
    -- One limiter per peer for the whole process, whoever asks.
    peer.limiter = limits.for_peer(string.format("%s@%s:%d", peer.aet, peer.host, peer.port),
                                   peer.max_associations)
    return peer
end

--- The peer `alias` of ctx's environment (a source, else a backup target): our AE
-- title from script_ae, timeouts, PDU size and association cap from the settings
-- (the peer's own first). Use ctx:peer(alias), which keeps one per alias.
function dicom.peer_in(ctx, alias)
    local env = ctx.env
    local spec = (env.sources or {})[alias] or (env.backup_targets or {})[alias]
    if not spec then
        errors.raise{kind = "config", message = string.format(
            "%s has no source or backup target named %s", env.name or "environment", tostring(alias))}
    end
    local function get(name) return settings.get(env, name, alias) end
    local pdu = get("max_pdu")
    return new_peer(ctx, {
        alias = alias, aet = spec.aet, host = spec.host or spec.ip, port = spec.port,
        calling_aet = env.script_ae and env.script_ae.aet,
        connect_timeout = get("connect_timeout"), acse_timeout = get("acse_timeout"),
        dimse_timeout = get("dimse_timeout"), move_timeout = get("move_timeout"), max_pdu = pdu ~= 0 and pdu or nil,
        max_associations = get("max_associations"), tls = spec.tls, type = spec.type,
        -- A run (a batched context) skips a peer that keeps failing; an operator at the
        -- REPL keeps trying.
        breaker = ctx.batched and {limit = settings.get(env, "circuit_breaker_failures"), failures = 0,
                                   open = false} or nil,
    })
end

--- A peer: dicom.peer(env, alias) is the peer of the environment (in env's context,
-- so audited and counted with the run that loaded env); dicom.peer{aet, host|ip,
-- port, calling_aet, max_associations?, ...} is an ad-hoc peer outside any
-- environment (not audited: no environment says where).
function dicom.peer(spec, alias)
    if type(alias) == "string" then
        return require("rtbackup.context").of(spec):peer(alias)
    end
    local ctx = spec.ctx or require("rtbackup.context").new(nil, {audit = false})
    return new_peer(ctx, {
        alias = spec.alias, aet = spec.aet, host = spec.host or spec.ip, port = spec.port,
        calling_aet = spec.calling_aet, connect_timeout = spec.connect_timeout,
        acse_timeout = spec.acse_timeout, dimse_timeout = spec.dimse_timeout, max_pdu = spec.max_pdu,
        max_associations = spec.max_associations or settings.BY_NAME.max_associations.default,
        tls = spec.tls, type = spec.type,
    })
end

local Listener = {}
Listener.__index = Listener

--- The port it listens on (useful with port = 0).
function Listener:port() return self.scp:port() end
--- Instances stored so far.
function Listener:stored() return self.scp:stored() end
--- Counters: {stored, associations, refused, rejected, dropped, exec_ran, exec_failed,
-- stale_removed} (final after stop).
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
-- shell, placeholders #p #f #a #c #r}, on_refused = function(event) end. Each event is
-- {path, sop_class_uid, sop_instance_uid, calling_aet, transfer_syntax_uid, status};
-- on_store gets the instances stored, on_refused those it kept nothing of (status: the
-- C-STORE response's, 0xFFFF when the transfer broke off; path ""). They run in a
-- task of their own, one event at a time.
function dicom.listen(opts)
    local scp = core.listen{
        aet = opts.aet, port = opts.port, allow = opts.allow, dir = opts.dir,
        events = opts.on_store ~= nil or opts.on_refused ~= nil, acse_timeout = opts.acse_timeout,
        dimse_timeout = opts.dimse_timeout, max_pdu = opts.max_pdu,
        max_associations = opts.max_associations,
        request_timeout = opts.request_timeout, max_per_host = opts.max_per_host,
        tls = opts.tls, sort_by_study = opts.sort_by_study, exec = opts.exec,
    }
    local stale = scp:stats().stale_removed
    if stale > 0 then
        log.warn("removed temporary files left by a listen that was killed or lost power " ..
                 "(never renamed: no instance among them)", {dir = opts.dir, files = stale})
    end
    local listener = setmetatable({scp = scp}, Listener)
    if opts.on_store or opts.on_refused then
        listener.drain = task.spawn(function()
            while true do
                local batch = scp:next()
                if not batch then break end
                for _, event in ipairs(batch) do
                    local handler = event.status == 0 and opts.on_store or event.status ~= 0 and opts.on_refused
                    if handler then handler(event) end
                end
            end
        end)
    end
    return listener
end

return dicom
