--- rtbackup.journal: the state of every unit of work, kept across runs, and the lock
-- that stops two runs of one source from overlapping.
--
-- One SQLite file per environment (or shard). A unit is a series, an instance or a
-- Mosaiq record, keyed by (source, key), in state queued -> moved -> verified (or
-- failed). Every call that writes is one transaction: a run killed at any moment
-- leaves each call entirely done or not at all, and the next run resumes from the
-- journal. A verified unit stays verified until requeue() says the target lost it.
--
--   local lock = journal.lock(state_dir .. "/UCLA-ARIA.lock")  -- or raises "locked"
--   local j = journal.open(state_dir .. "/UCLA.journal")
--   local run = j:begin_run{env = "UCLA", source = "ARIA"}
--   j:upsert("ARIA", {{key = series_uid, kind = "series", expected = 120,
--                      data = {study = study_uid, patient = mrn}}})
--   for _, u in ipairs(j:units("ARIA", {state = {"queued", "failed"}, limit = 50})) do
--       j:mark("ARIA", u.key, "moved", {moved = 120, attempts_increment = true})
--   end
--   j:finish_run(run, {status = "ok", summary = {moved = 120}})
--   j:close(); lock:release()
--
-- Errors are rtbackup errors: kind "locked" (with holder_pid, holder_started and
-- exit_code 3), "busy", "io", "corrupt", "version", "not_found", "invalid", "sql".
local core = require "rtbackup.journal.core"
local errors = require "rtbackup.error"
local text = require "rtbackup.text"
local cjson = require("cjson").new() -- our own instance: settings stay private

local journal = {
    STATES = {"queued", "moved", "verified", "failed"},
    EXIT_LOCKED = 3, -- the documented exit code of "another run holds the lock"
}

-- ---- JSON -----------------------------------------------------------------------------

-- lua-cjson writes numbers with 14 significant digits: a larger integer would come
-- back different. Refuse it instead of storing a wrong value.
local MAX_EXACT = 10 ^ 14

local function check_exact(value, path, seen)
    if type(value) == "table" then
        if seen[value] then return end
        seen[value] = true
        for k, v in pairs(value) do check_exact(v, path .. "." .. tostring(k), seen) end
    elseif math.type(value) == "integer" and math.abs(value) >= MAX_EXACT then
        errors.raise{kind = "invalid", message = string.format(
            "%s: the integer %d is too large to keep exactly in JSON; store it as a string",
            path, value)}
    end
end

local function encode(value, what)
    check_exact(value, what, {})
    local ok, encoded = pcall(cjson.encode, text.clean(value))
    if not ok then
        errors.raise{kind = "invalid", message = what .. ": cannot be stored as JSON: " .. encoded}
    end
    return encoded
end

-- lua-cjson decodes every number as a float; give integers back their type, so a
-- count reads 3, not 3.0.
local function restore_integers(value)
    if type(value) == "table" then
        for k, v in pairs(value) do value[k] = restore_integers(v) end
        return value
    end
    return math.type(value) == "float" and math.tointeger(value) or value
end

local function decode(text)
    local ok, value = pcall(cjson.decode, text)
    if not ok then return text end -- not ours to fail a read over: hand back the text
    return restore_integers(value)
end

--- data for the core: a table becomes JSON (data_json = true), a string stays text.
local function encode_data(data, what)
    if data == nil or type(data) == "string" then return data, false end
    if type(data) == "table" then return encode(data, what), true end
    errors.raise{kind = "invalid", message = what .. " must be a table or a string"}
end

local function decode_unit(u)
    if u.data_json and u.data then u.data = decode(u.data) end
    u.data_json = nil
    return u
end

-- ---- arguments ------------------------------------------------------------------------

local function key_text(key, what)
    if type(key) ~= "string" and type(key) ~= "number" then
        errors.raise{kind = "invalid", message = what .. " must be a string or a number"}
    end
    return tostring(key)
end

local function key_list(keys)
    if type(keys) ~= "table" then return {key_text(keys, "key")} end
    local list = {}
    for i, k in ipairs(keys) do list[i] = key_text(k, "key " .. i) end
    return list
end

local function integer(value, what)
    if value == nil then return nil end
    local n = math.tointeger(value)
    if not n then errors.raise{kind = "invalid", message = what .. " must be an integer"} end
    return n
end

local function core_unit(u, i)
    if type(u) ~= "table" then
        errors.raise{kind = "invalid", message = "unit " .. i .. " must be a table"}
    end
    if u.key == nil then errors.raise{kind = "invalid", message = "unit " .. i .. " has no key"} end
    local data, data_json = encode_data(u.data, "unit " .. i .. " data")
    return {key = key_text(u.key, "unit " .. i .. " key"), kind = u.kind, state = u.state,
            expected = integer(u.expected, "unit " .. i .. " expected"),
            data = data, data_json = data_json}
end

local function core_fields(fields)
    if fields == nil then return nil end
    local data, data_json = encode_data(fields.data, "data")
    return {error = fields.error ~= nil and tostring(fields.error) or nil,
            moved = integer(fields.moved, "moved"), expected = integer(fields.expected, "expected"),
            data = data, data_json = data_json, attempts_increment = fields.attempts_increment}
end

-- ---- the journal ----------------------------------------------------------------------

local Journal = {}
Journal.__index = Journal

--- Opens (creating it and its schema when missing) the journal at path. The directory
-- must exist. opts.busy_timeout_ms: how long a write waits for another writer (5000).
function journal.open(path, opts)
    return setmetatable({path = path, _core = core.open(path, opts)}, Journal)
end

--- Records a run of source (status "running") and returns its id. Unit writes after it
-- carry this run's id. Runs of this host whose process died are marked "interrupted".
function Journal:begin_run(opts)
    opts = opts or {}
    if type(opts.env) ~= "string" or type(opts.source) ~= "string" then
        errors.raise{kind = "invalid", message = "begin_run needs {env = name, source = alias}"}
    end
    self.run_id = self._core:begin_run(opts.env, opts.source)
    return self.run_id
end

--- Ends run `id` with opts.status ("ok", "partial", "failed", ...) and opts.summary
-- (a table, stored as JSON).
function Journal:finish_run(id, opts)
    opts = opts or {}
    local summary = opts.summary
    if type(summary) == "table" then summary = encode(summary, "summary") end
    self._core:finish_run(id, opts.status or "ok", summary)
    if self.run_id == id then self.run_id = nil end
end

--- The latest run of source (whatever its status), summary decoded; nil when none.
function Journal:last_run(source)
    local run = self._core:last_run(source)
    if run and run.summary then run.summary = decode(run.summary) end
    return run
end

--- The runs of source (nil: every source), newest first, at most limit; summaries decoded.
function Journal:runs(source, limit)
    local list = self._core:runs(source, limit)
    for _, r in ipairs(list) do
        if r.summary then r.summary = decode(r.summary) end
    end
    return list
end

--- Deletes finished runs that started before `before` (ISO-8601 UTC); returns how many.
function Journal:prune_runs(before)
    return self._core:prune_runs(before)
end

--- A fact a run learned for later runs ("peer ARIA", "move_rung"), or nil.
function Journal:fact(scope, key)
    return self._core:fact(scope, key)
end

--- Records (or with value nil forgets) a fact.
function Journal:set_fact(scope, key, value)
    self._core:set_fact(scope, key, value ~= nil and tostring(value) or nil)
end

--- Records a reference between instances: {source, from, to, kind, state = "open" |
-- "resolved" | "acknowledged", detail = table}. An acknowledged one stays acknowledged
-- until it resolves.
function Journal:put_ref(ref)
    local r = {}
    for k, v in pairs(ref) do r[k] = v end
    if type(r.detail) == "table" then r.detail = encode(r.detail, "reference detail") end
    self._core:put_ref(r)
end

--- The references of source (in `state`, or all), oldest first, details decoded.
function Journal:refs(source, state)
    local list = self._core:refs(source, state)
    for _, r in ipairs(list) do
        if r.detail then r.detail = decode(r.detail) end
    end
    return list
end

--- Adds or updates units of source in one transaction; returns how many were new.
-- units: list of {key =, kind =, expected =, data = table|string, state =}. Fields
-- left out keep their value; a new unit starts "queued" unless state says otherwise.
-- Verified units are not changed (see requeue).
function Journal:upsert(source, units)
    if type(units) ~= "table" then
        errors.raise{kind = "invalid", message = "upsert needs a list of units"}
    end
    local list = {}
    for i, u in ipairs(units) do list[i] = core_unit(u, i) end
    return self._core:upsert(source, list)
end

--- Sets the state (nil: keep it) and fields {error =, moved =, expected =, data =,
-- attempts_increment = true} of one unit. Returns false when the unit is verified and
-- state is not "verified" (nothing changed). Raises "not_found" for an unknown key.
function Journal:mark(source, key, state, fields)
    return self._core:mark(source, {key_text(key, "key")}, state, core_fields(fields)) == 1
end

--- mark() for many keys in one transaction; returns how many changed. An unknown key
-- raises "not_found" and changes nothing.
function Journal:mark_many(source, keys, state, fields)
    return self._core:mark(source, key_list(keys), state, core_fields(fields))
end

--- Puts units back in "queued" whatever their state (the target lost them), with
-- attempts, moved and last_error reset. Unknown keys are skipped. Returns the count.
function Journal:requeue(source, keys)
    return self._core:requeue(source, key_list(keys))
end

--- Units of source: opts.state (a name or a list), opts.kind, opts.limit, opts.order
-- ("oldest", the default, or "newest", by creation). Each unit: key, kind, state,
-- attempts, last_error, expected, moved, created_at, updated_at, verified_at,
-- run_id, data (decoded when it was a table).
function Journal:units(source, opts)
    local list = self._core:units(source, opts)
    for _, u in ipairs(list) do decode_unit(u) end
    return list
end

--- One unit, or nil.
function Journal:get(source, key)
    local u = self._core:get(source, key_text(key, "key"))
    return u and decode_unit(u)
end

--- {queued =, moved =, verified =, failed =, total =} for source.
function Journal:counts(source)
    return self._core:counts(source)
end

function Journal:close()
    self._core:close()
end
Journal.__close = Journal.close

-- ---- locks ----------------------------------------------------------------------------

local Lock = {}
Lock.__index = Lock

function Lock:release()
    self._core:release()
end
Lock.__close = Lock.release

function Lock:__tostring()
    return string.format("lock %s (PID %d since %s)", self.path, self.pid, self.started)
end

--- Takes the lock at path without waiting (opts.shared: a shared lock, which any
-- number of holders may take while no one holds it exclusively), or raises
-- {kind = "locked", holder_pid =,
-- holder_started =, exit_code = 3}. Held until lock:release(), the end of a
-- `local l <close> = ...` scope, or the process's end (however it ends). Keep the
-- object: once it is garbage, the lock is released.
function journal.lock(path, opts)
    local ok, handle = pcall(core.lock, path, opts and opts.shared or false)
    if not ok then
        if errors.is(handle, "locked") then handle.exit_code = journal.EXIT_LOCKED end
        error(handle, 0)
    end
    local _, started, pid = handle:info()
    return setmetatable({path = path, pid = pid, started = started, _core = handle}, Lock)
end

return journal
