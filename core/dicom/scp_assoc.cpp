// One association of the storage SCP: answer C-ECHO, receive C-STORE straight
// into a temporary file, make it durable, then answer. Success is only sent
// once <SOPInstanceUID>.dcm is renamed into place and fsynced, so an SCU that
// got 0x0000 may forget the instance.
#include "scp.hpp"

#include <unistd.h>

namespace rtb {

namespace {

struct StoreCtx {
    rtb_dicom_scp *scp;
    std::string tmp, final_path;
    bool committed = false;
};

void on_store_progress(void *data, T_DIMSE_StoreProgress *progress, T_DIMSE_C_StoreRQ *,
                       char *, DcmDataset **, T_DIMSE_C_StoreRSP *rsp, DcmDataset **)
{
    if (progress->state != DIMSE_StoreEnd) return;
    StoreCtx *ctx = static_cast<StoreCtx *>(data);
    // DCMTK closed the file before this last callback; the status it proposes
    // tells whether the data arrived whole.
    if (rsp->DimseStatus != STATUS_Success) return;
    rtb_dicom_error err;
    clear_error(&err);
    if (commit_file(ctx->tmp, ctx->final_path, &err)) ctx->committed = true;
    else rsp->DimseStatus = STATUS_STORE_Refused_OutOfResources;
}

OFCondition handle_store(rtb_dicom_scp *scp, T_ASC_Association *assoc, T_ASC_PresentationContextID pid,
                         T_DIMSE_C_StoreRQ &req, const std::string &calling_ae)
{
    StoreCtx ctx;
    ctx.scp = scp;
    // The name comes from the peer: only a well-formed UID may become a path.
    bool name_ok = rtb_dicom_uid_valid(req.AffectedSOPInstanceUID);
    rtb_dicom_error err;
    clear_error(&err);
    if (name_ok) {
        ctx.final_path = scp->dir + "/" + req.AffectedSOPInstanceUID + ".dcm";
        ctx.tmp = temp_path_in(scp->dir, std::string(req.AffectedSOPInstanceUID) + ".dcm", &err);
    }
    if (!name_ok || ctx.tmp.empty()) {
        // Still read the data set off the wire, then refuse it.
        DIC_UL bytes = 0, pdvs = 0;
        OFCondition cond = DIMSE_ignoreDataSet(assoc, DIMSE_NONBLOCKING, scp->dimse_timeout, &bytes, &pdvs);
        if (cond.bad()) return cond;
        T_DIMSE_C_StoreRSP rsp = {};
        rsp.MessageIDBeingRespondedTo = req.MessageID;
        rsp.DimseStatus = name_ok ? STATUS_STORE_Refused_OutOfResources : STATUS_STORE_Error_CannotUnderstand;
        rsp.DataSetType = DIMSE_DATASET_NULL;
        OFStandard::strlcpy(rsp.AffectedSOPClassUID, req.AffectedSOPClassUID, sizeof rsp.AffectedSOPClassUID);
        OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID,
                            sizeof rsp.AffectedSOPInstanceUID);
        rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
        return DIMSE_sendStoreResponse(assoc, pid, &req, &rsp, nullptr);
    }

    OFCondition cond = DIMSE_storeProvider(assoc, pid, &req, ctx.tmp.c_str(), 1 /* meta header */,
                                           nullptr, on_store_progress, &ctx, DIMSE_NONBLOCKING,
                                           scp->dimse_timeout);
    if (!ctx.committed) unlink(ctx.tmp.c_str());
    if (ctx.committed) {
        scp->stored++;
        if (scp->on_store) {
            T_ASC_PresentationContext pc;
            std::string xfer;
            if (ASC_findAcceptedPresentationContext(assoc->params, pid, &pc).good())
                xfer = pc.acceptedTransferSyntax;
            rtb_dicom_stored_instance inst = {ctx.final_path.c_str(), req.AffectedSOPClassUID,
                                              req.AffectedSOPInstanceUID, calling_ae.c_str(),
                                              xfer.c_str()};
            std::lock_guard<std::mutex> lock(scp->callback_mu);
            scp->on_store(scp->ud, &inst);
        }
    }
    return cond;
}

} // namespace

void scp_serve(rtb_dicom_scp *scp, T_ASC_Association *assoc, std::string calling_ae)
{
    int idle = 0;
    for (;;) {
        // Wait in 1 s steps so stop() is noticed quickly even on an idle association.
        if (!ASC_dataWaiting(assoc, 1)) {
            if (scp->stopping || ++idle >= scp->dimse_timeout) {
                ASC_abortAssociation(assoc);
                break;
            }
            continue;
        }
        idle = 0;
        T_DIMSE_Message msg = {};
        T_ASC_PresentationContextID pid = 0;
        OFCondition cond = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, scp->dimse_timeout, &pid, &msg, nullptr);
        if (cond == DUL_PEERREQUESTEDRELEASE) {
            ASC_acknowledgeRelease(assoc);
            break;
        }
        if (cond.bad()) {
            if (cond != DUL_PEERABORTEDASSOCIATION) ASC_abortAssociation(assoc);
            break;
        }
        switch (msg.CommandField) {
        case DIMSE_C_ECHO_RQ:
            cond = DIMSE_sendEchoResponse(assoc, pid, &msg.msg.CEchoRQ, STATUS_Success, nullptr);
            break;
        case DIMSE_C_STORE_RQ:
            cond = handle_store(scp, assoc, pid, msg.msg.CStoreRQ, calling_ae);
            break;
        default:
            // Only verification and storage were negotiated; anything else is a
            // peer error we cannot answer meaningfully.
            cond = DIMSE_BADCOMMANDTYPE;
            break;
        }
        if (cond.bad()) {
            ASC_abortAssociation(assoc);
            break;
        }
    }
    ASC_dropSCPAssociation(assoc);
    ASC_destroyAssociation(&assoc);
}

} // namespace rtb
