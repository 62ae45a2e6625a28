--- rtbackup.config: the environments (environments/*.toml or /etc/rtbackup), checked
-- and resolved.
--
--   local config = require "rtbackup.config"
--   local env = config.load("UCLA")         -- secrets resolved; raises listing every problem
--   config.problems("UCLA")                 -- every problem, as {severity, file, line, env, key, message, text}
--
-- Two checks make one list: the structure (shape, addresses, AE titles, aliases,
-- secrets; in C, core/config) and, here, the settings (their schema, rtbackup.settings)
-- and the peers' roles (no source is its own archive).
-- Parse errors come first: a file that does not parse is reported as such.
local core = require "rtbackup.config.core"
local errors = require "rtbackup.error"
local settings = require "rtbackup.settings"
local sys = require "rtbackup.sys"

local config = {
    MASK = core.MASK,
    path = core.path,
    environments = core.environments,
    reveal = core.reveal,
    is_secret = core.is_secret,
    raw = core.raw,
}

-- Every setting name is the schema's to judge on any peer (misplaced ones included),
-- so the structural check never calls one an unknown key.
local ALL_SETTINGS = settings.names()
local NAMES = {dicom = ALL_SETTINGS, mosaiq = ALL_SETTINGS, target = ALL_SETTINGS}

local function with_text(p)
    p.text = core.format(p)
    return p
end

local function locator(env_name)
    return function(key) return core.locate(env_name, key) end
end

-- A source that is the archive it is backed up into (default_backup: the same AE
-- title, host and port) would find everything "already present" and prove nothing.
-- (The same peer as another backup target is fine: a restore destination, say.)
local function same_peer_problems(raw, locate)
    local function address(p)
        if type(p) ~= "table" or not p.aet or not (p.ip or p.host) or not p.port then return nil end
        return string.format("%s@%s:%s", p.aet, p.ip or p.host, tostring(math.tointeger(p.port) or p.port))
    end
    -- The same AE title and port, and a host name that names the same machine
    -- ("localhost" and "127.0.0.1"): the names as written, and what they resolve to.
    local resolved = {}
    local function machines(h)
        if not resolved[h] then
            resolved[h] = {[h] = true}
            for _, a in ipairs(sys.addresses(h) or {}) do resolved[h][a] = true end
        end
        return resolved[h]
    end
    local function same(a, b)
        if type(a) ~= "table" or type(b) ~= "table" or a.aet ~= b.aet or not a.port or a.port ~= b.port then
            return false
        end
        local ha, hb = a.ip or a.host, b.ip or b.host
        if not ha or not hb then return false end
        for m in pairs(machines(ha)) do if machines(hb)[m] then return true end end
        return false
    end
    local target = raw.default_backup and (raw.backup_targets or {})[raw.default_backup]
    local archive = address(target)
    if not archive then return {} end
    local list, aliases = {}, {}
    for alias in pairs(raw.sources or {}) do aliases[#aliases + 1] = alias end
    table.sort(aliases)
    for _, alias in ipairs(aliases) do
        if same(raw.sources[alias], target) then
            local key = "sources." .. alias
            local file, line = locate(key .. ".aet")
            list[#list + 1] = {severity = "error", env = raw.name, key = key, file = file, line = line, message =
                string.format("source %s is the archive it is backed up into (default_backup %s, %s): such a backup proves nothing",
                              alias, raw.default_backup, archive)}
        end
    end
    return list
end

-- An archive's http_url (verification reads its REST API) must be an http(s) URL
-- with a host; one written as a secret ("__NAME__", http_url_env_var) is checked when
-- used (rtbackup health).
local function url_problems(raw, locate)
    local list, aliases = {}, {}
    for alias in pairs(raw.backup_targets or {}) do aliases[#aliases + 1] = alias end
    table.sort(aliases)
    for _, alias in ipairs(aliases) do
        local url = raw.backup_targets[alias].http_url
        if type(url) == "string" and not url:match("^__.*__$")
           and not url:match("^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@]*@?[%w%.%-%[%]:]+") then
            local key = "backup_targets." .. alias .. ".http_url"
            local file, line = locate(key)
            list[#list + 1] = {severity = "error", env = raw.name, key = key, file = file, line = line, message =
                string.format("%q is not an http:// or https:// URL with a host (e.g. \"http://10.10.1.200:8042\")",
                              (url:gsub("//[^/@]*@", "//****@")))}
        end
    end
    return list
end

-- What is checked here rather than in C: the settings (their schema) and the roles of
-- the peers.
local function lua_problems(env_name)
    local raw = core.raw(env_name)
    if not raw then return {} end
    local list = settings.check(raw, locator(env_name))
    for _, p in ipairs(same_peer_problems(raw, locator(env_name))) do list[#list + 1] = p end
    for _, p in ipairs(url_problems(raw, locator(env_name))) do list[#list + 1] = p end
    for _, p in ipairs(list) do with_text(p) end
    return list
end

--- Every problem of one environment (with its secrets resolved) or of all of them.
function config.problems(env_name)
    local list = core.problems(env_name, NAMES)
    local names = env_name and {env_name} or core.environments()
    for _, name in ipairs(names) do
        if core.raw(name) then
            for _, p in ipairs(lua_problems(name)) do list[#list + 1] = p end
        end
    end
    return list
end

--- The environment `name` as a table (its name in .name, secrets as opaque values).
-- Raises {kind = "config", problems = {...}} listing every error when it is not usable.
function config.load(name)
    if type(name) ~= "string" or name == "" then
        errors.raise{kind = "usage", message = "name an environment (" ..
                     table.concat(core.environments(), ", ") .. ")"}
    end
    local env, problems = core.load(name, NAMES)
    for _, p in ipairs(lua_problems(name)) do problems[#problems + 1] = p end
    local lines = {}
    for _, p in ipairs(problems) do
        if p.severity == "error" then lines[#lines + 1] = "  " .. p.text end
    end
    if #lines > 0 or env == nil then
        local where = core.raw(name) and ("environment " .. name .. " in " .. core.path() .. " has problems:")
                      or "the configuration cannot be loaded:"
        errors.raise{kind = "config", message = where .. "\n" .. table.concat(lines, "\n"), problems = problems}
    end
    return env
end

return config
