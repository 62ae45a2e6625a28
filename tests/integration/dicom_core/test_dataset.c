/* Datasets, UIDs and digests: no network needed. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dicom/dicom.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static rtb_dicom_error err;
static char tmpdir[256];

#define OK(call) do { if ((call) != 0) fail_msg("%s: %s (%s)", #call, err.message, rtb_dicom_error_kind_name(err.kind)); } while (0)

static void set1(rtb_ds *ds, const char *kw, const char *v)
{
    OK(rtb_ds_set(ds, kw, &v, 1, &err));
}

static rtb_ds *make_ct(const char *sop_uid)
{
    rtb_ds *ds;
    OK(rtb_ds_new(&ds, &err));
    set1(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.2");
    set1(ds, "SOPInstanceUID", sop_uid);
    set1(ds, "PatientName", "TEST^DIGEST");
    set1(ds, "PatientID", "RTB900");
    set1(ds, "Modality", "CT");
    set1(ds, "Rows", "4");
    set1(ds, "Columns", "4");
    set1(ds, "BitsAllocated", "16");
    set1(ds, "BitsStored", "12");
    set1(ds, "HighBit", "11");
    set1(ds, "PixelRepresentation", "0");
    set1(ds, "SamplesPerPixel", "1");
    set1(ds, "PhotometricInterpretation", "MONOCHROME2");
    const char *pos[] = {"1.5", "-2", "3"};
    OK(rtb_ds_set(ds, "ImagePositionPatient", pos, 3, &err));
    rtb_ds *item;
    OK(rtb_ds_item_append(ds, "ReferencedImageSequence", &item, &err));
    set1(item, "ReferencedSOPClassUID", "1.2.840.10008.5.1.4.1.1.2");
    set1(item, "ReferencedSOPInstanceUID", "1.2.3.4");
    unsigned short px[16];
    for (int i = 0; i < 16; i++) px[i] = (unsigned short)(i * 100);
    OK(rtb_ds_set_bytes(ds, "PixelData", px, sizeof px, &err));
    return ds;
}

static char *path_in_tmp(const char *name)
{
    static char buf[4][512];
    static int n;
    char *b = buf[n++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", tmpdir, name);
    return b;
}

static void uid_from_names_is_stable_valid_and_unambiguous(void **state)
{
    const char *a[] = {"mosaiq", "site1", "dhs42"};
    const char *b[] = {"mosaiq", "site1", "dhs42"};
    const char *c[] = {"mosaiqsite1", "dhs42"};
    const char *d[] = {"mosaiq", "site1dhs42"};
    char ua[RTB_DICOM_UID_MAX], ub[RTB_DICOM_UID_MAX], uc[RTB_DICOM_UID_MAX], ud[RTB_DICOM_UID_MAX];
    OK(rtb_dicom_uid_from_names(a, 3, ua, &err));
    OK(rtb_dicom_uid_from_names(b, 3, ub, &err));
    OK(rtb_dicom_uid_from_names(c, 2, uc, &err));
    OK(rtb_dicom_uid_from_names(d, 2, ud, &err));
    assert_string_equal(ua, ub);
    assert_string_not_equal(ua, uc);
    assert_string_not_equal(uc, ud);
    assert_true(strncmp(ua, "2.25.", 5) == 0);
    assert_true(strlen(ua) <= 64);
    assert_true(rtb_dicom_uid_valid(ua));
    assert_int_equal(strspn(ua, "0123456789."), strlen(ua));
    /* Pinned: a change here would change every UID already in the archives. */
    const char *pin[] = {"rtbackup", "pin"};
    char up[RTB_DICOM_UID_MAX];
    OK(rtb_dicom_uid_from_names(pin, 2, up, &err));
    assert_string_equal(up, "2.25.18927422194303018839020655102895689159");
}

static void random_uids_are_valid_and_distinct(void **state)
{
    char u1[RTB_DICOM_UID_MAX], u2[RTB_DICOM_UID_MAX];
    OK(rtb_dicom_uid_random(u1, &err));
    OK(rtb_dicom_uid_random(u2, &err));
    assert_string_not_equal(u1, u2);
    assert_true(rtb_dicom_uid_valid(u1));
    assert_false(rtb_dicom_uid_valid("1.02.3"));
    assert_false(rtb_dicom_uid_valid("1..3"));
    assert_false(rtb_dicom_uid_valid("../etc"));
}

static void unknown_keyword_is_an_invalid_error_naming_it(void **state)
{
    rtb_ds *ds;
    OK(rtb_ds_new(&ds, &err));
    const char *v = "x";
    assert_int_equal(rtb_ds_set(ds, "PatientNmae", &v, 1, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
    assert_non_null(strstr(err.message, "PatientNmae"));
    rtb_ds_element e = {0};
    assert_int_equal(rtb_ds_get(ds, "NoSuchKeyword", &e, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
    assert_string_equal(rtb_dicom_error_kind_name(err.kind), "invalid");
    rtb_ds_free(ds);
}

static void values_round_trip_as_strings(void **state)
{
    rtb_ds *ds = make_ct("1.2.826.0.1.3680043.2.1");
    rtb_ds_element e = {0};
    OK(rtb_ds_get(ds, "ImagePositionPatient", &e, &err));
    assert_true(e.present);
    assert_string_equal(e.vr, "DS");
    assert_int_equal(e.count, 3);
    assert_string_equal(e.values[0], "1.5");
    assert_string_equal(e.values[2], "3");
    rtb_ds_element_clear(&e);
    OK(rtb_ds_get(ds, "Rows", &e, &err));
    assert_string_equal(e.vr, "US");
    assert_string_equal(e.values[0], "4");
    rtb_ds_element_clear(&e);
    OK(rtb_ds_get(ds, "StudyDate", &e, &err));
    assert_false(e.present);
    rtb_ds_element_clear(&e);
    const char *bad = "four";
    assert_int_equal(rtb_ds_set(ds, "Rows", &bad, 1, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
    OK(rtb_ds_get(ds, "Rows", &e, &err)); /* unchanged by the failed set */
    assert_string_equal(e.values[0], "4");
    rtb_ds_element_clear(&e);
    OK(rtb_ds_get(ds, "0010,0010", &e, &err));
    assert_string_equal(e.values[0], "TEST^DIGEST");
    assert_string_equal(e.keyword, "PatientName");
    rtb_ds_element_clear(&e);
    rtb_ds_free(ds);
}

static void sequences_and_iteration_follow_tag_order(void **state)
{
    rtb_ds *ds = make_ct("1.2.826.0.1.3680043.2.2");
    size_t n;
    OK(rtb_ds_item_count(ds, "ReferencedImageSequence", &n, &err));
    assert_int_equal(n, 1);
    rtb_ds *item, *again;
    OK(rtb_ds_item(ds, "ReferencedImageSequence", 0, &item, &err));
    OK(rtb_ds_item(ds, "ReferencedImageSequence", 0, &again, &err));
    assert_ptr_equal(item, again); /* borrowed handles are stable */
    rtb_ds_element e = {0};
    OK(rtb_ds_get(item, "ReferencedSOPInstanceUID", &e, &err));
    assert_string_equal(e.values[0], "1.2.3.4");
    rtb_ds_element_clear(&e);

    unsigned prev = 0;
    int saw_sq = 0, saw_px = 0;
    for (size_t i = 0; i < rtb_ds_count(ds); i++) {
        OK(rtb_ds_element_at(ds, i, &e, &err));
        unsigned tag = (e.group << 16) | e.element;
        assert_true(tag > prev);
        prev = tag;
        if (e.is_sequence) {
            saw_sq = 1;
            assert_int_equal(e.count, 1);
            rtb_ds *it;
            OK(rtb_ds_item_at(ds, i, 0, &it, &err));
            assert_ptr_equal(it, item);
        }
        if (strcmp(e.keyword, "PixelData") == 0) {
            saw_px = 1;
            assert_true(e.is_binary);
            assert_int_equal(e.length, 32);
        }
        rtb_ds_element_clear(&e);
    }
    assert_true(saw_sq && saw_px);
    rtb_ds_free(ds);
}

static int tmp_files_left(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void digest_is_the_same_for_implicit_and_explicit_le_and_changes_with_a_pixel(void **state)
{
    rtb_ds *ds = make_ct("1.2.826.0.1.3680043.2.3");
    rtb_ds_save_options imp = {RTB_DS_XFER_IMPLICIT_LE}, exp = {RTB_DS_XFER_EXPLICIT_LE};
    const char *pi = path_in_tmp("implicit.dcm"), *pe = path_in_tmp("explicit.dcm");
    OK(rtb_ds_save(ds, pi, &imp, &err));
    OK(rtb_ds_save(ds, pe, &exp, &err));
    assert_int_equal(tmp_files_left(), 0); /* the temporary files were renamed */

    rtb_ds *a, *b;
    OK(rtb_ds_read(pi, &a, &err));
    OK(rtb_ds_read(pe, &b, &err));
    char da[65], db[65], dmem[65];
    OK(rtb_ds_digest(a, da, &err));
    OK(rtb_ds_digest(b, db, &err));
    OK(rtb_ds_digest(ds, dmem, &err));
    assert_int_equal(strlen(da), 64);
    assert_string_equal(da, db);
    assert_string_equal(da, dmem);

    /* The two files really are encoded differently. */
    FILE *fa = fopen(pi, "rb"), *fb = fopen(pe, "rb");
    fseek(fa, 0, SEEK_END);
    fseek(fb, 0, SEEK_END);
    assert_int_not_equal(ftell(fa), ftell(fb));
    fclose(fa);
    fclose(fb);

    void *px;
    size_t len;
    OK(rtb_ds_get_bytes(b, "PixelData", &px, &len, &err));
    assert_int_equal(len, 32);
    ((unsigned char *)px)[6] ^= 1;
    OK(rtb_ds_set_bytes(b, "PixelData", px, len, &err));
    free(px);
    OK(rtb_ds_digest(b, db, &err));
    assert_string_not_equal(da, db);
    rtb_ds_free(a);
    rtb_ds_free(b);
    rtb_ds_free(ds);
}

static void reading_a_non_dicom_file_is_an_io_error(void **state)
{
    const char *p = path_in_tmp("notes.txt");
    FILE *f = fopen(p, "w");
    fputs("this is not a DICOM file, just some text that is long enough to parse\n", f);
    fclose(f);
    rtb_ds *ds = NULL;
    assert_int_equal(rtb_ds_read(p, &ds, &err), -1);
    assert_null(ds);
    assert_int_equal(err.kind, RTB_DICOM_E_IO);
    assert_int_equal(rtb_ds_read(path_in_tmp("missing.dcm"), &ds, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_IO);
}

static void dump_is_limited_to_the_requested_lines(void **state)
{
    rtb_ds *ds = make_ct("1.2.826.0.1.3680043.2.4");
    char *text;
    OK(rtb_ds_dump(ds, 3, &text, &err));
    int lines = 0;
    for (char *p = text; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 4); /* 3 + "... (n more lines)" */
    assert_non_null(strstr(text, "more lines"));
    free(text);
    rtb_ds_free(ds);
}

static void a_cloned_item_is_an_independent_dataset(void **state)
{
    rtb_ds *ds = make_ct("1.2.826.0.1.3680043.2.5");
    rtb_ds *item, *copy;
    OK(rtb_ds_item(ds, "ReferencedImageSequence", 0, &item, &err));
    OK(rtb_ds_clone(item, &copy, &err));
    rtb_ds_free(item); /* borrowed: ignored */
    rtb_ds_free(ds);
    rtb_ds_element e = {0};
    OK(rtb_ds_get(copy, "ReferencedSOPInstanceUID", &e, &err));
    assert_string_equal(e.values[0], "1.2.3.4");
    rtb_ds_element_clear(&e);
    rtb_ds_free(copy);
}

static int setup(void **state)
{
    if (rtb_dicom_init(&err) != 0) {
        fprintf(stderr, "init: %s\n", err.message);
        return -1;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s/rtb-dataset-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uid_from_names_is_stable_valid_and_unambiguous),
        cmocka_unit_test(random_uids_are_valid_and_distinct),
        cmocka_unit_test(unknown_keyword_is_an_invalid_error_naming_it),
        cmocka_unit_test(values_round_trip_as_strings),
        cmocka_unit_test(sequences_and_iteration_follow_tag_order),
        cmocka_unit_test(digest_is_the_same_for_implicit_and_explicit_le_and_changes_with_a_pixel),
        cmocka_unit_test(reading_a_non_dicom_file_is_an_io_error),
        cmocka_unit_test(dump_is_limited_to_the_requested_lines),
        cmocka_unit_test(a_cloned_item_is_an_independent_dataset),
    };
    return cmocka_run_group_tests_name("dicom_dataset", tests, setup, teardown);
}
