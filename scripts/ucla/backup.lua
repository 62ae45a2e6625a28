-- UCLA: ARIA and MIM nightly into ORTHANC_UCLA; Mosaiq records staged through
-- UCLA_MQ_STAGE. Choices only: the mechanisms are in scripts/lib/rtbackup/.
local backup = require "rtbackup.backup"

return function(run)
    if run.source_cfg.type == "mosaiq" then
        return backup.mosaiq(run, {
            mlc = {encoding = "float32_mm"},   -- as UCLA's Mosaiq stores leaf sets (verify on real data)
        })
    end
    return backup.qr(run, {
        keys = run.env.settings.dicom_query_keys,  -- as configured in environments/ucla.toml
        concurrency = 4,                            -- ARIA tolerates 4 associations at night
        max_retries = 3,
    })
end
