-- Read-only queries a site runs once on its own Mosaiq (SQL Server) before relying on
-- rtbackup's records, to settle what public sources do not tell (docs/mosaiq.md, "What a
-- site checks"). Each is one SELECT; '?' = the first day, '?' = the day after the last
-- (V7: the FLD_ID of a field whose DICOM plan is at hand). tests/spec/tsql_spec.lua
-- parses each as T-SQL.

-- V1: deliveries of a day, with what an interruption looks like (pick a day with a known interrupted beam)
SELECT DHS.DHS_ID, DHS.Pat_ID1, DHS.FLD_ID, FLD.FLD_SET_ID, FLD.Version AS Fld_Version,
       DHS.SIT_ID, SIT.Version AS Sit_Version, DHS.SIS_ID, DHS.Tx_DtTm,
       DHS.Fractions_Tx, DHS.Fx_Number_InEffect,
       DHS.Meterset, DHS.MetersetPrevDelivered, DHS.MetersetUnit_Enum, FLD.Meterset AS Planned_Meterset,
       DHS.PartiallyTreated, DHS.Termination_Status_Enum, DHS.TerminationCode,
       DHS.Termination_Verify_Status_Enum, DHS.WasQAMode, DHS.NewFieldDef,
       DHS.Dose_Tx_Act, DHS.Dose_Ttl_Act, DHS.Dose_Addtl_Projected, DHS.cGrayPerMeterset,
       DHS.IntrafractionalGantryStartAngle, DHS.IntrafractionalGantryStopAngle,
       FH.FHS_ID, FH.Meterset AS Fld_Hst_Meterset,
       TT.WasBeamOn, TT.WasBeamComplete, TT.WasCFS, TT.WasCanceled, TT.WasRecorded
FROM Dose_Hst DHS
JOIN TxField FLD ON FLD.FLD_ID = DHS.FLD_ID
JOIN Site SIT ON SIT.SIT_ID = DHS.SIT_ID
LEFT JOIN FLD_HST FH ON FH.DHS_ID = DHS.DHS_ID
LEFT JOIN TrackTreatment TT ON TT.DHS_ID = DHS.DHS_ID
WHERE DHS.Tx_DtTm >= ? AND DHS.Tx_DtTm < ?
ORDER BY DHS.Pat_ID1, FLD.FLD_SET_ID, DHS.Tx_DtTm;

-- V2: how many control points a delivery records, and the actual-leaf record size
SELECT FH.DHS_ID, FLD.ControlPoints, COUNT(TPH.TPH_ID) AS Points_Recorded,
       MIN(TPH.[Index]) AS First_Index, MAX(TPH.[Index]) AS Last_Index,
       MIN(TPH.Tx_DtTm) AS First_Point_DtTm, MAX(TPH.Tx_DtTm) AS Last_Point_DtTm,
       MAX(DATALENGTH(TPH.A_Leaf_Act)) AS A_Leaf_Act_Bytes, MAX(TPH.Mlc_Leaves) AS Mlc_Leaves
FROM Dose_Hst DHS
JOIN FLD_HST FH ON FH.DHS_ID = DHS.DHS_ID
JOIN TxField FLD ON FLD.FLD_ID = DHS.FLD_ID
LEFT JOIN TxFieldPoint_Hst TPH ON TPH.FHS_ID = FH.FHS_ID
WHERE DHS.Tx_DtTm >= ? AND DHS.Tx_DtTm < ?
GROUP BY FH.DHS_ID, FLD.ControlPoints
ORDER BY FH.DHS_ID;

-- V3: the site's actual column list (compare with SCHEMA and with what the day query selects)
SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE
FROM INFORMATION_SCHEMA.COLUMNS
WHERE TABLE_NAME IN ('Dose_Hst', 'FLD_HST', 'TxFieldPoint_Hst', 'TxField', 'TxFieldPoint', 'Site',
                     'SiteSetup', 'TrackTreatment', 'Machine', 'Config', 'Patient', 'Admin',
                     'BLDevices_Hst', 'BLDevicesCP_Hst', 'BeamLineDevices', 'BeamLineDeviceCP', 'FLD_BLD')
ORDER BY TABLE_NAME, ORDINAL_POSITION;

-- V4: how many deliveries a `Version = 0` join would lose
SELECT COUNT(*) AS Deliveries,
       SUM(CASE WHEN FLD.Version = 0 THEN 1 ELSE 0 END) AS On_Current_Field_Version,
       SUM(CASE WHEN SIT.Version = 0 THEN 1 ELSE 0 END) AS On_Current_Site_Version
FROM Dose_Hst DHS
JOIN TxField FLD ON FLD.FLD_ID = DHS.FLD_ID
JOIN Site SIT ON SIT.SIT_ID = DHS.SIT_ID
WHERE DHS.Tx_DtTm >= ? AND DHS.Tx_DtTm < ?;

-- V5: machines and institutions as deliveries name them
SELECT DISTINCT DHS.Machine_ID_Staff_ID, STF.Last_Name, STF.Machine_Type, DHS.MAC_ID,
       MAC.MAC_Set_ID, MAC.Version, MAC.Record_Type, MAC.Source_Name, MAC.Source_Model,
       MAC.Description, DHS.Inst_ID, CFG.CFG_ID, CFG.Inst_Name
FROM Dose_Hst DHS
LEFT JOIN Staff STF ON STF.Staff_ID = DHS.Machine_ID_Staff_ID
LEFT JOIN Machine MAC ON MAC.MAC_ID = DHS.MAC_ID
LEFT JOIN Config CFG ON CFG.Inst_ID = DHS.Inst_ID
WHERE DHS.Tx_DtTm >= ? AND DHS.Tx_DtTm < ?;

-- V6: accessory values in use
SELECT FH.Wdg_Appl, FH.WdgApplSlot, FH.Dyn_Wedge, FH.Block, FH.BlockSlot, FH.Comp_FDA,
       FH.CompFDASlot, FH.Bolus, BDH.Device_Enum, BDH.Type_Enum, BDH.Device_ID, BDH.Description,
       BDH.Wedge_Angle, BDH.Wedge_Orientation, COUNT(*) AS Deliveries
FROM FLD_HST FH
JOIN Dose_Hst DHS ON DHS.DHS_ID = FH.DHS_ID
LEFT JOIN BLDevices_Hst BDH ON BDH.FHS_ID = FH.FHS_ID
WHERE DHS.Tx_DtTm >= ? AND DHS.Tx_DtTm < ?
GROUP BY FH.Wdg_Appl, FH.WdgApplSlot, FH.Dyn_Wedge, FH.Block, FH.BlockSlot, FH.Comp_FDA,
         FH.CompFDASlot, FH.Bolus, BDH.Device_Enum, BDH.Type_Enum, BDH.Device_ID, BDH.Description,
         BDH.Wedge_Angle, BDH.Wedge_Orientation;

-- V7: one field's planned geometry, to compare with its DICOM plan per machine (what PMP's test does): leaves, jaws (sign), angles (scale), `[Index]` (last value: 100? 1?)
SELECT FLD.FLD_ID, FLD.OriginalPlanUID, FLD.OriginalBeamNumber, FLD.Meterset, TFP.Point, TFP.[Index],
       TFP.MLC_Leaves, DATALENGTH(TFP.A_Leaf_Set) AS A_Bytes, TFP.A_Leaf_Set, TFP.B_Leaf_Set,
       TFP.Coll_X1, TFP.Coll_X2, TFP.Coll_Y1, TFP.Coll_Y2, TFP.Gantry_Ang, TFP.Coll_Ang, TFP.Couch_Ang
FROM TxField FLD
JOIN TxFieldPoint TFP ON TFP.FLD_ID = FLD.FLD_ID
WHERE FLD.FLD_ID = ?
ORDER BY TFP.Point;
