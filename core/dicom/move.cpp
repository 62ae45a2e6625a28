// C-MOVE: the source sends the instances to destination_ae on its own
// association; we only follow the progress and report the final counts.
#include "internal.hpp"

#include <chrono>
#include <cstring>

using namespace rtb;

namespace {

void copy_counts(const T_DIMSE_C_MoveRSP &rsp, rtb_dicom_retrieve_result *out)
{
    // Counts are conditional in the response: keep the last value we were given.
    if (rsp.opts & O_MOVE_NUMBEROFCOMPLETEDSUBOPERATIONS) out->completed = rsp.NumberOfCompletedSubOperations;
    if (rsp.opts & O_MOVE_NUMBEROFFAILEDSUBOPERATIONS) out->failed = rsp.NumberOfFailedSubOperations;
    if (rsp.opts & O_MOVE_NUMBEROFWARNINGSUBOPERATIONS) out->warning = rsp.NumberOfWarningSubOperations;
    if (rsp.opts & O_MOVE_NUMBEROFREMAININGSUBOPERATIONS) out->remaining = rsp.NumberOfRemainingSubOperations;
    else out->remaining = 0; // absent in a final response: nothing remains
}

void on_progress(void *data, T_DIMSE_C_MoveRQ *, int, T_DIMSE_C_MoveRSP *rsp)
{
    rtb_dicom_retrieve_result *out = static_cast<rtb_dicom_retrieve_result *>(data);
    copy_counts(*rsp, out);
    out->status = rsp->DimseStatus;
}

} // namespace

extern "C" int rtb_dicom_move(const rtb_dicom_peer *peer, rtb_dicom_model model,
                              rtb_dicom_level level, const rtb_ds *identifier,
                              const char *destination_ae, rtb_dicom_retrieve_result *out,
                              rtb_dicom_error *err)
{
    clear_error(err);
    rtb_dicom_retrieve_result local = {};
    if (!out) out = &local;
    memset(out, 0, sizeof *out);
    if (!ensure_init(err)) return -1;
    set_peer(err, peer);
    if (!destination_ae || !*destination_ae || strlen(destination_ae) > 16)
        return fail(err, RTB_DICOM_E_INVALID, "invalid move destination AE title '%s'",
                    destination_ae ? destination_ae : "");
    if (!check_model_level(model, level, err)) return -1;
    std::unique_ptr<DcmDataset> ids = make_identifier(identifier, level, err);
    if (!ids || !check_retrieve_keys(ids.get(), model, level, err)) return -1;

    const char *sop_class = move_model_uid(model);
    Association a(peer);
    auto opening = std::chrono::steady_clock::now();
    T_ASC_PresentationContextID pc = a.open_for(sop_class, err);
    out->open_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - opening).count();
    if (pc == 0) return -1;

    T_DIMSE_C_MoveRQ req = {};
    req.MessageID = a.next_message_id();
    OFStandard::strlcpy(req.AffectedSOPClassUID, sop_class, sizeof req.AffectedSOPClassUID);
    OFStandard::strlcpy(req.MoveDestination, destination_ae, sizeof req.MoveDestination);
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    req.DataSetType = DIMSE_DATASET_PRESENT;

    T_DIMSE_C_MoveRSP rsp = {};
    DcmDataset *detail = nullptr, *rsp_ids = nullptr;
    OFCondition cond = DIMSE_moveUser(a.assoc(), pc, &req, ids.get(), on_progress, out,
                                      DIMSE_NONBLOCKING, a.dimse_timeout(), nullptr, nullptr,
                                      nullptr, &rsp, &detail, &rsp_ids);
    std::unique_ptr<DcmDataset> hold_detail(detail), hold_ids(rsp_ids);
    if (cond.bad()) {
        a.mark_broken();
        return fail_cond(err, cond, "C-MOVE");
    }
    copy_counts(rsp, out);
    out->status = rsp.DimseStatus;
    collect_failed_uids(rsp_ids, out);
    a.release(err);
    if (rsp.DimseStatus == STATUS_Success || (rsp.DimseStatus & 0xF000) == 0xB000) return 0;
    return fail_status(err, rsp.DimseStatus, detail, "C-MOVE");
}
