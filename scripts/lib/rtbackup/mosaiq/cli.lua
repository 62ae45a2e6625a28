--- rtbackup.mosaiq.cli: what the Mosaiq commands (report, mosaiq-db) share: choosing
-- the Mosaiq source of an environment and connecting to it.
local errors = require "rtbackup.error"
local odbc = require "rtbackup.odbc"

local M = {}

local sorted_keys = require("rtbackup.pretty").sorted_keys

--- The source to use: the alias given, else default_source when it is a Mosaiq source,
-- else the first Mosaiq source by name. Returns source, alias.
function M.source(env, alias)
    local sources = env.sources or {}
    if alias then
        local s = sources[alias]
        if not s then
            errors.raise{kind = "usage", message = string.format(
                "environment %s has no source %s (sources: %s)", env.name or "?", alias,
                table.concat(sorted_keys(sources), ", "))}
        end
        if s.type ~= "mosaiq" then
            errors.raise{kind = "usage", message = string.format(
                "source %s is of type %s, not mosaiq", alias, tostring(s.type))}
        end
        return s, alias
    end
    local default = env.default_source
    if default and sources[default] and sources[default].type == "mosaiq" then
        return sources[default], default
    end
    for _, name in ipairs(sorted_keys(sources)) do
        if sources[name].type == "mosaiq" then return sources[name], name end
    end
    errors.raise{kind = "config", message = "environment " .. (env.name or "?") ..
                 " has no source of type mosaiq"}
end

--- Connects to the chosen source with its timeouts (opts.ctx: the command's context,
-- where its queries are audited).
function M.connect(env, alias, opts)
    local source, name = M.source(env, alias)
    opts = opts or {}
    opts.alias = name
    return odbc.connect(source, require("rtbackup.settings").resolve(env, name), opts), source, name
end

return M
