// C-FIND: one association, every match streamed to the caller's callback.
#include "internal.hpp"

using namespace rtb;

namespace {

struct FindState {
    rtb_dicom_match_fn fn;
    void *ud;
    rtb_dicom_find_result *res;
    T_ASC_Association *assoc;
    T_ASC_PresentationContextID pc;
    DIC_US msg_id;
    bool cancelled = false;
};

// A match's text in UTF-8, whatever character set the peer answered in (Orthanc
// answers in its DefaultEncoding, Latin-1 out of the box; archives in Europe often
// ISO_IR 100): names go on into JSON, the journal, logs and the status page, all
// UTF-8, where Latin-1 bytes are invalid. A set DCMTK cannot convert (or none
// declared) is left as the peer sent it. A match in ASCII (UIDs and counts, the
// verification's thousands) needs no converter opened.
void to_utf8(DcmDataset *ds)
{
    OFString charset;
    if (ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).bad()) return;
    if (charset.empty() || charset == "ISO_IR 192" || !has_non_ascii_text(ds)) return;
    ds->convertToUTF8();
}

void on_match(void *data, T_DIMSE_C_FindRQ *, int, T_DIMSE_C_FindRSP *, DcmDataset *ids)
{
    FindState *st = static_cast<FindState *>(data);
    // After our C-CANCEL the SCP may still send a few pending matches that were
    // already on the wire; the caller asked to stop, so they are dropped.
    if (st->cancelled || !ids) return;
    st->res->matches++;
    if (!st->fn) return;
    to_utf8(ids);
    BorrowedDs match(ids);
    if (st->fn(st->ud, &match.ds) != 0) {
        st->cancelled = true;
        st->res->cancelled = 1;
        DIMSE_sendCancelRequest(st->assoc, st->pc, st->msg_id);
    }
}

} // namespace

extern "C" int rtb_dicom_find(const rtb_dicom_peer *peer, rtb_dicom_model model,
                              rtb_dicom_level level, const rtb_ds *identifier,
                              rtb_dicom_match_fn fn, void *ud, rtb_dicom_find_result *out,
                              rtb_dicom_error *err)
{
    clear_error(err);
    rtb_dicom_find_result local = {};
    if (!out) out = &local;
    *out = rtb_dicom_find_result();
    if (!ensure_init(err)) return -1;
    set_peer(err, peer);
    if (!check_model_level(model, level, err)) return -1;
    std::unique_ptr<DcmDataset> query = make_identifier(identifier, level, err);
    if (!query) return -1;

    const char *sop_class = find_model_uid(model);
    Association a(peer);
    T_ASC_PresentationContextID pc = a.open_for(sop_class, err);
    if (pc == 0) return -1;

    T_DIMSE_C_FindRQ req = {};
    req.MessageID = a.next_message_id();
    OFStandard::strlcpy(req.AffectedSOPClassUID, sop_class, sizeof req.AffectedSOPClassUID);
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    req.DataSetType = DIMSE_DATASET_PRESENT;

    FindState st{fn, ud, out, a.assoc(), pc, req.MessageID};
    T_DIMSE_C_FindRSP rsp = {};
    DcmDataset *detail = nullptr;
    int responses = 0;
    OFCondition cond = DIMSE_findUser(a.assoc(), pc, &req, query.get(), responses, on_match, &st,
                                      DIMSE_NONBLOCKING, a.dimse_timeout(), &rsp, &detail);
    std::unique_ptr<DcmDataset> hold(detail);
    if (cond.bad()) {
        a.mark_broken();
        return fail_cond(err, cond, "C-FIND");
    }
    out->status = rsp.DimseStatus;
    /* A warning (0xBxxx) is no final status C-FIND defines, but archives send one
     * after delivering every match: the matches are the answer, so it is success. */
    bool ok = rsp.DimseStatus == STATUS_Success || (rsp.DimseStatus & 0xF000) == 0xB000 ||
              (st.cancelled && rsp.DimseStatus == STATUS_FIND_Cancel_MatchingTerminatedDueToCancelRequest);
    if (!ok) return fail_status(err, rsp.DimseStatus, detail, "C-FIND");
    a.release(err);
    return 0;
}
