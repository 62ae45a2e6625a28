-- The day's delivered treatments. One parameter: the date, 'YYYY-MM-DD'.
-- A template: mosaiq.day_query(dialect) puts the dialect's "param" and "tx_day" CTEs
-- (how the day's bounds are computed, the only part that differs between SQLite,
-- PostgreSQL and SQL Server) in place of the @DAY_WINDOW@ line. The UCLA and TJU
-- environments carry its SQL Server form as settings.mosaiq_backup_sql_query, so a
-- site can adapt it without a new release.
--
-- One row per (delivered field, control point). rtbackup.mosaiq groups the rows into
-- one delivery per (site, plan, fraction) by the column prefixes: patient__, site__,
-- plan__, machine__, field__, dose__, point__ and the column "fraction". A site may add
-- columns with those prefixes; they appear in the groups under the name after "__".
--
-- What makes it right (the old system's bugs, fixed):
--   * deliveries come from Dose_Hst.Tx_DtTm on that day, so a patient treated twice
--     that day gives two fractions, each once, and a patient with only a consult or
--     follow-up appointment gives nothing;
--   * every field joins its current version only (TxField.Version = 0, Site.Version = 0,
--     SiteSetup.Version = 0), so history rows never duplicate a field;
--   * a record carries only its own fraction's dose rows (Dose_Hst.Fractions_Tx);
--   * HDR sites are left out (brachytherapy is not an RT Beams Treatment Record);
--   * the activity comes from that day's appointments on a treatment machine
--     (Staff.Machine_Type 1 or 2) only, one per patient, so extra appointments never
--     multiply rows.
--
-- Not yet checked against a real Mosaiq database (the old system assumed them; if one
-- is missing, SQL Server answers 42S22 "Invalid column name" and the site removes it
-- from its copy): the Machine and Config tables, TxFieldPoint.SpecifiedMeterset,
-- TxFieldPoint.Meterset, TxFieldPoint.MLC_Leaves, Dose_Hst.DeliveredTreatmentTimeBeam.
-- Seen in real Mosaiq (pymedphys): Dose_Hst.Tx_DtTm, TxFieldPoint.Coll_X1/X2/Y1/Y2,
-- Meterset_Rate, the leaf sets, TxField's accessory columns.
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
    PAT.Pat_ID1                 AS "patient__Pat_ID1",
    ID.IDA                      AS "patient__IDA",
    PAT.Last_Name               AS "patient__Last_Name",
    PAT.First_Name              AS "patient__First_Name",
    PAT.MIddle_Name             AS "patient__MIddle_Name",
    PAT.Suffix                  AS "patient__Suffix",
    PAT.Sex                     AS "patient__Sex",
    PAT.Birth_DtTm              AS "patient__Birth_DtTm",
    SIT.SIT_SET_ID              AS "site__SIT_SET_ID",
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
    DHS.Fractions_Tx            AS "fraction",
    STF.Staff_ID                AS "machine__Staff_ID",
    STF.Last_Name               AS "machine__Last_Name",
    STF.Machine_Type            AS "machine__Machine_Type",
    MAC.Source_Name             AS "machine__Source_Name",
    MAC.Source_Model            AS "machine__Source_Model",
    CFG.Inst_Name               AS "machine__Inst_Name",
    FLD.FLD_ID                  AS "field__FLD_ID",
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
    FLD.Wdg_Appl                AS "field__Wdg_Appl",
    FLD.Comp_Fda                AS "field__Comp_Fda",
    FLD.Bolus                   AS "field__Bolus",
    FLD.Block                   AS "field__Block",
    FLD.Start_DtTm              AS "field__Start_DtTm",
    FLD.Last_Tx_DtTm            AS "field__Last_Tx_DtTm",
    FLD.MachineCharID           AS "field__MachineCharID",
    DHS.DHS_ID                  AS "dose__DHS_ID",
    DHS.Tx_DtTm                 AS "dose__Tx_DtTm",
    DHS.Fractions_Tx            AS "dose__Fractions_Tx",
    DHS.TerminationCode         AS "dose__TerminationCode",
    DHS.Termination_Status_Enum AS "dose__Termination_Status_Enum",
    DHS.Termination_Verify_Status_Enum AS "dose__Termination_Verify_Status_Enum",
    DHS.Dose_Addtl_Projected    AS "dose__Dose_Addtl_Projected",
    DHS.DeliveredTreatmentTimeBeam AS "dose__DeliveredTreatmentTimeBeam",
    TFP.Point                   AS "point__Point",
    TFP.Energy                  AS "point__Energy",
    TFP.Energy_Unit_Enum        AS "point__Energy_Unit_Enum",
    TFP.Gantry_Ang              AS "point__Gantry_Ang",
    TFP.Gantry_Dir_Enum         AS "point__Gantry_Dir_Enum",
    TFP.Coll_Ang                AS "point__Coll_Ang",
    TFP.Coll_Dir_Enum           AS "point__Coll_Dir_Enum",
    TFP.Couch_Ang               AS "point__Couch_Ang",
    TFP.Couch_Roll_Dir_Enum     AS "point__Couch_Roll_Dir_Enum",
    TFP.Couch_Top_Axis_Distance AS "point__Couch_Top_Axis_Distance",
    TFP.Couch_Top               AS "point__Couch_Top",
    TFP.Couch_Top_Dir_Enum      AS "point__Couch_Top_Dir_Enum",
    TFP.Couch_Vrt               AS "point__Couch_Vrt",
    TFP.Couch_Lng               AS "point__Couch_Lng",
    TFP.Couch_Lat               AS "point__Couch_Lat",
    TFP.Coll_X1                 AS "point__Coll_X1",
    TFP.Coll_X2                 AS "point__Coll_X2",
    TFP.Coll_Y1                 AS "point__Coll_Y1",
    TFP.Coll_Y2                 AS "point__Coll_Y2",
    TFP.MLC_Leaves              AS "point__MLC_Leaves",
    TFP.A_Leaf_Set              AS "point__A_Leaf_Set",
    TFP.B_Leaf_Set              AS "point__B_Leaf_Set",
    TFP.SpecifiedMeterset       AS "point__SpecifiedMeterset",
    TFP.Meterset                AS "point__Meterset",
    TFP.Meterset_Rate           AS "point__Meterset_Rate",
    TFP.Create_DtTm             AS "point__Create_DtTm"
FROM Dose_Hst DHS
JOIN tx_day ON DHS.Tx_DtTm >= tx_day.day_start AND DHS.Tx_DtTm < tx_day.day_end
JOIN TxField FLD ON FLD.FLD_ID = DHS.FLD_ID AND FLD.Version = 0
JOIN Site SIT ON SIT.SIT_SET_ID = FLD.SIT_Set_ID AND SIT.Version = 0
JOIN Patient PAT ON PAT.Pat_ID1 = FLD.Pat_ID1
LEFT JOIN Ident ID ON ID.Pat_Id1 = PAT.Pat_ID1
LEFT JOIN SiteSetup SU ON SU.Sit_Set_ID = SIT.SIT_SET_ID AND SU.Version = 0
LEFT JOIN activity ACT ON ACT.Pat_ID1 = PAT.Pat_ID1
LEFT JOIN DCMInstance DCM ON DCM.SOPInstanceUID = FLD.OriginalPlanUID
LEFT JOIN RtPlan PLN ON PLN.DCMInstance_ID = DCM.DCMInstance_ID
LEFT JOIN DCMSeries SER ON SER.DCMSeries_ID = DCM.DCMSeries_ID
LEFT JOIN DCMStudy STU ON STU.DCMStudy_ID = SER.DCMStudy_ID
LEFT JOIN Staff STF ON STF.Staff_ID = FLD.Machine_ID_Staff_ID
LEFT JOIN Machine MAC ON MAC.MAC_ID = FLD.Machine_ID_Staff_ID
LEFT JOIN Config CFG ON CFG.CFG_ID = FLD.Inst_ID
LEFT JOIN TxFieldPoint TFP ON TFP.FLD_ID = FLD.FLD_ID
WHERE UPPER(LTRIM(RTRIM(COALESCE(SIT.Technique, '')))) <> 'HDR'
ORDER BY SIT.SIT_SET_ID, FLD.OriginalPlanUID, DHS.Fractions_Tx, FLD.OriginalBeamNumber,
         DHS.DHS_ID, TFP.Point
