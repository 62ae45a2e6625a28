// Storage SCP lifecycle: bind, accept on a thread of its own, vet each
// association (called AE, calling AE, capacity), hand it to a worker thread,
// and stop cleanly.
#include "scp.hpp"

#include <dcmtk/dcmnet/dulstruc.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace rtb;

namespace {

void reject(T_ASC_Association *assoc, T_ASC_RejectParametersResult result,
            T_ASC_RejectParametersSource source, T_ASC_RejectParametersReason reason)
{
    T_ASC_RejectParameters rej = {result, source, reason};
    ASC_rejectAssociation(assoc, &rej);
    ASC_dropAssociation(assoc);
    ASC_destroyAssociation(&assoc);
}

size_t reap_workers(rtb_dicom_scp *scp)
{
    std::lock_guard<std::mutex> lock(scp->workers_mu);
    for (auto it = scp->workers.begin(); it != scp->workers.end();) {
        if (it->done) {
            it->thread.join();
            it = scp->workers.erase(it);
        } else {
            ++it;
        }
    }
    return scp->workers.size();
}

// Every standard storage class plus Verification, each with the transfer
// syntaxes in kAllXfers (uncompressed preferred, compressed taken as it comes).
bool accept_contexts(T_ASC_Association *assoc)
{
    std::vector<const char *> abstract;
    abstract.push_back(UID_VerificationSOPClass);
    for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; i++) abstract.push_back(dcmAllStorageSOPClassUIDs[i]);
    std::vector<const char *> xfers(kAllXfers, kAllXfers + kNumAllXfers);
    OFCondition cond = ASC_acceptContextsWithPreferredTransferSyntaxes(
        assoc->params, abstract.data(), static_cast<int>(abstract.size()), xfers.data(),
        static_cast<int>(xfers.size()));
    return cond.good();
}

void handle_incoming(rtb_dicom_scp *scp, T_ASC_Association *assoc)
{
    char calling[64] = "", called[64] = "";
    ASC_getAPTitles(assoc->params, calling, sizeof calling, called, sizeof called, nullptr, 0);
    std::string calling_ae = trim(calling), called_ae = trim(called);

    if (called_ae != scp->aet) {
        reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED);
        return;
    }
    if (!scp->allow_any &&
        std::find(scp->allow.begin(), scp->allow.end(), calling_ae) == scp->allow.end()) {
        reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        return;
    }
    if (reap_workers(scp) >= static_cast<size_t>(scp->max_associations)) {
        reject(assoc, ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
               ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
        return;
    }
    if (!accept_contexts(assoc) || ASC_acknowledgeAssociation(assoc).bad()) {
        ASC_dropAssociation(assoc);
        ASC_destroyAssociation(&assoc);
        return;
    }
    set_nodelay(assoc);

    std::lock_guard<std::mutex> lock(scp->workers_mu);
    scp->workers.emplace_back();
    rtb_dicom_scp::Worker *w = &scp->workers.back();
    w->thread = std::thread([scp, assoc, calling_ae, w] {
        scp_serve(scp, assoc, calling_ae);
        w->done = true;
    });
}

void accept_loop(rtb_dicom_scp *scp)
{
    while (!scp->stopping) {
        struct pollfd fds[2] = {{scp->listen_fd, POLLIN, 0}, {scp->wake[0], POLLIN, 0}};
        int n = poll(fds, 2, 1000);
        if (n < 0 && errno != EINTR) break;
        if (scp->stopping || (fds[1].revents & POLLIN)) break;
        if (n <= 0 || !(fds[0].revents & POLLIN)) {
            reap_workers(scp);
            continue;
        }
        // Non-blocking with a 1 s wait: a client that connected and vanished
        // before accept() must not park the acceptor in a blocking accept.
        T_ASC_Association *assoc = nullptr;
        OFCondition cond = ASC_receiveAssociation(scp->net, &assoc, static_cast<long>(scp->max_pdu),
                                                  nullptr, nullptr, OFFalse, DUL_NOBLOCK, 1);
        if (cond.bad()) {
            if (assoc) {
                ASC_dropAssociation(assoc);
                ASC_destroyAssociation(&assoc);
            }
            continue;
        }
        handle_incoming(scp, assoc);
    }
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
    struct stat st;
    if (!cfg->dir || stat(cfg->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return fail(err, RTB_DICOM_E_INVALID, "SCP directory '%s' does not exist",
                    cfg->dir ? cfg->dir : "");

    std::unique_ptr<rtb_dicom_scp> scp(new rtb_dicom_scp());
    scp->aet = cfg->aet;
    scp->dir = cfg->dir;
    scp->allow_any = cfg->allow == nullptr;
    for (size_t i = 0; cfg->allow && i < cfg->n_allow; i++) scp->allow.push_back(cfg->allow[i]);
    scp->on_store = cfg->on_store;
    scp->ud = cfg->ud;
    if (cfg->acse_timeout > 0) scp->acse_timeout = cfg->acse_timeout;
    if (cfg->dimse_timeout > 0) scp->dimse_timeout = cfg->dimse_timeout;
    if (cfg->max_pdu > 0) scp->max_pdu = cfg->max_pdu;
    if (cfg->max_associations > 0) scp->max_associations = cfg->max_associations;

    OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, cfg->port, scp->acse_timeout, &scp->net);
    if (cond.bad()) {
        return fail(err, RTB_DICOM_E_IO, "cannot listen on port %d: %s", cfg->port, cond.text());
    }
    // DCMTK keeps the listening socket inside its private network key; we need
    // it to poll (so stop() wakes us at once) and to learn an ephemeral port.
    PRIVATE_NETWORKKEY *key = reinterpret_cast<PRIVATE_NETWORKKEY *>(scp->net->network);
    scp->listen_fd = key->networkSpecific.TCP.listenSocket;
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (getsockname(scp->listen_fd, reinterpret_cast<sockaddr *>(&addr), &len) == 0) {
        if (addr.ss_family == AF_INET) scp->port = ntohs(reinterpret_cast<sockaddr_in *>(&addr)->sin_port);
        else if (addr.ss_family == AF_INET6) scp->port = ntohs(reinterpret_cast<sockaddr_in6 *>(&addr)->sin6_port);
    }
    if (scp->port == 0) {
        ASC_dropNetwork(&scp->net);
        return fail(err, RTB_DICOM_E_IO, "cannot determine the port the SCP listens on");
    }
    if (pipe2(scp->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        ASC_dropNetwork(&scp->net);
        return fail(err, RTB_DICOM_E_IO, "pipe: %s", strerror(errno));
    }
    rtb_dicom_scp *p = scp.get();
    scp->acceptor = std::thread([p] { accept_loop(p); });
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

extern "C" void rtb_dicom_scp_stop(rtb_dicom_scp *scp)
{
    if (!scp) return;
    scp->stopping = true;
    if (scp->wake[1] >= 0) {
        char c = 1;
        (void)!write(scp->wake[1], &c, 1);
    }
    if (scp->acceptor.joinable()) scp->acceptor.join();
    // Workers notice `stopping` within a second (they poll with a 1 s timeout).
    {
        std::lock_guard<std::mutex> lock(scp->workers_mu);
        for (auto &w : scp->workers)
            if (w.thread.joinable()) w.thread.join();
        scp->workers.clear();
    }
    if (scp->net) ASC_dropNetwork(&scp->net);
    for (int fd : scp->wake)
        if (fd >= 0) close(fd);
    delete scp;
}
