/* Fuzz target: what a remote peer sends to `rtbackup listen`.
 *
 * One storage SCP (core/dicom, through its public API only) listens on an ephemeral
 * loopback port for the whole process. Each input is written to a fresh TCP
 * connection as the bytes of a peer (A-ASSOCIATE-RQ, P-DATA, A-RELEASE-RQ, ...); the
 * write side is then shut, and the answer read until the SCP closes (or 2 s pass), so
 * that the SCP has handled the whole input before the next one. Instances it stores
 * are deleted at once. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dicom/dicom.h"

static rtb_dicom_scp *scp;
static int port;
/* In memory when it can be: every stored instance is fsynced, which on a disk costs
 * more than the rest of an input together. */
static char dir[64] = "/dev/shm/rtb-fuzz-scp-XXXXXX";

static void drop_stored(void *ud, const rtb_dicom_stored_instance *inst)
{
    if (inst->path)
        unlink(inst->path);
}

static void stop(void)
{
    /* RTB_FUZZ_VERBOSE=1: whether the seeds reach C-STORE (they should). */
    if (getenv("RTB_FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_scp_pdu: the SCP stored %zu instances\n", rtb_dicom_scp_stored(scp));
    rtb_dicom_scp_stop(scp);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    rtb_dicom_error err;
    if (access("/dev/shm", W_OK) != 0)
        snprintf(dir, sizeof dir, "/tmp/rtb-fuzz-scp-XXXXXX");
    if (rtb_dicom_init(&err) != 0 || !mkdtemp(dir)) {
        fprintf(stderr, "fuzz_scp_pdu: cannot initialise\n");
        exit(1);
    }
    /* The seeds call FUZZ_SCP (tests/fuzz/make_seeds.sh captures them that way). */
    rtb_dicom_scp_config cfg = {0};
    cfg.aet = "FUZZ_SCP";
    cfg.port = 0;
    cfg.dir = dir;
    cfg.on_store = drop_stored;
    cfg.acse_timeout = 2;
    cfg.dimse_timeout = 2;
    cfg.max_associations = 4;
    if (rtb_dicom_scp_start(&cfg, &scp, &err) != 0) {
        fprintf(stderr, "fuzz_scp_pdu: cannot start the SCP: %s\n", err.message);
        exit(1);
    }
    port = rtb_dicom_scp_port(scp);
    atexit(stop);
    return 0;
}

static long ms_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        abort();
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(s, (struct sockaddr *)&addr, sizeof addr);
    if (rc != 0 && errno == EINTR) {
        /* A signal (libFuzzer's timers) interrupted the call, not the connection,
         * which goes on: wait for it and read its outcome. */
        struct pollfd w = {.fd = s, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        while (poll(&w, 1, 5000) < 0 && errno == EINTR) {
        }
        rc = getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 && (w.revents & POLLOUT) ? 0 : -1;
        if (err) errno = err;
    }
    if (rc != 0) {
        perror("fuzz_scp_pdu: connect");
        abort(); /* the SCP stopped accepting: that is a finding too */
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    size_t sent = 0;
    char buf[65536];
    if (size == 0)
        shutdown(s, SHUT_WR);
    /* Write and read together: the SCP answers while we write, and a peer that does
     * not read its answers could fill both socket buffers. */
    while (ms_since(&start) < 2000) {
        struct pollfd p = {s, POLLIN | (sent < size ? POLLOUT : 0), 0};
        if (poll(&p, 1, 100) < 0 && errno != EINTR)
            break;
        if (p.revents & POLLOUT) {
            ssize_t n = send(s, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                sent = size; /* the SCP closed on us: nothing more to say */
            if (sent == size)
                shutdown(s, SHUT_WR);
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                break; /* the SCP closed the association */
        }
    }
    close(s);
    return 0;
}
