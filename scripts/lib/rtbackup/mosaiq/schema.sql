-- A Mosaiq-shaped schema: the tables and columns rtbackup's queries read, with Mosaiq's
-- own names (reference/original-python-system.md §4.2), for the synthetic test clinics.
-- It is NOT Mosaiq's schema: real Mosaiq has many more tables and columns.
--
-- Portable subset: runs as is on SQLite and on PostgreSQL (where the BLOB type is a
-- domain over BYTEA that mosaiq.create_schema() creates first). Statements end with ';'
-- at the end of a line; no ';' anywhere else.
--
-- Conventions mirrored from Mosaiq:
--   * Version = 0 is the current row; Version > 0 rows are history (Site, SiteSetup,
--     TxField, Schedule). A TxField keeps its FLD_ID across versions, so a join that
--     forgets "Version = 0" multiplies rows.
--   * Lengths and positions are in cm (Sad, Couch_*, Coll_*), angles in degrees.
--   * TxFieldPoint.A_Leaf_Set / B_Leaf_Set hold one value per leaf, little-endian,
--     either int16 in 0.01 cm (pymedphys' reading of real data) or float32 in mm (the
--     old Python system's assumption); the generator writes one of them
--     ("int16_0.01cm" or "float32_mm", as rtbackup.mosaiq.map names them).
-- Columns beyond §4.2, all present in real Mosaiq: Site.SIT_ID (the row key of a site
-- version), Dose_Hst.Tx_DtTm (when the field was delivered: what makes "the day's
-- deliveries" exact), TxFieldPoint.Coll_X1/X2/Y1/Y2 (jaws) and MLC_Leaves.

CREATE TABLE Patient (
    Pat_ID1     INTEGER PRIMARY KEY,
    Last_Name   VARCHAR(64),
    First_Name  VARCHAR(64),
    MIddle_Name VARCHAR(64),
    Suffix      VARCHAR(16),
    Sex         VARCHAR(16),
    Birth_DtTm  TIMESTAMP
);

CREATE TABLE Ident (
    Pat_Id1 INTEGER NOT NULL,
    IDA     VARCHAR(20) NOT NULL
);
CREATE INDEX Ident_IDA ON Ident (IDA);
CREATE INDEX Ident_Pat ON Ident (Pat_Id1);

-- Staff rows are people and places; Machine_Type 1 or 2 marks a treatment machine.
CREATE TABLE Staff (
    Staff_ID     INTEGER PRIMARY KEY,
    Last_Name    VARCHAR(64),
    Machine_Type SMALLINT
);

-- A treatment machine's details; MAC_ID equals its Staff_ID.
CREATE TABLE Machine (
    MAC_ID       INTEGER PRIMARY KEY,
    Source_Name  VARCHAR(64),
    Source_Model VARCHAR(64)
);

CREATE TABLE Config (
    CFG_ID    INTEGER PRIMARY KEY,
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
    Sit_Set_ID INTEGER NOT NULL,
    Version    INTEGER NOT NULL,
    Setup_Note VARCHAR(255)
);
CREATE INDEX SiteSetup_Set ON SiteSetup (Sit_Set_ID, Version);

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

CREATE TABLE TxField (
    FLD_ID              INTEGER NOT NULL,
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
    Wdg_Appl            SMALLINT,
    Comp_Fda            SMALLINT,
    Bolus               SMALLINT,
    Block               SMALLINT,
    Fractions_Tx        INTEGER,
    Start_DtTm          TIMESTAMP,
    Last_Tx_DtTm        TIMESTAMP,
    MachineCharID       VARCHAR(16),
    Machine_ID_Staff_ID INTEGER,
    Inst_ID             INTEGER,
    PRIMARY KEY (FLD_ID, Version)
);
CREATE INDEX TxField_Site ON TxField (SIT_Set_ID, Version);

CREATE TABLE TxFieldPoint (
    FLD_ID                  INTEGER NOT NULL,
    Point                   INTEGER NOT NULL,
    Energy                  DOUBLE PRECISION,
    Energy_Unit_Enum        SMALLINT,
    Gantry_Ang              DOUBLE PRECISION,
    Gantry_Dir_Enum         SMALLINT,
    Coll_Ang                DOUBLE PRECISION,
    Coll_Dir_Enum           SMALLINT,
    Couch_Ang               DOUBLE PRECISION,
    Couch_Roll_Dir_Enum     SMALLINT,
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
    SpecifiedMeterset       DOUBLE PRECISION,
    Meterset                DOUBLE PRECISION,
    Meterset_Rate           DOUBLE PRECISION,
    Create_DtTm             TIMESTAMP,
    PRIMARY KEY (FLD_ID, Point)
);

-- One row per delivery of a field: Fractions_Tx is the field's fraction number then.
CREATE TABLE Dose_Hst (
    DHS_ID                         INTEGER PRIMARY KEY,
    FLD_ID                         INTEGER NOT NULL,
    Tx_DtTm                        TIMESTAMP,
    Fractions_Tx                   INTEGER,
    TerminationCode                INTEGER,
    Termination_Status_Enum        SMALLINT,
    Termination_Verify_Status_Enum SMALLINT,
    Dose_Addtl_Projected           DOUBLE PRECISION,
    DeliveredTreatmentTimeBeam     DOUBLE PRECISION
);
CREATE INDEX Dose_Hst_Tx ON Dose_Hst (Tx_DtTm);
CREATE INDEX Dose_Hst_Field ON Dose_Hst (FLD_ID, Fractions_Tx);
