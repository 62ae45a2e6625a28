--- rtbackup.summary: what a run did, for people (a few lines on stdout) and for
-- programs (JSON: `--format json`, <state_dir>/<ENV>-<SOURCE>-last-run.json, the
-- journal's run history, metrics, alerts). One table, the same everywhere.
--
-- Fields every run has: env, source, target, command, started_at, finished_at,
-- duration_seconds, exit_code, status ("ok", "partial", "unreachable", "interrupted",
-- "locked", "outside_window", "usage"), error (the cause when the run could not go on:
-- {kind, message, phase, and for a peer's error: peer (alias), address (AET@host:port),
-- operation ("C-FIND", ...)}), since/until, found, already_present, moved, verified,
-- failed, skipped, deferred, associations, errors ({unit, kind, patient, error}), hint
-- (where to look: the refusal that ended the moves, or that the source accepted no
-- C-MOVE while something failed; it names peers, never a patient).
-- A flow adds its own (studies, series_to_move, references, unverified: instances a
-- source counts but does not list; records_built, deliveries_skipped, ...).
local cjson = require("cjson").new()
local text = require "rtbackup.text"

cjson.encode_sparse_array(true)
cjson.encode_invalid_numbers("null")

local summary = {}

function summary.json(s)
    return cjson.encode(text.clean(s))
end

local function count(v) return v or 0 end

-- What the run was about, also when it stopped before doing anything.
local function headline(s)
    local what = s.source or "?"
    if s.target then what = what .. " -> " .. s.target end
    local period = ""
    if s.since or s["until"] then
        period = string.format(" (%s .. %s)", s.since or "?", s["until"] or "?")
    elseif s.command == "backup" and s.kind == "qr" then
        period = " (every study date)"
    end
    return string.format("%s %s %s%s", s.env or "", s.command or "backup", what, period)
end

local function print_dry_run(out, s)
    local plan = s.plan or {}
    local unit = s.kind == "mosaiq" and "records" or "series"
    local instances, bytes = 0, 0
    for _, p in ipairs(plan) do
        instances = instances + (p.missing or 0)
        bytes = bytes + (p.bytes or 0)
    end
    out:write(string.format("  dry run: %d %s would be moved (%d %s%s)\n", #plan, unit, instances,
                            s.kind == "mosaiq" and "records" or "instances",
                            bytes > 0 and string.format(", %.1f MB", bytes / 1e6) or ""))
    for _, p in ipairs(plan) do
        if s.kind == "mosaiq" then
            out:write(string.format("    %s %s: %s\n", p.patient or "?", p.day or "", p.record))
        else
            out:write(string.format("    %s %s %s: %d of %d instances missing\n", p.patient or "?",
                                    p.modality or "?", p.series, p.missing, p.instances))
        end
    end
end

-- The units' errors, one line each (20 at most: the JSON summary has them all). An
-- error that many units share (a peer that refused them all for one reason) is said
-- once, with the units it concerns below it, and not again when it is the hint
-- printed above.
local function print_errors(out, errors, hint)
    local groups, order = {}, {}
    for _, e in ipairs(errors) do
        local text = e.error or ""
        if not groups[text] then groups[text] = {}; order[#order + 1] = text end
        table.insert(groups[text], (e.patient and (e.patient .. " ") or "") .. (e.unit or ""))
    end
    local named = 0 -- units named so far
    for _, text in ipairs(order) do
        if named >= 20 then break end
        local units = groups[text]
        local said = text == hint and "the hint above" or text
        if #units == 1 then
            out:write("  error: ", units[1], ": ", said, "\n")
            named = named + 1
        else
            out:write(string.format("  error, for %d units: %s\n", #units, said))
            for i = 1, math.min(#units, 20 - named) do out:write("    ", units[i], "\n") end
            named = named + math.min(#units, 20 - named)
        end
    end
    if named < #errors then
        out:write(string.format("  ... and %d more (the JSON summary lists them all)\n", #errors - named))
    end
end

--- The summary for people, on `out` (default stdout).
function summary.print(s, out)
    out = out or io.stdout
    out:write(headline(s), "\n")
    if s.error then
        -- What was being attempted with whom: "C-FIND on ARIA (ARIA_UCLA@10.10.1.100:104): ..."
        local e, at = s.error, ""
        if e.operation or e.address then
            local who = e.peer and e.address and string.format("%s (%s)", e.peer, e.address) or e.peer or e.address
            at = string.format("%s%s: ", e.operation and (e.operation .. " on ") or "", who or "")
        end
        out:write(string.format("  stopped while %s: %s%s\n", e.phase or "running", at, e.message or "?"))
    end
    if s.kind == "mosaiq" then
        out:write(string.format("  built %d records from the deliveries", count(s.records_built)))
        if count(s.deliveries_skipped) > 0 then
            out:write(string.format("; %d deliveries not built (see below)", s.deliveries_skipped))
        end
        out:write(string.format("; already backed up %d\n", count(s.already_present)))
        if count(s.records_corrected) > 0 then
            out:write(string.format("  %d records corrected in Mosaiq: new versions supersede the archived ones\n",
                                    s.records_corrected))
        end
        if count(s.record_warnings) > 0 then
            out:write(string.format("  %d warnings about what Mosaiq recorded (see below and the log)\n",
                                    s.record_warnings))
        end
    elseif s.found then
        out:write(string.format("  found %d instances in %d studies; already present %d\n", count(s.found),
                                count(s.studies), count(s.already_present)))
    end
    if s.patient_not_found then
        out:write(string.format(s.kind == "mosaiq" and "  Mosaiq has no delivery of patient %s in the period\n"
                                or "  the source has no study of patient %s\n", s.patient_not_found))
    end
    if s.plan then return print_dry_run(out, s) end
    local unit = s.kind == "mosaiq" and "records" or "instances"
    out:write(string.format("  moved %d, verified %d, failed %d %s", count(s.moved), count(s.verified),
                            count(s.failed), unit))
    local later = count(s.skipped) + count(s.deferred)
    if later > 0 then out:write(string.format("; %d left for later runs", later)) end
    out:write("\n")
    if count(s.references_unresolved) > 0 then
        out:write(string.format("  %d references unresolved (each below, with why)\n", s.references_unresolved))
    elseif s.references_not_checked then
        out:write("  references not checked (a peer could not be used)\n")
    end
    out:write(string.format("  %.1f s, %.0f %s/s, exit %d (%s)\n", s.duration_seconds or 0,
                            s.instances_per_second or 0, unit, s.exit_code or 0, s.status or "?"))
    if s.hint then out:write("  hint: ", s.hint, "\n") end
    print_errors(out, s.errors or {}, s.hint)
    for i, u in ipairs(s.unresolved or {}) do
        if i > 20 then break end
        out:write(string.format("  unresolved: %s references %s %s%s\n", u.from or "?", u.kind or "instance",
                                u.uid or "?", u.why and (": " .. u.why) or ""))
    end
    if count(s.unverified) > 0 then
        out:write(string.format("  %d instances not verified: the source counts them but does not list them " ..
                                "(a cap on its C-FIND answers?)\n", s.unverified))
    end
    if count(s.records_content_unchecked) > 0 then
        out:write(string.format("  %d records checked by presence only: the archive refuses C-GET\n",
                                s.records_content_unchecked))
    end
    for _, c in ipairs(s.superseded_records or {}) do
        for _, old in ipairs(c.superseded or {}) do
            out:write(string.format("  superseded: %s %s: %s (%s), current %s\n", c.patient or "?", c.record or "?",
                                    old.uid or "?", old.state or "kept", c.current or "?"))
        end
    end
    for i, w in ipairs(s.record_warning_list or {}) do
        if i > 20 then break end
        out:write(string.format("  warning: %s %s: %s%s\n", w.patient or "?", w.record or "?",
                                w.field and (w.field .. ": ") or "", w.message or "?"))
    end
    for i, d in ipairs(s.skipped_deliveries or {}) do
        if i > 20 then break end
        -- The delivery row (Dose_Hst.DHS_ID) tells apart the rows of one fraction
        -- (an HDR session has one per channel).
        out:write(string.format("  not built (%s): %s %s %s fraction %s%s: %s\n", d.kind or "?", d.day or "",
                                d.patient or "?", d.plan or "(plan unknown)", tostring(d.fraction or "?"),
                                d.dhs_id and (" (Dose_Hst " .. tostring(d.dhs_id) .. ")") or "", d.reason or "?"))
    end
end

return summary
