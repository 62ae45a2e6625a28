-- DEMO: the testbed's sources, with the choices a small clinic would make.
local backup = require "rtbackup.backup"

return function(run)
    if run.source_cfg.type == "mosaiq" then
        return backup.mosaiq(run, {
            -- how this Mosaiq stores MLC leaf sets (verify on a site's real data)
            mlc = {encoding = "int16_0.01cm"},
        })
    end
    return backup.qr(run, {
        keys = {PatientID = "*"},   -- every patient; Modality is asked per series
        concurrency = 4,            -- associations at once to ARIA/MIM
    })
end
