-- The SQL Server driver the sample environments name is the one the Docker image and
-- the Debian package bring: FreeTDS (Debian's tdsodbc). The driver manager loads it
-- with the environments' own connection attributes; there is no SQL Server here, so
-- the proof is that the login fails in FreeTDS, at the network, and not in unixODBC
-- for a driver it cannot find.
local h = require "helpers"
local config = require "rtbackup.config"
local odbc = require "rtbackup.odbc"

local function read(path)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    return text
end

-- Every Mosaiq source of the sample environments that is not the demo's SQLite file,
-- as written (secrets unresolved).
local function sql_server_sources()
    local list = {}
    for _, name in ipairs(config.environments()) do
        for alias, source in pairs(config.raw(name).sources or {}) do
            if source.type == "mosaiq" and not (source.odbc_driver or ""):lower():find("sqlite", 1, true) then
                list[#list + 1] = {env = name, alias = alias, source = source}
            end
        end
    end
    table.sort(list, function(a, b) return a.env < b.env end)
    return list
end

describe("the sample environments' SQL Server driver", function()
    it("is FreeTDS in UCLA and TJU, which the Docker image installs and the package recommends", function()
        local sources = sql_server_sources()
        local envs = {}
        for _, s in ipairs(sources) do
            envs[#envs + 1] = s.env
            assert.are.equal("FreeTDS", s.source.odbc_driver, s.env .. "." .. s.alias)
            assert.are.equal(1433, s.source.odbc_attributes.Port)
        end
        assert.are.same({"TJU", "UCLA"}, envs)
        local dockerfile = read(h.source .. "/deploy/docker/Dockerfile")
        assert.matches("tdsodbc", dockerfile:match("FROM debian:12%-slim\n[^\n]*(.*)$"), 1, true)
        assert.matches("odbcinst -q -d -n FreeTDS", dockerfile, 1, true)
        assert.matches('CPACK_DEBIAN_PACKAGE_RECOMMENDS "tdsodbc', read(h.source .. "/packaging/debian.cmake"), 1, true)
        -- the name is the one tdsodbc registers
        local f = io.open("/usr/share/tdsodbc/odbcinst.ini")
        if f then
            assert.matches("^%[FreeTDS%]", f:read("a"))
            f:close()
        end
    end)

    it("is loaded by the driver manager with the environments' attributes", function()
        if not os.execute("odbcinst -q -d -n FreeTDS >/dev/null 2>&1") then
            return pending("tdsodbc (FreeTDS) is not installed here; tools/deps.sh installs it")
        end
        local port = h.free_port()
        for _, s in ipairs(sql_server_sources()) do
            local source = {}
            for k, v in pairs(s.source) do source[k] = v end
            source.db_server, source.db_password, source.db_password_env_var = "127.0.0.1", "not-a-secret", nil
            source.odbc_attributes = {}
            for k, v in pairs(s.source.odbc_attributes) do source.odbc_attributes[k] = v end
            source.odbc_attributes.Port = port -- nothing listens there
            local err = h.failure(odbc.connect, source, {login_timeout = 10}, {alias = s.alias})
            assert.are.equal("connect_failed", err.kind, err.message)
            assert.matches("[FreeTDS]", err.message, 1, true)
            assert.is_nil(err.message:find("Can't open lib", 1, true), err.message)
            assert.is_nil(err.message:find("not found", 1, true), err.message)
        end
    end)
end)
