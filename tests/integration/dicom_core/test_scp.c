/* The storage SCP, fed by our own SCU and by the testbed's peers (C-MOVE from
 * dcmqrscp "ARIA" and from Orthanc to the SCP's reserved port). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testbed_env.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static rtb_dicom_error err;

#define OK(call) do { if ((call) != 0) fail_msg("%s: [%s] %s (peer %s)", #call, rtb_dicom_error_kind_name(err.kind), err.message, err.peer); } while (0)

typedef struct {
    pthread_mutex_t mu;
    int calls;
    char last_path[512];
    char last_calling[17];
    char last_sop[RTB_DICOM_UID_MAX];
} received;

static void on_store(void *ud, const rtb_dicom_stored_instance *inst)
{
    received *r = ud;
    pthread_mutex_lock(&r->mu);
    r->calls++;
    snprintf(r->last_path, sizeof r->last_path, "%s", inst->path);
    snprintf(r->last_calling, sizeof r->last_calling, "%s", inst->calling_ae);
    snprintf(r->last_sop, sizeof r->last_sop, "%s", inst->sop_instance_uid);
    pthread_mutex_unlock(&r->mu);
}

static rtb_dicom_scp *start_scp(const char *aet, int port, const char *const *allow, size_t n_allow,
                                const char *dir, received *r)
{
    rtb_dicom_scp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.aet = aet;
    cfg.port = port;
    cfg.allow = allow;
    cfg.n_allow = n_allow;
    cfg.dir = dir;
    cfg.on_store = on_store;
    cfg.ud = r;
    cfg.dimse_timeout = 10;
    rtb_dicom_scp *scp = NULL;
    OK(rtb_dicom_scp_start(&cfg, &scp, &err));
    return scp;
}

static rtb_dicom_peer peer_for(rtb_dicom_scp *scp, const char *called, const char *calling)
{
    rtb_dicom_peer p;
    memset(&p, 0, sizeof p);
    p.called_ae = called;
    p.calling_ae = calling;
    p.host = "127.0.0.1";
    p.port = rtb_dicom_scp_port(scp);
    p.acse_timeout = 5;
    p.dimse_timeout = 10;
    return p;
}

static int synthetic_files(const char *patient, char paths[][512], int max)
{
    char index[512];
    snprintf(index, sizeof index, "%s/index.txt", testbed_get("SYNTH_DIR"));
    FILE *f = fopen(index, "r");
    assert_non_null(f);
    char pid[32], mod[32], path[512];
    int n = 0;
    while (n < max && fscanf(f, "%31s %31s %511s", pid, mod, path) == 3)
        if (!strcmp(pid, patient)) snprintf(paths[n++], 512, "%s", path);
    fclose(f);
    return n;
}

static int hidden_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void scp_stores_what_an_allowed_scu_sends_and_reports_it(void **state)
{
    const char *dir = testbed_tmpdir("scp-store");
    received r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const char *allow[] = {"RTB_SCU"};
    rtb_dicom_scp *scp = start_scp("RTB_LISTEN", 0, allow, 1, dir, &r);
    assert_true(rtb_dicom_scp_port(scp) > 0);

    char files[2][512];
    assert_int_equal(synthetic_files("RTB001", files, 2), 2);
    rtb_dicom_store_item items[2];
    memset(items, 0, sizeof items);
    items[0].path = files[0];
    items[1].path = files[1];
    rtb_dicom_peer p = peer_for(scp, "RTB_LISTEN", "RTB_SCU");
    OK(rtb_dicom_echo(&p, &err));
    size_t stored;
    OK(rtb_dicom_store(&p, items, 2, &stored, &err));
    assert_int_equal(stored, 2);

    double t0 = now();
    rtb_dicom_scp_stop(scp);
    assert_true(now() - t0 < 3);

    assert_int_equal(r.calls, 2);
    assert_string_equal(r.last_calling, "RTB_SCU");
    assert_int_equal(count_dcm_files(dir), 2);
    assert_int_equal(hidden_files(dir), 0);
    char expect[1024];
    snprintf(expect, sizeof expect, "%s/%s.dcm", dir, r.last_sop);
    assert_string_equal(r.last_path, expect);

    rtb_ds *a, *b;
    OK(rtb_ds_read(files[1], &a, &err));
    OK(rtb_ds_read(r.last_path, &b, &err));
    char da[65], db[65];
    OK(rtb_ds_digest(a, da, &err));
    OK(rtb_ds_digest(b, db, &err));
    assert_string_equal(da, db);
    rtb_ds_free(a);
    rtb_ds_free(b);
}

static void scp_rejects_unknown_calling_and_wrong_called_ae_titles(void **state)
{
    const char *dir = testbed_tmpdir("scp-reject");
    received r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const char *allow[] = {"RTB_SCU"};
    rtb_dicom_scp *scp = start_scp("RTB_LISTEN", 0, allow, 1, dir, &r);

    rtb_dicom_peer intruder = peer_for(scp, "RTB_LISTEN", "INTRUDER");
    assert_int_equal(rtb_dicom_echo(&intruder, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_REJECTED);
    assert_int_equal(err.reject.reason, 3); /* calling AE title not recognized */

    rtb_dicom_peer wrong = peer_for(scp, "SOMEONE_ELSE", "RTB_SCU");
    assert_int_equal(rtb_dicom_echo(&wrong, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_REJECTED);
    assert_int_equal(err.reject.reason, 7); /* called AE title not recognized */

    rtb_dicom_peer ok = peer_for(scp, "RTB_LISTEN", "RTB_SCU");
    OK(rtb_dicom_echo(&ok, &err));
    rtb_dicom_scp_stop(scp);
    assert_int_equal(r.calls, 0);
}

static void scp_receives_c_move_results_from_aria_and_orthanc(void **state)
{
    const char *dir = testbed_tmpdir("scp-move");
    received r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const char *allow[] = {"ARIA", "ORTHANC_MAIN"};
    rtb_dicom_scp *scp = start_scp(testbed_get("TEST_SCP_AET"), testbed_int("TEST_SCP_PORT"), allow, 2,
                                   dir, &r);

    rtb_dicom_peer aria = testbed_peer("ARIA");
    rtb_ds *id;
    OK(rtb_ds_new(&id, &err));
    const char *pid = "RTB003";
    OK(rtb_ds_set(id, "PatientID", &pid, 1, &err));
    rtb_dicom_retrieve_result res;
    OK(rtb_dicom_move(&aria, RTB_QR_PATIENT_ROOT, RTB_QR_PATIENT, id, testbed_get("TEST_SCP_AET"), &res, &err));
    int expected = testbed_int("SYNTH_CT_SLICES") + 3;
    assert_int_equal(res.completed, expected);
    assert_int_equal(res.failed, 0);
    rtb_dicom_retrieve_result_clear(&res);
    rtb_ds_free(id);

    /* Orthanc main holds RTB002 (moved there by the SCU tests or below). */
    rtb_dicom_peer main_peer = testbed_peer("MAIN");
    OK(rtb_ds_new(&id, &err));
    pid = "RTB002";
    OK(rtb_ds_set(id, "PatientID", &pid, 1, &err));
    OK(rtb_dicom_move(&aria, RTB_QR_PATIENT_ROOT, RTB_QR_PATIENT, id, "ORTHANC_MAIN", &res, &err));
    rtb_dicom_retrieve_result_clear(&res);
    OK(rtb_dicom_move(&main_peer, RTB_QR_PATIENT_ROOT, RTB_QR_PATIENT, id, testbed_get("TEST_SCP_AET"), &res, &err));
    assert_int_equal(res.completed, expected);
    rtb_dicom_retrieve_result_clear(&res);
    rtb_ds_free(id);

    rtb_dicom_scp_stop(scp);
    assert_int_equal(r.calls, 2 * expected);
    assert_int_equal(count_dcm_files(dir), 2 * expected);
}

typedef struct {
    rtb_dicom_peer peer;
    rtb_dicom_store_item items[20];
    size_t stored;
    int rc;
} store_job;

static void *run_store(void *arg)
{
    store_job *j = arg;
    rtb_dicom_error e;
    j->rc = rtb_dicom_store(&j->peer, j->items, 20, &j->stored, &e);
    return NULL;
}

static void scp_serves_several_associations_at_once(void **state)
{
    const char *dir = testbed_tmpdir("scp-parallel");
    received r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rtb_dicom_scp *scp = start_scp("RTB_LISTEN", 0, NULL, 0, dir, &r); /* any calling AE */
    char files[64][512];
    int n = synthetic_files("RTB001", files, 64);
    assert_true(n >= 13);
    static store_job jobs[4];
    pthread_t t[4];
    for (int k = 0; k < 4; k++) {
        memset(&jobs[k], 0, sizeof jobs[k]);
        jobs[k].peer = peer_for(scp, "RTB_LISTEN", k % 2 ? "WORKER_B" : "WORKER_A");
        for (int i = 0; i < 20; i++) jobs[k].items[i].path = files[(k * 20 + i) % n];
        pthread_create(&t[k], NULL, run_store, &jobs[k]);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(t[k], NULL);
        assert_int_equal(jobs[k].rc, 0);
        assert_int_equal(jobs[k].stored, 20);
    }
    rtb_dicom_scp_stop(scp);
    assert_int_equal(r.calls, 80);
    assert_int_equal(count_dcm_files(dir), n); /* same instances, overwritten atomically */
    assert_int_equal(hidden_files(dir), 0);
}

static int setup(void **state)
{
    if (testbed_load() != 0) return -1;
    return rtb_dicom_init(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scp_stores_what_an_allowed_scu_sends_and_reports_it),
        cmocka_unit_test(scp_rejects_unknown_calling_and_wrong_called_ae_titles),
        cmocka_unit_test(scp_receives_c_move_results_from_aria_and_orthanc),
        cmocka_unit_test(scp_serves_several_associations_at_once),
    };
    return cmocka_run_group_tests_name("dicom_scp", tests, setup, NULL);
}
