--- rtbackup.site: finds a site's workflow scripts. An environment names its script
-- folder with `scripts = "ucla"`; without it the lower-cased environment name is
-- tried. A workflow the site folder does not have comes from scripts/default/.
local errors = require "rtbackup.error"
local host = require "rtbackup.host"

local site = {}

local function exists(path)
    local f = io.open(path, "r")
    if f then f:close() end
    return f ~= nil
end

--- The chunk of scripts/<site>/<name>.lua for env, loaded (not run), and its path.
function site.load(env, name)
    local root = host.info().scripts_dir
    local candidates = {}
    if env.scripts then candidates[#candidates + 1] = env.scripts end
    candidates[#candidates + 1] = env.name:lower()
    candidates[#candidates + 1] = "default"
    for _, folder in ipairs(candidates) do
        local path = string.format("%s/%s/%s.lua", root, folder, name)
        if exists(path) then
            local chunk, err = loadfile(path)
            if not chunk then errors.raise{kind = "config", message = err} end
            return chunk, path
        elseif folder == env.scripts and not exists(string.format("%s/%s", root, folder)) then
            errors.raise{kind = "config", message = string.format(
                "%s: scripts = %q, but %s/%s does not exist", env.name, env.scripts, root, folder)}
        end
    end
    errors.raise{kind = "config", message = "no " .. name .. ".lua for " .. env.name .. " in " .. root}
end

return site
