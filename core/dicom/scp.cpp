// Storage SCP lifecycle: check the configuration, bind, start the acceptor,
// report figures, and stop cleanly. The moving parts live in scp_accept.cpp
// (accept, caps), scp_handoff.cpp (socket -> DCMTK association, TLS) and
// scp_assoc.cpp (one association).
#include "scp.hpp"

#include <algorithm>

#include <dcmtk/dcmnet/dcmlayer.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace rtb;

namespace rtb {

double mono_now()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

} // namespace rtb

namespace {

// Our own listening socket, non-blocking: accept() must never wait, even when a
// client that made poll() report a connection is gone before we accept it.
int open_listener(int port, int *bound_port, rtb_dicom_error *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return fail(err, RTB_DICOM_E_IO, "socket: %s", strerror(errno)), -1;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || listen(fd, 128) != 0) {
        int saved = errno;
        close(fd);
        return fail(err, RTB_DICOM_E_IO, "cannot listen on port %d: %s", port, strerror(saved)), -1;
    }
    socklen_t len = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
        close(fd);
        return fail(err, RTB_DICOM_E_IO, "cannot determine the port the SCP listens on"), -1;
    }
    *bound_port = ntohs(addr.sin_port);
    return fd;
}

bool readable_file(const char *path)
{
    return path && *path && access(path, R_OK) == 0;
}

bool check_tls(const rtb_dicom_scp_config *cfg, rtb_dicom_error *err)
{
    if (!cfg->tls) {
        if ((cfg->tls_cert && *cfg->tls_cert) || cfg->tls_require_client_cert)
            return fail(err, RTB_DICOM_E_INVALID, "TLS settings given without tls = 1"), false;
        return true;
    }
    if (!cfg->tls_cert || !*cfg->tls_cert || !cfg->tls_key || !*cfg->tls_key)
        return fail(err, RTB_DICOM_E_INVALID, "a TLS listener needs its certificate and key (tls_cert, tls_key)"), false;
    if (cfg->tls_require_client_cert && (!cfg->tls_ca || !*cfg->tls_ca))
        return fail(err, RTB_DICOM_E_INVALID,
                    "requiring client certificates needs the CA file they must chain to (tls_ca)"), false;
    const char *files[] = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
    for (const char *f : files)
        if (f && *f && !readable_file(f))
            return fail(err, RTB_DICOM_E_INVALID, "TLS file '%s' cannot be read: %s", f, strerror(errno)), false;
    return true;
}

} // namespace

extern "C" int rtb_dicom_scp_start(const rtb_dicom_scp_config *cfg, rtb_dicom_scp **out,
                                   rtb_dicom_error *err)
{
    clear_error(err);
    *out = nullptr;
    if (!ensure_init(err)) return -1;
    if (!cfg) return fail(err, RTB_DICOM_E_INVALID, "no SCP configuration");
    if (!cfg->aet || !*cfg->aet || strlen(cfg->aet) > 16)
        return fail(err, RTB_DICOM_E_INVALID, "invalid SCP AE title '%s'", cfg->aet ? cfg->aet : "");
    if (cfg->port < 0 || cfg->port > 65535) return fail(err, RTB_DICOM_E_INVALID, "invalid port %d", cfg->port);
    if (cfg->acse_timeout < 0 || cfg->dimse_timeout < 0 || cfg->request_timeout < 0)
        return fail(err, RTB_DICOM_E_INVALID, "negative timeout");
    if (cfg->max_associations < 0 || cfg->max_per_host < 0)
        return fail(err, RTB_DICOM_E_INVALID, "negative association limit");
    if (cfg->max_pdu != 0 && (cfg->max_pdu < ASC_MINIMUMPDUSIZE || cfg->max_pdu > ASC_MAXIMUMPDUSIZE))
        return fail(err, RTB_DICOM_E_INVALID, "max PDU %u outside %u..%u", cfg->max_pdu,
                    (unsigned)ASC_MINIMUMPDUSIZE, (unsigned)ASC_MAXIMUMPDUSIZE);
    struct stat st;
    if (!cfg->dir || stat(cfg->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return fail(err, RTB_DICOM_E_INVALID, "SCP directory '%s' does not exist",
                    cfg->dir ? cfg->dir : "");
    if (!check_tls(cfg, err)) return -1;

    std::unique_ptr<rtb_dicom_scp> scp(new rtb_dicom_scp());
    scp->aet = cfg->aet;
    scp->dir = cfg->dir;
    scp->allow_any = cfg->allow == nullptr;
    for (size_t i = 0; cfg->allow && i < cfg->n_allow; i++) scp->allow.push_back(cfg->allow[i]);
    scp->on_store = cfg->on_store;
    scp->ud = cfg->ud;
    if (cfg->acse_timeout > 0) scp->acse_timeout = cfg->acse_timeout;
    if (cfg->dimse_timeout > 0) scp->dimse_timeout = cfg->dimse_timeout;
    if (cfg->request_timeout > 0) scp->request_timeout = cfg->request_timeout;
    if (cfg->max_pdu > 0) scp->max_pdu = cfg->max_pdu;
    if (cfg->max_associations > 0) scp->max_associations = cfg->max_associations;
    if (cfg->max_per_host > 0) scp->max_per_host = cfg->max_per_host;
    scp->tls = cfg->tls != 0;
    scp->sort_by_study = cfg->sort_by_study != 0;
    if (cfg->n_exec_argv > 0) {
        std::vector<std::string> argv;
        for (size_t i = 0; i < cfg->n_exec_argv; i++) {
            if (!cfg->exec_argv || !cfg->exec_argv[i])
                return fail(err, RTB_DICOM_E_INVALID, "exec_argv[%zu] is NULL", i);
            argv.push_back(cfg->exec_argv[i]);
        }
        if (argv[0].empty()) return fail(err, RTB_DICOM_E_INVALID, "the reception command is empty");
        scp->executor.reset(new Executor(std::move(argv)));
    }

    scp->listen_fd = open_listener(cfg->port, &scp->port, err);
    if (scp->listen_fd < 0) return -1;
    if (!scp_handoff_init(scp.get(), cfg, err)) {
        close(scp->listen_fd);
        return -1;
    }
    if (pipe2(scp->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        scp_handoff_free(scp.get());
        close(scp->listen_fd);
        return fail(err, RTB_DICOM_E_IO, "pipe: %s", strerror(errno));
    }
    scp->stale_removed = claim_dir(scp->dir, &scp->dir_lock);
    // Two ready temporaries per association the SCP serves at once (scp_pool.cpp).
    if (!scp->sort_by_study)
        scp->pool.reset(new TempPool(scp->dir, std::min<size_t>(64, 2 * std::max(4, scp->max_associations))));
    rtb_dicom_scp *p = scp.get();
    scp->acceptor = std::thread([p] { scp_accept_loop(p); });
    *out = scp.release();
    return 0;
}

extern "C" int rtb_dicom_scp_port(const rtb_dicom_scp *scp)
{
    return scp ? scp->port : 0;
}

extern "C" size_t rtb_dicom_scp_stored(const rtb_dicom_scp *scp)
{
    return scp ? scp->stored.load() : 0;
}

extern "C" void rtb_dicom_scp_get_stats(const rtb_dicom_scp *scp, rtb_dicom_scp_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!scp) return;
    out->stored = scp->stored.load();
    out->associations = scp->associations.load();
    out->refused = scp->refused.load();
    out->rejected = scp->rejected.load();
    out->dropped = scp->dropped.load();
    out->exec_ran = scp->executor ? scp->executor->ran() : scp->exec_ran;
    out->exec_failed = scp->executor ? scp->executor->failed() : scp->exec_failed;
    out->stale_removed = scp->stale_removed;
}

extern "C" void rtb_dicom_scp_stop(rtb_dicom_scp *scp)
{
    rtb_dicom_scp_stop_stats(scp, nullptr);
}

extern "C" void rtb_dicom_scp_stop_stats(rtb_dicom_scp *scp, rtb_dicom_scp_stats *final)
{
    if (final) memset(final, 0, sizeof *final);
    if (!scp) return;
    scp->stopping = true;
    if (scp->wake[1] >= 0) {
        char c = 1;
        (void)!write(scp->wake[1], &c, 1);
    }
    if (scp->acceptor.joinable()) scp->acceptor.join();
    // Connections still waiting for their request are cut now; associations
    // notice `stopping` within a second (they poll with a 1 s timeout).
    {
        std::lock_guard<std::mutex> lock(scp->conns_mu);
        for (auto &c : scp->conns) {
            std::lock_guard<std::mutex> cl(c.mu);
            if (c.in_request && c.watch_fd >= 0) shutdown(c.watch_fd, SHUT_RDWR);
        }
    }
    {
        std::lock_guard<std::mutex> lock(scp->conns_mu);
        for (auto &c : scp->conns)
            if (c.thread.joinable()) c.thread.join();
        scp->conns.clear();
        scp->per_host.clear();
    }
    scp->pool.reset(); // every worker has returned: the files not taken are removed
    if (scp->executor) {
        Executor *ex = scp->executor.get();
        ex->finish(); // every worker has returned: run what they queued, then stop
        scp->exec_ran = ex->ran();
        scp->exec_failed = ex->failed();
        scp->executor.reset();
    }
    if (final) rtb_dicom_scp_get_stats(scp, final);
    scp_handoff_free(scp);
    if (scp->listen_fd >= 0) close(scp->listen_fd);
    if (scp->dir_lock >= 0) close(scp->dir_lock);
    for (int fd : scp->wake)
        if (fd >= 0) close(fd);
    delete scp;
}
