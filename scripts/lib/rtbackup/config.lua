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
    local archive = raw.default_backup and address((raw.backup_targets or {})[raw.default_backup])
    if not archive then return {} end
    local list, aliases = {}, {}
    for alias in pairs(raw.sources or {}) do aliases[#aliases + 1] = alias end
    table.sort(aliases)
    for _, alias in ipairs(aliases) do
        if address(raw.sources[alias]) == archive then
            local key = "sources." .. alias
            local file, line = locate(key .. ".aet")
            list[#list + 1] = {severity = "error", env = raw.name, key = key, file = file, line = line, message =
                string.format("source %s is the archive it is backed up into (default_backup %s, %s): such a backup proves nothing",
                              alias, raw.default_backup, archive)}
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
