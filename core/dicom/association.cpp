// One SCU association: negotiate, hand out presentation contexts, release.
//
// Each Association owns its own T_ASC_Network, so associations on different
// threads share no DCMTK state except the read-only registries set up in
// rtb_dicom_init() and DCMTK's process-wide connect timeout (see dicom.h).
#include "internal.hpp"

#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dul.h>

#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace rtb {

// tls.cpp
bool tls_attach(const rtb_dicom_peer *peer, T_ASC_Network *net, T_ASC_Parameters *params,
                void **layer, rtb_dicom_error *err);
void tls_free(void *layer);

static const int kDefaultConnectTimeout = 10;
static const int kDefaultAcseTimeout = 30;
static const int kDefaultDimseTimeout = 60;
static const unsigned kDefaultMaxPdu = 116794;

static bool valid_ae(const char *ae)
{
    if (!ae) return false;
    size_t n = strlen(ae);
    if (n == 0 || n > 16) return false;
    for (size_t i = 0; i < n; i++)
        if (ae[i] == '\\' || static_cast<unsigned char>(ae[i]) < 0x20) return false;
    return true;
}

bool validate_peer(const rtb_dicom_peer *peer, rtb_dicom_error *err)
{
    if (!peer) return fail(err, RTB_DICOM_E_INVALID, "no peer given"), false;
    set_peer(err, peer);
    if (!peer->calling_ae || !*peer->calling_ae)
        return fail(err, RTB_DICOM_E_INVALID, "no calling AE title (our own AE) given"), false;
    if (!valid_ae(peer->calling_ae))
        return fail(err, RTB_DICOM_E_INVALID, "invalid calling AE title '%s' (1-16 characters, no backslash)",
                    peer->calling_ae), false;
    if (!valid_ae(peer->called_ae))
        return fail(err, RTB_DICOM_E_INVALID, "invalid called AE title '%s' (1-16 characters, no backslash)",
                    peer->called_ae ? peer->called_ae : ""), false;
    if (!peer->host || !*peer->host)
        return fail(err, RTB_DICOM_E_INVALID, "no peer host given"), false;
    if (peer->port < 1 || peer->port > 65535)
        return fail(err, RTB_DICOM_E_INVALID, "invalid peer port %d", peer->port), false;
    if (peer->connect_timeout < 0 || peer->acse_timeout < 0 || peer->dimse_timeout < 0)
        return fail(err, RTB_DICOM_E_INVALID, "negative timeout"), false;
    if (peer->max_pdu != 0 && (peer->max_pdu < ASC_MINIMUMPDUSIZE || peer->max_pdu > ASC_MAXIMUMPDUSIZE))
        return fail(err, RTB_DICOM_E_INVALID, "max PDU %u outside %u..%u", peer->max_pdu,
                    (unsigned)ASC_MINIMUMPDUSIZE, (unsigned)ASC_MAXIMUMPDUSIZE), false;
    return true;
}

// DcmTransportConnection::getSocket() is protected; a using-declaration in a
// derived class makes the member nameable, and the pointer-to-member obtained
// that way may be called on any connection (no cast, no undefined behaviour).
struct SocketAccess : DcmTransportConnection {
    using DcmTransportConnection::getSocket;
};

// DCMTK only disables Nagle when the environment says TCP_NODELAY=1; without it
// every DIMSE message split over small PDUs waits ~40 ms for a delayed ACK. We set
// it on the socket ourselves, unless the user explicitly asked for TCP_NODELAY=0.
void set_nodelay(T_ASC_Association *assoc)
{
    const char *env = getenv("TCP_NODELAY");
    if (env && strcmp(env, "0") == 0) return;
    if (!assoc || !assoc->DULassociation) return;
    DcmTransportConnection *conn = DUL_getTransportConnection(assoc->DULassociation);
    if (!conn) return;
    int one = 1;
    DcmNativeSocketType (DcmTransportConnection::*get)() = &SocketAccess::getSocket;
    (void)setsockopt((conn->*get)(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int Association::dimse_timeout() const
{
    return peer_->dimse_timeout > 0 ? peer_->dimse_timeout : kDefaultDimseTimeout;
}

bool Association::open(const std::vector<PresContext> &contexts, rtb_dicom_error *err)
{
    if (!ensure_init(err)) return false;
    if (!validate_peer(peer_, err)) return false;
    if (contexts.empty() || contexts.size() > 128)
        return fail(err, RTB_DICOM_E_INVALID, "%zu presentation contexts requested (1..128 allowed)",
                    contexts.size()), false;
    int acse = peer_->acse_timeout > 0 ? peer_->acse_timeout : kDefaultAcseTimeout;
    int connect = peer_->connect_timeout > 0 ? peer_->connect_timeout : kDefaultConnectTimeout;
    unsigned max_pdu = peer_->max_pdu ? peer_->max_pdu : kDefaultMaxPdu;

    // DCMTK 3.6.7 has no per-association connect timeout; this global is read
    // once per connect, so concurrent callers with equal settings are unaffected.
    dcmConnectionTimeout.set(connect);

    OFCondition cond = ASC_initializeNetwork(NET_REQUESTOR, 0, acse, &net_);
    if (cond.bad()) return fail_cond(err, cond, "cannot initialise the network"), false;

    T_ASC_Parameters *params = nullptr;
    cond = ASC_createAssociationParameters(&params, static_cast<long>(max_pdu));
    if (cond.bad()) return fail_cond(err, cond, "cannot create association parameters"), false;
    if (peer_->tls) {
        if (!tls_attach(peer_, net_, params, &tls_, err)) {
            ASC_destroyAssociationParameters(&params);
            return false;
        }
    }
    ASC_setAPTitles(params, peer_->calling_ae, peer_->called_ae, nullptr);
    std::string address = std::string(peer_->host) + ":" + std::to_string(peer_->port);
    ASC_setPresentationAddresses(params, "localhost", address.c_str());

    T_ASC_PresentationContextID id = 1;
    for (const PresContext &pc : contexts) {
        std::vector<const char *> xfers;
        for (const std::string &x : pc.transfer_syntaxes) xfers.push_back(x.c_str());
        cond = ASC_addPresentationContext(params, id, pc.abstract_syntax.c_str(), xfers.data(),
                                          static_cast<int>(xfers.size()), pc.role);
        if (cond.bad()) {
            ASC_destroyAssociationParameters(&params);
            return fail_cond(err, cond, "cannot add a presentation context"), false;
        }
        id = static_cast<T_ASC_PresentationContextID>(id + 2);
    }

    // Non-blocking with the ACSE timeout: a peer that accepts TCP but never
    // answers the A-ASSOCIATE-RQ must not hang a worker thread forever.
    cond = ASC_requestAssociation(net_, params, &assoc_, nullptr, nullptr, DUL_NOBLOCK, acse);
    if (cond.bad()) {
        if (cond == DUL_ASSOCIATIONREJECTED) {
            T_ASC_RejectParameters rej;
            ASC_getRejectParameters(params, &rej);
            OFString text;
            ASC_printRejectParameters(text, &rej);
            std::string flat;
            for (char c : std::string(text.c_str())) flat += (c == '\n') ? "; " : std::string(1, c);
            fail(err, RTB_DICOM_E_REJECTED, "association rejected: %s", trim(flat).c_str());
            if (err) {
                err->reject.result = rej.result;
                err->reject.source = rej.source;
                err->reject.reason = rej.reason & 0xFF; // DCMTK encodes source<<8 | reason
            }
        } else {
            fail_cond(err, cond, "cannot open association");
        }
        if (assoc_) {
            ASC_dropAssociation(assoc_);
            ASC_destroyAssociation(&assoc_); // also frees params
        } else {
            ASC_destroyAssociationParameters(&params);
        }
        assoc_ = nullptr;
        return false;
    }
    set_nodelay(assoc_);
    if (ASC_countAcceptedPresentationContexts(assoc_->params) == 0) {
        fail(err, RTB_DICOM_E_NEGOTIATION, "the peer accepted none of the %zu proposed presentation contexts (first: %s)",
             contexts.size(), dcmFindNameOfUID(contexts[0].abstract_syntax.c_str(),
                                               contexts[0].abstract_syntax.c_str()));
        return false; // the destructor releases
    }
    return true;
}

T_ASC_PresentationContextID Association::open_for(const char *sop_class, rtb_dicom_error *err)
{
    if (!open({{sop_class, {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax}}},
              err))
        return 0;
    T_ASC_PresentationContextID pc = find_context(sop_class);
    if (pc == 0)
        fail(err, RTB_DICOM_E_NEGOTIATION, "the peer does not support %s", dcmFindNameOfUID(sop_class, sop_class));
    return pc;
}

T_ASC_PresentationContextID Association::find_context(const char *abstract_syntax,
                                                      const char *transfer_syntax) const
{
    if (!assoc_) return 0;
    if (transfer_syntax)
        return ASC_findAcceptedPresentationContextID(assoc_, abstract_syntax, transfer_syntax);
    return ASC_findAcceptedPresentationContextID(assoc_, abstract_syntax);
}

T_ASC_PresentationContextID Association::accepted_context(T_ASC_PresentationContextID id,
                                                          std::string *abstract_syntax,
                                                          std::string *xfer) const
{
    if (!assoc_) return 0;
    T_ASC_PresentationContext pc;
    if (ASC_findAcceptedPresentationContext(assoc_->params, id, &pc).bad()) return 0;
    if (pc.resultReason != ASC_P_ACCEPTANCE) return 0;
    if (abstract_syntax) *abstract_syntax = pc.abstractSyntax;
    if (xfer) *xfer = pc.acceptedTransferSyntax;
    return id;
}

bool Association::release(rtb_dicom_error *err)
{
    if (!assoc_) return true;
    OFCondition cond = broken_ ? EC_IllegalCall : ASC_releaseAssociation(assoc_);
    if (cond.bad()) ASC_abortAssociation(assoc_);
    ASC_destroyAssociation(&assoc_);
    assoc_ = nullptr;
    // A failed A-RELEASE after a completed operation loses nothing: the work is done.
    (void)err;
    return true;
}

void Association::abort()
{
    if (!assoc_) return;
    ASC_abortAssociation(assoc_);
    ASC_destroyAssociation(&assoc_);
    assoc_ = nullptr;
}

Association::~Association()
{
    if (assoc_) {
        if (broken_) abort();
        else release(nullptr);
    }
    if (net_) ASC_dropNetwork(&net_);
    if (tls_) tls_free(tls_);
}

} // namespace rtb
