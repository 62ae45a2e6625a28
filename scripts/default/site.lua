-- Every choice a site can make, with its default. A site's own scripts/<site>/site.lua
-- returns only what it changes; anything else comes from here. Settings (how many
-- associations, the window, retries, query keys, ...) are not choices: they live in
-- the environment (environments/<env>.toml), see docs/settings.md.
return {
    -- DICOM Q/R sources (ARIA, MIM).
    qr = {
        -- Which series of the selection to back up. A function(series, study) -> boolean,
        -- where series and study are the C-FIND rows (Modality, SeriesDescription,
        -- PatientID, StudyDate, ...); false: every series.
        accept_series = false,
    },

    -- Mosaiq sources: how this clinic's Mosaiq stores what the records are built from.
    -- Verify each against a few records of real treatments (rtbackup rtrecord, then a
    -- physicist compares with the treatment console) before relying on a backup.
    mosaiq = {
        mlc = {
            -- TxFieldPoint.A_Leaf_Set/B_Leaf_Set bytes: "float32_mm" (little-endian
            -- float per leaf in mm, the old Python system's reading) or "int16_0.01cm"
            -- (little-endian int16 per leaf in 0.01 cm, as pymedphys reads real Mosaiq data).
            encoding = "float32_mm",
            -- Which Mosaiq bank is the DICOM record's first bank of Leaf/Jaw Positions
            -- (IEC 61217 X1 side): "A" or "B".
            first_bank = "A",
            -- Mosaiq stores bank A with the opposite sign of DICOM's X1 coordinate.
            negate_first_bank = false,
            -- Leaf 1 of a stored leaf set is DICOM's first leaf ("as_stored") or its last
            -- ("reversed", the order pymedphys assumes for its convention).
            leaf_order = "as_stored",
        },
        -- Energy_Unit_Enum: "kv1_mv2_mev3" or "kv0_mv1_mev2".
        energy_unit_enum = "kv1_mv2_mev3",
        -- Control Point Date/Time: "delivery" (the beam's delivery time) or "point"
        -- (TxFieldPoint.Create_DtTm, most likely the planning time).
        control_point_time = "delivery",
        -- "MU" or "MINUTE".
        primary_dosimeter_unit = "MU",
        -- true: the couch has no pitch/roll axes; the records say 0 / NONE for both.
        flat_table_top = false,
        -- Overrides of the Mosaiq enum tables, e.g. { Modality_Enum = { [7] = "PHOTON" } }.
        enums = {},
        -- The record series' description.
        series_description = "Treatment records (Mosaiq)",
        -- The institution's name in the records (Mosaiq's Config.Inst_Name is the
        -- department's and goes to Institutional Department Name); false: empty.
        institution_name = false,
        -- Per treatment machine (its Mosaiq name, Staff.Last_Name, or its model,
        -- Machine.Source_Model): what Mosaiq does not hold, and how it stores that
        -- machine's geometry when it differs from mlc above, e.g.
        --   machines = {TRUEBEAM2 = {manufacturer = "Varian Medical Systems", serial_number = "H192837",
        --                            mlc = {first_bank = "B"}}}
        -- `name` gives the Treatment Machine Name to record (16 characters at most) to a
        -- machine whose Mosaiq name is longer: {["VERSA HD BUNKER 3"] = {name = "VERSAHD_B3"}}.
        machines = {},
        -- Electron applicators (Mosaiq keeps their ID in FLD_HST.Wdg_Appl) by ID ->
        -- Applicator Type: {["CONE-3"] = "ELECTRON_CIRC"}. Without an entry "A10" and
        -- "10x10" are square and "6x10" rectangular; any other ID refuses the record.
        applicator_types = {},
        -- Deliveries that are never RT Beams Treatment Records are still counted and
        -- named in every run's summary; by default they also make the run partial
        -- (exit 1). Kinds listed here do not: "qa_mode" (machine QA deliveries),
        -- "brachytherapy" (HDR/LDR/PDR sessions), "imaging" (kV setup, CT, MV CT fields). Other kinds ("missing_version",
        -- "contradiction", "no_plan", "unmappable") always do: data is missing.
        accepted_skips = {},
        -- A private block the clinic's own tools read: false, or
        -- { creator = "...", group = 0x3261, elements = { { element = 0x01, vr = "LT",
        --   from = "site.Site_Name" }, ... } } where `from` names a value of the
        -- delivery (patient.*, site.*, plan.*, machine.*).
        private_block = false,
        -- A function(record, delivery) -> record, to adjust the builder's input of a
        -- record (see scripts/lib/rtbackup/rtrecord.lua); false: none.
        adjust_record = false,
    },

    -- `rtbackup query`: the columns listed at each level.
    query = {
        columns = {
            STUDY = {"PatientID", "PatientName", "StudyDate", "StudyDescription", "StudyInstanceUID",
                     "ModalitiesInStudy"},
            SERIES = {"PatientID", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                      "SeriesDescription", "NumberOfSeriesRelatedInstances"},
            IMAGE = {"PatientID", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                     "SOPClassUID", "Modality"},
        },
    },
}
