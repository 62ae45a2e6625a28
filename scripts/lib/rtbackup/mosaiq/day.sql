-- The day's beam deliveries. One parameter: the date, 'YYYY-MM-DD'.
-- A template: mosaiq.day_query(dialect) puts the dialect's "param" and "tx_day" CTEs
-- (how the day's bounds are computed, the only part that differs between SQLite,
-- PostgreSQL and SQL Server) in place of the @DAY_WINDOW@ line, and quotes the
-- reserved column name @INDEX@ the dialect's way. The UCLA and TJU environments carry
-- its SQL Server form as settings.mosaiq_backup_sql_query, so a site can adapt it
-- without a new release.
--
-- One row per beam delivery (one per control point the console recorded for it, where it
-- did). rtbackup.mosaiq.query groups the rows into treatment records by the column
-- prefixes: patient__, site__, plan__, machine__, field__ (the field version in force),
-- dose__ (Dose_Hst: the delivery), delivered__ (FLD_HST: the field as delivered), actual__
-- (TxFieldPoint_Hst: a control point as delivered, by actual__Point) and the column
-- "fraction". A site may add columns with those prefixes; they appear in the groups under
-- the name after "__". The planned control points (TxFieldPoint) come from
-- mosaiq/points.sql, once per field version; a site's own query of the earlier shape,
-- which returns them here as point__ columns (one row per delivery and control point),
-- is still read as it is.
--
-- What makes it right:
--   * every Dose_Hst row of the day is listed, with no filter: a delivery that cannot be
--     turned into an RT Beams Treatment Record (brachytherapy, a QA-mode delivery, a
--     field version missing) is named and counted by rtbackup, never dropped here;
--   * the field, site and setup are the versions in force at the delivery (the IDs
--     Dose_Hst recorded), not today's (Version = 0), so a fraction given before a
--     mid-course edit is recorded as it was given;
--   * delivered values come from the delivery (Dose_Hst.Meterset: the MU this delivery
--     gave; MetersetPrevDelivered: the MU an interrupted delivery gave before it),
--     planned ones from the plan (TxField, TxFieldPoint), each named as such;
--   * the machine is the one the delivery names (Dose_Hst.Machine_ID_Staff_ID, MAC_ID),
--     the department the delivery's (Config by Dose_Hst.Inst_ID);
--   * the activity comes from that day's appointments on a treatment machine
--     (Staff.Machine_Type 1 or 2) only, one per patient, so extra appointments never
--     multiply rows.
-- Where each record attribute comes from, and why: docs/mosaiq.md.
WITH
-- @DAY_WINDOW@
activity AS (
    SELECT SCH.Pat_ID1 AS Pat_ID1, MIN(CPT.Short_Desc) AS Short_Desc
    FROM Schedule SCH
    JOIN tx_day ON SCH.App_DtTm >= tx_day.day_start AND SCH.App_DtTm < tx_day.day_end
    JOIN Staff LOC ON LOC.Staff_ID = SCH.Location AND LOC.Machine_Type IN (1, 2)
    JOIN CPT ON CPT.Hsp_Code = SCH.Activity
    WHERE SCH.Version = 0
    GROUP BY SCH.Pat_ID1)
SELECT
    DHS.Pat_ID1                 AS "patient__Pat_ID1",
    ID.IDA                      AS "patient__IDA",
    PAT.Last_Name               AS "patient__Last_Name",
    PAT.First_Name              AS "patient__First_Name",
    PAT.MIddle_Name             AS "patient__MIddle_Name",
    PAT.Suffix                  AS "patient__Suffix",
    ADM.Gender                  AS "patient__Gender",
    PAT.Birth_DtTm              AS "patient__Birth_DtTm",
    SIT.SIT_ID                  AS "site__SIT_ID",
    SIT.SIT_SET_ID              AS "site__SIT_SET_ID",
    SIT.Version                 AS "site__Version",
    SIT.Site_Name               AS "site__Site_Name",
    SIT.Technique               AS "site__Technique",
    SIT.Fractions               AS "site__Fractions",
    SIT.Dose_Ttl                AS "site__Dose_Ttl",
    SU.Setup_Note               AS "site__Setup_Note",
    ACT.Short_Desc              AS "site__Activity",
    FLD.OriginalPlanUID         AS "plan__OriginalPlanUID",
    PLN.Label                   AS "plan__Label",
    STU.StudyInstanceUID        AS "plan__StudyInstanceUID",
    STU.StudyID                 AS "plan__StudyID",
    STU.StudyDescription        AS "plan__StudyDescription",
    STU.Study_DtTm              AS "plan__Study_DtTm",
    SER.SeriesInstanceUID       AS "plan__SeriesInstanceUID",
    SER.SeriesNumber            AS "plan__SeriesNumber",
    SER.SeriesDescription       AS "plan__SeriesDescription",
    SER.Series_DtTm             AS "plan__Series_DtTm",
    COALESCE(DHS.Fx_Number_InEffect, DHS.Fractions_Tx) AS "fraction",
    DHS.Machine_ID_Staff_ID     AS "machine__Staff_ID",
    STF.Last_Name               AS "machine__Last_Name",
    STF.Machine_Type            AS "machine__Machine_Type",
    MAC.Source_Name             AS "machine__Source_Name",
    MAC.Source_Model            AS "machine__Source_Model",
    CFG.Inst_Name               AS "machine__Inst_Name",
    FLD.FLD_ID                  AS "field__FLD_ID",
    FLD.FLD_SET_ID              AS "field__FLD_SET_ID",
    FLD.Version                 AS "field__Version",
    FLD.OriginalBeamNumber      AS "field__OriginalBeamNumber",
    FLD.OriginalBeamName        AS "field__OriginalBeamName",
    FLD.Field_Name              AS "field__Field_Name",
    FLD.Field_Label             AS "field__Field_Label",
    FLD.Beam_Type_Flag          AS "field__Beam_Type_Flag",
    FLD.Modality_Enum           AS "field__Modality_Enum",
    FLD.Type_Enum               AS "field__Type_Enum",
    FLD.IndexReference_Enum     AS "field__IndexReference_Enum",
    FLD.ControlPoints           AS "field__ControlPoints",
    FLD.Meterset                AS "field__Meterset",
    FLD.Cgray                   AS "field__Cgray",
    FLD.Sad                     AS "field__Sad",
    FLD.Mlc                     AS "field__Mlc",
    FLD.BackupTimer             AS "field__BackupTimer",
    DHS.DHS_ID                  AS "dose__DHS_ID",
    DHS.FLD_ID                  AS "dose__FLD_ID",
    DHS.Tx_DtTm                 AS "dose__Tx_DtTm",
    DHS.Edit_DtTm               AS "dose__Edit_DtTm",
    DHS.Fractions_Tx            AS "dose__Fractions_Tx",
    DHS.Meterset                AS "dose__Meterset",
    DHS.MetersetPrevDelivered   AS "dose__MetersetPrevDelivered",
    DHS.MetersetUnit_Enum       AS "dose__MetersetUnit_Enum",
    DHS.PartiallyTreated        AS "dose__PartiallyTreated",
    DHS.WasQAMode               AS "dose__WasQAMode",
    DHS.Modality_Enum           AS "dose__Modality_Enum",
    DHS.Type_Enum               AS "dose__Type_Enum",
    DHS.TerminationCode         AS "dose__TerminationCode",
    DHS.Termination_Status_Enum AS "dose__Termination_Status_Enum",
    DHS.Termination_Verify_Status_Enum AS "dose__Termination_Verify_Status_Enum",
    DHS.Dose_Addtl_Projected    AS "dose__Dose_Addtl_Projected",
    FH.FHS_ID                   AS "delivered__FHS_ID",
    FH.Wdg_Appl                 AS "delivered__Wdg_Appl",
    FH.Dyn_Wedge                AS "delivered__Dyn_Wedge",
    FH.Block                    AS "delivered__Block",
    FH.Comp_FDA                 AS "delivered__Comp_FDA",
    FH.Bolus                    AS "delivered__Bolus",
    FH.Beam_Type_Flag           AS "delivered__Beam_Type_Flag",
    FH.BackupTimerDelivered     AS "delivered__BackupTimerDelivered",
    FH.IsFFF                    AS "delivered__IsFFF",
    TPH.Point                   AS "actual__Point",
    TPH.Tx_DtTm                 AS "actual__Tx_DtTm",
    TPH.Meterset_Rate           AS "actual__Meterset_Rate",
    TPH.Gantry_Ang              AS "actual__Gantry_Ang",
    TPH.Coll_Ang                AS "actual__Coll_Ang",
    TPH.Couch_Ang               AS "actual__Couch_Ang",
    TPH.Couch_Vrt               AS "actual__Couch_Vrt",
    TPH.Couch_Lng               AS "actual__Couch_Lng",
    TPH.Couch_Lat               AS "actual__Couch_Lat"
FROM Dose_Hst DHS
JOIN tx_day ON DHS.Tx_DtTm >= tx_day.day_start AND DHS.Tx_DtTm < tx_day.day_end
LEFT JOIN TxField FLD ON FLD.FLD_ID = DHS.FLD_ID
LEFT JOIN Site SIT ON SIT.SIT_ID = DHS.SIT_ID
LEFT JOIN Patient PAT ON PAT.Pat_ID1 = DHS.Pat_ID1
LEFT JOIN Admin ADM ON ADM.Pat_ID1 = DHS.Pat_ID1
LEFT JOIN Ident ID ON ID.Pat_Id1 = DHS.Pat_ID1
LEFT JOIN SiteSetup SU ON SU.SIS_ID = DHS.SIS_ID
LEFT JOIN activity ACT ON ACT.Pat_ID1 = DHS.Pat_ID1
LEFT JOIN DCMInstance DCM ON DCM.SOPInstanceUID = FLD.OriginalPlanUID
LEFT JOIN RtPlan PLN ON PLN.DCMInstance_ID = DCM.DCMInstance_ID
LEFT JOIN DCMSeries SER ON SER.DCMSeries_ID = DCM.DCMSeries_ID
LEFT JOIN DCMStudy STU ON STU.DCMStudy_ID = SER.DCMStudy_ID
LEFT JOIN Staff STF ON STF.Staff_ID = DHS.Machine_ID_Staff_ID
LEFT JOIN Machine MAC ON MAC.MAC_ID = DHS.MAC_ID
LEFT JOIN Config CFG ON CFG.Inst_ID = DHS.Inst_ID
LEFT JOIN FLD_HST FH ON FH.DHS_ID = DHS.DHS_ID
LEFT JOIN TxFieldPoint_Hst TPH ON TPH.FHS_ID = FH.FHS_ID
ORDER BY DHS.Pat_ID1, SIT.SIT_SET_ID, FLD.OriginalPlanUID, DHS.Tx_DtTm, DHS.DHS_ID, TPH.Point
