/* RT Beams Treatment Record builder (PS3.3 A.29) on the DICOM core.
 *
 * The caller describes one treatment session in plain C structs (everything
 * borrowed, nothing copied) and gets back a new dataset of SOP Class
 * 1.2.840.10008.5.1.4.1.1.481.4 that the caller owns (rtb_ds_free).
 *
 * Rules the builder applies, so that every record conforms to the IOD:
 *  - Required input missing -> error naming the field with 1-based indices,
 *    e.g. "beams[2].control_points[1].gantry_angle is required".
 *  - Enumerated values: a value outside the standard's terms is never written.
 *    For a Type 2 attribute it becomes an empty value; for a Type 3 attribute
 *    it is left out; for a Type 1 attribute it is an error naming the field.
 *  - Numbers are written in their shortest form that fits the VR (DS: 16 chars).
 *  - Identifiers, codes and names that do not fit their VR are errors; free text
 *    (descriptions, labels, notes, beam and institution names, accessory IDs) is
 *    cut at a character boundary to the VR's length, and each cut is a note.
 *    Lengths are counted in characters (PS3.5 6.2), not bytes.
 *  - Specific Character Set "ISO_IR 192" is written when any text is not ASCII;
 *    such text must be valid UTF-8.
 *  - Lengths are mm, angles degrees, times seconds.
 *  - Control point attributes that the standard requires "for the first item, or
 *    if they change during the beam" are written in item 1, and in every item
 *    when they are not constant over the beam (the RT Beams rule, C.8.8.14.5).
 *    Angles and rotation directions (gantry, collimator, couch, table-top
 *    eccentric) and the positions of every beam limiting device are required
 *    at the first control point; table-top positions may be empty there
 *    (relative positions, C.8.8.14.6); pitch and roll are written when given.
 *
 * Numbers that may be absent are doubles with NaN (RTB_RTRECORD_NONE) for
 * "absent"; integers use RTB_RTRECORD_NO_INT. Dates/times are text, either ISO
 * "YYYY-MM-DD[(T| )HH:MM[:SS[.ffffff]]]" or DICOM "YYYYMMDD[HHMMSS[.ffffff]]". */
#ifndef RTB_RTRECORD_H
#define RTB_RTRECORD_H

#include <limits.h>
#include <math.h>
#include <stddef.h>

#include "dicom/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RTB_RTRECORD_SOP_CLASS "1.2.840.10008.5.1.4.1.1.481.4"
#define RTB_RTRECORD_NONE ((double)NAN)
#define RTB_RTRECORD_NO_INT LONG_MIN

typedef enum {
    RTB_RTRECORD_OK = 0,
    RTB_RTRECORD_E_MISSING, /* a required input field is absent */
    RTB_RTRECORD_E_INVALID, /* a field has a value the IOD cannot carry */
    RTB_RTRECORD_E_DICOM    /* the DICOM core failed (out of memory, ...) */
} rtb_rtrecord_error_code;

typedef struct {
    rtb_rtrecord_error_code code;
    char field[128];   /* the input field at fault, "" if none */
    char message[512]; /* one readable sentence that names the field */
} rtb_rtrecord_error;

/* What the builder changed so that the input fits the IOD: free text longer than its
 * VR allows, cut. One line each, naming the field, its length and the VR's. */
#define RTB_RTRECORD_NOTES_MAX 16
typedef struct {
    size_t n;    /* lines in note[] */
    size_t more; /* further notes, not kept */
    char note[RTB_RTRECORD_NOTES_MAX][192];
} rtb_rtrecord_notes;

/* A person name in components; NULL or "" components are left empty. */
typedef struct {
    const char *family, *given, *middle, *prefix, *suffix;
} rtb_rtrecord_name;

/* One private element of the site block, (group, bb<element>) where bb is the
 * block the creator reserved. VR one of LO, LT, SH, ST, UT, IS, DS. */
typedef struct {
    unsigned element; /* 0x00..0xFF: the low byte of the element number */
    const char *vr;
    const char *value; /* NULL or "" = empty value */
} rtb_rtrecord_private_element;

typedef struct {
    const char *creator; /* Private Creator (LO), e.g. "TJU RadOnc Customized Data" */
    unsigned group;      /* odd, 0x0009..0xFFFF */
    unsigned block;      /* 0x10..0xFF; 0 = 0x10 */
    const rtb_rtrecord_private_element *elements;
    size_t n_elements;
} rtb_rtrecord_private;

typedef struct {
    long index;             /* Referenced Control Point Index: required */
    const char *datetime;   /* Treatment Control Point Date/Time: required */
    double specified_meterset;  /* Type 2 */
    double delivered_meterset;  /* required (cumulative, dosimeter unit) */
    double dose_rate_set;       /* unit per minute */
    double dose_rate_delivered;
    double energy;              /* Nominal Beam Energy; written only with a valid unit */
    const char *energy_unit;    /* MV | MEV */
    double gantry_angle;            const char *gantry_direction;     /* CW | CC | NONE */
    double collimator_angle;        const char *collimator_direction; /* Beam Limiting Device */
    double couch_angle;             const char *couch_direction;      /* Patient Support */
    double table_top_eccentric_distance; /* mm */
    double table_top_eccentric_angle; const char *table_top_eccentric_direction;
    double table_top_vertical, table_top_longitudinal, table_top_lateral; /* mm */
    double table_top_pitch_angle;   const char *table_top_pitch_direction; /* when known */
    double table_top_roll_angle;    const char *table_top_roll_direction;
    double jaw_x[2], jaw_y[2];  /* ASYMX X1,X2 and ASYMY Y1,Y2 in mm; NaN = unknown */
    const double *mlc;          /* 2N leaf positions in mm, DICOM order: the N leaves of the
                                   first bank (IEC 1xx), then the N of the second (2xx) */
    size_t n_mlc;               /* 0 = no MLC positions at this control point */
} rtb_rtrecord_control_point;

/* An accessory the beam was delivered with (a wedge, compensator, bolus or block), as
 * the treatment record keeps it (PS3.3 C.8.8.21: Recorded Wedge / Compensator / Block
 * Sequence, Referenced Bolus Sequence). */
typedef struct {
    const char *id;             /* Wedge ID / Compensator ID / Bolus ID / Block Tray ID */
    const char *type;           /* wedges: STANDARD | DYNAMIC | MOTORIZED; compensators:
                                   STANDARD | DYNAMIC; applicators: Applicator Type;
                                   others unused; NULL = empty */
    const char *name;           /* blocks: Block Name */
    const char *accessory_code; /* the accessory's bar code, when recorded */
    double angle;               /* wedges: Wedge Angle, degrees (written as IS) */
    double orientation;         /* wedges: Wedge Orientation, degrees */
    long roi_number;            /* boli: Referenced ROI Number; NO_INT = not known (0 is written) */
} rtb_rtrecord_accessory;

typedef struct {
    long number;                    /* Referenced Beam Number (plan's Beam Number) */
    const char *name;
    const char *description;
    const char *beam_type;          /* STATIC | DYNAMIC: required */
    const char *radiation_type;     /* PHOTON | ELECTRON | NEUTRON | PROTON: required */
    const char *fluence_mode;       /* STANDARD | NON_STANDARD; NULL = no fluence sequence */
    const char *fluence_mode_id;    /* required with NON_STANDARD (e.g. "FFF") */
    const char *delivery_type;      /* TREATMENT (default) | OPEN_PORTFILM | TRMT_PORTFILM |
                                       CONTINUATION | SETUP */
    const char *termination_status; /* NORMAL | OPERATOR | MACHINE | UNKNOWN: required */
    const char *termination_code;   /* machine-specific code, free text */
    const char *verification_status; /* VERIFIED | VERIFIED_OVR | NOT_VERIFIED */
    long current_fraction;          /* Current Fraction Number (Type 2) */
    double specified_meterset;      /* Specified Primary Meterset */
    double delivered_meterset;      /* Delivered Primary Meterset */
    double delivered_time;          /* Delivered Treatment Time, s */
    double sad;                     /* Source-Axis Distance, mm */
    long n_leaf_pairs;              /* MLC leaf pairs; 0 or NO_INT = no MLC */
    const char *mlc_type;           /* MLCX (default) | MLCY */
    /* Accessories; each list's length is the beam's Number of Wedges / Compensators /
     * Boli / Blocks. */
    const rtb_rtrecord_accessory *wedges, *compensators, *boli, *blocks;
    size_t n_wedges, n_compensators, n_boli, n_blocks;
    /* The applicator (electron cone): at most one; id and type (ELECTRON_SQUARE,
     * ELECTRON_RECT, ELECTRON_CIRC, ...) required, accessory_code optional. */
    const rtb_rtrecord_accessory *applicators;
    size_t n_applicators;
    const rtb_rtrecord_control_point *control_points; /* at least one */
    size_t n_control_points;
} rtb_rtrecord_beam;

typedef struct {
    const char *sop_instance_uid;   /* required (deterministic from the source keys) */
    const char *creation_datetime;  /* Instance Creation Date/Time: from the source data */
    long instance_number;           /* NO_INT = 1 */

    struct {
        rtb_rtrecord_name name;
        const char *id;
        const char *birth_date;     /* date (a time part is ignored) */
        const char *sex;            /* M | F | O; anything else: empty */
    } patient;

    struct { /* the RT Plan's study */
        const char *instance_uid;   /* required */
        const char *id;
        const char *datetime;
        const char *description;
        const char *accession_number;
        rtb_rtrecord_name referring_physician;
    } study;

    struct { /* the record's own RT Series (never the plan's) */
        const char *instance_uid;   /* required */
        long number;
        const char *description;
        const char *datetime;
        rtb_rtrecord_name operator_name;
    } series;

    struct { /* General Equipment: what produced this record */
        const char *manufacturer, *institution_name, *department_name;
        const char *model_name, *serial_number, *software_versions;
    } equipment;

    const char *treatment_datetime; /* Treatment Date/Time (Type 2) */
    const char *plan_uid;           /* Referenced RT Plan SOP Instance UID; NULL = none */
    /* RT Beams Treatment Records this one is significantly related to (Referenced
     * Treatment Record Sequence): the interrupted delivery a continuation resumes. */
    const char *const *referenced_records;
    size_t n_referenced_records;

    struct {
        const char *name;           /* Treatment Machine Name (SH, <= 16) */
        const char *manufacturer, *model_name, *serial_number;
        const char *institution_name, *department_name;
    } machine;

    long fractions_planned;         /* Number of Fractions Planned (Type 2) */
    long fraction_group;            /* Referenced Fraction Group Number (optional) */
    const char *primary_dosimeter_unit; /* MU | MINUTE: required */

    const rtb_rtrecord_beam *beams; /* at least one */
    size_t n_beams;

    const rtb_rtrecord_private *private_block; /* optional site block */
} rtb_rtrecord_input;

/* Every optional field absent (NaN / NO_INT / NULL). Start from this. */
void rtb_rtrecord_input_init(rtb_rtrecord_input *in);
void rtb_rtrecord_beam_init(rtb_rtrecord_beam *beam);
void rtb_rtrecord_control_point_init(rtb_rtrecord_control_point *cp);

/* Builds the record. 0 and *out (caller-owned) on success; -1 with err filled.
 * notes (may be NULL) receives what was cut to fit.
 * rtb_dicom_init() must have succeeded. Pure CPU work on the caller's thread
 * (no I/O, no clock, no randomness): the same input always gives the same
 * dataset, and distinct builds may run on distinct threads. */
int rtb_rtrecord_build(const rtb_rtrecord_input *in, rtb_ds **out, rtb_rtrecord_error *err,
                       rtb_rtrecord_notes *notes);

/* Checks a dataset against the parts of the IOD this builder writes (Type 1
 * present and non-empty, Type 2 present, enumerated values, VR lengths,
 * sequence item counts). Returns the number of problems found (0 = fine) and
 * writes up to `max` one-line descriptions into problems[] (may be NULL);
 * -1 with err filled if the dataset cannot be read. */
#define RTB_RTRECORD_PROBLEM_MAX 192
int rtb_rtrecord_check(rtb_ds *ds, char (*problems)[RTB_RTRECORD_PROBLEM_MAX], size_t max,
                       rtb_rtrecord_error *err);

#ifdef __cplusplus
}
#endif

#endif
