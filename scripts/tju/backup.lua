-- TJU: Mosaiq is the default source; its records keep TJU's private block.
local backup = require "rtbackup.backup"

return function(run)
    if run.source_cfg.type == "mosaiq" then
        return backup.mosaiq(run, {
            private_block = "TJU",             -- TJU's (3261,xx) site block
            mlc = {encoding = "int16_0.01cm"},  -- as TJU's Mosaiq stores leaf sets (verify on real data)
        })
    end
    return backup.qr(run, {
        keys = run.env.settings.dicom_query_keys,
        concurrency = 2,   -- TJU's ARIA is shared with the day's imaging: stay gentle
    })
end
