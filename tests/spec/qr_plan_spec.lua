-- rtbackup.qr.plan: what the archive lacks of a source's selection. The backup specs
-- show the plan against real peers (tests/spec/backup_spec.lua); the peers here are
-- tables answering C-FIND from a list of series, because no peer of the testbed shows
-- the behaviour under test: an archive that ignores a list of UIDs in a C-FIND (it
-- answers nothing at all, as if it held none of the studies).
local plan = require "rtbackup.qr.plan"

-- A peer holding `series` ({study, series, n}), answering STUDY and SERIES C-FINDs with
-- their counts; `lists = false`: a StudyInstanceUID list matches nothing; `cap`: a
-- SERIES-level answer holds at most that many rows (and still ends with success), as
-- archives with a cap on their answers do. Records each query's level and study in
-- `asked`.
local function peer(series, lists, cap)
    local p = {asked = {}}
    function p:find(q, on_match)
        self.asked[#self.asked + 1] = q.level .. " " .. (type(q.StudyInstanceUID) == "table" and "list" or
                                                        q.StudyInstanceUID)
        local wanted = q.StudyInstanceUID
        if lists == "abort" and type(wanted) == "table" then
            error({kind = "aborted", message = "the peer aborted the association"}, 0)
        end
        local function matches(study)
            if type(wanted) == "table" then
                if lists == false then return false end
                for _, w in ipairs(wanted) do if w == study then return true end end
                return false
            end
            return wanted == "" or wanted == study
        end
        local out, studies = {}, {}
        for _, s in ipairs(series) do
            if matches(s.study) then
                if q.level == "SERIES" then
                    if #out < (cap or math.huge) then
                        out[#out + 1] = {StudyInstanceUID = s.study, SeriesInstanceUID = s.series, Modality = "CT",
                                         NumberOfSeriesRelatedInstances = s.n}
                    end
                elseif not studies[s.study] then
                    studies[s.study] = {StudyInstanceUID = s.study, PatientID = "P-" .. s.study,
                                        NumberOfStudyRelatedInstances = 0, NumberOfStudyRelatedSeries = 0}
                    out[#out + 1] = studies[s.study]
                end
                local st = studies[s.study]
                if st then
                    st.NumberOfStudyRelatedInstances = st.NumberOfStudyRelatedInstances + s.n
                    st.NumberOfStudyRelatedSeries = st.NumberOfStudyRelatedSeries + 1
                end
            end
        end
        for _, m in ipairs(out) do if on_match then on_match(m) end end
        return out
    end
    return p
end

local SOURCE = {{study = "1.1", series = "1.1.1", n = 10}, {study = "1.1", series = "1.1.2", n = 5},
                {study = "1.2", series = "1.2.1", n = 7}}
-- The archive holds study 1.1 whole and nothing of 1.2.
local HELD = {{study = "1.1", series = "1.1.1", n = 10}, {study = "1.1", series = "1.1.2", n = 5}}

local function keys(units)
    local out = {}
    for _, u in ipairs(units) do out[#out + 1] = u.key end
    table.sort(out)
    return out
end

local function asked(p, what)
    local n = 0
    for _, a in ipairs(p.asked) do if a == what then n = n + 1 end end
    return n
end

describe("the plan of a backup", function()
    it("asks an archive that answers UID lists for the series of many studies at once", function()
        local target = peer(HELD)
        local p = plan.make(peer(SOURCE), target, {study_dates = ""})
        assert.are.same({"1.2.1"}, keys(p.units))
        assert.are.equal(22, p.found)
        assert.are.equal(15, p.present)
        assert.are.equal(1, asked(target, "SERIES list"))
        assert.are.equal(0, asked(target, "SERIES 1.1") + asked(target, "SERIES 1.2"))
    end)

    it("finds a new series in a study whose instance count did not change (a plan replaced)", function()
        -- The source deleted series 1.1.2 and made 1.1.3 of the same size; the archive
        -- keeps 1.1.2: 15 instances of study 1.1 on each side.
        local source = {{study = "1.1", series = "1.1.1", n = 10}, {study = "1.1", series = "1.1.3", n = 5}}
        local p = plan.make(peer(source), peer(HELD), {study_dates = ""})
        assert.are.same({"1.1.3"}, keys(p.units))
    end)

    it("asks a study alone when a source's answer for many was cut short by its cap", function()
        -- Three series in two studies; the source answers at most two rows at a time.
        local source = peer(SOURCE, true, 2)
        local p = plan.make(source, peer({}), {study_dates = ""})
        assert.are.same({"1.1.1", "1.1.2", "1.2.1"}, keys(p.units))
        assert.are.equal(22, p.found)
        assert.are.equal(1, asked(source, "SERIES 1.2"))
        assert.are.equal(0, asked(source, "SERIES 1.1")) -- its two rows were all its series
    end)

    it("asks a peer that aborts on a list of studies one list only, then study by study", function()
        local many = {}
        for i = 1, 250 do many[i] = {study = "2." .. i, series = "2." .. i .. ".1", n = 3} end
        local source = peer(many, "abort")
        local p = plan.make(source, peer({}), {study_dates = ""})
        assert.are.equal(250, #p.units)
        assert.are.equal(1, asked(source, "SERIES list")) -- each failure counts toward its breaker
        assert.are.equal(1, asked(source, "SERIES 2.250"))
    end)

    it("does not take an archive that ignores UID lists for an empty one", function()
        local target = peer(HELD, false)
        local p = plan.make(peer(SOURCE), target, {study_dates = ""})
        -- Study 1.1 is compared series by series and found whole: nothing of it moves.
        assert.are.same({"1.2.1"}, keys(p.units))
        assert.are.equal(15, p.present)
        assert.are.equal(2, asked(target, "SERIES 1.1")) -- the list's first study asked alone, then compared
        assert.are.equal(1, asked(target, "SERIES 1.2"))
    end)

    it("trusts an empty answer to a list when the first study asked alone is not there either", function()
        local target = peer({}, false)
        local p = plan.make(peer(SOURCE), target, {study_dates = ""})
        assert.are.same({"1.1.1", "1.1.2", "1.2.1"}, keys(p.units))
        assert.are.equal(1, asked(target, "SERIES 1.1")) -- the probe
        assert.are.equal(0, asked(target, "SERIES 1.2"))
    end)
end)

describe("the studies of a plan", function()
    -- A source of `n` studies, one a day from 2026-01-01, answering at most `cap` rows
    -- (and still success); `dates = false`: it ignores StudyDate.
    local function dated(n, cap, dates)
        local p = {queries = 0}
        function p:find(q)
            self.queries = self.queries + 1
            local a, b = q.StudyDate:match("^(%d+)%-(%d+)$")
            local out = {}
            for i = 1, n do
                local date = os.date("!%Y%m%d", os.time{year = 2026, month = 1, day = i, hour = 12})
                if dates == false or not a or (date >= a and date <= b) then
                    if #out < cap then out[#out + 1] = {StudyInstanceUID = "1." .. i, StudyDate = date} end
                end
            end
            return out
        end
        return p
    end

    it("are asked again in halves of their dates while an answer may have been cut short", function()
        local source = dated(300, 250)
        assert.are.equal(300, #plan.studies(source, {study_dates = "20260101-20261231"}))
    end)

    it("are asked once when the answer is small, or when the source ignores the dates", function()
        local small = dated(50, 1000)
        assert.are.equal(50, #plan.studies(small, {study_dates = "19000101-21000101"}))
        assert.are.equal(1, small.queries)
        local undated = dated(300, 1000, false)
        assert.are.equal(300, #plan.studies(undated, {study_dates = "19000101-21000101"}))
        assert.are.equal(3, undated.queries) -- the whole, then its two halves sharing every study
    end)
end)
