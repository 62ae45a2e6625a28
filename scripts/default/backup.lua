-- The backup a site gets when it has no scripts folder of its own: every DICOM
-- Q/R source with the environment's settings (dicom_query_keys, max_associations,
-- max_retries, window). A site copies this file to scripts/<site>/backup.lua to
-- make its own choices.
local backup = require "rtbackup.backup"

return function(run)
    local kind = run.source_cfg.type
    if kind == "mosaiq" then
        return backup.mosaiq(run, {})
    end
    return backup.qr(run, {})
end
