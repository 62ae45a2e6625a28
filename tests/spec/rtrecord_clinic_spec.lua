-- Every delivery of a synthetic clinic (rtbackup.mosaiq.synth in SQLite, read back by
-- mosaiq.deliveries) becomes an RT Beams Treatment Record that passes dciodvfy, or is
-- named as skipped; the records say what the delivery history says was delivered in
-- each situation the generator places (interrupted and resumed beams, a mid-course
-- edit, wedges and boli, both leaf-set encodings); regenerating gives the same files.
local support = require "rtrecord_support"
local helpers = require "helpers"
local odbc = require "rtbackup.odbc"
local mosaiq = require "rtbackup.mosaiq.query"
local synth = require "rtbackup.mosaiq.synth"
local clock = require "rtbackup.clock"
local map = require "rtbackup.mosaiq.map"

local MACHINES = {LINAC1 = {manufacturer = "Elekta", serial_number = "151234"},
                  TrueBeam = {manufacturer = "Varian Medical Systems", serial_number = "H192837"}}

-- Two clinics of other shapes: the mechanism, not one case.
local SHAPES = {
    {seed = 2, patients = 8, start = "2026-11-02", days = 10},
    {seed = 5, patients = 14, start = "2025-06-02", days = 12},
}

local dir
setup(function() dir = helpers.tmpdir() end)
teardown(function() os.execute("rm -rf " .. helpers.quote(dir)) end)

-- Generates a clinic and builds the records of every day of its period:
-- {clinic, db, by_dhs = {[DHS_ID] = {ds, group, warnings}}, records = {{ds, path}},
--  skipped = {...}, failures = {...}}.
local function build_clinic(shape, encoding, out)
    local db = odbc.connect({odbc_driver = "SQLite3", db_database = out .. ".sqlite"}, nil, {create = true})
    mosaiq.create_schema(db)
    local clinic = synth.generate(db, {seed = shape.seed, patients = shape.patients, start_date = shape.start,
                                       days = shape.days, leaf_encoding = encoding, faults = true})
    os.execute("mkdir -p " .. helpers.quote(out))
    local opts = {uid_scope = "CLINIC/MOSAIQ", null = odbc.NULL, mlc = {encoding = encoding},
                  private_block = support.TJU_BLOCK, machines = MACHINES}
    local result = {clinic = clinic, db = db, by_dhs = {}, records = {}, skipped = {}, failures = {}}
    for i = 0, shape.days - 1 do
        local groups, skipped = mosaiq.deliveries(db, clock.format_day(clock.day(shape.start) + i))
        for _, s in ipairs(skipped) do result.skipped[#result.skipped + 1] = s end
        for _, g in ipairs(groups) do
            local ok, ds, warnings = pcall(map.build, g, opts)
            if ok then
                local path = out .. "/" .. ds.SOPInstanceUID .. ".dcm"
                ds:save(path)
                result.records[#result.records + 1] = {ds = ds, path = path}
                for _, f in ipairs(g.fields) do
                    result.by_dhs[f.dose.DHS_ID] = {ds = ds, group = g, warnings = warnings}
                end
            else
                result.failures[#result.failures + 1] = tostring(ds)
            end
        end
    end
    table.sort(result.records, function(a, b) return a.path < b.path end)
    return result
end

-- The beam of record `ds` delivered by Dose_Hst row dhs_id (its position in the group).
local function beam_of(entry, dhs_id)
    local fields = {}
    for _, f in ipairs(entry.group.fields) do fields[#fields + 1] = f end
    table.sort(fields, function(a, b)
        if a.dose.Tx_DtTm ~= b.dose.Tx_DtTm then return a.dose.Tx_DtTm < b.dose.Tx_DtTm end
        return a.dose.DHS_ID < b.dose.DHS_ID
    end)
    for i, f in ipairs(fields) do
        if f.dose.DHS_ID == dhs_id then return entry.ds.TreatmentSessionBeamSequence[i], f end
    end
end

local function near(a, b, what)
    assert(math.abs(a - b) < 0.051, string.format("%s: %s, expected %s", what, tostring(a), tostring(b)))
end

for n, shape in ipairs(SHAPES) do
    describe(string.format("a synthetic clinic (seed %d, %d patients, %d days)", shape.seed, shape.patients,
                           shape.days), function()
        local built = {}
        local function clinic(encoding)
            built[encoding] = built[encoding] or build_clinic(shape, encoding, dir .. "/" .. n .. "-" .. encoding)
            return built[encoding]
        end
        teardown(function() for _, b in pairs(built) do b.db:close() end end)

        for _, encoding in ipairs{"int16_0.01cm", "float32_mm"} do
            it("builds a valid record for every delivery or names why not (" .. encoding .. " leaves)", function()
                local c = clinic(encoding)
                assert.are.same({}, c.failures)
                assert.is_true(#c.records >= 20, "only " .. #c.records .. " records")
                for _, r in ipairs(c.records) do
                    local problems, out = support.dciodvfy(r.path, support.ACCEPTED_EMPTY_STUDY)
                    assert.are.same({}, problems, r.path .. "\n" .. out)
                end
                local kinds = {}
                for _, s in ipairs(c.skipped) do kinds[s.kind] = (kinds[s.kind] or 0) + 1 end
                for kind in pairs(kinds) do
                    assert.is_truthy(({qa_mode = 1, brachytherapy = 1, missing_version = 1})[kind], kind)
                end
                assert.are.equal(#c.clinic.situations.missing_field, kinds.missing_version or 0)
            end)
        end

        it("records an interrupted beam as what it gave, and its continuation as the rest", function()
            local c = clinic("int16_0.01cm")
            local entries = {}
            local first, last = shape.start, clock.format_day(clock.day(shape.start) + shape.days - 1)
            local function in_period(e) return e.day >= first and e.continued_day and e.continued_day <= last end
            for _, e in ipairs(c.clinic.situations.interrupted_same_day) do
                if in_period(e) then entries[#entries + 1] = e end
            end
            for _, e in ipairs(c.clinic.situations.interrupted_next_day) do
                if in_period(e) then entries[#entries + 1] = e end
            end
            assert.is_true(#entries >= 2, "the generator places both kinds")
            for _, e in ipairs(entries) do
                local first = assert(c.by_dhs[e.interrupted], "no record for the interrupted delivery")
                local b1 = beam_of(first, e.interrupted)
                assert.are.equal(e.status == 2 and "OPERATOR" or "MACHINE", b1.TreatmentTerminationStatus)
                assert.are.equal("TREATMENT", b1.TreatmentDeliveryType)
                near(b1.DeliveredPrimaryMeterset, e.given, "interrupted: delivered")
                near(b1.SpecifiedPrimaryMeterset, e.planned, "interrupted: specified")
                local cps = b1.ControlPointDeliverySequence
                near(cps[#cps].DeliveredMeterset, e.given, "interrupted: last control point")
                local second = assert(c.by_dhs[e.continued[1]], "no record for the continuation")
                assert.are_not.equal(first.ds.SOPInstanceUID, second.ds.SOPInstanceUID)
                local b2 = beam_of(second, e.continued[1])
                assert.are.equal("CONTINUATION", b2.TreatmentDeliveryType)
                assert.are.equal("NORMAL", b2.TreatmentTerminationStatus)
                local cps2 = b2.ControlPointDeliverySequence
                near(cps2[1].DeliveredMeterset, e.given, "continuation: starts where it stopped")
                near(cps2[#cps2].DeliveredMeterset, e.planned, "continuation: ends at the planned")
                -- the fraction's two records add up to the beam once
                near(b1.DeliveredPrimaryMeterset + b2.DeliveredPrimaryMeterset, e.planned, "together")
                assert.are.equal(first.ds.InstanceNumber, second.ds.InstanceNumber)
            end
        end)

        it("describes a fraction given before a mid-course edit with the field as it was then", function()
            local c = clinic("int16_0.01cm")
            assert.is_true(#c.clinic.situations.field_edit > 0)
            local checked = 0
            for _, e in ipairs(c.clinic.situations.field_edit) do
                for _, f in ipairs(e.fields) do
                    local mu = {}
                    for _, id in ipairs{f.old, f.new} do
                        mu[id] = c.db:query("SELECT Meterset AS m FROM TxField WHERE FLD_ID = ?", {id})[1].m
                    end
                    assert.are_not.equal(mu[f.old], mu[f.new])
                    local rows = c.db:query("SELECT DHS_ID AS id, FLD_ID AS fld, Tx_DtTm AS t FROM Dose_Hst " ..
                                            "WHERE FLD_ID IN (?, ?) AND WasQAMode = 0 AND PartiallyTreated = 0 " ..
                                            "AND MetersetPrevDelivered = 0", {f.old, f.new})
                    for _, row in ipairs(rows) do
                        local entry = c.by_dhs[row.id]
                        if entry then
                            local beam = beam_of(entry, row.id)
                            near(beam.SpecifiedPrimaryMeterset, mu[row.fld], "specified MU of the version in force")
                            near(beam.DeliveredPrimaryMeterset, mu[row.fld], "delivered MU")
                            assert.are.equal(tostring(row.t):sub(1, 10) < e.edit_day, row.fld == f.old)
                            checked = checked + 1
                        end
                    end
                end
            end
            assert.is_true(checked > 0)
        end)

        it("records the wedge and the bolus a beam was given with", function()
            local c = clinic("int16_0.01cm")
            assert.is_true(#c.clinic.situations.wedge > 0 and #c.clinic.situations.bolus > 0)
            for _, w in ipairs(c.clinic.situations.wedge) do
                local entry = assert(c.by_dhs[w.dhs_id])
                local beam = beam_of(entry, w.dhs_id)
                assert.are.equal(1, beam.NumberOfWedges)
                local rec = beam.RecordedWedgeSequence[1]
                assert.are.same({w.angle, w.orientation, "STANDARD"}, {rec.WedgeAngle, rec.WedgeOrientation, rec.WedgeType})
                assert.are.equal("W" .. w.angle .. "IN", rec.WedgeID)
            end
            for _, b in ipairs(c.clinic.situations.bolus) do
                local beam = beam_of(assert(c.by_dhs[b.dhs_id]), b.dhs_id)
                assert.are.equal(1, beam.NumberOfBoli)
                local id = beam.ReferencedBolusSequence[1].BolusID
                assert.is_truthy(id == b.text or id:match("^BOLUS"), tostring(id))
            end
        end)

        it("names the machine, department and delivery times from the delivery history", function()
            local c = clinic("int16_0.01cm")
            local seen = 0
            for dhs, entry in pairs(c.by_dhs) do
                local m = entry.ds.TreatmentMachineSequence[1]
                local want = MACHINES[m.TreatmentMachineName] or MACHINES[m.ManufacturerModelName]
                if want then
                    assert.are.same({want.manufacturer, want.serial_number}, {m.Manufacturer, m.DeviceSerialNumber})
                    seen = seen + 1
                end
                assert.are.equal("Radiation Oncology", m.InstitutionalDepartmentName)
                local row = c.db:query("SELECT MAX(Edit_DtTm) AS e FROM Dose_Hst WHERE DHS_ID = ?", {dhs})[1]
                assert.is_true(entry.ds.InstanceCreationDate >= tostring(row.e):sub(1, 10):gsub("-", ""))
                local beam = beam_of(entry, dhs)
                local cp0 = beam.ControlPointDeliverySequence[1]
                local recorded = c.db:query([[SELECT TPH.Meterset_Rate AS rate, TPH.Couch_Vrt AS vrt
                    FROM TxFieldPoint_Hst TPH JOIN FLD_HST FH ON FH.FHS_ID = TPH.FHS_ID
                    WHERE FH.DHS_ID = ? AND TPH.Point = 0]], {dhs})[1]
                if recorded then
                    assert.are.equal(recorded.rate, cp0.DoseRateDelivered)
                    near(cp0.TableTopVerticalPosition, recorded.vrt * 10, "couch as recorded")
                end
                assert.is_number(beam.DeliveredTreatmentTime)
            end
            assert.is_true(seen > 0)
        end)

        it("decodes the same leaf positions from either encoding", function()
            local a, b = clinic("int16_0.01cm"), clinic("float32_mm")
            local compared = 0
            for dhs, entry in pairs(a.by_dhs) do
                local other = b.by_dhs[dhs]
                local beam_a, beam_b = beam_of(entry, dhs), beam_of(other, dhs)
                local function mlc(beam)
                    for _, d in ipairs(beam.ControlPointDeliverySequence[1].BeamLimitingDevicePositionSequence) do
                        if d.RTBeamLimitingDeviceType == "MLCX" then return d.LeafJawPositions end
                    end
                end
                local la, lb = mlc(beam_a), mlc(beam_b)
                if la then
                    assert.are.equal(#la, #lb)
                    for i = 1, #la do near(la[i], lb[i], "leaf " .. i) end
                    compared = compared + 1
                end
            end
            assert.is_true(compared > 10)
        end)

        it("gives the same files when the days are generated again", function()
            local first = clinic("int16_0.01cm")
            local second = build_clinic(shape, "int16_0.01cm", dir .. "/" .. n .. "-again")
            second.db:close()
            assert.are.equal(#first.records, #second.records)
            for i, r in ipairs(first.records) do
                assert.are.equal(r.path:match("[^/]+$"), second.records[i].path:match("[^/]+$"))
                assert.is_true(support.read_file(r.path) == support.read_file(second.records[i].path), r.path)
            end
        end)
    end)
end
