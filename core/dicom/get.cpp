// C-GET: the instances come back as C-STORE sub-operations on our own
// association, so we propose the storage classes with the SCP role (role
// selection, PS3.4 C.4.3.1.1 / PS3.7 D.3.3.4): without it a conformant SCP
// must not send anything.
#include "internal.hpp"

#include <cstring>

using namespace rtb;

namespace {

const char *const kDefaultClasses[] = {
    UID_CTImageStorage, UID_EnhancedCTImageStorage, UID_LegacyConvertedEnhancedCTImageStorage,
    UID_MRImageStorage, UID_EnhancedMRImageStorage, UID_PositronEmissionTomographyImageStorage,
    UID_EnhancedPETImageStorage, UID_NuclearMedicineImageStorage, UID_UltrasoundImageStorage,
    UID_ComputedRadiographyImageStorage, UID_SecondaryCaptureImageStorage,
    UID_RTImageStorage, UID_RTDoseStorage, UID_RTStructureSetStorage, UID_RTPlanStorage,
    UID_RTIonPlanStorage, UID_RTBeamsTreatmentRecordStorage, UID_RTIonBeamsTreatmentRecordStorage,
    UID_RTBrachyTreatmentRecordStorage, UID_RTTreatmentSummaryRecordStorage,
    UID_RTBeamsDeliveryInstructionStorage, UID_SpatialRegistrationStorage,
    UID_DeformableSpatialRegistrationStorage, UID_SegmentationStorage, UID_RawDataStorage,
    UID_EncapsulatedPDFStorage, UID_BasicTextSRStorage, UID_EnhancedSRStorage,
    UID_ComprehensiveSRStorage, UID_KeyObjectSelectionDocumentStorage,
    UID_GrayscaleSoftcopyPresentationStateStorage,
};

// Compressed syntaxes worth a context of their own: the SCP picks one transfer
// syntax per context at negotiation time, so an instance stored compressed can
// only come back untouched if a context with exactly its syntax exists.
const char *const kGetCompressed[] = {
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_RLELosslessTransferSyntax,
};

struct GetState {
    Association *a;
    const rtb_dicom_get_options *opts;
    rtb_dicom_retrieve_result *out;
    size_t local_failures = 0;
};

void copy_counts(const T_DIMSE_C_GetRSP &rsp, rtb_dicom_retrieve_result *out)
{
    if (rsp.opts & O_GET_NUMBEROFCOMPLETEDSUBOPERATIONS) out->completed = rsp.NumberOfCompletedSubOperations;
    if (rsp.opts & O_GET_NUMBEROFFAILEDSUBOPERATIONS) out->failed = rsp.NumberOfFailedSubOperations;
    if (rsp.opts & O_GET_NUMBEROFWARNINGSUBOPERATIONS) out->warning = rsp.NumberOfWarningSubOperations;
    if (rsp.opts & O_GET_NUMBEROFREMAININGSUBOPERATIONS) out->remaining = rsp.NumberOfRemainingSubOperations;
    else out->remaining = 0;
}

// Returns the C-STORE status to answer with.
Uint16 keep_instance(GetState &st, const T_DIMSE_C_StoreRQ &req, DcmDataset *ds,
                     T_ASC_PresentationContextID pid)
{
    const rtb_dicom_get_options *o = st.opts;
    if (o->out_dir && *o->out_dir) {
        // The file name comes from the peer: accept only a real UID, so that
        // "../x" can never escape the output directory.
        if (!rtb_dicom_uid_valid(req.AffectedSOPInstanceUID)) return STATUS_STORE_Error_CannotUnderstand;
        std::string xfer;
        st.a->accepted_context(pid, nullptr, &xfer);
        E_TransferSyntax x = DcmXfer(xfer.c_str()).getXfer();
        DcmFileFormat ff(ds, OFTrue);
        std::string path = std::string(o->out_dir) + "/" + req.AffectedSOPInstanceUID + ".dcm";
        rtb_dicom_error e;
        clear_error(&e);
        if (!save_atomic(ff, path, x == EXS_Unknown ? EXS_LittleEndianExplicit : x, &e))
            return STATUS_STORE_Refused_OutOfResources;
    }
    if (o->fn) {
        BorrowedDs b(ds);
        if (o->fn(o->ud, &b.ds) != 0) return STATUS_STORE_Refused_OutOfResources;
    }
    return STATUS_Success;
}

// One incoming C-STORE-RQ of the C-GET: receive, keep, answer.
bool handle_store(GetState &st, T_ASC_PresentationContextID pid, T_DIMSE_C_StoreRQ &req,
                  rtb_dicom_error *err)
{
    T_ASC_Association *assoc = st.a->assoc();
    DcmDataset *ds = nullptr;
    T_ASC_PresentationContextID data_pid = pid;
    OFCondition cond = DIMSE_receiveDataSetInMemory(assoc, DIMSE_NONBLOCKING, st.a->dimse_timeout(),
                                                    &data_pid, &ds, nullptr, nullptr);
    std::unique_ptr<DcmDataset> hold(ds);
    if (cond.bad()) {
        st.a->mark_broken();
        return fail_cond(err, cond, "C-GET: receiving an instance"), false;
    }
    Uint16 status = keep_instance(st, req, ds, pid);
    if (status == STATUS_Success) st.out->received++;
    else st.local_failures++;

    T_DIMSE_C_StoreRSP rsp = {};
    rsp.MessageIDBeingRespondedTo = req.MessageID;
    rsp.DimseStatus = status;
    rsp.DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(rsp.AffectedSOPClassUID, req.AffectedSOPClassUID, sizeof rsp.AffectedSOPClassUID);
    OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID,
                        sizeof rsp.AffectedSOPInstanceUID);
    rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
    cond = DIMSE_sendStoreResponse(assoc, pid, &req, &rsp, nullptr);
    if (cond.bad()) {
        st.a->mark_broken();
        return fail_cond(err, cond, "C-GET: answering a C-STORE"), false;
    }
    return true;
}

} // namespace

extern "C" int rtb_dicom_get(const rtb_dicom_peer *peer, rtb_dicom_model model,
                             rtb_dicom_level level, const rtb_ds *identifier,
                             const rtb_dicom_get_options *opts, rtb_dicom_retrieve_result *out,
                             rtb_dicom_error *err)
{
    clear_error(err);
    rtb_dicom_retrieve_result local = {};
    if (!out) out = &local;
    memset(out, 0, sizeof *out);
    if (!ensure_init(err)) return -1;
    set_peer(err, peer);
    if (!opts || (!(opts->out_dir && *opts->out_dir) && !opts->fn))
        return fail(err, RTB_DICOM_E_INVALID, "C-GET needs an output directory or a callback");
    if (!check_model_level(model, level, err)) return -1;
    std::unique_ptr<DcmDataset> ids = make_identifier(identifier, level, err);
    if (!ids || !check_retrieve_keys(ids.get(), model, level, err)) return -1;

    const char *sop_class = get_model_uid(model);
    std::vector<PresContext> contexts;
    contexts.push_back({sop_class, {UID_LittleEndianExplicitTransferSyntax,
                                    UID_LittleEndianImplicitTransferSyntax}});
    const char *const *classes = opts->sop_classes ? opts->sop_classes : kDefaultClasses;
    size_t n_classes = opts->sop_classes ? opts->n_sop_classes
                                         : sizeof kDefaultClasses / sizeof *kDefaultClasses;
    size_t per_class = 1 + sizeof kGetCompressed / sizeof *kGetCompressed;
    if (n_classes * per_class > 127) per_class = 1; // 128 contexts at most: keep uncompressed only
    if (n_classes == 0 || n_classes > 127)
        return fail(err, RTB_DICOM_E_INVALID, "C-GET needs 1..127 storage SOP classes, got %zu", n_classes);
    for (size_t i = 0; i < n_classes; i++) {
        PresContext pc;
        pc.abstract_syntax = classes[i];
        pc.transfer_syntaxes = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
        pc.role = ASC_SC_ROLE_SCP; // we, the requestor, act as storage SCP
        contexts.push_back(pc);
        for (size_t k = 0; k + 1 < per_class; k++) {
            pc.transfer_syntaxes = {kGetCompressed[k]};
            contexts.push_back(pc);
        }
    }

    Association a(peer);
    if (!a.open(contexts, err)) return -1;
    T_ASC_PresentationContextID pc = a.find_context(sop_class);
    if (pc == 0)
        return fail(err, RTB_DICOM_E_NEGOTIATION, "the peer does not support %s",
                    dcmFindNameOfUID(sop_class, sop_class));
    if (ASC_countAcceptedPresentationContexts(a.assoc()->params) < 2)
        return fail(err, RTB_DICOM_E_NEGOTIATION,
                    "the peer accepted none of the storage classes with our SCP role, so it cannot send");

    T_DIMSE_Message msg = {};
    msg.CommandField = DIMSE_C_GET_RQ;
    T_DIMSE_C_GetRQ &req = msg.msg.CGetRQ;
    req.MessageID = a.next_message_id();
    OFStandard::strlcpy(req.AffectedSOPClassUID, sop_class, sizeof req.AffectedSOPClassUID);
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    req.DataSetType = DIMSE_DATASET_PRESENT;
    OFCondition cond = DIMSE_sendMessageUsingMemoryData(a.assoc(), pc, &msg, nullptr, ids.get(),
                                                        nullptr, nullptr);
    if (cond.bad()) {
        a.mark_broken();
        return fail_cond(err, cond, "C-GET: sending the request");
    }

    GetState st{&a, opts, out};
    std::unique_ptr<DcmDataset> final_ids, final_detail;
    for (;;) {
        T_DIMSE_Message in = {};
        T_ASC_PresentationContextID pid = 0;
        DcmDataset *detail = nullptr;
        cond = DIMSE_receiveCommand(a.assoc(), DIMSE_NONBLOCKING, a.dimse_timeout(), &pid, &in, &detail);
        std::unique_ptr<DcmDataset> hold(detail);
        if (cond.bad()) {
            a.mark_broken();
            return fail_cond(err, cond, "C-GET");
        }
        if (in.CommandField == DIMSE_C_STORE_RQ) {
            if (!handle_store(st, pid, in.msg.CStoreRQ, err)) return -1;
            continue;
        }
        if (in.CommandField != DIMSE_C_GET_RSP) {
            a.mark_broken();
            return fail(err, RTB_DICOM_E_PROTOCOL, "C-GET: unexpected DIMSE command 0x%04x",
                        (unsigned)in.CommandField);
        }
        T_DIMSE_C_GetRSP &rsp = in.msg.CGetRSP;
        copy_counts(rsp, out);
        out->status = rsp.DimseStatus;
        if (rsp.DataSetType != DIMSE_DATASET_NULL) {
            DcmDataset *rsp_ids = nullptr;
            cond = DIMSE_receiveDataSetInMemory(a.assoc(), DIMSE_NONBLOCKING, a.dimse_timeout(), &pid,
                                                &rsp_ids, nullptr, nullptr);
            if (cond.bad()) {
                a.mark_broken();
                return fail_cond(err, cond, "C-GET: receiving the response identifier");
            }
            final_ids.reset(rsp_ids);
        }
        if (rsp.DimseStatus == STATUS_Pending || rsp.DimseStatus == 0xFF01) continue;
        final_detail = std::move(hold);
        break;
    }
    collect_failed_uids(final_ids.get(), out);
    a.release(err);
    unsigned s = out->status;
    if (s == STATUS_Success || (s & 0xF000) == 0xB000) return 0;
    return fail_status(err, s, final_detail.get(), "C-GET");
}
