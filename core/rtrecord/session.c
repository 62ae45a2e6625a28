/* The Treatment Session Beam Sequence (RT Beams Session Record, C.8.8.21):
 * one item per beam, its Control Point Delivery Sequence and its beam
 * limiting devices. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const char *const kDirections[] = {"CW", "CC", "NONE", NULL};

/* Control point attributes the standard wants "for the first item, or if they
 * change during the beam". A value that changes anywhere in the beam is
 * written in every item (C.8.8.14.5), otherwise in item 1 only. first_type is
 * what item 1 needs: 1 = a value, 2 = present (empty if unknown), 3 = optional. */
typedef struct {
    const char *tag;
    const char *field;
    size_t offset;  /* into rtb_rtrecord_control_point */
    int direction;  /* a CW/CC/NONE term rather than a number */
    int first_type;
    int fl;         /* VR FL (pitch and roll angles), not DS */
} cp_attr;

#define NUM(tag, f, t) {tag, #f, offsetof(rtb_rtrecord_control_point, f), 0, t, 0}
#define FLT(tag, f, t) {tag, #f, offsetof(rtb_rtrecord_control_point, f), 0, t, 1}
#define DIR(tag, f, t) {tag, #f, offsetof(rtb_rtrecord_control_point, f), 1, t, 0}

static const cp_attr kCpAttrs[] = {
    NUM("300A,011E", gantry_angle, 1),
    DIR("300A,011F", gantry_direction, 1),
    NUM("300A,0120", collimator_angle, 1),
    DIR("300A,0121", collimator_direction, 1),
    NUM("300A,0122", couch_angle, 1),
    DIR("300A,0123", couch_direction, 1),
    NUM("300A,0124", table_top_eccentric_distance, 3),
    NUM("300A,0125", table_top_eccentric_angle, 1),
    DIR("300A,0126", table_top_eccentric_direction, 1),
    NUM("300A,0128", table_top_vertical, 2),     /* 2C: empty = relative positions (C.8.8.14.6) */
    NUM("300A,0129", table_top_longitudinal, 2),
    NUM("300A,012A", table_top_lateral, 2),
    /* 1C in the standard, but many sources (Mosaiq among them) do not record
     * pitch and roll: written when given. */
    FLT("300A,0140", table_top_pitch_angle, 3),
    DIR("300A,0142", table_top_pitch_direction, 3),
    FLT("300A,0144", table_top_roll_angle, 3),
    DIR("300A,0146", table_top_roll_direction, 3),
};

static double num_at(const rtb_rtrecord_control_point *cp, const cp_attr *a)
{
    return *(const double *)((const char *)cp + a->offset);
}

static const char *dir_at(const rtb_rtrecord_control_point *cp, const cp_attr *a)
{
    const char *s = *(const char *const *)((const char *)cp + a->offset);
    return s ? s : "";
}

static int same_number(double x, double y)
{
    return (isnan(x) && isnan(y)) || x == y;
}

static int attr_varies(const rtb_rtrecord_beam *beam, const cp_attr *a)
{
    const rtb_rtrecord_control_point *cps = beam->control_points;
    for (size_t k = 1; k < beam->n_control_points; k++) {
        if (a->direction ? strcmp(dir_at(&cps[k], a), dir_at(&cps[0], a)) != 0
                         : !same_number(num_at(&cps[k], a), num_at(&cps[0], a)))
            return 1;
    }
    return 0;
}

/* ---- beam limiting devices ------------------------------------------------------ */

typedef enum { DEV_X, DEV_Y, DEV_MLC, DEV_COUNT } device;

typedef struct {
    int present[DEV_COUNT];
    int varies[DEV_COUNT];
    long pairs; /* MLC leaf pairs */
    const char *mlc_type;
} devices;

static int cp_has(const rtb_rtrecord_control_point *cp, device d)
{
    switch (d) {
    case DEV_X: return !isnan(cp->jaw_x[0]) && !isnan(cp->jaw_x[1]);
    case DEV_Y: return !isnan(cp->jaw_y[0]) && !isnan(cp->jaw_y[1]);
    default: return cp->n_mlc > 0;
    }
}

static const double *positions(const rtb_rtrecord_control_point *cp, device d, size_t *n)
{
    *n = d == DEV_MLC ? cp->n_mlc : 2;
    return d == DEV_X ? cp->jaw_x : d == DEV_Y ? cp->jaw_y : cp->mlc;
}

static const char *const kDeviceField[DEV_COUNT] = {"jaw_x", "jaw_y", "mlc"};

static int find_devices(rtb_builder *b, const rtb_rtrecord_beam *beam, devices *dev)
{
    static const char *const mlc_types[] = {"MLCX", "MLCY", NULL};
    memset(dev, 0, sizeof *dev);
    dev->pairs = beam->n_leaf_pairs == RTB_RTRECORD_NO_INT ? 0 : beam->n_leaf_pairs;
    dev->mlc_type = beam->mlc_type && beam->mlc_type[0] ? beam->mlc_type : "MLCX";
    if (dev->pairs < 0 || dev->pairs > 512)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, "n_leaf_pairs", "%ld is not in 0..512", dev->pairs);
    int known = 0;
    for (size_t i = 0; mlc_types[i]; i++)
        known = known || strcmp(mlc_types[i], dev->mlc_type) == 0;
    if (!known)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, "mlc_type", "'%s' is not MLCX or MLCY", dev->mlc_type);
    dev->present[DEV_MLC] = dev->pairs > 0;
    for (size_t k = 0; k < beam->n_control_points; k++) {
        const rtb_rtrecord_control_point *cp = &beam->control_points[k];
        dev->present[DEV_X] |= cp_has(cp, DEV_X);
        dev->present[DEV_Y] |= cp_has(cp, DEV_Y);
        if (cp->n_mlc && cp->n_mlc != (size_t)(2 * dev->pairs))
            return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, "n_leaf_pairs",
                              "is %ld, but control_points[%zu].mlc has %zu positions (needs %ld)",
                              dev->pairs, k + 1, cp->n_mlc, 2 * dev->pairs);
    }
    if (!dev->present[DEV_X] && !dev->present[DEV_Y] && !dev->present[DEV_MLC])
        return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, "control_points",
                          "have no jaw or MLC positions; a beam needs at least one beam limiting device");
    /* A device that moves must be given at every control point; one that does
     * not is written at the first only. */
    for (int d = 0; d < DEV_COUNT; d++) {
        if (!dev->present[d])
            continue;
        const rtb_rtrecord_control_point *first = &beam->control_points[0];
        size_t n0, n;
        const double *p0 = positions(first, d, &n0);
        for (size_t k = 0; k < beam->n_control_points; k++) {
            const rtb_rtrecord_control_point *cp = &beam->control_points[k];
            if (!cp_has(cp, d)) {
                if (k == 0) {
                    char field[64];
                    snprintf(field, sizeof field, "control_points[1].%s", kDeviceField[d]);
                    return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, field,
                                      "is required (the beam has this device)");
                }
                continue;
            }
            const double *p = positions(cp, d, &n);
            for (size_t i = 0; i < n && !dev->varies[d]; i++)
                dev->varies[d] = p[i] != p0[i];
        }
        for (size_t k = 1; dev->varies[d] && k < beam->n_control_points; k++)
            if (!cp_has(&beam->control_points[k], d)) {
                char field[64];
                snprintf(field, sizeof field, "control_points[%zu].%s", k + 1, kDeviceField[d]);
                return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, field,
                                  "is required (this device moves during the beam)");
            }
    }
    return 0;
}

static const char *device_type(const devices *dev, device d)
{
    return d == DEV_X ? "ASYMX" : d == DEV_Y ? "ASYMY" : dev->mlc_type;
}

static int write_leaf_pairs(rtb_builder *b, rtb_ds *beam_item, const devices *dev)
{
    for (int d = 0; d < DEV_COUNT; d++) {
        if (!dev->present[d])
            continue;
        rtb_ds *item;
        if (rtb_b_item(b, beam_item, "3008,00A0", &item) ||
            rtb_b_text(b, item, "300A,00B8", "CS", "device_type", device_type(dev, d), 1,
                       RTB_TEXT_STRICT) ||
            rtb_b_is(b, item, "300A,00BC", "n_leaf_pairs", d == DEV_MLC ? dev->pairs : 1, 1))
            return -1;
    }
    return 0;
}

static int write_device_positions(rtb_builder *b, rtb_ds *cp_item,
                                  const rtb_rtrecord_control_point *cp, const devices *dev, size_t k)
{
    for (int d = 0; d < DEV_COUNT; d++) {
        if (!dev->present[d] || (k > 0 && !dev->varies[d]))
            continue;
        size_t n;
        const double *p = positions(cp, d, &n);
        rtb_ds *item;
        if (rtb_b_item(b, cp_item, "300A,011A", &item) ||
            rtb_b_text(b, item, "300A,00B8", "CS", "device_type", device_type(dev, d), 1,
                       RTB_TEXT_STRICT) ||
            rtb_b_ds_list(b, item, "300A,011C", kDeviceField[d], p, n))
            return -1;
    }
    return 0;
}

/* ---- control points ------------------------------------------------------------------ */

static int energy_valid(const rtb_rtrecord_control_point *cp)
{
    static const char *const units[] = {"MV", "MEV", NULL};
    if (isnan(cp->energy) || !cp->energy_unit)
        return 0;
    for (size_t i = 0; units[i]; i++)
        if (strcmp(units[i], cp->energy_unit) == 0)
            return 1;
    return 0; /* KV and anything else: not a term of Nominal Beam Energy Unit */
}

static int energy_varies(const rtb_rtrecord_beam *beam)
{
    const rtb_rtrecord_control_point *c0 = &beam->control_points[0];
    for (size_t k = 1; k < beam->n_control_points; k++) {
        const rtb_rtrecord_control_point *c = &beam->control_points[k];
        if (energy_valid(c) != energy_valid(c0) ||
            (energy_valid(c) && (c->energy != c0->energy || strcmp(c->energy_unit, c0->energy_unit))))
            return 1;
    }
    return 0;
}

static int write_control_point(rtb_builder *b, rtb_ds *cp_item, const rtb_rtrecord_beam *beam,
                               size_t k, const int *varies, int energy_changes,
                               const devices *dev)
{
    const rtb_rtrecord_control_point *cp = &beam->control_points[k];
    if (cp->index == RTB_RTRECORD_NO_INT)
        return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, "index", "is required");
    if (isnan(cp->delivered_meterset))
        return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, "delivered_meterset", "is required");
    if (rtb_b_datetime(b, cp_item, "3008,0024", "3008,0025", "datetime", cp->datetime, 1) ||
        rtb_b_ds(b, cp_item, "3008,0042", "specified_meterset", cp->specified_meterset, 1) ||
        rtb_b_ds(b, cp_item, "3008,0044", "delivered_meterset", cp->delivered_meterset, 1) ||
        rtb_b_ds(b, cp_item, "3008,0048", "dose_rate_delivered", cp->dose_rate_delivered, 1) ||
        rtb_b_ds(b, cp_item, "300A,0115", "dose_rate_set", cp->dose_rate_set, 1))
        return -1;
    if ((k == 0 || energy_changes) && energy_valid(cp)) {
        if (rtb_b_text(b, cp_item, "300A,0015", "CS", "energy_unit", cp->energy_unit, 1,
                       RTB_TEXT_STRICT) ||
            rtb_b_ds(b, cp_item, "300A,0114", "energy", cp->energy, 1))
            return -1;
    }
    if (write_device_positions(b, cp_item, cp, dev, k))
        return -1;
    for (size_t i = 0; i < sizeof kCpAttrs / sizeof kCpAttrs[0]; i++) {
        const cp_attr *a = &kCpAttrs[i];
        if (k > 0 && !varies[i])
            continue;
        int type = a->first_type;
        if (a->direction) {
            const char *v = dir_at(cp, a);
            if (rtb_b_term(b, cp_item, a->tag, a->field, v[0] ? v : NULL, kDirections, type, NULL))
                return -1;
        } else {
            double v = num_at(cp, a);
            if (type == 1 && isnan(v))
                return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, a->field, "is required");
            if (a->fl ? rtb_b_fl(b, cp_item, a->tag, a->field, v)
                      : rtb_b_ds(b, cp_item, a->tag, a->field, v, type == 2))
                return -1;
        }
    }
    return rtb_b_is(b, cp_item, "300C,00F0", "index", cp->index, 1);
}

/* ---- beams --------------------------------------------------------------------------- */

/* The Applicator Sequence (Type 3, a single item): written when the beam had one. */
static int write_applicator(rtb_builder *b, rtb_ds *beam_item, const rtb_rtrecord_beam *beam)
{
    static const char *const types[] = {"ELECTRON_SQUARE", "ELECTRON_RECT", "ELECTRON_CIRC",
                                        "ELECTRON_SHORT", "ELECTRON_OPEN", "PHOTON_SQUARE",
                                        "PHOTON_RECT", "PHOTON_CIRC", "INTRAOPERATIVE",
                                        "STEREOTACTIC", NULL};
    if (beam->n_applicators == 0)
        return 0;
    if (beam->n_applicators > 1)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, "applicators",
                          "has %zu items; a beam has at most one applicator", beam->n_applicators);
    const rtb_rtrecord_accessory *a = &beam->applicators[0];
    rtb_ds *it;
    return rtb_b_item(b, beam_item, "300A,0107", &it) ||
                   rtb_b_text1(b, it, "300A,0108", "SH", "applicators[1].id", a->id) ||
                   rtb_b_term(b, it, "300A,0109", "applicators[1].type", a->type, types, 1, NULL) ||
                   rtb_b_text(b, it, "300A,00F9", "LO", "applicators[1].accessory_code",
                              a->accessory_code, 0, RTB_TEXT_CLIP)
               ? -1
               : 0;
}

/* The beam's accessories: each Number of ... (Type 1) with its recorded sequence (1C,
 * one item per accessory). Wedge angles are IS: a fractional angle is rounded. */
static int write_accessories(rtb_builder *b, rtb_ds *beam_item, const rtb_rtrecord_beam *beam)
{
    static const char *const wedge_types[] = {"STANDARD", "DYNAMIC", "MOTORIZED", NULL};
    static const char *const compensator_types[] = {"STANDARD", "DYNAMIC", NULL};
    char field[48];
    rtb_ds *it;
    if (rtb_b_is(b, beam_item, "300A,00D0", "wedges", (long)beam->n_wedges, 1))
        return -1;
    for (size_t i = 0; i < beam->n_wedges; i++) {
        const rtb_rtrecord_accessory *w = &beam->wedges[i];
        snprintf(field, sizeof field, "wedges[%zu]", i + 1);
        if (rtb_b_item(b, beam_item, "3008,00B0", &it) ||
            rtb_b_is(b, it, "300A,00D2", field, (long)i + 1, 1) ||
            rtb_b_term(b, it, "300A,00D3", field, w->type, wedge_types, 2, NULL) ||
            rtb_b_text(b, it, "300A,00D4", "SH", field, w->id, 0, RTB_TEXT_CLIP) ||
            rtb_b_text(b, it, "300A,00F9", "LO", field, w->accessory_code, 0, RTB_TEXT_CLIP) ||
            rtb_b_is(b, it, "300A,00D5", field,
                     isnan(w->angle) ? RTB_RTRECORD_NO_INT : lround(w->angle), 1) ||
            rtb_b_ds(b, it, "300A,00D8", field, w->orientation, 1))
            return -1;
    }
    if (rtb_b_is(b, beam_item, "300A,00E0", "compensators", (long)beam->n_compensators, 1))
        return -1;
    for (size_t i = 0; i < beam->n_compensators; i++) {
        const rtb_rtrecord_accessory *c = &beam->compensators[i];
        snprintf(field, sizeof field, "compensators[%zu]", i + 1);
        if (rtb_b_item(b, beam_item, "3008,00C0", &it) ||
            rtb_b_is(b, it, "300C,00D0", field, (long)i + 1, 1) ||
            rtb_b_term(b, it, "300A,00EE", field, c->type, compensator_types, 2, NULL) ||
            rtb_b_text(b, it, "300A,00E5", "SH", field, c->id, 0, RTB_TEXT_CLIP) ||
            rtb_b_text(b, it, "300A,00F9", "LO", field, c->accessory_code, 0, RTB_TEXT_CLIP))
            return -1;
    }
    if (rtb_b_is(b, beam_item, "300A,00ED", "boli", (long)beam->n_boli, 1))
        return -1;
    for (size_t i = 0; i < beam->n_boli; i++) {
        const rtb_rtrecord_accessory *o = &beam->boli[i];
        snprintf(field, sizeof field, "boli[%zu]", i + 1);
        /* The ROI a bolus is modelled by lives in the plan's structure set; a record
         * built from a delivery history that does not name it says 0 (not known). */
        if (rtb_b_item(b, beam_item, "300C,00B0", &it) ||
            rtb_b_is(b, it, "3006,0084", field, o->roi_number == RTB_RTRECORD_NO_INT ? 0 : o->roi_number, 1) ||
            rtb_b_text(b, it, "300A,00DC", "SH", field, o->id, 0, RTB_TEXT_CLIP) ||
            rtb_b_text(b, it, "300A,00F9", "LO", field, o->accessory_code, 0, RTB_TEXT_CLIP))
            return -1;
    }
    if (rtb_b_is(b, beam_item, "300A,00F0", "blocks", (long)beam->n_blocks, 1))
        return -1;
    for (size_t i = 0; i < beam->n_blocks; i++) {
        const rtb_rtrecord_accessory *k = &beam->blocks[i];
        snprintf(field, sizeof field, "blocks[%zu]", i + 1);
        if (rtb_b_item(b, beam_item, "3008,00D0", &it) ||
            rtb_b_text(b, it, "300A,00F5", "SH", field, k->id, 0, RTB_TEXT_CLIP) ||
            rtb_b_text(b, it, "300A,00F9", "LO", field, k->accessory_code, 0, RTB_TEXT_CLIP) ||
            rtb_b_is(b, it, "300C,00E0", field, (long)i + 1, 1) ||
            rtb_b_text(b, it, "300A,00FE", "LO", field, k->name, 1, RTB_TEXT_CLIP))
            return -1;
    }
    return write_applicator(b, beam_item, beam);
}

static int write_beam(rtb_builder *b, rtb_ds *item, const rtb_rtrecord_beam *beam, const char *path)
{
    static const char *const beam_types[] = {"STATIC", "DYNAMIC", NULL};
    static const char *const radiation_types[] = {"PHOTON", "ELECTRON", "NEUTRON", "PROTON", NULL};
    static const char *const fluence_modes[] = {"STANDARD", "NON_STANDARD", NULL};
    static const char *const delivery_types[] = {"TREATMENT", "OPEN_PORTFILM", "TRMT_PORTFILM",
                                                 "CONTINUATION", "SETUP", NULL};
    static const char *const statuses[] = {"NORMAL", "OPERATOR", "MACHINE", "UNKNOWN", NULL};
    static const char *const verifications[] = {"VERIFIED", "VERIFIED_OVR", "NOT_VERIFIED", NULL};
    snprintf(b->path, sizeof b->path, "%s", path);
    if (!beam->control_points || beam->n_control_points == 0)
        return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, "control_points", "are required (at least one)");

    if (beam->fluence_mode && beam->fluence_mode[0]) {
        const char *mode = NULL;
        for (size_t i = 0; fluence_modes[i]; i++)
            if (strcmp(fluence_modes[i], beam->fluence_mode) == 0)
                mode = fluence_modes[i];
        /* The sequence is Type 3: an unknown mode leaves it out. */
        if (mode) {
            if (strcmp(mode, "NON_STANDARD") == 0 && (!beam->fluence_mode_id || !beam->fluence_mode_id[0]))
                return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, "fluence_mode_id",
                                  "is required with fluence_mode NON_STANDARD");
            rtb_ds *fm;
            if (rtb_b_item(b, item, "3002,0050", &fm) ||
                rtb_b_text(b, fm, "3002,0051", "CS", "fluence_mode", mode, 1, RTB_TEXT_STRICT) ||
                (strcmp(mode, "NON_STANDARD") == 0 &&
                 rtb_b_text(b, fm, "3002,0052", "SH", "fluence_mode_id", beam->fluence_mode_id, 1,
                            RTB_TEXT_STRICT)))
                return -1;
        }
    }
    const char *delivery = beam->delivery_type && beam->delivery_type[0] ? beam->delivery_type
                                                                         : "TREATMENT";
    if (rtb_b_is(b, item, "3008,0022", "current_fraction", beam->current_fraction, 1) ||
        rtb_b_term(b, item, "3008,002A", "termination_status", beam->termination_status, statuses, 1,
                   NULL) ||
        rtb_b_text(b, item, "3008,002B", "SH", "termination_code", beam->termination_code, 0,
                   RTB_TEXT_STRICT) ||
        rtb_b_term(b, item, "3008,002C", "verification_status", beam->verification_status,
                   verifications, 2, NULL) ||
        rtb_b_ds(b, item, "3008,0032", "specified_meterset", beam->specified_meterset, 0) ||
        rtb_b_ds(b, item, "3008,0036", "delivered_meterset", beam->delivered_meterset, 0) ||
        rtb_b_ds(b, item, "3008,003B", "delivered_time", beam->delivered_time, 0) ||
        rtb_b_ds(b, item, "300A,00B4", "sad", beam->sad, 0) ||
        rtb_b_text(b, item, "300A,00C2", "LO", "name", beam->name, 0, RTB_TEXT_CLIP) ||
        rtb_b_text(b, item, "300A,00C3", "ST", "description", beam->description, 0, RTB_TEXT_CLIP) ||
        rtb_b_term(b, item, "300A,00C4", "beam_type", beam->beam_type, beam_types, 1, NULL) ||
        rtb_b_term(b, item, "300A,00C6", "radiation_type", beam->radiation_type, radiation_types,
                   1, NULL) ||
        rtb_b_term(b, item, "300A,00CE", "delivery_type", delivery, delivery_types, 2, NULL) ||
        write_accessories(b, item, beam) ||
        rtb_b_is(b, item, "300A,0110", "n_control_points", (long)beam->n_control_points, 1) ||
        rtb_b_is(b, item, "300C,0006", "number", beam->number, 0))
        return -1;

    devices dev;
    if (find_devices(b, beam, &dev) || write_leaf_pairs(b, item, &dev))
        return -1;

    int varies[sizeof kCpAttrs / sizeof kCpAttrs[0]];
    for (size_t i = 0; i < sizeof kCpAttrs / sizeof kCpAttrs[0]; i++)
        varies[i] = attr_varies(beam, &kCpAttrs[i]);
    int energy_changes = energy_varies(beam);
    for (size_t k = 0; k < beam->n_control_points; k++) {
        rtb_ds *cp_item;
        snprintf(b->path, sizeof b->path, "%s.control_points[%zu]", path, k + 1);
        if (rtb_b_item(b, item, "3008,0040", &cp_item) ||
            write_control_point(b, cp_item, beam, k, varies, energy_changes, &dev))
            return -1;
    }
    return 0;
}

int rtb_rtrecord_write_beams(rtb_builder *b, rtb_ds *ds, const rtb_rtrecord_input *in)
{
    snprintf(b->path, sizeof b->path, "%s", "");
    if (!in->beams || in->n_beams == 0)
        return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, "beams", "are required (at least one)");
    for (size_t i = 0; i < in->n_beams; i++) {
        char path[32];
        snprintf(path, sizeof path, "beams[%zu]", i + 1);
        rtb_ds *item;
        if (rtb_b_item(b, ds, "3008,0020", &item) || write_beam(b, item, &in->beams[i], path))
            return -1;
    }
    return 0;
}
