-- requires: testbed
-- `backup --dry-run` for an ARIA/MIM-style source (dcmqrscp playing ARIA, Orthanc
-- "main" the archive): its totals (series and instances that would be moved), the same
-- plan as JSON with --format json, nothing moved or recorded, and the real run that
-- follows does what the dry run said. (The Mosaiq flow's dry run is not covered here.)
local h = require "helpers"
local cjson = require "cjson"

local tb = h.testbed()
local main = h.orthanc(tb.MAIN_HTTP_URL)
local dir = h.tmpdir()
local state = dir .. "/state"

h.write_file(dir .. "/tb.toml", h.env_toml(tb, "TB", {
    description = "testbed", default_source = "ARIA", default_backup = "MAIN",
    sources = {{alias = "ARIA", type = "aria", peer = "ARIA"}},
    targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
    settings = {state_dir = state, retry_backoff_ms = 10}}))

local ALL = {"--since", "1900-01-01", "--until", "2100-01-01"}

local function backup(...)
    local args = {"--config", dir .. "/tb.toml", "backup", "TB", "ARIA"}
    for _, a in ipairs({...}) do args[#args + 1] = a end
    for _, a in ipairs(ALL) do args[#args + 1] = a end
    return h.run(args)
end

-- The dry run's totals as printed for people.
local function text_totals(r)
    assert.are.equal(0, r.code, r.output)
    local series, instances = r.stdout:match("dry run: (%d+) series would be moved %((%d+) instances")
    assert.is_not_nil(series, r.stdout)
    local found, present = r.stdout:match("found (%d+) instances in %d+ studies; already present (%d+)")
    return {series = tonumber(series), instances = tonumber(instances), found = tonumber(found),
            present = tonumber(present)}
end

-- The same from --format json: stdout is one JSON document.
local function json_totals(r)
    assert.are.equal(0, r.code, r.output)
    local s = cjson.decode(r.stdout)
    assert.is_true(s.dry_run)
    local instances, series = 0, {}
    for _, row in ipairs(s.plan) do
        instances = instances + row.missing
        assert.is_true(row.missing > 0 and row.missing <= row.instances, cjson.encode(row))
        series[row.series] = row.missing
    end
    return {series = #s.plan, instances = instances, found = s.found, present = s.already_present,
            by_series = series, summary = s}
end

local function files_in(path)
    local p = io.popen("ls -A " .. h.quote(path) .. " 2>/dev/null")
    local names = {}
    for name in p:lines() do names[#names + 1] = name end
    p:close()
    return names
end

before_each(function()
    main:wipe()
    os.execute("rm -rf " .. h.quote(state))
end)
teardown(function()
    main:wipe()
    os.execute("rm -rf " .. h.quote(dir))
end)

describe("rtbackup backup --dry-run", function()
    it("totals the series and instances a run would move, as text and as JSON, and moves nothing", function()
        local text = text_totals(backup("--dry-run"))
        assert.is_true(text.series > 0)
        assert.are.equal(text.found, text.instances) -- an empty archive lacks everything
        assert.are.equal(0, text.present)
        assert.is_true(text.found >= tonumber(tb.SYNTH_INSTANCES))

        local json = json_totals(backup("--dry-run", "--format", "json"))
        assert.are.equal(text.series, json.series)
        assert.are.equal(text.instances, json.instances)
        assert.are.equal(text.found, json.found)
        assert.are.equal(json.series, json.summary.series_to_move)

        -- nothing moved, no summary written, no lock left behind
        assert.are.equal(0, main:count())
        for _, name in ipairs(files_in(state)) do
            assert.is_nil(name:match("last%-run%.json$"), name)
            assert.is_nil(name:match("%.lock$"), name)
        end
    end)

    it("says what the real run then does, on an empty archive and with instances missing from it", function()
        local plan = json_totals(backup("--dry-run", "--format", "json"))
        local r = backup("--format", "json")
        assert.are.equal(0, r.code, r.output)
        local s = cjson.decode(r.stdout)
        assert.are.equal(plan.found, s.found)
        assert.are.equal(plan.instances, s.moved)
        assert.are.equal(plan.instances, s.verified)
        assert.are.equal(plan.series, s.series_to_move)
        assert.are.equal(plan.found, main:count())

        -- everything there: the dry run says nothing would be moved
        local again = text_totals(backup("--dry-run"))
        assert.are.equal(0, again.series)
        assert.are.equal(0, again.instances)
        assert.are.equal(plan.found, again.present)

        -- three instances of one series and a whole other series vanish from the archive
        local by_series = {}
        for _, id in ipairs(main:get("/instances")) do
            local tags = main:get("/instances/" .. id .. "/simplified-tags")
            local list = by_series[tags.SeriesInstanceUID] or {}
            list[#list + 1] = id
            by_series[tags.SeriesInstanceUID] = list
        end
        local uids = {}
        for uid, list in pairs(by_series) do if #list > 3 then uids[#uids + 1] = uid end end
        table.sort(uids)
        assert.is_true(#uids >= 2, "the testbed has no two series of more than 3 instances")
        local partial, whole = uids[1], uids[2]
        for i = 1, 3 do main:delete("/instances/" .. by_series[partial][i]) end
        for _, id in ipairs(by_series[whole]) do main:delete("/instances/" .. id) end
        local lost = 3 + #by_series[whole]

        local text = text_totals(backup("--dry-run"))
        plan = json_totals(backup("--dry-run", "--format", "json"))
        assert.are.equal(2, text.series)
        assert.are.equal(lost, text.instances)
        assert.are.equal(2, plan.series)
        assert.are.equal(lost, plan.instances)
        assert.are.same({[partial] = 3, [whole] = #by_series[whole]}, plan.by_series)
        assert.are.equal(plan.found - lost, main:count()) -- still nothing moved

        r = backup("--format", "json")
        assert.are.equal(0, r.code, r.output)
        s = cjson.decode(r.stdout)
        assert.are.equal(plan.instances, s.moved)
        assert.are.equal(plan.series, s.series_to_move)
        assert.are.equal(plan.found, main:count())
    end)
end)
