--- rtbackup.serve.page: the status page — per environment and source, the coverage
-- per day (rtbackup.serve.chart), the last runs, the open failures, peer health and
-- the last drill, as one server-rendered HTML document: inline CSS and SVG, no script,
-- nothing fetched from anywhere (hospital networks are offline). It reads on a phone
-- (one column, tables scroll sideways) and prints (no navigation, colours kept).
--
--   local html = page.render{generated_at =, host =, days =, hide_patients =,
--                            envs = {{status = <rtbackup.status>, health = {rows =, checked_at =}}}}
local chart = require "rtbackup.serve.chart"
local status = require "rtbackup.status"

local page = {}

local esc = chart.escape

local CSS = [[
:root{--ok:#2e7d32;--bad:#c62828;--warn:#b26a00;--grey:#6b6b6b;--line:#d9d9d9;--bg:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif;color:#1b1b1b;background:var(--bg)}
header,main,footer{max-width:1180px;margin:0 auto;padding:0 16px}
header{padding-top:12px}
h1{font-size:1.5rem;margin:.3em 0}
h2{font-size:1.25rem;margin:1.2em 0 .4em;border-bottom:2px solid var(--line);padding-bottom:.2em}
h3{font-size:1.08rem;margin:0 0 .3em}
h4{font-size:.95rem;margin:.9em 0 .3em}
small,.muted{color:var(--grey)}
nav ul{list-style:none;margin:.3em 0;padding:0;display:flex;flex-wrap:wrap;gap:.4em 1em}
a{color:#0b57d0}
.banner{padding:.6em .9em;border-radius:6px;font-weight:600;margin:.6em 0}
.banner.ok{background:#e8f5e9;color:var(--ok)}
.banner.bad{background:#ffebee;color:var(--bad)}
.banner.warn{background:#fff4e0;color:var(--warn)}
.source{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:12px 0;break-inside:avoid-page}
.headline{margin:.1em 0 .5em}
.badge{display:inline-block;padding:0 .45em;border-radius:4px;font-size:.85em;font-weight:600;color:#fff;background:var(--grey)}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}.badge.warn{background:var(--warn)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;background:#fafafa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.uid{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.82rem}
td.err{max-width:34em}
td.when{white-space:nowrap}
svg.coverage{width:100%;height:auto;max-height:220px;display:block;margin:.2em 0}
svg.coverage .grid{stroke:#e3e3e3;stroke-width:1}
svg.coverage .axis{font-size:9px;fill:#666}
svg.coverage .empty{fill:none;stroke:#e0e0e0;stroke-width:.5}
.legend{font-size:.85rem;margin:.2em 0}
.key{margin-right:1em;white-space:nowrap}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.3em;vertical-align:-.05em}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:.4em 0;font-size:.92rem}
dl.facts dt{color:var(--grey)}dl.facts dd{margin:0}
footer{font-size:.8rem;color:var(--grey);padding:16px}
@media (max-width:640px){body{font-size:14px}header,main,footer{padding:0 8px}.source{padding:10px 8px}
 dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:.3em}}
@media print{body{background:#fff;font-size:11pt}nav,.noprint{display:none}
 .source{border:1px solid #999;break-inside:avoid}*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 a{color:inherit;text-decoration:none}}
]]

local function n(v) return v == nil and "–" or esc(v) end

local function badge(state, text)
    return string.format('<span class="badge %s">%s</span>', state, esc(text))
end

local function status_badge(s)
    if s == "ok" then return badge("ok", "ok") end
    if s == "running" then return badge("warn", "running") end
    if s == "outside_window" then return badge("", "outside window") end
    if s == nil then return badge("", "?") end
    return badge("bad", s)
end

local function table_html(columns, rows, class)
    local out = {'<div class="scroll"><table' .. (class and (' class="' .. class .. '"') or "") .. "><thead><tr>"}
    for _, c in ipairs(columns) do
        out[#out + 1] = string.format('<th%s scope="col">%s</th>', c.num and ' class="num"' or "", esc(c.title))
    end
    out[#out + 1] = "</tr></thead><tbody>"
    for _, r in ipairs(rows) do
        out[#out + 1] = "<tr>"
        for _, c in ipairs(columns) do
            local v = r[c.key]
            local cls = c.num and "num" or c.class
            out[#out + 1] = string.format("<td%s>%s</td>", cls and (' class="' .. cls .. '"') or "",
                                          c.raw and (v or "") or n(v))
        end
        out[#out + 1] = "</tr>"
    end
    out[#out + 1] = "</tbody></table></div>"
    return table.concat(out)
end

-- The state of a source at a glance: "bad" (failures), "warn" (work not done yet, or
-- no success in the runs listed), "ok".
function page.source_state(src)
    if #src.failures > 0 or src.totals.failed > 0 then return "bad" end
    local last = src.runs[1]
    if last and last.command == "backup" and last.exit_code and last.exit_code ~= 0 and last.exit_code ~= 5 then
        return "bad"
    end
    if src.last_drill and (src.last_drill.exit_code or 0) ~= 0 then return "bad" end
    if src.totals.pending > 0 or not src.last_success then return "warn" end
    return "ok"
end

local function headline(src, st)
    local t = src.totals
    if t.known == 0 then
        return string.format('<p class="headline muted">Nothing known of %s from %s to %s.</p>', esc(src.alias),
                             esc(st.since), esc(st["until"]))
    end
    local state = page.source_state(src)
    return string.format('<p class="headline">%s <strong>%s</strong> of %d %s verified in the backup, %s to %s' ..
                         ' · <span%s>%d failed</span> · %d not attempted yet</p>',
                         badge(state, state == "ok" and "complete" or state == "bad" and "attention" or "in progress"),
                         esc(status.percent(t.coverage)), t.known, esc(src.unit), esc(st.since), esc(st["until"]),
                         t.failed > 0 and ' style="color:var(--bad);font-weight:600"' or "", t.failed, t.pending)
end

local function facts(src)
    local d = src.last_drill
    local drill
    if d then
        drill = string.format("%s %s", status_badge(d.exit_code == 0 and "ok" or (d.different or 0) + (d.missing or 0) > 0
                                                    and "MISMATCH" or d.status),
                              esc(status.drill_line(d)))
    else
        drill = badge("warn", "never") .. " no restore drill yet (rtbackup drill)"
    end
    local rows = {
        {"last success", esc(status.short_time(src.last_success)) .. (src.last_success and " UTC" or "")},
        {"last restore drill", drill},
        {"last validation", esc(status.validate_line(src.last_validate))},
    }
    if src.references_open > 0 then
        rows[#rows + 1] = {"references", badge("warn", src.references_open .. " unresolved")}
    end
    if src.undated.known > 0 then
        local u = src.undated
        rows[#rows + 1] = {"referenced series", string.format("%d %s from other studies: %d verified, %d failed, %d pending",
                                                              u.known, esc(src.unit), u.verified, u.failed, u.pending)}
    end
    local out = {'<dl class="facts">'}
    for _, r in ipairs(rows) do out[#out + 1] = "<dt>" .. r[1] .. "</dt><dd>" .. r[2] .. "</dd>" end
    out[#out + 1] = "</dl>"
    return table.concat(out)
end

local function runs_html(src)
    if #src.runs == 0 then return '<p class="muted">No runs recorded.</p>' end
    local rows = {}
    for _, r in ipairs(src.runs) do
        rows[#rows + 1] = {started = status.short_time(r.started_at), command = r.command,
                           duration = status.duration(r.duration_seconds),
                           result = status_badge(r.status) .. (r.exit_code and (" exit " .. esc(r.exit_code)) or ""),
                           moved = r.moved, verified = r.verified or r.equal, failed = r.failed or r.different,
                           note = r.status ~= "ok" and r.cause or nil}
    end
    return table_html({{key = "started", title = "started (UTC)", class = "when"}, {key = "command", title = "command"},
                       {key = "duration", title = "duration", num = true}, {key = "result", title = "result", raw = true},
                       {key = "moved", title = "moved", num = true}, {key = "verified", title = "verified", num = true},
                       {key = "failed", title = "failed", num = true}, {key = "note", title = "note", class = "err"}},
                      rows, "runs")
end

local function failures_html(src, hide)
    if #src.failures == 0 then return '<p class="muted">No open failures.</p>' end
    local rows = {}
    local shown = math.min(#src.failures, 50)
    for i = 1, shown do
        local f = src.failures[i]
        rows[#rows + 1] = {patient = not hide and f.patient or nil, day = f.day, unit = f.unit, kind = f.modality or f.kind,
                           missing = f.missing, attempts = f.attempts, error = f.last_error,
                           since = status.short_time(f.since)}
    end
    local columns = {{key = "day", title = "day", class = "when"}, {key = "kind", title = "kind"},
                     {key = "unit", title = src.type == "mosaiq" and "record" or "series", class = "uid"},
                     {key = "missing", title = "missing", num = true}, {key = "attempts", title = "attempts", num = true},
                     {key = "error", title = "last error", class = "err"}, {key = "since", title = "since", class = "when"}}
    if not hide then table.insert(columns, 1, {key = "patient", title = "patient ID"}) end
    local more = #src.failures > shown and string.format('<p class="muted">… and %d more (/api/status).</p>',
                                                         #src.failures - shown) or ""
    return table_html(columns, rows, "failures") .. more
end

local function source_html(env_name, src, st, hide)
    local id = "src-" .. env_name .. "-" .. src.alias
    local per = src.type == "mosaiq" and "treatment date" or "study date"
    return table.concat{
        string.format('<article class="source" id="%s" data-state="%s">', esc(id), page.source_state(src)),
        string.format("<h3>%s <small>%s · %s per %s</small></h3>", esc(src.alias), esc(src.type), esc(src.unit), per),
        headline(src, st),
        chart.svg(src.days, st.since, st["until"], {unit = src.unit,
            label = string.format("%s %s: %s of %d %s verified", env_name, src.alias, status.percent(src.totals.coverage),
                                  src.totals.known, src.unit)}),
        chart.legend(),
        facts(src),
        string.format("<h4>Open failures (%d)</h4>", #src.failures),
        failures_html(src, hide),
        "<h4>Last runs</h4>",
        runs_html(src),
        "</article>"}
end

local function health_html(health)
    if not health then return '<p class="muted">Peer health not checked yet.</p>' end
    if health.error then return '<p class="banner bad">Health checks failed to run: ' .. esc(health.error) .. "</p>" end
    local rows, failed = {}, 0
    for _, r in ipairs(health.rows or {}) do
        if not r.ok then failed = failed + 1 end
        rows[#rows + 1] = {check = r.check, target = r.target, result = status_badge(r.status),
                           ms = r.ms or (r.seconds and string.format("%.1f", r.seconds * 1000)), detail = r.detail}
    end
    return string.format('<p class="muted">checked %s UTC%s</p>', esc(status.short_time(health.checked_at)),
                         failed > 0 and string.format(" · <strong style=\"color:var(--bad)\">%d failed</strong>", failed) or "") ..
           table_html({{key = "check", title = "check"}, {key = "target", title = "target"},
                       {key = "result", title = "result", raw = true}, {key = "ms", title = "ms", num = true},
                       {key = "detail", title = "detail", class = "err"}}, rows, "health")
end

--- The whole page. model: {generated_at, host, version, hide_patients, envs = {{status,
-- health}}}.
function page.render(model)
    local body, nav = {}, {}
    local bad, warn = 0, 0
    for _, e in ipairs(model.envs) do
        local st = e.status
        nav[#nav + 1] = string.format('<li><a href="#env-%s">%s</a></li>', esc(st.env), esc(st.env))
        local sections = {}
        for _, src in ipairs(st.sources) do
            local state = page.source_state(src)
            if state == "bad" then bad = bad + 1 elseif state == "warn" then warn = warn + 1 end
            sections[#sections + 1] = source_html(st.env, src, st, model.hide_patients)
        end
        for _, h in ipairs(e.health and e.health.rows or {}) do if not h.ok then bad = bad + 1 end end
        body[#body + 1] = table.concat{
            string.format('<section class="env" id="env-%s"><h2>%s %s</h2>', esc(st.env), esc(st.env),
                          st.description and ("<small>" .. esc(st.description) .. "</small>") or ""),
            table.concat(sections),
            string.format('<article class="source health" id="health-%s"><h3>Peer health</h3>%s</article>', esc(st.env),
                          health_html(e.health)),
            "</section>"}
    end
    local banner
    if bad > 0 then
        banner = string.format('<p class="banner bad" id="overall" data-state="bad">%d item%s need%s attention.</p>', bad,
                               bad == 1 and "" or "s", bad == 1 and "s" or "")
    elseif warn > 0 then
        banner = '<p class="banner warn" id="overall" data-state="warn">Backups in progress: some work is not done yet.</p>'
    else
        banner = '<p class="banner ok" id="overall" data-state="ok">Every source is fully verified in the backup.</p>'
    end
    return table.concat{
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="robots" content="noindex,nofollow">',
        "<title>rtbackup status</title><style>", CSS, "</style></head><body>",
        "<header><h1>rtbackup status</h1>",
        string.format('<p class="muted">%s UTC · %s · rtbackup %s · the last %d days</p>',
                      esc(status.short_time(model.generated_at)), esc(model.host or ""), esc(model.version or ""),
                      model.days or 0),
        banner,
        #nav > 1 and ("<nav><ul>" .. table.concat(nav) .. "</ul></nav>") or "",
        "</header><main>", table.concat(body), "</main>",
        '<footer>Read-only view of the journals. JSON: <a href="/api/status">/api/status</a> · ',
        '<a href="/api/health">/api/health</a> · metrics: <a href="/metrics">/metrics</a></footer>',
        "</body></html>\n"}
end

return page
