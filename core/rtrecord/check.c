/* rtb_rtrecord_check: an IOD self-check for RT Beams Treatment Records, for
 * records read back from an archive as well as for what the builder makes.
 * It covers what the builder writes (the mandatory modules of A.29 and the
 * parts of the RT Beams Session Record in use), not the whole standard:
 * dciodvfy remains the reference in tests. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef struct {
    char (*problems)[RTB_RTRECORD_PROBLEM_MAX];
    size_t max, count;
    int non_ascii;
} report;

static void problem(report *r, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(report *r, const char *where, const char *fmt, ...)
{
    if (r->count < r->max && r->problems) {
        char text[RTB_RTRECORD_PROBLEM_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        /* Where first, then what; cut to the slot (a path can be long). */
        char *dst = r->problems[r->count];
        size_t len = 0;
        const char *parts[3] = {where, where[0] ? ": " : "", text};
        for (int i = 0; i < 3; i++)
            for (const char *p = parts[i]; *p && len + 1 < RTB_RTRECORD_PROBLEM_MAX; p++)
                dst[len++] = *p;
        dst[len] = '\0';
    }
    r->count++;
}

/* One attribute rule: tag, name for messages, Type (1, 2), allowed terms. */
typedef struct {
    const char *tag, *name;
    int type;
    const char *const *terms;
} rule;

static const char *const kDirections[] = {"CW", "CC", "NONE", NULL};

static void check_rule(report *r, rtb_ds *ds, const char *where, const rule *ru)
{
    rtb_ds_element e = {0};
    rtb_dicom_error derr;
    if (rtb_ds_get(ds, ru->tag, &e, &derr) != 0) {
        problem(r, where, "%s (%s) cannot be read: %s", ru->name, ru->tag, derr.message);
        return;
    }
    if (!e.present)
        problem(r, where, "%s (%s) is missing (Type %d)", ru->name, ru->tag, ru->type);
    else if (ru->type == 1 && ((e.is_sequence && e.count == 0) || (!e.is_sequence && e.length == 0)))
        problem(r, where, "%s (%s) is empty (Type 1)", ru->name, ru->tag);
    else if (ru->terms && e.count > 0) {
        int ok = 0;
        for (size_t i = 0; ru->terms[i] && !ok; i++)
            ok = strcmp(ru->terms[i], e.values[0]) == 0;
        if (!ok)
            problem(r, where, "%s (%s) '%s' is not a defined term", ru->name, ru->tag, e.values[0]);
    }
    rtb_ds_element_clear(&e);
}

static void check_rules(report *r, rtb_ds *ds, const char *where, const rule *rules, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check_rule(r, ds, where, &rules[i]);
}

static size_t items(rtb_ds *ds, const char *tag)
{
    size_t n = 0;
    rtb_dicom_error derr;
    return rtb_ds_item_count(ds, tag, &n, &derr) == 0 ? n : 0;
}

static long integer(rtb_ds *ds, const char *tag)
{
    rtb_ds_element e = {0};
    rtb_dicom_error derr;
    long v = -1;
    if (rtb_ds_get(ds, tag, &e, &derr) == 0 && e.count > 0)
        sscanf(e.values[0], "%ld", &v);
    rtb_ds_element_clear(&e);
    return v;
}

/* VR lengths and character set, over every element at every depth. */
static void check_values(report *r, rtb_ds *ds, const char *where)
{
    static const struct { const char *vr; size_t max; } limits[] = {
        {"AE", 16}, {"CS", 16}, {"SH", 16}, {"LO", 64}, {"UI", 64}, {"DS", 16}, {"IS", 12},
        {"DA", 8}, {"ST", 1024}, {"LT", 10240}, {"PN", 64}, {"TM", 14}};
    size_t n = rtb_ds_count(ds);
    for (size_t i = 0; i < n; i++) {
        rtb_ds_element e = {0};
        rtb_dicom_error derr;
        if (rtb_ds_element_at(ds, i, &e, &derr) != 0)
            continue;
        if (e.is_sequence) {
            for (size_t k = 0; k < e.count; k++) {
                rtb_ds *item;
                if (rtb_ds_item_at(ds, i, k, &item, &derr) == 0)
                    check_values(r, item, where);
            }
        }
        for (size_t v = 0; v < e.count && e.values; v++) {
            for (const unsigned char *p = (const unsigned char *)e.values[v]; *p; p++)
                r->non_ascii |= *p >= 0x80;
            for (size_t k = 0; k < sizeof limits / sizeof limits[0]; k++)
                if (strcmp(limits[k].vr, e.vr) == 0 &&
                    rtb_rtrecord_utf8_chars(e.values[v], strlen(e.values[v])) > limits[k].max)
                    problem(r, where, "(%04X,%04X) %s value '%.*s' is longer than %zu characters", e.group,
                            e.element, e.vr,
                            (int)rtb_rtrecord_utf8_prefix(e.values[v], strlen(e.values[v]), 24),
                            e.values[v], limits[k].max);
        }
        rtb_ds_element_clear(&e);
    }
}

static void check_control_points(report *r, rtb_ds *beam, const char *where)
{
    static const rule every[] = {
        {"300C,00F0", "ReferencedControlPointIndex", 1, NULL},
        {"3008,0024", "TreatmentControlPointDate", 1, NULL},
        {"3008,0025", "TreatmentControlPointTime", 1, NULL},
        {"3008,0042", "SpecifiedMeterset", 2, NULL},
        {"3008,0044", "DeliveredMeterset", 1, NULL},
    };
    static const rule first[] = {
        {"300A,011E", "GantryAngle", 1, NULL},
        {"300A,011F", "GantryRotationDirection", 1, kDirections},
        {"300A,0120", "BeamLimitingDeviceAngle", 1, NULL},
        {"300A,0121", "BeamLimitingDeviceRotationDirection", 1, kDirections},
        {"300A,0122", "PatientSupportAngle", 1, NULL},
        {"300A,0123", "PatientSupportRotationDirection", 1, kDirections},
        {"300A,0125", "TableTopEccentricAngle", 1, NULL},
        {"300A,0126", "TableTopEccentricRotationDirection", 1, kDirections},
        {"300A,011A", "BeamLimitingDevicePositionSequence", 1, NULL},
    };
    static const char *const units[] = {"MV", "MEV", NULL};
    static const rule energy = {"300A,0015", "NominalBeamEnergyUnit", 1, units};
    size_t n = items(beam, "3008,0040");
    for (size_t k = 0; k < n; k++) {
        rtb_ds *cp;
        rtb_dicom_error derr;
        char at[RTB_RTRECORD_PROBLEM_MAX];
        snprintf(at, sizeof at, "%.60s.ControlPointDeliverySequence[%zu]", where, k + 1);
        if (rtb_ds_item(beam, "3008,0040", k, &cp, &derr) != 0)
            continue;
        check_rules(r, cp, at, every, sizeof every / sizeof every[0]);
        if (k == 0)
            check_rules(r, cp, at, first, sizeof first / sizeof first[0]);
        rtb_ds_element e = {0};
        if (rtb_ds_get(cp, "300A,0114", &e, &derr) == 0 && e.present)
            check_rule(r, cp, at, &energy);
        rtb_ds_element_clear(&e);
    }
}

static void check_beams(report *r, rtb_ds *ds)
{
    static const char *const beam_types[] = {"STATIC", "DYNAMIC", NULL};
    static const char *const radiation[] = {"PHOTON", "ELECTRON", "NEUTRON", "PROTON", NULL};
    static const char *const statuses[] = {"NORMAL", "OPERATOR", "MACHINE", "UNKNOWN", NULL};
    static const char *const verified[] = {"VERIFIED", "VERIFIED_OVR", "NOT_VERIFIED", NULL};
    static const char *const delivery[] = {"TREATMENT", "OPEN_PORTFILM", "TRMT_PORTFILM",
                                           "CONTINUATION", "SETUP", NULL};
    static const char *const devices[] = {"X", "Y", "ASYMX", "ASYMY", "MLCX", "MLCY", NULL};
    static const rule beam_rules[] = {
        {"300A,00C4", "BeamType", 1, beam_types},
        {"300A,00C6", "RadiationType", 1, radiation},
        {"300A,00D0", "NumberOfWedges", 1, NULL},
        {"300A,00E0", "NumberOfCompensators", 1, NULL},
        {"300A,00ED", "NumberOfBoli", 1, NULL},
        {"300A,00F0", "NumberOfBlocks", 1, NULL},
        {"3008,00A0", "BeamLimitingDeviceLeafPairsSequence", 1, NULL},
        {"3008,0022", "CurrentFractionNumber", 2, NULL},
        {"300A,00CE", "TreatmentDeliveryType", 2, delivery},
        {"3008,002A", "TreatmentTerminationStatus", 1, statuses},
        {"3008,002C", "TreatmentVerificationStatus", 2, verified},
        {"300A,0110", "NumberOfControlPoints", 1, NULL},
        {"3008,0040", "ControlPointDeliverySequence", 1, NULL},
    };
    static const rule device_rules[] = {
        {"300A,00B8", "RTBeamLimitingDeviceType", 1, devices},
        {"300A,00BC", "NumberOfLeafJawPairs", 1, NULL},
    };
    size_t n = items(ds, "3008,0020");
    for (size_t i = 0; i < n; i++) {
        rtb_ds *beam;
        rtb_dicom_error derr;
        char at[RTB_RTRECORD_PROBLEM_MAX / 2];
        snprintf(at, sizeof at, "TreatmentSessionBeamSequence[%zu]", i + 1);
        if (rtb_ds_item(ds, "3008,0020", i, &beam, &derr) != 0)
            continue;
        check_rules(r, beam, at, beam_rules, sizeof beam_rules / sizeof beam_rules[0]);
        long declared = integer(beam, "300A,0110");
        size_t cps = items(beam, "3008,0040");
        if (declared >= 0 && (size_t)declared != cps)
            problem(r, at, "NumberOfControlPoints is %ld but ControlPointDeliverySequence has %zu items",
                    declared, cps);
        /* Each accessory count must match its recorded sequence, whose items name the
         * accessory (and a compensator its type, Type 2). */
        static const rule wedge_item[] = {{"300A,00D2", "WedgeNumber", 1, NULL}};
        static const rule compensator_item[] = {{"300C,00D0", "ReferencedCompensatorNumber", 1, NULL},
                                                {"300A,00EE", "CompensatorType", 2, NULL}};
        static const rule bolus_item[] = {{"3006,0084", "ReferencedROINumber", 1, NULL}};
        static const rule block_item[] = {{"300C,00E0", "ReferencedBlockNumber", 1, NULL}};
        static const struct {
            const char *count, *name, *sequence, *sequence_name;
            const rule *item;
            size_t n_item;
        } accessories[] = {
            {"300A,00D0", "NumberOfWedges", "3008,00B0", "RecordedWedgeSequence", wedge_item, 1},
            {"300A,00E0", "NumberOfCompensators", "3008,00C0", "RecordedCompensatorSequence", compensator_item, 2},
            {"300A,00ED", "NumberOfBoli", "300C,00B0", "ReferencedBolusSequence", bolus_item, 1},
            {"300A,00F0", "NumberOfBlocks", "3008,00D0", "RecordedBlockSequence", block_item, 1},
        };
        for (size_t a = 0; a < sizeof accessories / sizeof accessories[0]; a++) {
            long count = integer(beam, accessories[a].count);
            size_t listed = items(beam, accessories[a].sequence);
            if (count >= 0 && (size_t)count != listed)
                problem(r, at, "%s is %ld but its recorded sequence has %zu items", accessories[a].name,
                        count, listed);
            for (size_t k = 0; k < listed; k++) {
                rtb_ds *item;
                char iat[RTB_RTRECORD_PROBLEM_MAX];
                snprintf(iat, sizeof iat, "%.60s.%s[%zu]", at, accessories[a].sequence_name, k + 1);
                if (rtb_ds_item(beam, accessories[a].sequence, k, &item, &derr) == 0)
                    check_rules(r, item, iat, accessories[a].item, accessories[a].n_item);
            }
        }
        for (size_t d = 0; d < items(beam, "3008,00A0"); d++) {
            rtb_ds *dev;
            char dat[RTB_RTRECORD_PROBLEM_MAX];
            snprintf(dat, sizeof dat, "%.60s.BeamLimitingDeviceLeafPairsSequence[%zu]", at, d + 1);
            if (rtb_ds_item(beam, "3008,00A0", d, &dev, &derr) == 0)
                check_rules(r, dev, dat, device_rules, 2);
        }
        check_control_points(r, beam, at);
    }
}

int rtb_rtrecord_check(rtb_ds *ds, char (*problems)[RTB_RTRECORD_PROBLEM_MAX], size_t max,
                       rtb_rtrecord_error *err)
{
    static const char *const record_class[] = {RTB_RTRECORD_SOP_CLASS, NULL};
    static const char *const modality[] = {"RTRECORD", NULL};
    static const char *const sexes[] = {"M", "F", "O", NULL};
    static const char *const units[] = {"MU", "MINUTE", NULL};
    static const rule top[] = {
        {"0008,0016", "SOPClassUID", 1, record_class},
        {"0008,0018", "SOPInstanceUID", 1, NULL},
        {"0008,0020", "StudyDate", 2, NULL},
        {"0008,0030", "StudyTime", 2, NULL},
        {"0008,0050", "AccessionNumber", 2, NULL},
        {"0008,0060", "Modality", 1, modality},
        {"0008,0070", "Manufacturer", 2, NULL},
        {"0008,0090", "ReferringPhysicianName", 2, NULL},
        {"0008,1070", "OperatorsName", 2, NULL},
        {"0010,0010", "PatientName", 2, NULL},
        {"0010,0020", "PatientID", 2, NULL},
        {"0010,0030", "PatientBirthDate", 2, NULL},
        {"0010,0040", "PatientSex", 2, sexes},
        {"0020,000D", "StudyInstanceUID", 1, NULL},
        {"0020,000E", "SeriesInstanceUID", 1, NULL},
        {"0020,0010", "StudyID", 2, NULL},
        {"0020,0011", "SeriesNumber", 2, NULL},
        {"0020,0013", "InstanceNumber", 1, NULL},
        {"3008,0250", "TreatmentDate", 2, NULL},
        {"3008,0251", "TreatmentTime", 2, NULL},
        {"300C,0002", "ReferencedRTPlanSequence", 2, NULL},
        {"300A,0206", "TreatmentMachineSequence", 1, NULL},
        {"300A,0078", "NumberOfFractionsPlanned", 2, NULL},
        {"300A,00B3", "PrimaryDosimeterUnit", 1, units},
        {"3008,0020", "TreatmentSessionBeamSequence", 1, NULL},
    };
    static const rule machine[] = {
        {"300A,00B2", "TreatmentMachineName", 2, NULL},
        {"0008,0070", "Manufacturer", 2, NULL},
        {"0008,0080", "InstitutionName", 2, NULL},
        {"0008,1090", "ManufacturerModelName", 2, NULL},
        {"0018,1000", "DeviceSerialNumber", 2, NULL},
    };
    static const rule plan_ref[] = {
        {"0008,1150", "ReferencedSOPClassUID", 1, NULL},
        {"0008,1155", "ReferencedSOPInstanceUID", 1, NULL},
    };
    if (err)
        memset(err, 0, sizeof *err);
    if (!ds) {
        if (err) {
            err->code = RTB_RTRECORD_E_MISSING;
            snprintf(err->message, sizeof err->message, "no dataset to check");
        }
        return -1;
    }
    report r = {problems, max, 0, 0};
    check_rules(&r, ds, "", top, sizeof top / sizeof top[0]);
    rtb_ds *item;
    rtb_dicom_error derr;
    if (items(ds, "300A,0206") != 1)
        problem(&r, "", "TreatmentMachineSequence must have exactly one item");
    else if (rtb_ds_item(ds, "300A,0206", 0, &item, &derr) == 0)
        check_rules(&r, item, "TreatmentMachineSequence[1]", machine, 5);
    if (items(ds, "300C,0002") > 1)
        problem(&r, "", "ReferencedRTPlanSequence has more than one item");
    else if (items(ds, "300C,0002") == 1 && rtb_ds_item(ds, "300C,0002", 0, &item, &derr) == 0)
        check_rules(&r, item, "ReferencedRTPlanSequence[1]", plan_ref, 2);
    check_beams(&r, ds);
    check_values(&r, ds, "");
    rtb_ds_element e = {0};
    if (r.non_ascii && rtb_ds_get(ds, "0008,0005", &e, &derr) == 0 && !e.present)
        problem(&r, "", "text is not ASCII but SpecificCharacterSet (0008,0005) is missing");
    rtb_ds_element_clear(&e);
    return (int)r.count;
}
