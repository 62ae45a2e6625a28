-- A secret's value must never reach a person's screen or a log file: not in logs at
-- DEBUG, not in JSON logs, not in `config show`, not in the REPL's printing, not in
-- error messages.
local h = require "helpers"

local UCLA_SECRET = "Ucla-Pa55;word}with=odd chars"
local TJU_SECRET = "tju-Secret-Value-42"
local secrets_env = {UCLA_MOSAIQ_DB_PASSWORD = UCLA_SECRET, TJU_MOSAIQ_DB_PASSWORD = TJU_SECRET}

local function assert_no_secret(r)
    for _, s in ipairs{UCLA_SECRET, TJU_SECRET} do
        assert.is_nil(r.output:find(s, 1, true), "secret leaked in:\n" .. r.output)
    end
end

local cases = {
    {"config show", {"config", "show", "UCLA"}},
    {"config show TJU", {"config", "show", "TJU"}},
    {"config check", {"config", "check", "UCLA"}},
    {"repl printing env", {"repl", "UCLA"}, "env\nenv.sources\nprint(env.sources.Mosaiq.db_password)\n" ..
                                        "log.info('connecting', {password = env.sources.Mosaiq.db_password, env = env.name})\n" ..
                                        "error({kind='x', message=tostring(env.sources.Mosaiq.db_password)})\n"},
    {"repl on TJU", {"repl", "TJU"}, "env\nlog.debug('t', env.sources.Mosaiq)\n"},
}

describe("secrets", function()
    for _, format in ipairs{"text", "json"} do
        for _, case in ipairs(cases) do
            it("stay hidden: " .. case[1] .. " with debug " .. format .. " logging", function()
                local args = {"--config", h.source .. "/environments", "--log-level", "debug",
                              "--log-format", format}
                for _, a in ipairs(case[2]) do args[#args + 1] = a end
                local r = h.run(args, {env = secrets_env, stdin = case[3]})
                assert_no_secret(r)
                -- the command did run and printed something about the environment
                assert.is_true(#r.output > 0)
            end)
        end
    end

    it("are usable by code that needs them (config.reveal)", function()
        local r = h.run({"--config", h.source .. "/environments", "repl", "UCLA"},
                        {env = secrets_env,
                         stdin = "print(#config.reveal(env.sources.Mosaiq.db_password))\n"})
        assert.are.equal(0, r.code, r.output)
        assert.matches(tostring(#UCLA_SECRET), r.stdout)
    end)
end)

describe("rtbackup repl", function()
    it("prints the environment's description from piped input", function()
        local r = h.run({"repl", "DEMO"}, {stdin = "print(env.description)\n"})
        assert.are.equal(0, r.code, r.output)
        assert.matches("Local testbed", r.stdout)
    end)

    it("evaluates expressions, multi-line statements and pretty-prints tables", function()
        local r = h.run({"repl"}, {stdin = "x = 1 +\n  41\nx\n{b = {1, 2}, a = 'z'}\n"})
        assert.are.equal(0, r.code, r.output)
        assert.matches("42\n", r.stdout)
        assert.matches('a = "z"', r.stdout)
        assert.matches("b = {\n", r.stdout)
    end)

    it("runs blocking calls and tasks from the prompt", function()
        local r = h.run({"repl"}, {stdin = "task.map({1,2,3}, function(x) task.pool_sleep(10) return x*2 end)[3]\n"})
        assert.are.equal(0, r.code, r.output)
        assert.matches("6\n", r.stdout)
    end)

    it("reports a failing chunk, continues, and exits 1 when piped", function()
        local r = h.run({"repl"}, {stdin = "error('first')\nprint('second')\n"})
        assert.are.equal(1, r.code)
        assert.matches("first", r.stderr)
        assert.matches("second", r.stdout)
    end)

    it("is a config error (exit 2) for an unknown environment", function()
        local r = h.run({"repl", "NOWHERE"}, {stdin = ""})
        assert.are.equal(2, r.code)
    end)
end)
