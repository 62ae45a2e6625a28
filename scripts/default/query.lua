-- Query a site gets by default: studies matching the MRN / study date first, then
-- the requested level inside each study (hierarchical, so archives that only answer
-- study-root hierarchical queries, like dcmqrscp, work too).
local dicom = require "rtbackup.dicom"
local task = require "rtbackup.task"

local COLUMNS = {
    STUDY = {"PatientID", "PatientName", "StudyDate", "StudyDescription", "StudyInstanceUID", "ModalitiesInStudy"},
    SERIES = {"PatientID", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription",
              "NumberOfSeriesRelatedInstances"},
    IMAGE = {"PatientID", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
             "Modality"},
}

return function(q)
    local peer = dicom.peer(q.env, q.source)
    local studies = peer:find{level = "STUDY", PatientID = q.mrn or "*", StudyDate = q.study_date or "",
                              PatientName = "", StudyDescription = "", StudyInstanceUID = "", ModalitiesInStudy = ""}
    if q.level == "STUDY" then return studies, COLUMNS.STUDY end
    local per_study = task.map(studies, function(study)
        local rows = {}
        local series = peer:find{level = "SERIES", StudyInstanceUID = study.StudyInstanceUID,
                                 SeriesInstanceUID = "", Modality = q.modality or "", SeriesDescription = "",
                                 NumberOfSeriesRelatedInstances = ""}
        for _, s in ipairs(series) do
            if q.level == "SERIES" then
                s.PatientID, s.StudyDate = study.PatientID, study.StudyDate
                rows[#rows + 1] = s
            else
                local key = {level = "IMAGE", StudyInstanceUID = study.StudyInstanceUID,
                             SeriesInstanceUID = s.SeriesInstanceUID, SOPInstanceUID = "", SOPClassUID = ""}
                if q.treatment_date then key.TreatmentDate = q.treatment_date end
                for _, i in ipairs(peer:find(key)) do
                    i.PatientID, i.StudyDate, i.Modality = study.PatientID, study.StudyDate, s.Modality
                    rows[#rows + 1] = i
                end
            end
        end
        return rows
    end, {concurrency = 4})
    local all = {}
    for _, rows in ipairs(per_study) do for _, r in ipairs(rows) do all[#all + 1] = r end end
    return all, COLUMNS[q.level]
end
