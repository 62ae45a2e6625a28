--- rtbackup.orthanc: which instances an Orthanc archive holds, and what it stores for
-- them, read through its REST API (the target's http_url) instead of an IMAGE-level
-- C-FIND or a C-GET.
--
-- Why: verifying a backup lists every instance of every study moved, on both sides.
-- Orthanc answers an IMAGE-level C-FIND by building a dataset per instance from its
-- index (about 18 ms of its CPU for a 100-instance study here), but lists a series'
-- children for its REST API from one query (about 0.6 ms a series). A C-GET of one
-- instance cost it ~7 ms (an association, a C-STORE sub-operation), its stored file
-- through /instances/{id}/file ~0.3 ms. The archive is the peer every source, restore
-- and check shares, so that is its CPU saved.
--
-- Orthanc names each resource by the SHA-1 of its DICOM identifiers
-- ("PatientID|StudyInstanceUID|SeriesInstanceUID|SOPInstanceUID", shown as five
-- groups of eight hex digits), so the names of the instances we expect are computed
-- here, and a series' list of children says which of them the archive holds. The proof
-- is the same as the C-FIND's (both read Orthanc's index by UID). A name that is not
-- there proves nothing (the archive may hold the study under another PatientID): the
-- caller asks over DICOM then, and only a C-FIND ever declares an instance missing.
--
--   local o = orthanc.for_peer(peer_cfg, alias, ctx)  -- nil: not an Orthanc with http_url
--   o:series_holds(patient, study, series, sops) -> {[sop] = true} held, count; nil on error
--   o:instance_file(patient, study, series, sop)  -> the stored file's bytes; false: none
--   o:remove_instance(uid, patient)               -> true, or false and why
--
-- Each request about a patient's data is an audit event (op "rest") of the run's
-- context `ctx`, as a C-FIND would be.
local cjson = require "cjson"
local config = require "rtbackup.config"
local core = require "rtbackup.http.core"
local http = require "rtbackup.http"
local log = require "rtbackup.log"

local M = {}
local Archive = {}
Archive.__index = Archive

-- A series of 10000 instances lists ~600 KB of names.
local MAX_RESPONSE = 32 * 1024 * 1024

--- Orthanc's name of the resource with these identifiers, outermost first.
function M.id(...)
    local h = core.sha1_hex(table.concat({...}, "|"))
    return h:sub(1, 8) .. "-" .. h:sub(9, 16) .. "-" .. h:sub(17, 24) .. "-" .. h:sub(25, 32) .. "-" .. h:sub(33, 40)
end

-- One exchange with the archive: its answer {status, body}, or nil and why none came.
local function request(self, method, path, opts)
    opts = opts or {}
    opts.max_response = MAX_RESPONSE
    local ok, r = pcall(http.request, method, self.base .. path, opts)
    if not ok then return nil, tostring(type(r) == "table" and r.message or r) end
    return r
end

-- The JSON answer of `method path` (a table), or nil and why not ("HTTP 404", ...).
local function json(self, method, path, opts)
    local r, err = request(self, method, path, opts)
    if not r then return nil, err end
    if r.status ~= 200 then return nil, "HTTP " .. tostring(r.status) end
    local decoded, v = pcall(cjson.decode, r.body)
    if not decoded or type(v) ~= "table" then return nil, "no JSON" end
    return v
end

--- The archive behind `cfg` (the configuration of the peer named `alias`) when it is
-- an Orthanc with an http_url, else nil. ctx: the run's context (audit), may be nil.
function M.for_peer(cfg, alias, ctx)
    if type(cfg) ~= "table" or cfg.type ~= "orthanc" then return nil end
    local url, secret = cfg.http_url, config.is_secret(cfg.http_url)
    if secret then url = config.reveal(url) end -- http_url_env_var: it may carry a password
    if type(url) ~= "string" or url == "" then return nil end
    local base = url:gsub("/+$", "")
    -- What the log shows: without the user and password a URL may carry, and of a URL
    -- kept as a secret only its scheme, host and port.
    local shown = (secret and base:match("^%a[%w+.-]*://[^/?#]*") or base):gsub("^(%a[%w+.-]*://)[^/@]*@", "%1****@")
    return setmetatable({base = base, shown = shown, aet = cfg.aet, alias = alias, ctx = ctx}, Archive)
end

--- The archive of a run (rtbackup.run: its target) when its REST API is usable, else
-- false; made and checked once per run (rtbackup.run asks before any verification).
function M.of_run(run)
    if run.archive_rest == nil then
        local archive = M.for_peer(run.target_cfg, run.target_alias, run.ctx)
        run.archive_rest = archive or false
        if archive and not archive:usable() then run.archive_rest = false end
    end
    return run.archive_rest
end

function Archive:audit(e)
    if self.ctx then
        e.op, e.peer = "rest", self.alias
        self.ctx:event(e)
    end
end

-- Whether the REST API is the archive the DICOM settings name (its /system answers
-- the same AE title): an http_url pointing at another Orthanc (staging, a test one)
-- would verify the backup against the wrong server. Asked once; a mismatch or an
-- error turns the REST path off for this object, with one warning. Callers that come
-- while the question is out are told no (they ask over DICOM).
function Archive:usable()
    if self.ok == nil and not self.asking then
        self.asking = true
        local problem, fields = self:problem()
        self.ok = problem == nil
        if problem then
            log.warn(problem .. ": not using it (verifying over DICOM only)", fields)
        else
            log.info("using the archive's REST API", fields)
        end
    end
    return self.ok == true
end

--- Why the REST API cannot serve as this archive (nil when it can), and the fields
-- that say which: asks GET /system (rtbackup health checks with it too).
function Archive:problem()
    local fields = {target = self.alias, http_url = self.shown}
    local sys, err = json(self, "GET", "/system")
    if not sys then
        fields.error = err
        return "the archive's REST API gave no answer to GET /system (" .. tostring(err) .. ")", fields
    elseif sys.DicomAet ~= self.aet then
        fields.aet, fields.rest_aet = self.aet, tostring(sys.DicomAet)
        return string.format("the archive's http_url is another Orthanc than its DICOM settings name (its " ..
                             "DicomAet is %s, not %s)", tostring(sys.DicomAet), self.aet), fields
    end
    return nil, fields
end

--- Which of `sops` (a set of SOP Instance UIDs of one series) the archive holds under
-- these identifiers: a set, the number of instances the series holds (0 when it is not
-- there), and whether every one of `sops` is held. nil when the REST API is not usable.
function Archive:series_holds(patient, study, series, sops)
    if not self:usable() then return nil end
    local held, n = {}, 0
    local path = "/series/" .. M.id(patient, study, series)
    local s, err = json(self, "GET", path)
    local event = {method = "GET", path = path, patient_id = patient, study_uid = study, series_uid = series}
    if not s then
        event.count = 0
        event.error = err ~= "HTTP 404" and {kind = "http", message = err} or nil
        self:audit(event)
        if err == "HTTP 404" then return held, 0, next(sops) == nil end
        return nil
    end
    local names = {}
    for _, name in ipairs(type(s.Instances) == "table" and s.Instances or {}) do
        names[name] = true
        n = n + 1
    end
    event.count = n
    self:audit(event)
    local all = true
    for sop in pairs(sops) do
        if names[M.id(patient, study, series, sop)] then held[sop] = true else all = false end
    end
    return held, n, all
end

--- The file the archive stores for this instance, as it stores it (bytes); false when
-- it holds none under these identifiers, nil when the REST API is not usable or failed.
function Archive:instance_file(patient, study, series, sop)
    if not self:usable() then return nil end
    local path = "/instances/" .. M.id(patient, study, series, sop) .. "/file"
    local r, why = request(self, "GET", path)
    if r and r.status ~= 200 and r.status ~= 404 then why = "HTTP " .. tostring(r.status) end
    self:audit{method = "GET", path = path, patient_id = patient, study_uid = study, series_uid = series,
               sop_instance_uid = sop, count = (not why and r.status == 200) and 1 or 0,
               error = why and {kind = "http", message = why} or nil}
    if why then return nil end
    return r.status == 200 and r.body or false
end

--- Deletes the instance `uid` (of patient `patient`, for the audit) from the archive:
-- true, or false and why ("not in the archive" when it holds no such instance).
function Archive:remove_instance(uid, patient)
    if not self:usable() then return false, "its http_url is not usable as this archive's REST API" end
    local list, err = json(self, "POST", "/tools/lookup", {body = uid, headers = {["Content-Type"] = "text/plain"}})
    if not list then return false, "lookup: " .. err end
    local removed = false
    for _, hit in ipairs(list) do
        if hit.Type == "Instance" and type(hit.ID) == "string" then
            local path = "/instances/" .. hit.ID
            local d, why = request(self, "DELETE", path)
            if d and d.status ~= 200 then why = "delete answered HTTP " .. tostring(d.status) end
            self:audit{method = "DELETE", path = path, patient_id = patient, sop_instance_uid = uid,
                       count = why and 0 or 1, error = why and {kind = "http", message = why} or nil}
            if why then return false, why end
            removed = true
        end
    end
    return removed, removed and nil or "not in the archive"
end

return M
