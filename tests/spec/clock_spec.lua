-- rtbackup.clock: days and periods, the arithmetic every run's period rests on.
local clock = require "rtbackup.clock"

describe("a command's period", function()
    it("is --since and --until as given", function()
        assert.are.same({"2026-11-01", "2026-11-21"}, {clock.lookback("2026-11-01", "2026-11-21", "UTC", 90)})
    end)

    it("starts lookback days before --until when only --until is given, across months and years", function()
        assert.are.same({"2026-02-27", "2026-03-06"}, {clock.lookback(nil, "2026-03-06", "UTC", 7)})
        assert.are.same({"2025-10-03", "2026-01-01"}, {clock.lookback(nil, "2026-01-01", "UTC", 90)})
        assert.are.same({"2024-02-29", "2024-02-29"}, {clock.lookback(nil, "2024-02-29", "UTC", 0)})
    end)

    it("ends today in the site's time zone when --until is not given", function()
        local since, till = clock.lookback(nil, nil, "UTC", 1)
        assert.are.equal(clock.today("UTC", 0), till)
        assert.are.equal(clock.today("UTC", -1), since)
    end)
end)
