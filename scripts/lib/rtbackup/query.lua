--- rtbackup.query: what a source archive holds for a patient, a study date or a
-- treatment date. Studies are found first, then the requested level inside each
-- study (hierarchical, so archives that only answer study-root hierarchical queries,
-- like dcmqrscp, work too). Every C-FIND names the patient in the audit log.
local clock = require "rtbackup.clock"
local context = require "rtbackup.context"
local dc = require "rtbackup.dicom_cli"
local errors = require "rtbackup.error"
local log = require "rtbackup.log"
local settings = require "rtbackup.settings"
local site = require "rtbackup.site"
local task = require "rtbackup.task"

local query = {}

local function dicom_range(text)
    local from, to = text:match("^(.-)%.%.(.*)$")
    if from then
        clock.check_period(from, to, "--study-date", "--study-date")
        return clock.dicom_date(from) .. "-" .. clock.dicom_date(to)
    end
    return clock.dicom_date(clock.check_date(text, "--study-date"))
end

--- The rows of a query {level, mrn, study_date ("YYYYMMDD[-YYYYMMDD]"),
-- treatment_date ("YYYYMMDD"), modality} against `peer`.
function query.rows(peer, q, concurrency)
    local studies = peer:find{level = "STUDY", PatientID = q.mrn or "*", StudyDate = q.study_date or "",
                              PatientName = "", StudyDescription = "", StudyInstanceUID = "", ModalitiesInStudy = "",
                              patient = q.mrn}
    if q.level == "STUDY" then return studies end
    local no_date = 0 -- instances the archive answered without the TreatmentDate asked for
    local per_study = task.map(studies, function(study)
        local rows = {}
        local series = peer:find{level = "SERIES", StudyInstanceUID = study.StudyInstanceUID, SeriesInstanceUID = "",
                                 Modality = q.modality or "", SeriesDescription = "",
                                 NumberOfSeriesRelatedInstances = "", patient = study.PatientID}
        for _, s in ipairs(series) do
            -- An archive may ignore a key it does not match on: what it answered is
            -- checked here too (a series without a Modality is kept: it cannot be told).
            if q.modality and s.Modality and s.Modality ~= "" and s.Modality ~= q.modality then
                goto next_series
            end
            if q.level == "SERIES" then
                s.PatientID, s.StudyDate = study.PatientID, study.StudyDate
                rows[#rows + 1] = s
            else
                local key = {level = "IMAGE", StudyInstanceUID = study.StudyInstanceUID,
                             SeriesInstanceUID = s.SeriesInstanceUID, SOPInstanceUID = "", SOPClassUID = "",
                             patient = study.PatientID}
                if q.treatment_date then key.TreatmentDate = q.treatment_date end
                for _, i in ipairs(peer:find(key)) do
                    i.PatientID, i.StudyDate, i.Modality = study.PatientID, study.StudyDate, s.Modality
                    if not q.treatment_date or i.TreatmentDate == q.treatment_date then
                        rows[#rows + 1] = i
                    elseif i.TreatmentDate == nil or i.TreatmentDate == "" then
                        no_date = no_date + 1
                    end
                end
            end
            ::next_series::
        end
        return rows
    end, {concurrency = concurrency or 4})
    local all = {}
    for _, rows in ipairs(per_study) do for _, r in ipairs(rows) do all[#all + 1] = r end end
    if no_date > 0 then
        -- Not matched on TreatmentDate (many archives match only the keys of their
        -- index): what it answered without one cannot be told to be of that day.
        log.warn("the archive answered instances without their TreatmentDate: it does not match on it, and they " ..
                 "are not listed", {peer = peer.alias, instances = no_date, treatment_date = q.treatment_date})
    end
    return all
end

--- The query command: prints the rows; returns the exit code.
function query.run(env, alias, opts)
    if not (env.sources or {})[alias] then
        errors.raise{kind = "usage", message = env.name .. " has no source " .. tostring(alias)}
    end
    local level = opts.level or (opts.treatment_date and "IMAGE") or settings.get(env, "dicom_query_level", alias)
    local q = {
        level = level, mrn = opts.mrn,
        study_date = opts.study_date and dicom_range(opts.study_date),
        treatment_date = opts.treatment_date and clock.dicom_date(clock.check_date(opts.treatment_date, "--treatment-date")),
        modality = opts.modality or ((opts.treatment_date or level ~= "STUDY") and
                                     settings.get(env, "modality_to_query", alias)) or nil,
    }
    local ctx = context.new(env, {command = "query", source = alias})
    return dc.run(function()
        local ok, rows = pcall(query.rows, ctx:peer(alias), q, settings.get(env, "max_associations", alias))
        ctx:flush()
        if not ok then error(rows, 0) end
        local columns = site.choices(env).query.columns[level]
        if q.treatment_date then
            columns = {table.unpack(columns)}
            columns[#columns + 1] = "TreatmentDate"
        end
        dc.print_rows(rows, columns, opts.format)
        return 0
    end)
end

return query
