-- TJU's choices (everything else: scripts/default/site.lua; settings:
-- environments/tju.toml).
return {
    mosaiq = {
        -- How TJU's Mosaiq stores MLC leaf sets (verify on real data: `rtbackup rtrecord`).
        mlc = {encoding = "int16_0.01cm"},
        -- TJU's own tools read the site, setup note, activity and plan label from a
        -- private block in every record.
        private_block = {
            creator = "TJU RadOnc Customized Data",
            group = 0x3261,
            elements = {
                {element = 0x01, vr = "LT", from = "site.Site_Name"},
                {element = 0x02, vr = "LT", from = "site.Setup_Note"},
                {element = 0x03, vr = "LT", from = "site.Activity"},
                {element = 0x04, vr = "LT", from = "plan.Label"},
            },
        },
    },
}
