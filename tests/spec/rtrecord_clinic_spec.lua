-- Every delivery of a synthetic clinic (rtbackup.mosaiq.synth in SQLite, read back by
-- mosaiq.deliveries) becomes an RT Beams Treatment Record that passes dciodvfy, in
-- both leaf-set encodings; regenerating the days gives the same files.
local support = require "rtrecord_support"
local helpers = require "helpers"

local have_mosaiq, mosaiq = pcall(require, "rtbackup.mosaiq.query")

describe("a synthetic clinic's deliveries", function()
    if not have_mosaiq then
        pending("rtbackup.mosaiq is not available: " .. tostring(mosaiq))
        return
    end
    local odbc = require "rtbackup.odbc"
    local synth = require "rtbackup.mosaiq.synth"
    local dates = require "rtbackup.clock"
    local map = require "rtbackup.mosaiq.map"
    local START, DAYS = "2025-06-02", 5

    local dir
    setup(function() dir = helpers.tmpdir() end)
    teardown(function() os.execute("rm -rf " .. helpers.quote(dir)) end)

    local function generate(encoding, out)
        local db = odbc.connect({odbc_driver = "SQLite3", db_database = out .. ".sqlite"}, nil, {create = true})
        mosaiq.create_schema(db)
        synth.generate(db, {seed = 11, patients = 16, start_date = START, days = DAYS, leaf_encoding = encoding})
        os.execute("mkdir -p " .. helpers.quote(out))
        local opts = {uid_scope = "CLINIC/MOSAIQ", null = odbc.NULL, mlc = {encoding = encoding},
                      private_block = support.TJU_BLOCK}
        local files, failures = {}, {}
        for i = 0, DAYS - 1 do
            for _, d in ipairs(mosaiq.deliveries(db, dates.format_day(dates.day(START) + i))) do
                local ok, ds = pcall(map.build, d, opts)
                if ok then
                    local path = out .. "/" .. ds.SOPInstanceUID .. ".dcm"
                    ds:save(path)
                    files[#files + 1] = path
                else
                    failures[#failures + 1] = tostring(ds)
                end
            end
        end
        db:close()
        table.sort(files)
        return files, failures
    end

    for _, encoding in ipairs{"int16_0.01cm", "float32_mm"} do
        it("builds a valid record for every delivery (" .. encoding .. " leaves)", function()
            local files, failures = generate(encoding, dir .. "/" .. encoding)
            assert.are.same({}, failures)
            assert.is_true(#files >= 20, "only " .. #files .. " records")
            for _, path in ipairs(files) do
                local problems, out = support.dciodvfy(path, support.ACCEPTED_EMPTY_STUDY)
                assert.are.same({}, problems, path .. "\n" .. out)
            end
        end)
    end

    it("gives the same files when the days are generated again", function()
        local first = generate("int16_0.01cm", dir .. "/again1")
        local second = generate("int16_0.01cm", dir .. "/again2")
        assert.are.equal(#first, #second)
        for i, path in ipairs(first) do
            assert.are.equal(path:match("[^/]+$"), second[i]:match("[^/]+$"))
            assert.is_true(support.read_file(path) == support.read_file(second[i]), path)
        end
    end)
end)
