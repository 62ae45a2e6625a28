--- rtbackup.site: a site's choices, as data. An environment names its site folder
-- with `scripts = "ucla"` (default: the lower-cased environment name, when such a
-- folder exists); scripts/<site>/site.lua returns a table of choices per kind of
-- source, laid over scripts/default/site.lua, which lists every choice there is with
-- its default:
--
--   return {
--       mosaiq = { mlc = { encoding = "int16_0.01cm" } },   -- how this Mosaiq stores leaf sets
--   }
--
-- A choice the default file does not list is an error (a typo never goes unnoticed),
-- and so is a setting (max_associations, window, ...): settings live in the
-- environment, in one place. A choice may be a function where a site truly needs code
-- (the hooks in default/site.lua say what they receive).
local errors = require "rtbackup.error"
local host = require "rtbackup.host"
local settings = require "rtbackup.settings"
local sys = require "rtbackup.sys"

local site = {}

local function scripts_dir()
    return host.info().scripts_dir
end

local function load_table(path)
    local chunk, err = loadfile(path, "t", setmetatable({}, {__index = _G}))
    if not chunk then errors.raise{kind = "config", message = err} end
    local ok, value = pcall(chunk)
    if not ok then errors.raise{kind = "config", message = path .. ": " .. tostring(value)} end
    if type(value) ~= "table" then
        errors.raise{kind = "config", message = path .. ": must return a table of choices, got " .. type(value)}
    end
    return value
end

--- The folder of env's site scripts (nil: the defaults only).
function site.folder(env)
    local root = scripts_dir()
    if env.scripts then
        local dir = root .. "/" .. env.scripts
        if not sys.stat(dir) then
            errors.raise{kind = "config", message = string.format(
                "%s: scripts = %q, but %s does not exist", env.name, env.scripts, dir)}
        end
        return env.scripts
    end
    local guess = env.name and env.name:lower()
    if guess and sys.stat(root .. "/" .. guess .. "/site.lua") then return guess end
    return nil
end

-- Lays `over` onto `base` (a copy), checking every key against base: the defaults
-- list every choice there is.
local function merge(base, over, path, file)
    local out = {}
    for k, v in pairs(base) do out[k] = v end
    for k, v in pairs(over) do
        local where = path == "" and tostring(k) or (path .. "." .. tostring(k))
        if settings.BY_NAME[k] then
            errors.raise{kind = "config", message = string.format(
                "%s: %s is a setting; set it in the environment ([ENV.settings] or the source), not in the site folder",
                file, where)}
        end
        if base[k] == nil then
            errors.raise{kind = "config", message = string.format(
                "%s: unknown choice %s (scripts/default/site.lua lists every choice)", file, where)}
        end
        if type(v) == "table" and type(base[k]) == "table" and next(base[k]) ~= nil and not v[1] then
            out[k] = merge(base[k], v, where, file)
        else
            out[k] = v
        end
    end
    return out
end

local cache = setmetatable({}, {__mode = "k"})

--- env's choices: scripts/default/site.lua with the site's own laid over it.
function site.choices(env)
    if cache[env] then return cache[env] end
    local root = scripts_dir()
    local choices = load_table(root .. "/default/site.lua")
    local folder = site.folder(env)
    if folder and folder ~= "default" then
        local path = root .. "/" .. folder .. "/site.lua"
        if sys.stat(path) then choices = merge(choices, load_table(path), "", path) end
    end
    cache[env] = choices
    return choices
end

return site
