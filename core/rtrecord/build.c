/* rtb_rtrecord_build: the record's top-level modules (Patient, General Study,
 * RT Series, General Equipment, SOP Common, RT General Treatment Record, RT
 * Treatment Machine Record, the RT Beams Session Record header, the site's
 * private block); the beams are written by session.c. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define RT_PLAN_SOP_CLASS "1.2.840.10008.5.1.4.1.1.481.5"

void rtb_rtrecord_input_init(rtb_rtrecord_input *in)
{
    memset(in, 0, sizeof *in);
    in->instance_number = RTB_RTRECORD_NO_INT;
    in->series.number = RTB_RTRECORD_NO_INT;
    in->fractions_planned = RTB_RTRECORD_NO_INT;
    in->fraction_group = RTB_RTRECORD_NO_INT;
}

void rtb_rtrecord_beam_init(rtb_rtrecord_beam *beam)
{
    memset(beam, 0, sizeof *beam);
    beam->number = beam->current_fraction = beam->n_leaf_pairs = RTB_RTRECORD_NO_INT;
    beam->specified_meterset = beam->delivered_meterset = RTB_RTRECORD_NONE;
    beam->delivered_time = beam->sad = RTB_RTRECORD_NONE;
}

void rtb_rtrecord_control_point_init(rtb_rtrecord_control_point *cp)
{
    memset(cp, 0, sizeof *cp);
    cp->index = RTB_RTRECORD_NO_INT;
    double *numbers[] = {&cp->specified_meterset, &cp->delivered_meterset, &cp->dose_rate_set,
                         &cp->dose_rate_delivered, &cp->energy, &cp->gantry_angle,
                         &cp->collimator_angle, &cp->couch_angle,
                         &cp->table_top_eccentric_distance, &cp->table_top_eccentric_angle,
                         &cp->table_top_vertical, &cp->table_top_longitudinal,
                         &cp->table_top_lateral, &cp->table_top_pitch_angle,
                         &cp->table_top_roll_angle, &cp->jaw_x[0], &cp->jaw_x[1], &cp->jaw_y[0],
                         &cp->jaw_y[1]};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
        *numbers[i] = RTB_RTRECORD_NONE;
}

static void set_path(rtb_builder *b, const char *path)
{
    snprintf(b->path, sizeof b->path, "%s", path);
}

/* Patient, General Study, RT Series, General Equipment. */
static int write_entities(rtb_builder *b, rtb_ds *ds, const rtb_rtrecord_input *in)
{
    static const char *const sexes[] = {"M", "F", "O", NULL};
    set_path(b, "study");
    if (rtb_b_datetime(b, ds, "0008,0020", "0008,0030", "datetime", in->study.datetime, 2) ||
        rtb_b_text(b, ds, "0008,0050", "SH", "accession_number", in->study.accession_number, 1,
                   RTB_TEXT_STRICT))
        return -1;
    set_path(b, "");
    if (rtb_b_text(b, ds, "0008,0060", "CS", "modality", "RTRECORD", 1, RTB_TEXT_STRICT))
        return -1;
    set_path(b, "equipment");
    if (rtb_b_text(b, ds, "0008,0070", "LO", "manufacturer", in->equipment.manufacturer, 1,
                   RTB_TEXT_CLIP) ||
        rtb_b_text(b, ds, "0008,0080", "LO", "institution_name", in->equipment.institution_name, 0,
                   RTB_TEXT_CLIP))
        return -1;
    set_path(b, "study");
    if (rtb_b_name(b, ds, "0008,0090", "referring_physician", &in->study.referring_physician, 1) ||
        rtb_b_text(b, ds, "0008,1030", "LO", "description", in->study.description, 0,
                   RTB_TEXT_CLIP))
        return -1;
    set_path(b, "series");
    if (rtb_b_text(b, ds, "0008,103E", "LO", "description", in->series.description, 0,
                   RTB_TEXT_CLIP) ||
        rtb_b_datetime(b, ds, "0008,0021", "0008,0031", "datetime", in->series.datetime, 3))
        return -1;
    set_path(b, "equipment");
    if (rtb_b_text(b, ds, "0008,1040", "LO", "department_name", in->equipment.department_name, 0,
                   RTB_TEXT_CLIP))
        return -1;
    set_path(b, "series");
    if (rtb_b_name(b, ds, "0008,1070", "operator_name", &in->series.operator_name, 1))
        return -1;
    set_path(b, "equipment");
    if (rtb_b_text(b, ds, "0008,1090", "LO", "model_name", in->equipment.model_name, 0,
                   RTB_TEXT_CLIP))
        return -1;
    set_path(b, "patient");
    if (rtb_b_name(b, ds, "0010,0010", "name", &in->patient.name, 1) ||
        rtb_b_text(b, ds, "0010,0020", "LO", "id", in->patient.id, 1, RTB_TEXT_STRICT) ||
        rtb_b_datetime(b, ds, "0010,0030", NULL, "birth_date", in->patient.birth_date, 2) ||
        rtb_b_term(b, ds, "0010,0040", "sex", in->patient.sex, sexes, 2, NULL))
        return -1;
    set_path(b, "equipment");
    if (rtb_b_text(b, ds, "0018,1000", "LO", "serial_number", in->equipment.serial_number, 0,
                   RTB_TEXT_STRICT) ||
        rtb_b_text(b, ds, "0018,1020", "LO", "software_versions", in->equipment.software_versions,
                   0, RTB_TEXT_CLIP))
        return -1;
    set_path(b, "study");
    if (rtb_b_text1(b, ds, "0020,000D", "UI", "instance_uid", in->study.instance_uid))
        return -1;
    set_path(b, "series");
    if (rtb_b_text1(b, ds, "0020,000E", "UI", "instance_uid", in->series.instance_uid))
        return -1;
    if (in->study.instance_uid && in->series.instance_uid &&
        strcmp(in->study.instance_uid, in->series.instance_uid) == 0)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, "instance_uid", "equals the study's UID");
    set_path(b, "study");
    if (rtb_b_text(b, ds, "0020,0010", "SH", "id", in->study.id, 1, RTB_TEXT_STRICT))
        return -1;
    set_path(b, "series");
    return rtb_b_is(b, ds, "0020,0011", "number", in->series.number, 1);
}

/* SOP Common, RT General Treatment Record, RT Treatment Machine Record. */
static int write_record(rtb_builder *b, rtb_ds *ds, const rtb_rtrecord_input *in)
{
    set_path(b, "");
    if (rtb_b_datetime(b, ds, "0008,0012", "0008,0013", "creation_datetime",
                       in->creation_datetime, 3) ||
        rtb_b_text(b, ds, "0008,0016", "UI", "sop_class_uid", RTB_RTRECORD_SOP_CLASS, 1,
                   RTB_TEXT_STRICT) ||
        rtb_b_text1(b, ds, "0008,0018", "UI", "sop_instance_uid", in->sop_instance_uid) ||
        rtb_b_is(b, ds, "0020,0013", "instance_number",
                 in->instance_number == RTB_RTRECORD_NO_INT ? 1 : in->instance_number, 1) ||
        rtb_b_datetime(b, ds, "3008,0250", "3008,0251", "treatment_datetime",
                       in->treatment_datetime, 2))
        return -1;

    rtb_ds *item;
    if (rtb_b_item(b, ds, "300A,0206", &item))
        return -1;
    set_path(b, "machine");
    if (rtb_b_text(b, item, "0008,0070", "LO", "manufacturer", in->machine.manufacturer, 1,
                   RTB_TEXT_CLIP) ||
        rtb_b_text(b, item, "0008,0080", "LO", "institution_name", in->machine.institution_name,
                   1, RTB_TEXT_CLIP) ||
        rtb_b_text(b, item, "0008,1040", "LO", "department_name", in->machine.department_name, 0,
                   RTB_TEXT_CLIP) ||
        rtb_b_text(b, item, "0008,1090", "LO", "model_name", in->machine.model_name, 1,
                   RTB_TEXT_CLIP) ||
        rtb_b_text(b, item, "0018,1000", "LO", "serial_number", in->machine.serial_number, 1,
                   RTB_TEXT_STRICT) ||
        rtb_b_text(b, item, "300A,00B2", "SH", "name", in->machine.name, 1, RTB_TEXT_STRICT))
        return -1;

    set_path(b, "");
    if (!in->plan_uid || !in->plan_uid[0])
        return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, "plan_uid", "is required");
    if (rtb_b_item(b, ds, "300C,0002", &item) ||
        rtb_b_text(b, item, "0008,1150", "UI", "plan_sop_class_uid", RT_PLAN_SOP_CLASS, 1,
                   RTB_TEXT_STRICT) ||
        rtb_b_text(b, item, "0008,1155", "UI", "plan_uid", in->plan_uid, 1, RTB_TEXT_STRICT))
        return -1;
    for (size_t i = 0; i < in->n_referenced_records; i++) {
        char field[48];
        snprintf(field, sizeof field, "referenced_records[%zu]", i + 1);
        if (rtb_b_item(b, ds, "3008,0030", &item) ||
            rtb_b_text(b, item, "0008,1150", "UI", field, RTB_RTRECORD_SOP_CLASS, 1,
                       RTB_TEXT_STRICT) ||
            rtb_b_text1(b, item, "0008,1155", "UI", field, in->referenced_records[i]))
            return -1;
    }
    return 0;
}

static int write_session_header(rtb_builder *b, rtb_ds *ds, const rtb_rtrecord_input *in)
{
    /* NP (number of particles) is for ion records only. */
    static const char *const units[] = {"MU", "MINUTE", NULL};
    set_path(b, "");
    if (rtb_b_is(b, ds, "300A,0078", "fractions_planned", in->fractions_planned, 1) ||
        rtb_b_term(b, ds, "300A,00B3", "primary_dosimeter_unit", in->primary_dosimeter_unit,
                   units, 1, NULL) ||
        rtb_b_is(b, ds, "300C,0022", "fraction_group", in->fraction_group, 0))
        return -1;
    return 0;
}

static int write_private(rtb_builder *b, rtb_ds *ds, const rtb_rtrecord_private *p)
{
    static const char *const vrs[] = {"LO", "LT", "SH", "ST", "UT", "IS", "DS", NULL};
    set_path(b, "private_block");
    if (!p->creator || !p->creator[0])
        return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, "creator", "is required");
    if (!(p->group & 1) || p->group < 0x0009 || p->group > 0xFFFF)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, "group", "0x%04X is not a private (odd) group",
                          p->group);
    unsigned block = p->block ? p->block : 0x10;
    if (block < 0x10 || block > 0xFF)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, "block", "0x%X is not in 0x10..0xFF", block);
    char tag[16];
    snprintf(tag, sizeof tag, "%04X,%04X", p->group, block);
    if (rtb_b_text(b, ds, tag, "LO", "creator", p->creator, 1, RTB_TEXT_STRICT))
        return -1;
    for (size_t i = 0; i < p->n_elements; i++) {
        const rtb_rtrecord_private_element *e = &p->elements[i];
        char field[48];
        snprintf(field, sizeof field, "elements[%zu]", i + 1);
        const char *vr = NULL;
        for (size_t k = 0; vrs[k] && !vr; k++)
            if (e->vr && strcmp(e->vr, vrs[k]) == 0)
                vr = vrs[k];
        if (!vr)
            return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "VR '%s' is not one of %s",
                              e->vr ? e->vr : "(none)", "LO, LT, SH, ST, UT, IS, DS");
        if (e->element > 0xFF)
            return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "element 0x%X is not in 0x00..0xFF",
                              e->element);
        snprintf(tag, sizeof tag, "%04X,%04X", p->group, (block << 8) | e->element);
        /* Site notes are free text: cut to the VR rather than lose the record. */
        if (rtb_b_text(b, ds, tag, vr, field, e->value, 1, RTB_TEXT_CLIP))
            return -1;
    }
    return 0;
}

int rtb_rtrecord_build(const rtb_rtrecord_input *in, rtb_ds **out, rtb_rtrecord_error *err,
                       rtb_rtrecord_notes *notes)
{
    rtb_rtrecord_error scratch;
    if (!err)
        err = &scratch;
    memset(err, 0, sizeof *err);
    if (notes)
        notes->n = notes->more = 0;
    *out = NULL;
    rtb_builder b = {.err = err, .notes = notes};
    if (!in) {
        return rtb_b_fail(&b, RTB_RTRECORD_E_MISSING, "input", "is required");
    }
    rtb_dicom_error derr;
    rtb_ds *ds;
    if (rtb_ds_new(&ds, &derr) != 0)
        return rtb_b_dicom_fail(&b, "dataset", &derr);
    int rc = write_entities(&b, ds, in);
    if (rc == 0)
        rc = write_record(&b, ds, in);
    if (rc == 0)
        rc = write_session_header(&b, ds, in);
    if (rc == 0)
        rc = rtb_rtrecord_write_beams(&b, ds, in);
    if (rc == 0 && in->private_block)
        rc = write_private(&b, ds, in->private_block);
    if (rc == 0 && b.non_ascii) {
        /* Only now do we know whether any text needed more than ASCII. */
        set_path(&b, "");
        rc = rtb_b_text(&b, ds, "0008,0005", "CS", "specific_character_set", "ISO_IR 192", 1,
                        RTB_TEXT_STRICT);
    }
    if (rc != 0) {
        rtb_ds_free(ds);
        return -1;
    }
    *out = ds;
    return 0;
}
