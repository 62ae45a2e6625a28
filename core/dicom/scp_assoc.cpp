// One connection of the storage SCP, on its own worker thread: read the
// A-ASSOCIATE-RQ (short request timeout), vet it (called AE, calling AE),
// answer C-ECHO, receive C-STORE straight into a temporary file, make it
// durable, then answer. Success is only sent once <SOPInstanceUID>.dcm is
// renamed into place and flushed, so an SCU that got 0x0000 may forget the
// instance.
//
// Durability costs two flushes per file (its data, then its name), and each
// response waits for them. Concurrent associations flush concurrently, and the
// file system and the disk overlap flushes that wait at the same time: on this
// project's machines (ext4, virtio disk) four threads each making 100 files
// durable took 0.2-0.4 s, one thread doing all 400 1.3-2.1 s, and a committer
// thread of our own batching waiting files into one syncfs() per round 0.9-1.3 s
// (syncfs() also flushes everything else on the disk). So each worker makes its
// own file durable: fdatasync of the data (the size and allocation it needs are
// flushed with it), rename, then the directory flush, which is shared (group
// commit, fileio.cpp's sync_dir): workers that renamed into the same directory
// before a flush started are all covered by it, one of them leads, the others
// wait for it. The group is per directory, so --sort-by-study shares per study.
//
// What that was measured to do (12-02, 2 cores, ext4 without a journal on a
// virtio disk, other jobs loading the machine): the directory fsyncs per 1000
// instances (strace -f) fell from 1000 to 853 over 4 associations and to 488
// over 8. A file's fdatasync is not shareable and here costs what fsync costs
// (7 writes and 2 flushes per file either way: a new file's inode must be
// written). The temporary file stays open from mkstemp to its fdatasync (two
// open/close pairs fewer per instance), and is taken, where it can be, from files
// made and flushed ahead by a thread of their own (scp_pool.cpp: one synchronous
// write fewer on each response's path). A bare cache flush took ~75 us, an fsync
// of a directory with a new entry ~600 us: the synchronous writes, not the
// flush, are the cost, and with them switched off (an experiment, never a mode)
// listen ingested as fast as storescp. On a quiet machine (tests/bench/listen.bench.sh,
// 12-02, medians of 3) the ingest rate against storescp went from 0.52 / 0.59 / 0.73
// to 0.56 / 0.74 / 0.86 over 1 / 4 / 8 associations (BENCHMARKS.md).
//
// Not done, and why: O_TMPFILE + linkat would skip the temporary name (whose
// directory ext4 without a journal syncs on the file's first fsync), but the
// inode it flushes has a link count of 0; after linkat only a second fsync of
// the file makes the link count durable, or a crash leaves a name pointing at an
// unlinked inode. Renaming before the data is durable would save a flush but
// could leave a complete-looking name over incomplete data after a crash.
#include "scp.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rtb {

namespace {

void reject(T_ASC_Association *assoc, T_ASC_RejectParametersResult result,
            T_ASC_RejectParametersSource source, T_ASC_RejectParametersReason reason)
{
    T_ASC_RejectParameters rej = {result, source, reason};
    ASC_rejectAssociation(assoc, &rej);
    ASC_dropAssociation(assoc);
    ASC_destroyAssociation(&assoc);
}

// Whether a proposed SOP class this DCMTK does not list is one to store: a standard
// storage class newer than its list (1.2.840.10008.5.1.4.1.1.*: Enhanced RT Image,
// RT Radiation Record Set, ...) or a vendor's private class (outside the standard's
// root: Siemens CSA Non-Image, ...). Other standard services (queries, commitment)
// are not storage and stay refused.
bool storable_class(const char *uid)
{
    if (!rtb_dicom_uid_valid(uid)) return false;
    if (strncmp(uid, "1.2.840.10008.", 14) != 0) return true;
    return strncmp(uid, "1.2.840.10008.5.1.4.1.1.", 24) == 0;
}

// Every storage class (DCMTK's list and those storable_class admits as proposed) plus
// Verification, each with the transfer syntaxes in kAllXfers (uncompressed
// preferred, compressed taken as it comes).
bool accept_contexts(T_ASC_Association *assoc)
{
    std::vector<const char *> abstract;
    abstract.push_back(UID_VerificationSOPClass);
    for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; i++) abstract.push_back(dcmAllStorageSOPClassUIDs[i]);
    std::vector<std::string> more; // the proposed classes DCMTK does not list
    int n = ASC_countPresentationContexts(assoc->params);
    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(assoc->params, i, &pc).bad() || !storable_class(pc.abstractSyntax)) continue;
        bool listed = std::find(more.begin(), more.end(), pc.abstractSyntax) != more.end();
        for (const char *a : abstract) listed = listed || strcmp(a, pc.abstractSyntax) == 0;
        if (!listed) more.push_back(pc.abstractSyntax);
    }
    for (const std::string &m : more) abstract.push_back(m.c_str());
    std::vector<const char *> xfers(kAllXfers, kAllXfers + kNumAllXfers);
    OFCondition cond = ASC_acceptContextsWithPreferredTransferSyntaxes(
        assoc->params, abstract.data(), static_cast<int>(abstract.size()), xfers.data(),
        static_cast<int>(xfers.size()));
    return cond.good();
}

// --sort-by-study: <dir>/<StudyInstanceUID>/, made (durably) on first use. An
// instance without a valid Study Instance UID stays in <dir>: the name comes
// from the peer, and only a well-formed UID may become a path.
std::string study_dir(rtb_dicom_scp *scp, const std::string &tmp)
{
    DcmFileFormat ff;
    OFString uid;
    if (ff.loadFileUntilTag(tmp.c_str(), EXS_Unknown, EGL_noChange, 256, ERM_autoDetect,
                            DcmTagKey(0x0020, 0x000E))
            .bad() ||
        ff.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, uid).bad() ||
        !rtb_dicom_uid_valid(uid.c_str()))
        return scp->dir;
    std::string dir = scp->dir + "/" + uid.c_str();
    if (mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) return std::string();
    // Made now, by another worker (whose flush may not be done yet) or before
    // we started: either way its name is made durable once before we use it.
    {
        std::lock_guard<std::mutex> lock(scp->study_dirs_mu);
        if (scp->study_dirs.count(dir)) return dir;
    }
    rtb_dicom_error err;
    clear_error(&err);
    if (!sync_dir(scp->dir, &err)) return std::string();
    std::lock_guard<std::mutex> lock(scp->study_dirs_mu);
    if (scp->study_dirs.size() >= 10000) scp->study_dirs.clear(); // bounded; forgetting costs a flush
    scp->study_dirs.insert(dir);
    return dir;
}

struct StoreCtx {
    rtb_dicom_scp *scp;
    std::string tmp, name, final_path;
    int fd = -1; // the temporary file, kept open for its data flush
    bool committed = false;
    unsigned status = 0; // the response's status when it refused the data set
};

// Whether the data set received into `path` is the instance the request announced.
// The file is named after the request (and its meta header written from it), so a
// data set naming another instance, or none, would be kept under a name that is not
// its own (storescp and Orthanc refuse it too). Only the first elements are read,
// from the page cache.
bool file_is_announced_instance(const std::string &path, const T_DIMSE_C_StoreRQ &req)
{
    DcmFileFormat ff;
    if (ff.loadFileUntilTag(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect,
                            DcmTagKey(0x0008, 0x0019)).bad())
        return false;
    return is_announced_instance(ff.getDataset(), req);
}

void on_store_progress(void *data, T_DIMSE_StoreProgress *progress, T_DIMSE_C_StoreRQ *req,
                       char *, DcmDataset **, T_DIMSE_C_StoreRSP *rsp, DcmDataset **)
{
    if (progress->state != DIMSE_StoreEnd) return;
    StoreCtx *ctx = static_cast<StoreCtx *>(data);
    // DCMTK closed the file before this last callback; the status it proposes
    // tells whether the data arrived whole.
    if (rsp->DimseStatus != STATUS_Success) {
        ctx->status = rsp->DimseStatus;
        return;
    }
    if (!file_is_announced_instance(ctx->tmp, *req)) {
        rsp->DimseStatus = ctx->status = STATUS_STORE_Error_DataSetDoesNotMatchSOPClass; // 0xA900; not kept
        return;
    }
    std::string dir = ctx->scp->sort_by_study ? study_dir(ctx->scp, ctx->tmp) : ctx->scp->dir;
    if (dir.empty()) {
        rsp->DimseStatus = ctx->status = STATUS_STORE_Refused_OutOfResources;
        return;
    }
    rtb_dicom_error err;
    clear_error(&err);
    // fdatasync, rename, fsync(dir) (shared): the response goes out after we return.
    // An instance received again with other content does not replace the first: it
    // goes beside it (<uid>.2.dcm), and the listener says so.
    int fd = ctx->fd;
    ctx->fd = -1; // closed by the commit
    if (commit_fd_keeping(fd, ctx->tmp, dir + "/" + ctx->name, &ctx->final_path, &err)) ctx->committed = true;
    else rsp->DimseStatus = ctx->status = STATUS_STORE_Refused_OutOfResources;
}

OFCondition handle_store(rtb_dicom_scp *scp, T_ASC_Association *assoc, T_ASC_PresentationContextID pid,
                         T_DIMSE_C_StoreRQ &req, const std::string &calling_ae, const std::string &remote)
{
    StoreCtx ctx;
    ctx.scp = scp;
    // The name comes from the peer: only a well-formed UID may become a path.
    bool name_ok = rtb_dicom_uid_valid(req.AffectedSOPInstanceUID);
    rtb_dicom_error err;
    clear_error(&err);
    if (name_ok) {
        ctx.name = std::string(req.AffectedSOPInstanceUID) + ".dcm";
        if (scp->pool) ctx.tmp = scp->pool->take(&ctx.fd);
        if (ctx.tmp.empty()) ctx.tmp = temp_path_in(scp->dir, ctx.name, &ctx.fd, &err);
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
    if (ctx.fd >= 0) close(ctx.fd);
    if (!ctx.committed) unlink(ctx.tmp.c_str());
    if (!ctx.committed && scp->on_store) {
        // Nothing kept: said to the listener as well (the sender saw the status).
        rtb_dicom_stored_instance inst = {"", req.AffectedSOPClassUID, req.AffectedSOPInstanceUID,
                                          calling_ae.c_str(), "",
                                          cond.good() && ctx.status ? ctx.status : 0xFFFFu};
        std::lock_guard<std::mutex> lock(scp->callback_mu);
        scp->on_store(scp->ud, &inst);
    }
    if (ctx.committed) {
        scp->stored++;
        if (scp->executor) {
            size_t slash = ctx.final_path.rfind('/');
            scp->executor->submit({ctx.final_path.substr(0, slash), ctx.final_path.substr(slash + 1), calling_ae,
                                   scp->aet, remote});
        }
        if (scp->on_store) {
            T_ASC_PresentationContext pc;
            std::string xfer;
            if (ASC_findAcceptedPresentationContext(assoc->params, pid, &pc).good())
                xfer = pc.acceptedTransferSyntax;
            rtb_dicom_stored_instance inst = {ctx.final_path.c_str(), req.AffectedSOPClassUID,
                                              req.AffectedSOPInstanceUID, calling_ae.c_str(),
                                              xfer.c_str(), 0};
            std::lock_guard<std::mutex> lock(scp->callback_mu);
            scp->on_store(scp->ud, &inst);
        }
    }
    return cond;
}

// Serves one acknowledged association until release, abort, idle timeout or
// stop; destroys it at the end.
void serve(rtb_dicom_scp *scp, T_ASC_Association *assoc, const std::string &calling_ae,
           const std::string &remote)
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
            cond = handle_store(scp, assoc, pid, msg.msg.CStoreRQ, calling_ae, remote);
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

// An association whose request was read: vet it, acknowledge it, serve it.
void handle_request(rtb_dicom_scp *scp, T_ASC_Association *assoc, const std::string &remote)
{
    char calling[64] = "", called[64] = "";
    ASC_getAPTitles(assoc->params, calling, sizeof calling, called, sizeof called, nullptr, 0);
    std::string calling_ae = trim(calling), called_ae = trim(called);

    if (called_ae != scp->aet) {
        scp->rejected++;
        reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED);
        return;
    }
    if (!scp->allow_any &&
        std::find(scp->allow.begin(), scp->allow.end(), calling_ae) == scp->allow.end()) {
        scp->rejected++;
        reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        return;
    }
    if (!accept_contexts(assoc) || ASC_acknowledgeAssociation(assoc).bad()) {
        ASC_dropAssociation(assoc);
        ASC_destroyAssociation(&assoc);
        return;
    }
    scp->associations++;
    set_nodelay(assoc);
    serve(scp, assoc, calling_ae, remote);
}

} // namespace

void scp_worker(rtb_dicom_scp *scp, rtb_dicom_scp::Conn *conn)
{
    T_ASC_Association *assoc = nullptr;
    bool taken = false;
    OFCondition cond = scp_receive(scp, conn->fd, &assoc, &taken);
    {
        // The request phase is over: the acceptor's deadline no longer applies.
        std::lock_guard<std::mutex> lock(conn->mu);
        conn->in_request = false;
        close(conn->watch_fd);
        conn->watch_fd = -1;
    }
    if (!taken) close(conn->fd);
    if (cond.bad()) {
        // Silent past the request timeout, not DICOM, or a failed TLS handshake.
        scp->dropped++;
        if (assoc) {
            ASC_dropAssociation(assoc);
            ASC_destroyAssociation(&assoc);
        }
    } else {
        handle_request(scp, assoc, conn->host);
    }
    conn->done = true;
}

} // namespace rtb
