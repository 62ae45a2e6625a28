-- UCLA's choices (everything else: scripts/default/site.lua; settings such as
-- max_associations and the window: environments/ucla.toml).
return {
    mosaiq = {
        -- How UCLA's Mosaiq stores MLC leaf sets (verify on real data: `rtbackup rtrecord`).
        mlc = {encoding = "float32_mm"},
    },
}
