-- rtbackup.qr.plan: what the archive lacks of a source's selection. The backup specs
-- show the plan against real peers (tests/spec/backup_spec.lua); the peers here are
-- tables answering C-FIND from a list of series, because no peer of the testbed shows
-- the behaviour under test: an archive that ignores a list of UIDs in a C-FIND (it
-- answers nothing at all, as if it held none of the studies).
local plan = require "rtbackup.qr.plan"

-- A peer holding `series` ({study, series, n}), answering STUDY and SERIES C-FINDs with
-- their counts; `lists = false`: a StudyInstanceUID list matches nothing. Records each
-- query's level and study in `asked`.
local function peer(series, lists)
    local p = {asked = {}}
    function p:find(q, on_match)
        self.asked[#self.asked + 1] = q.level .. " " .. (type(q.StudyInstanceUID) == "table" and "list" or
                                                        q.StudyInstanceUID)
        local wanted = q.StudyInstanceUID
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
                    out[#out + 1] = {StudyInstanceUID = s.study, SeriesInstanceUID = s.series, Modality = "CT",
                                     NumberOfSeriesRelatedInstances = s.n}
                elseif not studies[s.study] then
                    studies[s.study] = {StudyInstanceUID = s.study, PatientID = "P-" .. s.study,
                                        NumberOfStudyRelatedInstances = 0}
                    out[#out + 1] = studies[s.study]
                end
                local st = studies[s.study]
                if st then st.NumberOfStudyRelatedInstances = st.NumberOfStudyRelatedInstances + s.n end
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
    it("asks an archive that answers UID lists nothing more of a study it lacks", function()
        local target = peer(HELD)
        local p = plan.make(peer(SOURCE), target, {study_dates = ""})
        assert.are.same({"1.2.1"}, keys(p.units))
        assert.are.equal(22, p.found)
        assert.are.equal(15, p.present)
        assert.are.equal(0, asked(target, "SERIES 1.2"))
        assert.are.equal(0, asked(target, "SERIES 1.1")) -- whole by its count
    end)

    it("does not take an archive that ignores UID lists for an empty one", function()
        local target = peer(HELD, false)
        local p = plan.make(peer(SOURCE), target, {study_dates = ""})
        -- Study 1.1 is compared series by series and found whole: nothing of it moves.
        assert.are.same({"1.2.1"}, keys(p.units))
        assert.are.equal(15, p.present)
        assert.are.equal(1, asked(target, "STUDY 1.1")) -- the list's first study, asked alone
        assert.are.equal(1, asked(target, "SERIES 1.1"))
    end)

    it("trusts an empty answer to a list when the first study asked alone is not there either", function()
        local target = peer({}, false)
        local p = plan.make(peer(SOURCE), target, {study_dates = ""})
        assert.are.same({"1.1.1", "1.1.2", "1.2.1"}, keys(p.units))
        assert.are.equal(0, asked(target, "SERIES 1.1") + asked(target, "SERIES 1.2"))
    end)
end)
