--- rtbackup.serve.chart: the coverage of a source per day as inline SVG — one bar per
-- day, stacked to 100% of what the source holds that day: green verified, red failed,
-- grey not attempted yet. A day with any failure also gets a red mark above its bar,
-- so one failed instance among thousands is still seen. Days without data are an
-- outline. Each bar has a <title> (shown on hover, read by screen readers) with the
-- numbers; the numbers are also data-* attributes for tools and tests. No script, no
-- external resource: the SVG is part of the page.
local clock = require "rtbackup.clock"

local chart = {
    COLORS = {verified = "#2e7d32", failed = "#c62828", pending = "#9e9e9e"},
    HEIGHT = 120,   -- plot height in SVG units
    TOP = 14,       -- room for the failure marks
    BOTTOM = 18,    -- room for the day labels
    LEFT = 34,      -- room for the percent axis
}

local function esc(s)
    return (tostring(s):gsub("[&<>\"']", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                          ["'"] = "&#39;"}))
end
chart.escape = esc

local function num(v) return (string.format("%.2f", v):gsub("%.?0+$", "")) end

--- The SVG of `days` (status rows {day, known, verified, failed, pending}) from since
-- to till ("YYYY-MM-DD"). opts.label: the accessible name; opts.unit: "instances".
function chart.svg(days, since, till, opts)
    opts = opts or {}
    local unit = opts.unit or "instances"
    local by_day = {}
    for _, d in ipairs(days) do by_day[d.day] = d end
    local first, last = clock.day(since), clock.day(till)
    local n = math.max(1, last - first + 1)
    local slot = math.max(4, math.min(24, math.floor(720 / n)))
    local bar = math.max(2, slot - (slot >= 8 and 2 or 1))
    local width = chart.LEFT + n * slot + 4
    local height = chart.TOP + chart.HEIGHT + chart.BOTTOM
    local base = chart.TOP + chart.HEIGHT
    local out = {}
    local function add(...) for _, s in ipairs{...} do out[#out + 1] = s end end
    add(string.format('<svg class="coverage" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" ' ..
                      'preserveAspectRatio="xMinYMin meet" role="img" aria-label="%s">', width, height,
                      esc(opts.label or "coverage per day")))
    -- the percent axis
    for _, p in ipairs{0, 50, 100} do
        local y = base - chart.HEIGHT * p / 100
        add(string.format('<line class="grid" x1="%d" y1="%s" x2="%d" y2="%s"/>', chart.LEFT - 3, num(y), width - 2,
                          num(y)),
            string.format('<text class="axis" x="%d" y="%s" text-anchor="end">%d%%</text>', chart.LEFT - 5,
                          num(y + 3), p))
    end
    local label_every = math.max(1, math.ceil(n / 8))
    for i = 0, n - 1 do
        local day = clock.format_day(first + i)
        local x = chart.LEFT + i * slot
        local d = by_day[day]
        if d and d.known > 0 then
            local title = string.format("%s: %d %s known, %d verified, %d failed, %d not attempted (%.1f%%)", day,
                                        d.known, unit, d.verified, d.failed, d.pending, 100 * d.verified / d.known)
            add(string.format('<g class="day" data-day="%s" data-known="%d" data-verified="%d" data-failed="%d" ' ..
                              'data-pending="%d"><title>%s</title>', day, d.known, d.verified, d.failed, d.pending,
                              esc(title)))
            local y = base
            for _, part in ipairs{"verified", "failed", "pending"} do
                local v = d[part]
                if v > 0 then
                    local h = chart.HEIGHT * v / d.known
                    -- never thinner than one unit: a single failure must show
                    if h < 1.5 then h = 1.5 end
                    y = y - h
                    add(string.format('<rect class="%s" x="%d" y="%s" width="%d" height="%s" fill="%s"/>', part, x,
                                      num(math.max(chart.TOP, y)), bar, num(h), chart.COLORS[part]))
                end
            end
            if d.failed > 0 then
                add(string.format('<path class="failmark" d="M%s %d l%s -8 l%s 0 z" fill="%s"/>', num(x + bar / 2),
                                  chart.TOP - 2, num(-bar / 2), num(bar), chart.COLORS.failed))
            end
            add("</g>")
        else
            add(string.format('<rect class="empty" data-day="%s" x="%d" y="%d" width="%d" height="%d"><title>%s: nothing ' ..
                              'known</title></rect>', day, x, chart.TOP, bar, chart.HEIGHT, day))
        end
        local last_gap = (n - 1) % label_every
        if i % label_every == 0 or (i == n - 1 and (last_gap == 0 or last_gap >= label_every * 0.6)) then
            add(string.format('<text class="axis" x="%s" y="%d" text-anchor="middle">%s</text>', num(x + bar / 2),
                              height - 4, day:sub(6)))
        end
    end
    add("</svg>")
    return table.concat(out)
end

--- The legend, as HTML.
function chart.legend()
    local items = {}
    for _, part in ipairs{{"verified", "verified in the backup"}, {"failed", "failed"},
                          {"pending", "not attempted yet"}} do
        items[#items + 1] = string.format('<span class="key"><span class="swatch" style="background:%s"></span>%s</span>',
                                          chart.COLORS[part[1]], part[2])
    end
    return '<p class="legend">' .. table.concat(items, " ") .. "</p>"
end

return chart
