-- The accessories (wedges, blocks, compensators, boli) the day's deliveries were given
-- with, one row per device per delivery. One parameter: the date, 'YYYY-MM-DD'. A
-- template like day.sql (the @DAY_WINDOW@ line is the dialect's day bounds).
-- Which Device_Enum means which kind of accessory is a site's to confirm
-- (scripts/default/site.lua, mosaiq.enums.Device_Enum).
WITH
-- @DAY_WINDOW@
days AS (SELECT 1 AS one)
SELECT
    DHS.DHS_ID            AS "DHS_ID",
    BDH.BDH_ID            AS "BDH_ID",
    BDH.Device_Enum       AS "Device_Enum",
    BDH.Type_Enum         AS "Type_Enum",
    BDH.Device_ID         AS "Device_ID",
    BDH.Description       AS "Description",
    BDH.Wedge_Angle       AS "Wedge_Angle",
    BDH.Wedge_Orientation AS "Wedge_Orientation",
    BDH.Barcode_String    AS "Barcode_String"
FROM Dose_Hst DHS
JOIN tx_day ON DHS.Tx_DtTm >= tx_day.day_start AND DHS.Tx_DtTm < tx_day.day_end
JOIN FLD_HST FH ON FH.DHS_ID = DHS.DHS_ID
JOIN BLDevices_Hst BDH ON BDH.FHS_ID = FH.FHS_ID
ORDER BY DHS.DHS_ID, BDH.BDH_ID
