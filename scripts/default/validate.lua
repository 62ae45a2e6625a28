-- Validation a site gets by default: compare the source with the backup instance
-- by instance over the selected dates (and with --deep, byte content by digest).
local compare = require "rtbackup.compare"

return function(v)
    return compare.run(v.env, v.source, v.target, v.selection, {deep = v.deep, concurrency = 4})
end
