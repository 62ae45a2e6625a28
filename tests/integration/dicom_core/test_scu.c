/* SCU operations against the testbed's real peers: Orthanc (main, staging),
 * dcmqrscp (ARIA) and storescp. Tests run in order: the move fills Orthanc main,
 * the get then reads back what the move put there. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testbed_env.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static rtb_dicom_error err;
static rtb_dicom_peer aria, orthanc_main, staging, storescp;

#define OK(call) do { if ((call) != 0) fail_msg("%s: [%s] %s (peer %s)", #call, rtb_dicom_error_kind_name(err.kind), err.message, err.peer); } while (0)

/* ---- helpers ------------------------------------------------------------------ */

/* An identifier from "Keyword=value" strings, NULL-terminated. */
static rtb_ds *query(const char *first, ...)
{
    rtb_ds *ds;
    OK(rtb_ds_new(&ds, &err));
    va_list ap;
    va_start(ap, first);
    for (const char *kv = first; kv; kv = va_arg(ap, const char *)) {
        char key[64];
        const char *eq = strchr(kv, '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
        const char *value = eq + 1;
        OK(rtb_ds_set(ds, key, &value, 1, &err));
    }
    va_end(ap);
    return ds;
}

/* Collects one keyword's first value from every match. */
typedef struct {
    const char *keyword;
    char values[256][RTB_DICOM_UID_MAX];
    size_t n;
    int stop_after;
} collector;

static int collect(void *ud, rtb_ds *match)
{
    collector *c = ud;
    rtb_ds_element e = {0};
    rtb_dicom_error local;
    if (rtb_ds_get(match, c->keyword, &e, &local) == 0 && e.count > 0 && c->n < 256)
        snprintf(c->values[c->n++], RTB_DICOM_UID_MAX, "%s", e.values[0]);
    rtb_ds_element_clear(&e);
    return c->stop_after && (int)c->n >= c->stop_after;
}

static int contains(const collector *c, const char *v)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->values[i], v) == 0) return 1;
    return 0;
}

static void find_all(const rtb_dicom_peer *peer, rtb_dicom_model model, rtb_dicom_level level,
                     rtb_ds *q, collector *c)
{
    rtb_dicom_find_result r;
    OK(rtb_dicom_find(peer, model, level, q, collect, c, &r, &err));
    assert_int_equal(r.matches, c->n);
}

static const char *study_of(const char *patient_id)
{
    static collector c;
    memset(&c, 0, sizeof c);
    c.keyword = "StudyInstanceUID";
    char pid[64];
    snprintf(pid, sizeof pid, "PatientID=%s", patient_id);
    rtb_ds *q = query(pid, "StudyInstanceUID=", NULL);
    find_all(&aria, RTB_QR_STUDY_ROOT, RTB_QR_STUDY, q, &c);
    rtb_ds_free(q);
    assert_int_equal(c.n, 1);
    return c.values[0];
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- association outcomes ------------------------------------------------------- */

static void echo_reaches_every_peer(void **state)
{
    OK(rtb_dicom_echo(&aria, &err));
    OK(rtb_dicom_echo(&orthanc_main, &err));
    OK(rtb_dicom_echo(&staging, &err));
    OK(rtb_dicom_echo(&storescp, &err));
}

static void echo_to_a_closed_port_fails_to_connect(void **state)
{
    rtb_dicom_peer p = orthanc_main;
    p.port = testbed_int("CLOSED_PORT");
    double t0 = now();
    assert_int_equal(rtb_dicom_echo(&p, &err), -1);
    assert_true(now() - t0 < 3);
    assert_int_equal(err.kind, RTB_DICOM_E_CONNECT_FAILED);
    char label[128];
    snprintf(label, sizeof label, "ORTHANC_MAIN@127.0.0.1:%d", p.port);
    assert_string_equal(err.peer, label);
}

static void echo_with_a_wrong_called_ae_is_rejected_with_the_reason(void **state)
{
    const rtb_dicom_peer *peers[] = {&orthanc_main, &aria};
    for (int i = 0; i < 2; i++) {
        rtb_dicom_peer p = *peers[i];
        p.called_ae = "NOT_THIS_AE";
        assert_int_equal(rtb_dicom_echo(&p, &err), -1);
        assert_int_equal(err.kind, RTB_DICOM_E_REJECTED);
        assert_int_equal(err.reject.result, 1); /* permanent */
        assert_int_equal(err.reject.source, 1); /* service user */
        assert_int_equal(err.reject.reason, 7); /* called AE title not recognized */
        assert_non_null(strstr(err.message, "Called AE Title Not Recognized"));
    }
}

static void echo_to_a_peer_that_never_answers_times_out(void **state)
{
    /* A listening socket nobody accepts on: TCP connects, DICOM never answers. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 4), 0);
    getsockname(s, (struct sockaddr *)&a, &len);
    rtb_dicom_peer p = orthanc_main;
    p.port = ntohs(a.sin_port);
    p.acse_timeout = 2;
    double t0 = now();
    assert_int_equal(rtb_dicom_echo(&p, &err), -1);
    double took = now() - t0;
    close(s);
    assert_int_equal(err.kind, RTB_DICOM_E_TIMEOUT);
    assert_true(took >= 1.5 && took < 6);
}

static void a_missing_calling_ae_is_invalid_not_defaulted(void **state)
{
    rtb_dicom_peer p = orthanc_main;
    p.calling_ae = NULL;
    assert_int_equal(rtb_dicom_echo(&p, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
}

/* ---- C-FIND ------------------------------------------------------------------- */

static void find_lists_the_synthetic_patients_on_aria(void **state)
{
    collector c = {.keyword = "PatientID"};
    rtb_ds *q = query("PatientID=RTB*", "PatientName=", NULL);
    find_all(&aria, RTB_QR_PATIENT_ROOT, RTB_QR_PATIENT, q, &c);
    rtb_ds_free(q);
    assert_int_equal(c.n, testbed_int("SYNTH_PATIENTS"));
    assert_true(contains(&c, "RTB001"));

    collector series = {.keyword = "Modality"};
    char study[80];
    snprintf(study, sizeof study, "StudyInstanceUID=%s", study_of("RTB001"));
    q = query(study, "SeriesInstanceUID=", "Modality=", NULL);
    find_all(&aria, RTB_QR_STUDY_ROOT, RTB_QR_SERIES, q, &series);
    rtb_ds_free(q);
    assert_int_equal(series.n, 4);
    assert_true(contains(&series, "CT") && contains(&series, "RTPLAN") &&
                contains(&series, "RTSTRUCT") && contains(&series, "RTDOSE"));
}

static void find_with_no_match_succeeds_with_zero_matches(void **state)
{
    rtb_ds *q = query("PatientID=NOBODY", "StudyInstanceUID=", NULL);
    rtb_dicom_find_result r;
    OK(rtb_dicom_find(&aria, RTB_QR_STUDY_ROOT, RTB_QR_STUDY, q, NULL, NULL, &r, &err));
    assert_int_equal(r.matches, 0);
    OK(rtb_dicom_find(&orthanc_main, RTB_QR_STUDY_ROOT, RTB_QR_STUDY, q, NULL, NULL, &r, &err));
    assert_int_equal(r.matches, 0);
    rtb_ds_free(q);
}

static void find_stops_when_the_callback_asks(void **state)
{
    collector c = {.keyword = "SOPInstanceUID", .stop_after = 1};
    char study[80];
    snprintf(study, sizeof study, "StudyInstanceUID=%s", study_of("RTB001"));
    rtb_ds *q = query(study, "SeriesInstanceUID=", "SOPInstanceUID=", NULL);
    rtb_dicom_find_result r;
    OK(rtb_dicom_find(&aria, RTB_QR_STUDY_ROOT, RTB_QR_IMAGE, q, collect, &c, &r, &err));
    rtb_ds_free(q);
    assert_true(r.cancelled);
    assert_int_equal(r.matches, 1);
    OK(rtb_dicom_echo(&aria, &err)); /* the peer is still fine */
}

static void find_rejects_bad_queries_before_connecting(void **state)
{
    rtb_ds *q = query("PatientID=RTB001", NULL);
    assert_int_equal(rtb_dicom_find(&aria, RTB_QR_STUDY_ROOT, RTB_QR_PATIENT, q, NULL, NULL, NULL, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
    rtb_ds_free(q);
}

/* ---- C-MOVE ------------------------------------------------------------------- */

static void move_series_from_aria_to_main_and_main_then_finds_them(void **state)
{
    const char *study = study_of("RTB002");
    char study_kv[80];
    snprintf(study_kv, sizeof study_kv, "StudyInstanceUID=%s", study);
    collector series = {.keyword = "SeriesInstanceUID"};
    rtb_ds *q = query(study_kv, "SeriesInstanceUID=", NULL);
    find_all(&aria, RTB_QR_STUDY_ROOT, RTB_QR_SERIES, q, &series);
    rtb_ds_free(q);
    assert_int_equal(series.n, 4);

    unsigned completed = 0;
    for (size_t i = 0; i < series.n; i++) {
        char series_kv[80];
        snprintf(series_kv, sizeof series_kv, "SeriesInstanceUID=%s", series.values[i]);
        rtb_ds *id = query(study_kv, series_kv, NULL);
        rtb_dicom_retrieve_result r;
        OK(rtb_dicom_move(&aria, RTB_QR_STUDY_ROOT, RTB_QR_SERIES, id, "ORTHANC_MAIN", &r, &err));
        assert_int_equal(r.status, 0);
        assert_int_equal(r.failed, 0);
        completed += r.completed;
        rtb_dicom_retrieve_result_clear(&r);
        rtb_ds_free(id);
    }
    int expected = testbed_int("SYNTH_CT_SLICES") + 3;
    assert_int_equal(completed, expected);

    collector found = {.keyword = "SOPInstanceUID"};
    q = query(study_kv, "SeriesInstanceUID=", "SOPInstanceUID=", NULL);
    find_all(&orthanc_main, RTB_QR_STUDY_ROOT, RTB_QR_IMAGE, q, &found);
    rtb_ds_free(q);
    assert_int_equal(found.n, expected);
}

static void move_to_an_unknown_destination_surfaces_the_failure_status(void **state)
{
    char study_kv[80];
    snprintf(study_kv, sizeof study_kv, "StudyInstanceUID=%s", study_of("RTB001"));
    rtb_ds *id = query(study_kv, NULL);
    rtb_dicom_retrieve_result r;
    assert_int_equal(rtb_dicom_move(&aria, RTB_QR_STUDY_ROOT, RTB_QR_STUDY, id, "NOWHERE", &r, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_STATUS);
    assert_int_equal(err.status, 0xA801);
    assert_int_equal(r.status, 0xA801);
    rtb_dicom_retrieve_result_clear(&r);
    rtb_ds_free(id);
}

static void move_without_the_series_uid_is_refused_before_sending(void **state)
{
    rtb_ds *id = query("StudyInstanceUID=1.2.3", "SeriesInstanceUID=*", NULL);
    assert_int_equal(rtb_dicom_move(&aria, RTB_QR_STUDY_ROOT, RTB_QR_SERIES, id, "ORTHANC_MAIN", NULL, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
    rtb_ds_free(id);
}

/* ---- C-STORE ------------------------------------------------------------------ */

/* Paths of the synthetic files of one patient and modality, from index.txt. */
static int synthetic_files(const char *patient, const char *modality, char paths[][512], int max)
{
    char index[512];
    snprintf(index, sizeof index, "%s/index.txt", testbed_get("SYNTH_DIR"));
    FILE *f = fopen(index, "r");
    assert_non_null(f);
    char pid[32], mod[32], path[512];
    int n = 0;
    while (n < max && fscanf(f, "%31s %31s %511s", pid, mod, path) == 3)
        if (!strcmp(pid, patient) && (!modality || !strcmp(mod, modality)))
            snprintf(paths[n++], 512, "%s", path);
    fclose(f);
    return n;
}

static void store_sends_files_and_datasets_with_a_result_per_item(void **state)
{
    char files[4][512];
    assert_int_equal(synthetic_files("RTB003", "RTPLAN", files, 1), 1);
    assert_int_equal(synthetic_files("RTB003", "RTDOSE", files + 1, 1), 1);

    rtb_ds *copy;
    OK(rtb_ds_read(files[0], &copy, &err));
    char uid[RTB_DICOM_UID_MAX];
    OK(rtb_dicom_uid_random(uid, &err));
    const char *u = uid;
    OK(rtb_ds_set(copy, "SOPInstanceUID", &u, 1, &err));

    char junk[512];
    snprintf(junk, sizeof junk, "%s/not-dicom.dcm", testbed_get("RTB_TESTBED_DIR"));
    FILE *f = fopen(junk, "w");
    fputs("plain text pretending to be an instance\n", f);
    fclose(f);

    rtb_dicom_store_item items[4];
    memset(items, 0, sizeof items);
    items[0].path = files[0];
    items[1].ds = copy;
    items[2].path = junk;
    items[3].path = files[1];
    size_t stored = 0;
    OK(rtb_dicom_store(&staging, items, 4, &stored, &err));
    assert_int_equal(stored, 3);
    assert_int_equal(items[0].result, 0);
    assert_int_equal(items[0].status, 0);
    assert_int_equal(items[1].result, 0);
    assert_string_equal(items[1].sop_instance_uid, uid);
    assert_int_equal(items[2].result, -1);
    assert_int_equal(items[2].error.kind, RTB_DICOM_E_IO);
    assert_int_equal(items[3].result, 0);

    collector found = {.keyword = "SOPInstanceUID"};
    char kv[96];
    snprintf(kv, sizeof kv, "SOPInstanceUID=%s", uid);
    rtb_ds *q = query("PatientID=RTB003", kv, NULL);
    find_all(&staging, RTB_QR_PATIENT_ROOT, RTB_QR_IMAGE, q, &found);
    rtb_ds_free(q);
    assert_int_equal(found.n, 1);
    rtb_ds_free(copy);
}

static void store_of_many_instances_on_one_association_all_succeed(void **state)
{
    /* 200 C-STOREs on one association to storescp. How fast is measured in
     * tests/bench (store.bench.sh against storescu), not asserted here. */
    char files[16][512];
    int n = synthetic_files("RTB001", "CT", files, 16);
    assert_true(n > 0);
    rtb_dicom_store_item items[200];
    memset(items, 0, sizeof items);
    for (int i = 0; i < 200; i++) items[i].path = files[i % n];
    size_t stored = 0;
    OK(rtb_dicom_store(&storescp, items, 200, &stored, &err));
    assert_int_equal(stored, 200);
    for (int i = 0; i < 200; i++) assert_int_equal(items[i].result, 0);
}

static void corpus_path(const char *file, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", testbed_get("CORPUS_DIR"), file);
}

static void store_gives_each_item_its_outcome_and_a_truncated_file_never_reaches_the_peer(void **state)
{
    /* storescp accepts uncompressed syntaxes only: the RLE file is refused by name. */
    rtb_dicom_store_item items[4];
    char paths[4][512];
    corpus_path("mr_explicit_le.dcm", paths[0], sizeof paths[0]);
    corpus_path("mr_truncated.dcm", paths[1], sizeof paths[1]);
    corpus_path("mr_rle_sopclass_un.dcm", paths[2], sizeof paths[2]);
    corpus_path("mr_big_endian.dcm", paths[3], sizeof paths[3]);
    memset(items, 0, sizeof items);
    for (int i = 0; i < 4; i++) items[i].path = paths[i];
    rtb_dicom_store_summary sum;
    OK(rtb_dicom_store_with(&storescp, items, 4, NULL, &sum, &err));
    assert_int_equal(items[0].outcome, RTB_STORE_STORED);
    assert_int_equal(items[1].outcome, RTB_STORE_UNREADABLE);
    assert_int_equal(items[1].error.kind, RTB_DICOM_E_IO);
    assert_non_null(strstr(items[1].error.message, "premature end of stream"));
    assert_int_equal(items[2].outcome, RTB_STORE_REFUSED);
    assert_string_equal(items[2].sop_class_uid, "1.2.840.10008.5.1.4.1.1.4"); /* encoded as UN */
    assert_non_null(strstr(items[2].error.message, "MR Image Storage in RLE Lossless"));
    assert_int_equal(items[3].outcome, RTB_STORE_STORED); /* after the bad ones, same association */
    assert_string_equal(items[3].transfer_syntax_uid, "1.2.840.10008.1.2.2");
    assert_int_equal(sum.stored, 2);
    assert_int_equal(sum.unreadable, 1);
    assert_int_equal(sum.refused, 1);
    assert_int_equal(sum.not_sent, 0);
    assert_int_equal(sum.associations, 1);
    assert_string_equal(rtb_dicom_store_outcome_name(items[2].outcome), "refused");
}

static void store_to_a_closed_port_reports_every_item_not_sent(void **state)
{
    rtb_dicom_peer p = storescp;
    p.port = testbed_int("CLOSED_PORT");
    char path[512];
    corpus_path("mr_explicit_le.dcm", path, sizeof path);
    rtb_dicom_store_item items[2];
    memset(items, 0, sizeof items);
    items[0].path = path;
    items[1].path = path;
    rtb_dicom_store_options opts = {.max_reconnects = 1, .backoff_ms = 10};
    rtb_dicom_store_summary sum;
    assert_int_equal(rtb_dicom_store_with(&p, items, 2, &opts, &sum, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_CONNECT_FAILED);
    assert_int_equal(sum.not_sent, 2);
    assert_int_equal(sum.associations, 2); /* the first try and one reconnect */
    assert_int_equal(sum.breaker_open, 1);
    assert_int_equal(items[0].outcome, RTB_STORE_NOT_SENT);
}

static void uid_names_read_like_words(void **state)
{
    char name[128];
    rtb_dicom_uid_name("1.2.840.10008.5.1.4.1.1.481.2", name, sizeof name);
    assert_string_equal(name, "RT Dose Storage");
    rtb_dicom_uid_name("1.2.840.10008.1.2.5", name, sizeof name);
    assert_string_equal(name, "RLE Lossless");
    rtb_dicom_uid_name("1.2.3.4", name, sizeof name);
    assert_string_equal(name, "1.2.3.4");
}

/* ---- C-GET -------------------------------------------------------------------- */

typedef struct {
    int n;
    int mismatches;
} digest_check;

/* The corpus file of an instance is found through the index; its digest must match. */
static int check_against_corpus(void *ud, rtb_ds *instance)
{
    digest_check *c = ud;
    rtb_ds_element uid = {0};
    if (rtb_ds_get(instance, "SOPInstanceUID", &uid, &err) != 0 || uid.count != 1) return 1;
    char index[512], line[1024], file[256] = "";
    snprintf(index, sizeof index, "%s/index.tsv", testbed_get("CORPUS_DIR"));
    FILE *f = fopen(index, "r");
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, uid.values[0])) sscanf(line, "%255s", file);
    if (f) fclose(f);
    rtb_ds_element_clear(&uid);
    char path[512], a[65], b[65];
    corpus_path(file, path, sizeof path);
    rtb_ds *src;
    if (!file[0] || rtb_ds_read(path, &src, &err) != 0) return 1;
    rtb_ds_digest(src, a, &err);
    rtb_ds_digest(instance, b, &err);
    rtb_ds_free(src);
    c->n++;
    if (strcmp(a, b) != 0) c->mismatches++;
    return 0;
}

static void get_from_dcmqrscp_brings_every_compressed_instance_in_rounds(void **state)
{
    /* CORPUS holds the corpus in every syntax; dcmqrscp sends on the first context
     * accepted for the class and cannot convert compressed data: before, every
     * compressed instance was missing. */
    char path[512];
    corpus_path("mr_rle.dcm", path, sizeof path);
    rtb_ds *src;
    OK(rtb_ds_read(path, &src, &err));
    rtb_ds_element study = {0};
    OK(rtb_ds_get(src, "StudyInstanceUID", &study, &err));
    char kv[96];
    snprintf(kv, sizeof kv, "StudyInstanceUID=%s", study.values[0]);
    rtb_ds_element_clear(&study);
    rtb_ds_free(src);
    rtb_ds *id = query(kv, NULL);
    digest_check c = {0};
    rtb_dicom_get_options opts = {.fn = check_against_corpus, .ud = &c};
    rtb_dicom_retrieve_result r;
    rtb_dicom_peer corpus = testbed_peer("CORPUS");
    OK(rtb_dicom_get(&corpus, RTB_QR_STUDY_ROOT, RTB_QR_STUDY, id, &opts, &r, &err));
    rtb_ds_free(id);
    assert_int_equal(r.failed, 0);
    assert_int_equal(r.transcoded, 0);
    assert_int_equal(r.received, 15); /* the good files of tests/testbed/corpus.py */
    assert_int_equal(c.n, 15);
    assert_int_equal(c.mismatches, 0);
    assert_int_equal(r.stored_syntax_known, 0); /* dcmqrscp does not say */
    assert_true(r.associations > 2);            /* the plan, then rounds */
    rtb_dicom_retrieve_result_clear(&r);

    /* Without the plan, the peer's FailedSOPInstanceUIDList drives the rounds. */
    id = query(kv, NULL);
    digest_check c2 = {0};
    rtb_dicom_get_options bare = {.fn = check_against_corpus, .ud = &c2, .no_plan = 1};
    OK(rtb_dicom_get(&corpus, RTB_QR_STUDY_ROOT, RTB_QR_STUDY, id, &bare, &r, &err));
    rtb_ds_free(id);
    assert_int_equal(r.failed, 0);
    assert_int_equal(r.received, 15);
    assert_int_equal(c2.mismatches, 0);
    rtb_dicom_retrieve_result_clear(&r);
}


static void get_from_main_writes_files_whose_digests_equal_the_sources(void **state)
{
    char ct[64][512];
    int n = synthetic_files("RTB002", "CT", ct, 64);
    assert_true(n > 0);
    rtb_ds *src;
    OK(rtb_ds_read(ct[0], &src, &err));
    rtb_ds_element study = {0}, series = {0};
    OK(rtb_ds_get(src, "StudyInstanceUID", &study, &err));
    OK(rtb_ds_get(src, "SeriesInstanceUID", &series, &err));
    char study_kv[96], series_kv[96];
    snprintf(study_kv, sizeof study_kv, "StudyInstanceUID=%s", study.values[0]);
    snprintf(series_kv, sizeof series_kv, "SeriesInstanceUID=%s", series.values[0]);
    rtb_ds_element_clear(&study);
    rtb_ds_element_clear(&series);
    rtb_ds_free(src);

    const char *dir = testbed_tmpdir("get");
    assert_non_null(dir);
    rtb_ds *id = query(study_kv, series_kv, NULL);
    rtb_dicom_get_options opts = {.out_dir = dir};
    rtb_dicom_retrieve_result r;
    OK(rtb_dicom_get(&orthanc_main, RTB_QR_STUDY_ROOT, RTB_QR_SERIES, id, &opts, &r, &err));
    rtb_ds_free(id);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.received, (size_t)n);
    assert_int_equal(r.completed, (unsigned)n);
    assert_int_equal(count_dcm_files(dir), n);

    for (int i = 0; i < n; i++) {
        const char *name = strrchr(ct[i], '/') + 1; /* synthetic files are <SOPInstanceUID>.dcm too */
        char got[1024];
        snprintf(got, sizeof got, "%s/%s", dir, name);
        rtb_ds *a, *b;
        OK(rtb_ds_read(ct[i], &a, &err));
        OK(rtb_ds_read(got, &b, &err));
        char da[65], db[65];
        OK(rtb_ds_digest(a, da, &err));
        OK(rtb_ds_digest(b, db, &err));
        assert_string_equal(da, db);
        rtb_ds_free(a);
        rtb_ds_free(b);
    }
    rtb_dicom_retrieve_result_clear(&r);
}

static int count_instances(void *ud, rtb_ds *instance)
{
    collector *c = ud;
    return collect(c, instance);
}

static void get_can_hand_instances_to_a_callback(void **state)
{
    char plan[1][512];
    assert_int_equal(synthetic_files("RTB002", "RTPLAN", plan, 1), 1);
    rtb_ds *src;
    OK(rtb_ds_read(plan[0], &src, &err));
    rtb_ds_element e[3] = {{0}};
    OK(rtb_ds_get(src, "StudyInstanceUID", &e[0], &err));
    OK(rtb_ds_get(src, "SeriesInstanceUID", &e[1], &err));
    OK(rtb_ds_get(src, "SOPInstanceUID", &e[2], &err));
    char kv[3][96];
    snprintf(kv[0], 96, "StudyInstanceUID=%s", e[0].values[0]);
    snprintf(kv[1], 96, "SeriesInstanceUID=%s", e[1].values[0]);
    snprintf(kv[2], 96, "SOPInstanceUID=%s", e[2].values[0]);
    rtb_ds *id = query(kv[0], kv[1], kv[2], NULL);
    collector c = {.keyword = "SOPInstanceUID"};
    rtb_dicom_get_options opts = {.fn = count_instances, .ud = &c};
    rtb_dicom_retrieve_result r;
    OK(rtb_dicom_get(&orthanc_main, RTB_QR_STUDY_ROOT, RTB_QR_IMAGE, id, &opts, &r, &err));
    assert_int_equal(c.n, 1);
    assert_string_equal(c.values[0], e[2].values[0]);
    for (int i = 0; i < 3; i++) rtb_ds_element_clear(&e[i]);
    rtb_dicom_retrieve_result_clear(&r);
    rtb_ds_free(id);
    rtb_ds_free(src);
}

/* ---- TLS ---------------------------------------------------------------------- */

static void tls_store_works_with_the_right_ca_and_fails_with_another(void **state)
{
    if (!testbed_get("TLS_PORT")) skip(); /* the testbed had no openssl */
    rtb_dicom_peer p = testbed_peer("TLS");
    p.tls = 1;
    p.tls_ca = testbed_get("TLS_CA");
    p.tls_cert = testbed_get("TLS_CERT");
    p.tls_key = testbed_get("TLS_KEY");
    OK(rtb_dicom_echo(&p, &err));
    char files[1][512];
    assert_int_equal(synthetic_files("RTB001", "RTPLAN", files, 1), 1);
    rtb_dicom_store_item item;
    memset(&item, 0, sizeof item);
    item.path = files[0];
    size_t stored;
    OK(rtb_dicom_store(&p, &item, 1, &stored, &err));
    assert_int_equal(stored, 1);

    p.tls_ca = testbed_get("TLS_WRONG_CA"); /* the server's certificate does not chain to this */
    assert_int_equal(rtb_dicom_echo(&p, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_CONNECT_FAILED);

    rtb_dicom_peer plain = testbed_peer("TLS");
    plain.tls = 1; /* TLS without a CA to verify the peer is refused up front */
    assert_int_equal(rtb_dicom_echo(&plain, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
}

static int setup(void **state)
{
    if (testbed_load() != 0) return -1;
    if (rtb_dicom_init(&err) != 0) return -1;
    aria = testbed_peer("ARIA");
    orthanc_main = testbed_peer("MAIN");
    staging = testbed_peer("STAGING");
    storescp = testbed_peer("STORESCP");
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(echo_reaches_every_peer),
        cmocka_unit_test(echo_to_a_closed_port_fails_to_connect),
        cmocka_unit_test(echo_with_a_wrong_called_ae_is_rejected_with_the_reason),
        cmocka_unit_test(echo_to_a_peer_that_never_answers_times_out),
        cmocka_unit_test(a_missing_calling_ae_is_invalid_not_defaulted),
        cmocka_unit_test(find_lists_the_synthetic_patients_on_aria),
        cmocka_unit_test(find_with_no_match_succeeds_with_zero_matches),
        cmocka_unit_test(find_stops_when_the_callback_asks),
        cmocka_unit_test(find_rejects_bad_queries_before_connecting),
        cmocka_unit_test(move_series_from_aria_to_main_and_main_then_finds_them),
        cmocka_unit_test(move_to_an_unknown_destination_surfaces_the_failure_status),
        cmocka_unit_test(move_without_the_series_uid_is_refused_before_sending),
        cmocka_unit_test(store_sends_files_and_datasets_with_a_result_per_item),
        cmocka_unit_test(store_of_many_instances_on_one_association_all_succeed),
        cmocka_unit_test(store_gives_each_item_its_outcome_and_a_truncated_file_never_reaches_the_peer),
        cmocka_unit_test(store_to_a_closed_port_reports_every_item_not_sent),
        cmocka_unit_test(uid_names_read_like_words),
        cmocka_unit_test(get_from_dcmqrscp_brings_every_compressed_instance_in_rounds),
        cmocka_unit_test(get_from_main_writes_files_whose_digests_equal_the_sources),
        cmocka_unit_test(get_can_hand_instances_to_a_callback),
        cmocka_unit_test(tls_store_works_with_the_right_ca_and_fails_with_another),
    };
    return cmocka_run_group_tests_name("dicom_scu", tests, setup, NULL);
}
