-- A Mosaiq-shaped schema: the tables and columns rtbackup's queries read, with Mosaiq's
-- own names and keys, for the synthetic test clinics. It is NOT Mosaiq's schema: real
-- Mosaiq has hundreds of tables and many more columns. Every table and column here
-- exists in the column list of a real Mosaiq database that pymedphys' history
-- published (see docs/mosaiq.md), with the same meaning as far as public sources tell.
--
-- Portable subset: runs as is on SQLite and on PostgreSQL (where the BLOB type is a
-- domain over BYTEA that mosaiq.create_schema() creates first). Statements end with ';'
-- at the end of a line; no ';' anywhere else. "Index" is quoted (a reserved word).
--
-- Conventions mirrored from Mosaiq:
--   * Every version of a field, site or setup is its own row with its own ID (FLD_ID,
--     SIT_ID, SIS_ID); versions of one share the *_SET_ID. The current row has
--     Version = 0; superseded rows get 32000, 31999, ... A delivery (Dose_Hst) records
--     the IDs of the rows in force when it was given.
--   * Dose_Hst: one row per beam delivery. Meterset = MU this delivery gave;
--     MetersetPrevDelivered = MU already given to this beam in this fraction by an
--     interrupted delivery (a continuation); PartiallyTreated = 1 for a delivery that
--     stopped early; WasQAMode = 1 for a machine QA delivery (no patient treatment).
--   * FLD_HST (one per Dose_Hst row) and TxFieldPoint_Hst (its control points) hold the
--     field as delivered; BLDevices_Hst the accessories it was delivered with.
--   * Lengths and positions are in cm (Sad, Couch_*, Coll_*), angles in degrees.
--   * TxFieldPoint.A_Leaf_Set / B_Leaf_Set hold one value per leaf, little-endian,
--     either int16 in 0.01 cm (pymedphys' reading of real data) or float32 in mm (the
--     old Python system's assumption); the generator writes one of them.

CREATE TABLE Patient (
    Pat_ID1     INTEGER PRIMARY KEY,
    Last_Name   VARCHAR(64),
    First_Name  VARCHAR(64),
    MIddle_Name VARCHAR(64),
    Suffix      VARCHAR(16),
    Birth_DtTm  TIMESTAMP
);

CREATE TABLE Admin (
    Pat_ID1 INTEGER PRIMARY KEY,
    Gender  VARCHAR(16)
);

CREATE TABLE Ident (
    Pat_Id1 INTEGER NOT NULL,
    IDA     VARCHAR(20) NOT NULL
);
CREATE INDEX Ident_IDA ON Ident (IDA);
CREATE INDEX Ident_Pat ON Ident (Pat_Id1);

CREATE TABLE Staff (
    Staff_ID     INTEGER PRIMARY KEY,
    Last_Name    VARCHAR(64),
    Machine_Type SMALLINT
);

CREATE TABLE Machine (
    MAC_ID       INTEGER PRIMARY KEY,
    MAC_Set_ID   INTEGER,
    Version      INTEGER,
    Source_Name  VARCHAR(64),
    Source_Model VARCHAR(64),
    Description  VARCHAR(64)
);

CREATE TABLE Config (
    CFG_ID    INTEGER PRIMARY KEY,
    Inst_ID   INTEGER,
    Inst_Name VARCHAR(64)
);

CREATE TABLE CPT (
    Hsp_Code   VARCHAR(16) PRIMARY KEY,
    Short_Desc VARCHAR(64)
);

CREATE TABLE Site (
    SIT_ID     INTEGER PRIMARY KEY,
    SIT_SET_ID INTEGER NOT NULL,
    Pat_ID1    INTEGER NOT NULL,
    Version    INTEGER NOT NULL,
    Site_Name  VARCHAR(64),
    Technique  VARCHAR(32),
    Fractions  INTEGER,
    Dose_Ttl   DOUBLE PRECISION,
    Edit_DtTm  TIMESTAMP
);
CREATE INDEX Site_Set ON Site (SIT_SET_ID, Version);
CREATE INDEX Site_Pat ON Site (Pat_ID1);

CREATE TABLE SiteSetup (
    SIS_ID     INTEGER PRIMARY KEY,
    SIS_Set_ID INTEGER NOT NULL,
    SIT_Set_ID INTEGER,
    Version    INTEGER NOT NULL,
    Setup_Note VARCHAR(255)
);

CREATE TABLE Schedule (
    Sch_Id     INTEGER PRIMARY KEY,
    Sch_Set_Id INTEGER,
    Pat_ID1    INTEGER NOT NULL,
    App_DtTm   TIMESTAMP,
    Edit_DtTm  TIMESTAMP,
    Location   INTEGER,
    Activity   VARCHAR(16),
    Version    INTEGER NOT NULL
);
CREATE INDEX Schedule_App ON Schedule (App_DtTm);

CREATE TABLE DCMStudy (
    DCMStudy_ID      INTEGER PRIMARY KEY,
    StudyInstanceUID VARCHAR(64),
    StudyID          VARCHAR(16),
    StudyDescription VARCHAR(64),
    Study_DtTm       TIMESTAMP,
    Create_DtTm      TIMESTAMP
);

CREATE TABLE DCMSeries (
    DCMSeries_ID      INTEGER PRIMARY KEY,
    DCMStudy_ID       INTEGER NOT NULL,
    SeriesInstanceUID VARCHAR(64),
    SeriesNumber      INTEGER,
    SeriesDescription VARCHAR(64),
    Series_DtTm       TIMESTAMP
);

CREATE TABLE DCMInstance (
    DCMInstance_ID INTEGER PRIMARY KEY,
    DCMSeries_ID   INTEGER NOT NULL,
    SOPInstanceUID VARCHAR(64)
);
CREATE INDEX DCMInstance_UID ON DCMInstance (SOPInstanceUID);

CREATE TABLE RtPlan (
    DCMInstance_ID INTEGER PRIMARY KEY,
    Pat_ID1        INTEGER NOT NULL,
    Label          VARCHAR(64)
);

-- One row per version of a field; the versions of a field share FLD_SET_ID.
CREATE TABLE TxField (
    FLD_ID              INTEGER PRIMARY KEY,
    FLD_SET_ID          INTEGER NOT NULL,
    Version             INTEGER NOT NULL,
    Pat_ID1             INTEGER NOT NULL,
    SIT_Set_ID          INTEGER NOT NULL,
    OriginalPlanUID     VARCHAR(64),
    OriginalBeamNumber  INTEGER,
    OriginalBeamName    VARCHAR(64),
    Field_Name          VARCHAR(64),
    Field_Label         VARCHAR(16),
    Beam_Type_Flag      SMALLINT,
    Modality_Enum       SMALLINT,
    Type_Enum           SMALLINT,
    IndexReference_Enum SMALLINT,
    ControlPoints       INTEGER,
    Meterset            DOUBLE PRECISION,
    Cgray               DOUBLE PRECISION,
    Sad                 DOUBLE PRECISION,
    Mlc                 SMALLINT,
    Wdg_Appl            VARCHAR(32),
    Comp_Fda            VARCHAR(32),
    Bolus               VARCHAR(32),
    Block               VARCHAR(32),
    Dyn_Wedge           VARCHAR(32),
    BackupTimer         DOUBLE PRECISION,
    Fractions_Tx        INTEGER,
    Start_DtTm          TIMESTAMP,
    Last_Tx_DtTm        TIMESTAMP,
    MachineCharID       INTEGER,
    Machine_ID_Staff_ID INTEGER
);
CREATE INDEX TxField_Set ON TxField (FLD_SET_ID, Version);
CREATE INDEX TxField_Site ON TxField (SIT_Set_ID, Version);

-- The planned control points of a field version.
CREATE TABLE TxFieldPoint (
    TFP_ID                  INTEGER PRIMARY KEY,
    FLD_ID                  INTEGER NOT NULL,
    Point                   INTEGER NOT NULL,
    "Index"                 DOUBLE PRECISION,
    Energy                  DOUBLE PRECISION,
    Energy_Unit_Enum        SMALLINT,
    Gantry_Ang              DOUBLE PRECISION,
    Gantry_Dir_Enum         SMALLINT,
    Coll_Ang                DOUBLE PRECISION,
    Coll_Dir_Enum           SMALLINT,
    Couch_Ang               DOUBLE PRECISION,
    Couch_Ang_Dir_Enum      SMALLINT,
    Couch_Roll_Ang          DOUBLE PRECISION,
    Couch_Roll_Dir_Enum     SMALLINT,
    Couch_Pitch_Ang         DOUBLE PRECISION,
    Couch_Pitch_Dir_Enum    SMALLINT,
    Couch_Top_Axis_Distance DOUBLE PRECISION,
    Couch_Top               DOUBLE PRECISION,
    Couch_Top_Dir_Enum      SMALLINT,
    Couch_Vrt               DOUBLE PRECISION,
    Couch_Lng               DOUBLE PRECISION,
    Couch_Lat               DOUBLE PRECISION,
    Coll_X1                 DOUBLE PRECISION,
    Coll_X2                 DOUBLE PRECISION,
    Coll_Y1                 DOUBLE PRECISION,
    Coll_Y2                 DOUBLE PRECISION,
    MLC_Leaves              INTEGER,
    A_Leaf_Set              BLOB,
    B_Leaf_Set              BLOB,
    Meterset_Rate           DOUBLE PRECISION,
    Create_DtTm             TIMESTAMP
);
CREATE INDEX TxFieldPoint_Field ON TxFieldPoint (FLD_ID, Point);

-- One row per beam delivery (see the top).
CREATE TABLE Dose_Hst (
    DHS_ID                         INTEGER PRIMARY KEY,
    Pat_ID1                        INTEGER NOT NULL,
    FLD_ID                         INTEGER NOT NULL,
    SIT_ID                         INTEGER,
    SIS_ID                         INTEGER,
    Tx_DtTm                        TIMESTAMP,
    Create_DtTm                    TIMESTAMP,
    Edit_DtTm                      TIMESTAMP,
    Fractions_Tx                   INTEGER,
    Fx_Number_InEffect             INTEGER,
    Meterset                       DOUBLE PRECISION,
    MetersetPrevDelivered          DOUBLE PRECISION,
    MetersetUnit_Enum              SMALLINT,
    PartiallyTreated               SMALLINT,
    WasQAMode                      SMALLINT,
    Modality_Enum                  SMALLINT,
    Type_Enum                      SMALLINT,
    Energy                         DOUBLE PRECISION,
    Energy_Unit_Enum               SMALLINT,
    TerminationCode                INTEGER,
    Termination_Status_Enum        SMALLINT,
    Termination_Verify_Status_Enum SMALLINT,
    Dose_Addtl_Projected           DOUBLE PRECISION,
    Machine_ID_Staff_ID            INTEGER,
    MAC_ID                         INTEGER,
    Inst_ID                        INTEGER
);
CREATE INDEX Dose_Hst_Tx ON Dose_Hst (Tx_DtTm);
CREATE INDEX Dose_Hst_Field ON Dose_Hst (FLD_ID, Fractions_Tx);

-- The field as delivered, one row per Dose_Hst row.
CREATE TABLE FLD_HST (
    FHS_ID               INTEGER PRIMARY KEY,
    DHS_ID               INTEGER NOT NULL,
    Tx_DtTm              TIMESTAMP,
    Wdg_Appl             VARCHAR(32),
    Dyn_Wedge            VARCHAR(32),
    Block                VARCHAR(32),
    Comp_FDA             VARCHAR(32),
    Bolus                VARCHAR(32),
    Beam_Type_Flag       SMALLINT,
    Control_Points       INTEGER,
    Meterset             DOUBLE PRECISION,
    BackupTimerDelivered DOUBLE PRECISION,
    IsFFF                SMALLINT
);
CREATE INDEX FLD_HST_DHS ON FLD_HST (DHS_ID);

-- The control points of a delivery, as the console recorded them.
CREATE TABLE TxFieldPoint_Hst (
    TPH_ID        INTEGER PRIMARY KEY,
    FHS_ID        INTEGER NOT NULL,
    Point         INTEGER NOT NULL,
    "Index"       DOUBLE PRECISION,
    Tx_DtTm       TIMESTAMP,
    Meterset_Rate DOUBLE PRECISION,
    Gantry_Ang    DOUBLE PRECISION,
    Coll_Ang      DOUBLE PRECISION,
    Couch_Ang     DOUBLE PRECISION,
    Couch_Vrt     DOUBLE PRECISION,
    Couch_Lng     DOUBLE PRECISION,
    Couch_Lat     DOUBLE PRECISION
);
CREATE INDEX TxFieldPoint_Hst_FHS ON TxFieldPoint_Hst (FHS_ID, Point);

-- Accessories a delivery was given with (wedges, blocks, compensators, boli).
CREATE TABLE BLDevices_Hst (
    BDH_ID            INTEGER PRIMARY KEY,
    FHS_ID            INTEGER NOT NULL,
    Device_Enum       SMALLINT,
    Type_Enum         SMALLINT,
    Device_ID         VARCHAR(32),
    Description       VARCHAR(64),
    Wedge_Angle       DOUBLE PRECISION,
    Wedge_Orientation DOUBLE PRECISION,
    Barcode_String    VARCHAR(64)
);
CREATE INDEX BLDevices_Hst_FHS ON BLDevices_Hst (FHS_ID);
