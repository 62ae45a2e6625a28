-- Site folders are data laid over scripts/default/site.lua; settings live in the
-- environment only; docs/settings.md is the settings schema, generated.
local h = require "helpers"

local dir

local function write_site(body)
    os.execute(string.format("rm -rf %s/scripts && cp -r %s/scripts %s/ && mkdir -p %s/scripts/spec",
                             h.quote(dir), h.quote(h.source), h.quote(dir), h.quote(dir)))
    h.write_file(dir .. "/scripts/spec/site.lua", body)
    h.write_file(dir .. "/env.toml", h.env_toml(nil, "SPEC", {
        scripts = "spec", script_ae = {aet = "SPEC_SCU"}, settings = {max_associations = 2}}))
    h.write_file(dir .. "/show.lua", [[
local env = require("rtbackup.config").load("SPEC")
local c = require("rtbackup.site").choices(env)
print(c.mosaiq.mlc.encoding, c.mosaiq.mlc.first_bank, c.mosaiq.energy_unit_enum, type(c.qr.accept_series))
]])
    return h.run({"--config", dir .. "/env.toml", "run", dir .. "/show.lua"},
                 {env = {RTBACKUP_SCRIPTS = dir .. "/scripts"}})
end

before_each(function() dir = h.tmpdir() end)
after_each(function() os.execute("rm -rf " .. h.quote(dir)) end)

describe("a site folder", function()
    it("changes only what it names; the rest comes from the defaults", function()
        local r = write_site([[return {mosaiq = {mlc = {encoding = "int16_0.01cm"}},
                                       qr = {accept_series = function() return true end}}]])
        assert.are.equal(0, r.code, r.output)
        assert.are.equal("int16_0.01cm\tA\tkv1_mv2_mev3\tfunction\n", r.stdout)
    end)

    it("cannot set a setting: that belongs in the environment", function()
        local r = write_site([[return {qr = {max_associations = 8}}]])
        assert.are.equal(2, r.code, r.output)
        assert.matches("qr.max_associations is a setting; set it in the environment", r.stderr, 1, true)
    end)

    it("names a choice that does not exist (a typo never goes unnoticed)", function()
        local r = write_site([[return {mosaiq = {mlc = {encodng = "int16_0.01cm"}}}]])
        assert.are.equal(2, r.code, r.output)
        assert.matches("unknown choice mosaiq.mlc.encodng", r.stderr, 1, true)
    end)
end)

describe("docs/settings.md", function()
    it("is the settings schema as `rtbackup config settings` prints it", function()
        local r = h.run{"config", "settings"}
        assert.are.equal(0, r.code, r.output)
        local f = assert(io.open(h.source .. "/docs/settings.md"))
        local doc = f:read("a")
        f:close()
        assert.are.equal(r.stdout, doc, "docs/settings.md is stale: rtbackup config settings > docs/settings.md")
    end)
end)
