-- The planned control points of one field version. One parameter: its TxField FLD_ID.
-- A template: mosaiq.points_query(dialect) quotes the reserved column name @INDEX@ the
-- dialect's way; nothing else differs between SQLite, PostgreSQL and SQL Server.
--
-- Why apart from the day query: a field version's control points are the plan, the same
-- on every day it is delivered, and a VMAT arc has a hundred or more of them. Asked once
-- per field version in a run (rtbackup.mosaiq.query keeps them while the field is being
-- delivered), they cross the connection once instead of once per delivery and day, each
-- row without the hundred columns of the delivery beside it.
--
-- One row per control point, columns named as in TxFieldPoint; a site may add columns,
-- which appear in the control point under their own name. Two rows for one Point (a join
-- that multiplies them) make the deliveries of that field a contradiction, never a guess.
SELECT
    TFP.Point                   AS "Point",
    TFP.@INDEX@                 AS "Index",
    TFP.Energy                  AS "Energy",
    TFP.Energy_Unit_Enum        AS "Energy_Unit_Enum",
    TFP.Gantry_Ang              AS "Gantry_Ang",
    TFP.Gantry_Dir_Enum         AS "Gantry_Dir_Enum",
    TFP.Coll_Ang                AS "Coll_Ang",
    TFP.Coll_Dir_Enum           AS "Coll_Dir_Enum",
    TFP.Couch_Ang               AS "Couch_Ang",
    TFP.Couch_Ang_Dir_Enum      AS "Couch_Ang_Dir_Enum",
    TFP.Couch_Roll_Ang          AS "Couch_Roll_Ang",
    TFP.Couch_Roll_Dir_Enum     AS "Couch_Roll_Dir_Enum",
    TFP.Couch_Pitch_Ang         AS "Couch_Pitch_Ang",
    TFP.Couch_Pitch_Dir_Enum    AS "Couch_Pitch_Dir_Enum",
    TFP.Couch_Top_Axis_Distance AS "Couch_Top_Axis_Distance",
    TFP.Couch_Top               AS "Couch_Top",
    TFP.Couch_Top_Dir_Enum      AS "Couch_Top_Dir_Enum",
    TFP.Couch_Vrt               AS "Couch_Vrt",
    TFP.Couch_Lng               AS "Couch_Lng",
    TFP.Couch_Lat               AS "Couch_Lat",
    TFP.Coll_X1                 AS "Coll_X1",
    TFP.Coll_X2                 AS "Coll_X2",
    TFP.Coll_Y1                 AS "Coll_Y1",
    TFP.Coll_Y2                 AS "Coll_Y2",
    TFP.MLC_Leaves              AS "MLC_Leaves",
    TFP.A_Leaf_Set              AS "A_Leaf_Set",
    TFP.B_Leaf_Set              AS "B_Leaf_Set",
    TFP.Meterset_Rate           AS "Meterset_Rate"
FROM TxFieldPoint TFP
WHERE TFP.FLD_ID = ?
ORDER BY TFP.Point
