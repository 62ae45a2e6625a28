-- rtbackup.units: the one bookkeeping of a run's units, over a real journal (SQLite).
local h = require "helpers"
local journal = require "rtbackup.journal"
local units = require "rtbackup.units"

local dir, j
before_each(function()
    dir = h.tmpdir()
    j = journal.open(dir .. "/units.journal.sqlite")
end)
after_each(function()
    j:close()
    os.execute("rm -rf " .. h.quote(dir))
end)

local function series(key, expected, present)
    return {key = key, kind = "series", expected = expected, present = present,
            data = {study = "1.2.3", patient = "RTB001"}}
end

describe("a run's book", function()
    it("counts a unit failed and then completed (by the references pass) once, as verified", function()
        local book = units.book(j, "ARIA")
        local ct, plan = series("1.2.3.1", 97, 0), series("1.2.3.2", 1, 0)
        book:record_plan({ct, plan}, {})
        book:moved({ct, plan})
        book:verified(plan, 1)
        book:failed(ct, 97, 97, "the source refused the move")
        assert.are.same({97, 1, 1}, {book.counts.failed, book.outcomes.failed, #book.errors})
        -- the references pass moves the CT after all
        book:verified(ct, 97)
        assert.are.same({failed = 0, verified = 98, moved = 98},
                        {failed = book.counts.failed, verified = book.counts.verified, moved = book.counts.moved})
        assert.are.same({0, 2, 0}, {book.outcomes.failed, book.outcomes.verified, #book.errors})
        assert.are.equal("verified", j:get("ARIA", ct.key).state)
    end)

    -- Seen against a dcmqrscp archive that lost files under concurrent stores: the
    -- references pass moved a verified CT series again, and the summary said
    -- "moved 364, verified 645" of 548 found.
    it("counts a unit verified, lost by the archive and verified again (by the references pass) once", function()
        local book = units.book(j, "ARIA")
        local ct = series("1.2.3.1", 97, 0)
        book:record_plan({ct}, {})
        book:moved({ct})
        book:verified(ct, 97)
        -- the references pass adopts it with what the archive still holds, 96
        local again = book:adopt(series("1.2.3.1", 97, 96))
        book:moved({again})
        book:verified(again, 97)
        assert.are.same({verified = 97, moved = 97, units = 1, done = 1},
                        {verified = book.counts.verified, moved = book.counts.moved,
                         units = book.outcomes.verified, done = #book.done})
    end)

    it("counts a unit that failed twice in a run once, with what the second attempt left missing", function()
        local book = units.book(j, "ARIA")
        local ct = series("1.2.3.1", 97, 0)
        book:record_plan({ct}, {})
        book:failed(ct, 5, 97, "5 missing")
        book:failed(book:adopt(series("1.2.3.1", 97, 92)), 2, 97, "2 missing")
        assert.are.same({failed = 2, moved = 95, units = 1, errors = 1},
                        {failed = book.counts.failed, moved = book.counts.moved,
                         units = book.outcomes.failed, errors = #book.errors})
    end)

    it("keeps a unit refused for good counted as failed, with its error", function()
        local book = units.book(j, "ARIA")
        local dose = series("1.2.3.3", 1, 0)
        book:record_plan({dose}, {})
        assert.are.equal("failed", book:skipped(dose, "refused", true))
        assert.are.same({1, 1, 1}, {book.counts.failed, book.outcomes.failed, #book.errors})
        assert.are.equal("failed", j:get("ARIA", dose.key).state)
    end)
end)
