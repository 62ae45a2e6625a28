-- The demo clinic's choices (everything else: scripts/default/site.lua; settings:
-- environments/demo.toml).
return {
    mosaiq = {
        -- How this Mosaiq stores MLC leaf sets (the synthetic clinic's way).
        mlc = {encoding = "int16_0.01cm"},
        -- The demo clinic treats HDR patients and checks VMAT plans in QA mode: those
        -- deliveries are named in every summary, not counted as a partial backup.
        accepted_skips = {"qa_mode", "brachytherapy"},
    },
}
