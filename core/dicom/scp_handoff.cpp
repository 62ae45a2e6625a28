// Hands a socket we accepted to DCMTK, which then reads the A-ASSOCIATE-RQ on
// the worker's thread.
//
// DCMTK 3.6.7 has no call that takes a connected socket and returns an
// association. ASC_receiveAssociation() either accept()s on the network's
// listening socket (and then reads the request in the same call, which is
// what let one silent client block the whole SCP), or, when the process-wide
// dcmExternalSocketHandle is set, uses that socket instead. We use the latter:
// - a hand-over network, made once while dcmExternalSocketHandle is set, so it
//   has no listening socket of its own; its timeout (the first PDU's) is the
//   request timeout;
// - the global is set under a mutex, and released again by our transport
//   layer's createConnection(), the first thing DCMTK does after reading it.
//   The mutex so covers only a few non-blocking calls (getpeername, setsockopt;
//   reverse DNS is switched off); the TLS handshake and the request read run
//   after it, concurrently on every worker.
#include "scp.hpp"

#include <dcmtk/dcmnet/dcmlayer.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/dulstruc.h>
#ifdef WITH_OPENSSL
#include <dcmtk/dcmtls/tlslayer.h>
#endif

#include <mutex>
#include <unistd.h>

namespace rtb {

namespace {

std::mutex g_handoff_mu;
thread_local bool t_held = false;  // this thread holds g_handoff_mu
thread_local bool t_taken = false; // DCMTK took the socket (and will close it)

void release_handoff()
{
    if (!t_held) return;
    dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    t_held = false;
    g_handoff_mu.unlock();
}

template <class Base>
class HandoffLayer : public Base {
public:
    using Base::Base;
    DcmTransportConnection *createConnection(DcmNativeSocketType sock, OFBool secure) override
    {
        t_taken = true;
        release_handoff();
        return Base::createConnection(sock, secure);
    }
};

} // namespace

bool scp_handoff_init(rtb_dicom_scp *scp, const rtb_dicom_scp_config *cfg, rtb_dicom_error *err)
{
    // The callingPresentationAddress stays numeric: a reverse DNS lookup would
    // run with the hand-over mutex held, and may take seconds.
    dcmDisableGethostbyaddr.set(OFTrue);
    if (cfg->tls) {
#ifdef WITH_OPENSSL
        auto *layer = new HandoffLayer<DcmTLSTransportLayer>(NET_ACCEPTOR, nullptr, OFTrue);
        scp->layer = layer;
        if (!tls_setup_server(layer, cfg->tls_cert, cfg->tls_key, cfg->tls_ca,
                              cfg->tls_require_client_cert != 0, err)) {
            scp_handoff_free(scp);
            return false;
        }
#else
        return fail(err, RTB_DICOM_E_INVALID, "TLS not supported by this build"), false;
#endif
    } else {
        scp->layer = new HandoffLayer<DcmTransportLayer>();
    }
    OFCondition cond;
    {
        std::lock_guard<std::mutex> lock(g_handoff_mu);
        // Any valid descriptor: it only tells DCMTK not to create a listening socket.
        dcmExternalSocketHandle.set(scp->listen_fd);
        cond = ASC_initializeNetwork(NET_ACCEPTOR, 0, scp->request_timeout, &scp->net);
        dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    }
    if (cond.good()) cond = ASC_setTransportLayer(scp->net, scp->layer, 0);
    if (cond.bad()) {
        scp_handoff_free(scp);
        return fail(err, RTB_DICOM_E_INTERNAL, "cannot set up the SCP network: %s", cond.text()), false;
    }
    return true;
}

void scp_handoff_free(rtb_dicom_scp *scp)
{
    if (scp->net) ASC_dropNetwork(&scp->net);
    delete scp->layer;
    scp->layer = nullptr;
}

OFCondition scp_receive(rtb_dicom_scp *scp, int fd, T_ASC_Association **assoc, bool *taken)
{
    *assoc = nullptr;
    g_handoff_mu.lock();
    t_held = true;
    t_taken = false;
    dcmExternalSocketHandle.set(fd);
    OFCondition cond = ASC_receiveAssociation(scp->net, assoc, static_cast<long>(scp->max_pdu), nullptr,
                                              nullptr, scp->tls ? OFTrue : OFFalse, DUL_NOBLOCK, 0);
    release_handoff(); // when DCMTK failed before it created the connection
    *taken = t_taken;
    if (cond.bad()) return cond;
    auto *key = *assoc ? reinterpret_cast<PRIVATE_ASSOCIATIONKEY *>((*assoc)->DULassociation) : nullptr;
    // DCMTK reports success also when the first PDU never came (its ARTIM timer
    // expired, or the peer closed): the transport is closed then, and only a
    // request actually read leaves the state machine in Sta3, "awaiting the
    // local A-ASSOCIATE response" (PS3.8 9.2).
    const int kSta3 = 3;
    if (!key || key->protocolState != kSta3)
        return makeOFCondition(OFM_dcmnet, 0x100, OF_error, "no A-ASSOCIATE-RQ within the request timeout");
    // The first PDU had the short request timeout; from now on DCMTK's
    // defaults (A-RELEASE and such) are the ACSE timeout.
    key->timeout = scp->acse_timeout;
    return cond;
}

} // namespace rtb
