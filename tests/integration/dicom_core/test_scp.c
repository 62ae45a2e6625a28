/* The storage SCP, fed by our own SCU and by the testbed's peers (C-MOVE from
 * dcmqrscp "ARIA" and from Orthanc to the SCP's reserved port). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testbed_env.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
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
    if (inst->status != 0)
        return; /* nothing kept: the tests count what was stored */
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
    assert_int_equal(count_dcm_files(dir), n); /* the same instances (meta headers aside): each kept once */
    assert_int_equal(hidden_files(dir), 0);
}

/* A TCP connection from `src` (any 127.x address: the whole range is loopback on
 * Linux, so one test can play several hosts) that sends nothing. */
static int idle_connection(const char *src, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &a.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    a.sin_port = htons((unsigned short)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

typedef struct {
    double closed_after; /* seconds from `since`, or -1 if still open at the limit */
    unsigned char first[16];
    ssize_t n_first;     /* bytes the SCP sent before closing */
} idle_outcome;

/* Waits (at most `limit` seconds) until the SCP closes each connection. */
static void wait_closed(int *fds, idle_outcome *out, int n, double since, double limit)
{
    for (int i = 0; i < n; i++) out[i] = (idle_outcome){.closed_after = -1};
    int open = n;
    while (open > 0 && now() - since < limit) {
        struct pollfd p[16];
        for (int i = 0; i < n; i++) p[i] = (struct pollfd){out[i].closed_after < 0 ? fds[i] : -1, POLLIN, 0};
        poll(p, (nfds_t)n, 100);
        for (int i = 0; i < n; i++) {
            if (out[i].closed_after >= 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            unsigned char buf[64];
            ssize_t r = recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
            if (r > 0) {
                if (out[i].n_first == 0) memcpy(out[i].first, buf, r < 16 ? (size_t)r : 16);
                out[i].n_first += r;
                continue;
            }
            out[i].closed_after = now() - since;
            open--;
        }
    }
}

static void scp_answers_echo_while_idle_connections_wait_and_drops_them_after_the_request_timeout(void **state)
{
    const char *dir = testbed_tmpdir("scp-idle");
    rtb_dicom_scp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.aet = "RTB_LISTEN";
    cfg.dir = dir;
    cfg.request_timeout = 2;
    cfg.max_per_host = 4;
    cfg.max_associations = 8;
    rtb_dicom_scp *scp = NULL;
    OK(rtb_dicom_scp_start(&cfg, &scp, &err));
    int port = rtb_dicom_scp_port(scp);

    /* Six silent clients on one host: four take that host's slots, two are over the cap. */
    int fds[6];
    double t0 = now();
    for (int i = 0; i < 6; i++) fds[i] = idle_connection("127.0.0.2", port);

    double e0 = now();
    rtb_dicom_peer p = peer_for(scp, "RTB_LISTEN", "RTB_SCU");
    OK(rtb_dicom_echo(&p, &err));
    double echo_ms = (now() - e0) * 1000;

    idle_outcome out[6];
    wait_closed(fds, out, 6, t0, 30);
    int refused = 0, dropped = 0;
    double slowest = 0;
    for (int i = 0; i < 6; i++) {
        assert_true(out[i].closed_after >= 0); /* the SCP closed every one of them */
        if (out[i].n_first > 0) {
            /* A-ASSOCIATE-RJ: rejected-transient, service provider (presentation), local limit */
            assert_int_equal(out[i].n_first, 10);
            assert_int_equal(out[i].first[0], 0x03);
            assert_int_equal(out[i].first[7], 2);
            assert_int_equal(out[i].first[8], 3);
            assert_int_equal(out[i].first[9], 2);
            refused++;
        } else {
            dropped++;
            if (out[i].closed_after > slowest) slowest = out[i].closed_after;
        }
        close(fds[i]);
    }
    assert_int_equal(refused, 2);
    assert_int_equal(dropped, 4);
    fprintf(stderr, "# 6 idle connections (cap 4 per host): C-ECHO answered in %.1f ms; "
                    "2 refused at once, 4 dropped after %.2f s (request timeout 2 s)\n",
            echo_ms, slowest);

    rtb_dicom_scp_stats st;
    rtb_dicom_scp_stop_stats(scp, &st);
    assert_int_equal(st.refused, 2);
    assert_int_equal(st.dropped, 4);
    assert_int_equal(st.associations, 1);
}

static void scp_refuses_a_connection_over_the_overall_cap_politely_and_serves_again_later(void **state)
{
    const char *dir = testbed_tmpdir("scp-cap");
    rtb_dicom_scp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.aet = "RTB_LISTEN";
    cfg.dir = dir;
    cfg.request_timeout = 2;
    cfg.max_associations = 2;
    rtb_dicom_scp *scp = NULL;
    OK(rtb_dicom_scp_start(&cfg, &scp, &err));
    int port = rtb_dicom_scp_port(scp);
    int fds[2] = {idle_connection("127.0.0.2", port), idle_connection("127.0.0.3", port)};

    rtb_dicom_peer p = peer_for(scp, "RTB_LISTEN", "RTB_SCU");
    assert_int_equal(rtb_dicom_echo(&p, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_REJECTED);
    assert_int_equal(err.reject.result, 2); /* transient: try again later */
    assert_int_equal(err.reject.source, 3);
    assert_int_equal(err.reject.reason, 2); /* local limit exceeded */

    idle_outcome out[2];
    wait_closed(fds, out, 2, now(), 30);
    for (int i = 0; i < 2; i++) {
        assert_true(out[i].closed_after >= 0);
        close(fds[i]);
    }
    /* The slots are free again once the silent clients are dropped. */
    for (int i = 0; i < 50 && rtb_dicom_echo(&p, &err) != 0; i++) usleep(100 * 1000);
    OK(rtb_dicom_echo(&p, &err));
    rtb_dicom_scp_stop(scp);
}

static void scp_cuts_a_client_that_dribbles_its_request_at_the_request_timeout(void **state)
{
    const char *dir = testbed_tmpdir("scp-drip");
    rtb_dicom_scp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.aet = "RTB_LISTEN";
    cfg.dir = dir;
    cfg.request_timeout = 2;
    rtb_dicom_scp *scp = NULL;
    OK(rtb_dicom_scp_start(&cfg, &scp, &err));
    int fd = idle_connection("127.0.0.4", rtb_dicom_scp_port(scp));
    /* An A-ASSOCIATE-RQ header announcing 200 bytes, then one byte every 200 ms: each
     * read succeeds in time, so only the deadline on the whole request ends it. */
    const unsigned char head[6] = {0x01, 0x00, 0x00, 0x00, 0x00, 200};
    assert_int_equal(send(fd, head, sizeof head, MSG_NOSIGNAL), 6);
    double t0 = now(), closed = -1;
    while (closed < 0 && now() - t0 < 20) {
        unsigned char zero = 0, buf[16];
        if (send(fd, &zero, 1, MSG_NOSIGNAL) != 1) {
            closed = now() - t0;
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 200) > 0 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) <= 0) closed = now() - t0;
    }
    close(fd);
    assert_true(closed >= 0);
    fprintf(stderr, "# a client dribbling its request was cut after %.2f s (request timeout 2 s)\n", closed);
    rtb_dicom_scp_stats st;
    rtb_dicom_scp_stop_stats(scp, &st);
    assert_int_equal(st.dropped, 1);
}

static rtb_dicom_scp *start_tls_scp(const char *dir, int require_client_cert)
{
    static char cert[512], key[512];
    snprintf(cert, sizeof cert, "%s/tls/server.pem", testbed_get("RTB_TESTBED_DIR"));
    snprintf(key, sizeof key, "%s/tls/server.key", testbed_get("RTB_TESTBED_DIR"));
    rtb_dicom_scp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.aet = "RTB_LISTEN";
    cfg.dir = dir;
    cfg.request_timeout = 2;
    cfg.tls = 1;
    cfg.tls_cert = cert;
    cfg.tls_key = key;
    cfg.tls_ca = testbed_get("TLS_CA");
    cfg.tls_require_client_cert = require_client_cert;
    rtb_dicom_scp *scp = NULL;
    OK(rtb_dicom_scp_start(&cfg, &scp, &err));
    return scp;
}

static void tls_scp_serves_our_tls_scu_with_a_client_certificate_and_refuses_others(void **state)
{
    if (!testbed_get("TLS_CA")) skip();
    const char *dir = testbed_tmpdir("scp-tls");
    rtb_dicom_scp *scp = start_tls_scp(dir, 1);

    rtb_dicom_peer p = peer_for(scp, "RTB_LISTEN", "RTB_SCU");
    p.tls = 1;
    p.tls_ca = testbed_get("TLS_CA");
    p.tls_cert = testbed_get("TLS_CERT");
    p.tls_key = testbed_get("TLS_KEY");
    OK(rtb_dicom_echo(&p, &err));
    char files[1][512];
    assert_int_equal(synthetic_files("RTB001", files, 1), 1);
    rtb_dicom_store_item item;
    memset(&item, 0, sizeof item);
    item.path = files[0];
    size_t stored = 0;
    OK(rtb_dicom_store(&p, &item, 1, &stored, &err));
    assert_int_equal(stored, 1);

    /* No client certificate, while one is required: the handshake fails. */
    rtb_dicom_peer anonymous = p;
    anonymous.tls_cert = anonymous.tls_key = NULL;
    assert_int_equal(rtb_dicom_echo(&anonymous, &err), -1);
    /* Plain TCP to a TLS port: refused cleanly, and the SCP goes on serving. */
    rtb_dicom_peer plain = peer_for(scp, "RTB_LISTEN", "RTB_SCU");
    double t0 = now();
    assert_int_equal(rtb_dicom_echo(&plain, &err), -1);
    assert_true(now() - t0 < 10);
    /* A client that connects and never starts its handshake is cut at the request timeout. */
    int fd = idle_connection("127.0.0.2", rtb_dicom_scp_port(scp));
    idle_outcome out;
    wait_closed(&fd, &out, 1, now(), 30);
    assert_true(out.closed_after >= 0);
    close(fd);
    fprintf(stderr, "# TLS port: silent client dropped after %.2f s (request timeout 2 s)\n", out.closed_after);
    OK(rtb_dicom_echo(&p, &err));

    rtb_dicom_scp_stats st;
    rtb_dicom_scp_stop_stats(scp, &st);
    assert_int_equal(st.stored, 1);
    assert_int_equal(st.associations, 3);
    assert_int_equal(st.dropped, 3);
    assert_int_equal(count_dcm_files(dir), 1);
}

static void tls_scp_without_required_client_certificates_serves_anonymous_tls_clients(void **state)
{
    if (!testbed_get("TLS_CA")) skip();
    const char *dir = testbed_tmpdir("scp-tls-anon");
    rtb_dicom_scp *scp = start_tls_scp(dir, 0);
    rtb_dicom_peer p = peer_for(scp, "RTB_LISTEN", "RTB_SCU");
    p.tls = 1;
    p.tls_ca = testbed_get("TLS_CA");
    OK(rtb_dicom_echo(&p, &err));
    rtb_dicom_scp_stop(scp);
}

static void tls_scp_refuses_to_start_without_its_key_or_with_an_unreadable_certificate(void **state)
{
    rtb_dicom_scp_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.aet = "RTB_LISTEN";
    cfg.dir = testbed_tmpdir("scp-tls-bad");
    cfg.tls = 1;
    cfg.tls_cert = testbed_get("TLS_CERT");
    rtb_dicom_scp *scp = NULL;
    assert_int_equal(rtb_dicom_scp_start(&cfg, &scp, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
    cfg.tls_key = testbed_get("TLS_KEY");
    cfg.tls_cert = "/nonexistent/cert.pem";
    assert_int_equal(rtb_dicom_scp_start(&cfg, &scp, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
    assert_non_null(strstr(err.message, "/nonexistent/cert.pem"));
    cfg.tls_cert = testbed_get("TLS_CERT");
    cfg.tls_require_client_cert = 1; /* without a CA to check them against */
    assert_int_equal(rtb_dicom_scp_start(&cfg, &scp, &err), -1);
    assert_int_equal(err.kind, RTB_DICOM_E_INVALID);
    assert_null(scp);
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
        cmocka_unit_test(scp_answers_echo_while_idle_connections_wait_and_drops_them_after_the_request_timeout),
        cmocka_unit_test(scp_refuses_a_connection_over_the_overall_cap_politely_and_serves_again_later),
        cmocka_unit_test(scp_cuts_a_client_that_dribbles_its_request_at_the_request_timeout),
        cmocka_unit_test(tls_scp_serves_our_tls_scu_with_a_client_certificate_and_refuses_others),
        cmocka_unit_test(tls_scp_without_required_client_certificates_serves_anonymous_tls_clients),
        cmocka_unit_test(tls_scp_refuses_to_start_without_its_key_or_with_an_unreadable_certificate),
    };
    return cmocka_run_group_tests_name("dicom_scp", tests, setup, NULL);
}
