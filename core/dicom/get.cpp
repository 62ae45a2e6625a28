// C-GET: the instances come back as C-STORE sub-operations on our own
// association, so we propose the storage classes with the SCP role (role
// selection, PS3.4 C.4.3.1.1 / PS3.7 D.3.3.4): without it a conformant SCP
// must not send anything.
#include "internal.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <set>

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

// Transfer syntaxes offered for each storage class, one context each: a peer that
// picks the context of the stored syntax (Orthanc) then sends every instance as it
// is. A peer that sends on the first context accepted for the class (dcmqrscp) is
// served in rounds, each putting another syntax first. Explicit VR little endian
// comes first: most archives store uncompressed, so one round usually does; then
// the compressed syntaxes; implicit, big endian and deflated are offered but never
// first, because a peer converting among uncompressed syntaxes would turn every
// uncompressed instance into the round's syntax.
const char *const kFirst[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_RLELosslessTransferSyntax,
};
const char *const kNeverFirst[] = {
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
};

// What the plan query learnt about one instance.
struct Instance {
    std::string uid, sop_class, study, series, xfer; // xfer "" when the peer did not say
    bool got = false;
};

struct GetState {
    Association *a;
    const rtb_dicom_get_options *opts;
    rtb_dicom_retrieve_result *out;
    std::map<std::string, Instance> *plan;
    std::set<std::string> received; // delivered once, whatever the round
    size_t local_failures = 0;
    bool consumer_refused = false;  // the callback (or the disk) said no: no further rounds
};

void note(rtb_dicom_retrieve_result *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void note(rtb_dicom_retrieve_result *out, const char *fmt, ...)
{
    if (out->message[0]) return; // the first reason is the one worth reading
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
}

struct Counts {
    unsigned completed = 0, failed = 0, warning = 0, remaining = 0;
};

void copy_counts(const T_DIMSE_C_GetRSP &rsp, Counts &c)
{
    if (rsp.opts & O_GET_NUMBEROFCOMPLETEDSUBOPERATIONS) c.completed = rsp.NumberOfCompletedSubOperations;
    if (rsp.opts & O_GET_NUMBEROFFAILEDSUBOPERATIONS) c.failed = rsp.NumberOfFailedSubOperations;
    if (rsp.opts & O_GET_NUMBEROFWARNINGSUBOPERATIONS) c.warning = rsp.NumberOfWarningSubOperations;
    if (rsp.opts & O_GET_NUMBEROFREMAININGSUBOPERATIONS) c.remaining = rsp.NumberOfRemainingSubOperations;
    else c.remaining = 0;
}

// Returns the C-STORE status to answer with.
Uint16 keep_instance(GetState &st, const T_DIMSE_C_StoreRQ &req, DcmDataset *ds, const std::string &xfer)
{
    const rtb_dicom_get_options *o = st.opts;
    if (o->out_dir && *o->out_dir) {
        // The file name comes from the peer: accept only a real UID, so that
        // "../x" can never escape the output directory.
        if (!rtb_dicom_uid_valid(req.AffectedSOPInstanceUID)) return STATUS_STORE_Error_CannotUnderstand;
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

// One incoming C-STORE-RQ of the C-GET: receive, check its syntax, keep, answer.
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
    std::string xfer;
    st.a->accepted_context(pid, nullptr, &xfer);
    std::string uid = req.AffectedSOPInstanceUID;
    Uint16 status = STATUS_Success;
    auto planned = st.plan->find(uid);
    if (st.received.count(uid)) {
        // Sent again in a later round (a peer that gave no failed list): kept once.
    } else if (!is_announced_instance(ds, req)) {
        // The data set is another instance than the request announces (or names
        // none): were it kept, it would pass for the instance asked for.
        st.local_failures++;
        note(st.out, "%s arrived as a data set of another instance: refused, not kept", uid.c_str());
        status = STATUS_STORE_Error_DataSetDoesNotMatchSOPClass;
    } else if (planned != st.plan->end() && !planned->second.xfer.empty() && planned->second.xfer != xfer) {
        // The peer transcoded it: never kept, reported failed.
        st.out->transcoded++;
        st.local_failures++;
        note(st.out, "%s arrived in %s, but the peer stores it in %s: refused, not kept", uid.c_str(),
             uid_name(xfer).c_str(), uid_name(planned->second.xfer).c_str());
        status = STATUS_STORE_Error_CannotUnderstand;
    } else {
        status = keep_instance(st, req, ds, xfer);
        if (status == STATUS_Success) {
            st.out->received++;
            st.received.insert(uid);
            if (planned != st.plan->end()) planned->second.got = true;
        } else {
            st.local_failures++;
            st.consumer_refused = true;
            note(st.out, "%s could not be kept here (status 0x%04X)", uid.c_str(), (unsigned)status);
        }
    }

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

// One C-GET on an open association: sends the request, serves the C-STOREs, reads
// the final response. failed_uids gets the peer's FailedSOPInstanceUIDList.
bool one_get(GetState &st, T_ASC_PresentationContextID pc, const char *model_uid, DcmDataset *ids,
             Counts &counts, unsigned &status, std::vector<std::string> &failed_uids,
             std::unique_ptr<DcmDataset> &final_detail, rtb_dicom_error *err)
{
    Association &a = *st.a;
    T_DIMSE_Message msg = {};
    msg.CommandField = DIMSE_C_GET_RQ;
    T_DIMSE_C_GetRQ &req = msg.msg.CGetRQ;
    req.MessageID = a.next_message_id();
    OFStandard::strlcpy(req.AffectedSOPClassUID, model_uid, sizeof req.AffectedSOPClassUID);
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    req.DataSetType = DIMSE_DATASET_PRESENT;
    OFCondition cond = DIMSE_sendMessageUsingMemoryData(a.assoc(), pc, &msg, nullptr, ids, nullptr, nullptr);
    if (cond.bad()) {
        a.mark_broken();
        return fail_cond(err, cond, "C-GET: sending the request"), false;
    }
    std::unique_ptr<DcmDataset> final_ids;
    for (;;) {
        T_DIMSE_Message in = {};
        T_ASC_PresentationContextID pid = 0;
        DcmDataset *detail = nullptr;
        cond = DIMSE_receiveCommand(a.assoc(), DIMSE_NONBLOCKING, a.dimse_timeout(), &pid, &in, &detail);
        std::unique_ptr<DcmDataset> hold(detail);
        if (cond.bad()) {
            a.mark_broken();
            return fail_cond(err, cond, "C-GET"), false;
        }
        if (in.CommandField == DIMSE_C_STORE_RQ) {
            if (!handle_store(st, pid, in.msg.CStoreRQ, err)) return false;
            continue;
        }
        if (in.CommandField != DIMSE_C_GET_RSP) {
            a.mark_broken();
            return fail(err, RTB_DICOM_E_PROTOCOL, "C-GET: unexpected DIMSE command 0x%04x",
                        (unsigned)in.CommandField), false;
        }
        T_DIMSE_C_GetRSP &rsp = in.msg.CGetRSP;
        copy_counts(rsp, counts);
        status = rsp.DimseStatus;
        if (rsp.DataSetType != DIMSE_DATASET_NULL) {
            DcmDataset *rsp_ids = nullptr;
            cond = DIMSE_receiveDataSetInMemory(a.assoc(), DIMSE_NONBLOCKING, a.dimse_timeout(), &pid,
                                                &rsp_ids, nullptr, nullptr);
            if (cond.bad()) {
                a.mark_broken();
                return fail_cond(err, cond, "C-GET: receiving the response identifier"), false;
            }
            final_ids.reset(rsp_ids);
        }
        if (rsp.DimseStatus == STATUS_Pending || rsp.DimseStatus == 0xFF01) continue;
        final_detail = std::move(hold);
        break;
    }
    rtb_dicom_retrieve_result tmp = {};
    collect_failed_uids(final_ids.get(), &tmp);
    for (size_t i = 0; i < tmp.n_failed_uids; i++) failed_uids.push_back(tmp.failed_uids[i]);
    rtb_dicom_retrieve_result_clear(&tmp);
    return true;
}

// The plan: one C-FIND at IMAGE level under the retrieve identifier. false when the
// peer cannot answer it (then the retrieve goes without a plan).
int on_plan_match(void *ud, rtb_ds *match)
{
    auto *plan = static_cast<std::map<std::string, Instance> *>(ud);
    DcmItem *m = match->item;
    Instance in;
    in.uid = read_uid(m, DCM_SOPInstanceUID);
    if (in.uid.empty()) return 0;
    in.sop_class = read_uid(m, DCM_SOPClassUID);
    in.study = read_uid(m, DCM_StudyInstanceUID);
    in.series = read_uid(m, DCM_SeriesInstanceUID);
    in.xfer = read_uid(m, DCM_TransferSyntaxUID);
    if (in.xfer.empty()) in.xfer = read_uid(m, DCM_AvailableTransferSyntaxUID);
    if (!in.xfer.empty() && DcmXfer(in.xfer.c_str()).getXfer() == EXS_Unknown) in.xfer.clear();
    (*plan)[in.uid] = in;
    return 0;
}

bool make_plan(const rtb_dicom_peer *peer, rtb_dicom_model model, DcmDataset *ids,
               std::map<std::string, Instance> &plan)
{
    rtb_ds *q = nullptr;
    rtb_dicom_error e;
    if (rtb_ds_new(&q, &e) != 0) return false;
    std::unique_ptr<rtb_ds, void (*)(rtb_ds *)> hold(q, rtb_ds_free);
    DcmItem *d = q->item;
    const DcmTagKey keys[] = {DCM_PatientID, DCM_StudyInstanceUID, DCM_SeriesInstanceUID, DCM_SOPInstanceUID};
    for (const DcmTagKey &k : keys) {
        OFString v;
        ids->findAndGetOFStringArray(k, v);
        d->putAndInsertString(k, v.c_str());
    }
    d->putAndInsertString(DCM_SOPClassUID, "");
    d->putAndInsertString(DCM_AvailableTransferSyntaxUID, "");
    if (model == RTB_QR_STUDY_ROOT) d->findAndDeleteElement(DCM_PatientID);
    rtb_dicom_find_result fr = {};
    clear_error(&e);
    return rtb_dicom_find(peer, model, RTB_QR_IMAGE, q, on_plan_match, &plan, &fr, &e) == 0;
}

} // namespace

namespace {

// The storage contexts of one round: for each class, the round's syntax first (the
// one a first-accepted-context peer will use), then the other syntaxes while the
// 128-context limit allows (for peers that pick the stored one).
std::vector<PresContext> round_contexts(const std::vector<std::string> &classes,
                                        const std::vector<std::string> &xfers, size_t first,
                                        size_t budget)
{
    std::vector<PresContext> out;
    for (const std::string &c : classes) {
        if (out.size() >= budget) break;
        PresContext pc;
        pc.abstract_syntax = c;
        pc.transfer_syntaxes = {xfers[first]};
        pc.role = ASC_SC_ROLE_SCP; // we, the requestor, act as storage SCP
        out.push_back(pc);
    }
    for (size_t k = 0; k < xfers.size(); k++) {
        if (k == first) continue;
        for (const std::string &c : classes) {
            if (out.size() >= budget) return out;
            PresContext pc;
            pc.abstract_syntax = c;
            pc.transfer_syntaxes = {xfers[k]};
            pc.role = ASC_SC_ROLE_SCP;
            out.push_back(pc);
        }
    }
    return out;
}

// IMAGE-level identifiers for a list of instances: one Composite Instance Root
// identifier when the peer accepted that model, else one study-root (or patient-root)
// identifier per series.
std::vector<std::unique_ptr<DcmDataset>> list_identifiers(const std::vector<const Instance *> &todo,
                                                          bool cir, rtb_dicom_model model,
                                                          DcmDataset *original)
{
    std::vector<std::unique_ptr<DcmDataset>> out;
    std::map<std::pair<std::string, std::string>, std::string> by_series;
    for (const Instance *in : todo) {
        std::string &list = by_series[cir ? std::make_pair(std::string(), std::string())
                                          : std::make_pair(in->study, in->series)];
        if (!list.empty()) list += "\\";
        list += in->uid;
    }
    for (auto &kv : by_series) {
        std::unique_ptr<DcmDataset> ds(new DcmDataset());
        ds->putAndInsertString(DCM_QueryRetrieveLevel, "IMAGE");
        if (!cir) {
            if (model == RTB_QR_PATIENT_ROOT) {
                OFString pid;
                original->findAndGetOFStringArray(DCM_PatientID, pid);
                ds->putAndInsertString(DCM_PatientID, pid.c_str());
            }
            ds->putAndInsertString(DCM_StudyInstanceUID, kv.first.first.c_str());
            ds->putAndInsertString(DCM_SeriesInstanceUID, kv.first.second.c_str());
        }
        ds->putAndInsertString(DCM_SOPInstanceUID, kv.second.c_str());
        out.push_back(std::move(ds));
    }
    return out;
}

bool status_ok(unsigned s)
{
    return s == STATUS_Success || (s & 0xF000) == 0xB000;
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
    if (opts->sop_classes && (opts->n_sop_classes == 0 || opts->n_sop_classes > 120))
        return fail(err, RTB_DICOM_E_INVALID, "C-GET needs 1..120 storage SOP classes, got %zu",
                    opts->n_sop_classes);
    if (!validate_peer(peer, err)) return -1;

    // 1. The plan.
    std::map<std::string, Instance> plan;
    bool planned = false;
    if (!opts->no_plan) {
        out->associations++;
        planned = make_plan(peer, model, ids.get(), plan);
        if (planned && plan.empty()) planned = false; // nothing known: retrieve as asked
    }
    bool classes_known = planned, xfers_known = planned;
    std::set<std::string> class_set, xfer_set;
    for (auto &kv : plan) {
        if (kv.second.sop_class.empty()) classes_known = false;
        else class_set.insert(kv.second.sop_class);
        if (kv.second.xfer.empty()) xfers_known = false;
        else xfer_set.insert(kv.second.xfer);
    }
    out->stored_syntax_known = xfers_known ? 1 : 0;
    std::vector<std::string> classes;
    if (classes_known) {
        classes.assign(class_set.begin(), class_set.end());
    } else {
        const char *const *list = opts->sop_classes ? opts->sop_classes : kDefaultClasses;
        size_t n = opts->sop_classes ? opts->n_sop_classes : sizeof kDefaultClasses / sizeof *kDefaultClasses;
        classes.assign(list, list + n);
        for (const std::string &c : class_set)
            if (std::find(classes.begin(), classes.end(), c) == classes.end()) classes.push_back(c);
    }
    // Syntaxes, in the order rounds put them first; the never-first ones at the end.
    std::vector<std::string> xfers;
    size_t n_first = 0;
    if (xfers_known) {
        for (const char *x : kFirst) if (xfer_set.count(x)) xfers.push_back(x);
        for (const char *x : kNeverFirst) if (xfer_set.count(x)) xfers.push_back(x);
        for (const std::string &x : xfer_set)
            if (std::find(xfers.begin(), xfers.end(), x) == xfers.end()) xfers.push_back(x);
        n_first = xfers.size(); // known syntaxes: each may lead a round
    } else {
        xfers.assign(std::begin(kFirst), std::end(kFirst));
        n_first = xfers.size();
        xfers.insert(xfers.end(), std::begin(kNeverFirst), std::end(kNeverFirst));
    }

    const char *model_uid = get_model_uid(model);
    GetState st{nullptr, opts, out, &plan, {}, 0};
    unsigned last_status = STATUS_Success;
    bool any_failure_status = false, round_ok_once = false;
    std::unique_ptr<DcmDataset> last_detail;
    std::vector<std::string> peer_failed; // previous round's FailedSOPInstanceUIDList (no plan)
    unsigned peer_failed_count = 0, warnings = 0;
    rtb_dicom_error round_err;
    clear_error(&round_err);

    // One association: offers `group` with xfers[round] leading, asks `todo` (by UID
    // list) or, with as_asked, the caller's identifier. false: stop all rounds.
    auto one_round = [&](size_t round, const std::vector<std::string> &group,
                         const std::vector<const Instance *> &todo, bool as_asked) -> bool {
        std::vector<PresContext> contexts;
        contexts.push_back({model_uid, {UID_LittleEndianExplicitTransferSyntax,
                                        UID_LittleEndianImplicitTransferSyntax}});
        contexts.push_back({UID_GETCompositeInstanceRootRetrieve,
                            {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax}});
        std::vector<PresContext> storage = round_contexts(group, xfers, round, 128 - contexts.size());
        contexts.insert(contexts.end(), storage.begin(), storage.end());

        Association a(peer);
        st.a = &a;
        out->associations++;
        rtb_dicom_error e;
        clear_error(&e);
        if (!a.open(contexts, &e)) {
            round_err = e;
            return false;
        }
        T_ASC_PresentationContextID pc = a.find_context(model_uid);
        T_ASC_PresentationContextID cir = a.find_context(UID_GETCompositeInstanceRootRetrieve);
        if (pc == 0) {
            fail(&round_err, RTB_DICOM_E_NEGOTIATION, "the peer does not support %s", uid_name(model_uid).c_str());
            set_peer(&round_err, peer);
            return false;
        }
        if (ASC_countAcceptedPresentationContexts(a.assoc()->params) < (cir ? 3 : 2)) {
            fail(&round_err, RTB_DICOM_E_NEGOTIATION,
                 "the peer accepted none of the storage classes with our SCP role, so it cannot send");
            set_peer(&round_err, peer);
            return false;
        }

        std::vector<std::unique_ptr<DcmDataset>> requests;
        std::vector<Instance> tmp;
        if (as_asked) {
            requests.emplace_back(new DcmDataset(*ids));
        } else if (planned) {
            requests = list_identifiers(todo, cir != 0, model, ids.get());
        } else {
            for (const std::string &u : peer_failed) { Instance in; in.uid = u; tmp.push_back(in); }
            std::vector<const Instance *> ptrs;
            for (const Instance &in : tmp) ptrs.push_back(&in);
            if (cir) requests = list_identifiers(ptrs, true, model, ids.get());
            else requests.emplace_back(new DcmDataset(*ids)); // no series known: as asked, duplicates dropped
            as_asked = !cir;
        }
        peer_failed.clear();
        peer_failed_count = 0;
        for (auto &req : requests) {
            bool by_cir = !as_asked && cir && !req->tagExists(DCM_StudyInstanceUID);
            Counts c;
            unsigned status = STATUS_Success;
            std::vector<std::string> failed;
            std::unique_ptr<DcmDataset> detail;
            if (!one_get(st, by_cir ? cir : pc, by_cir ? UID_GETCompositeInstanceRootRetrieve : model_uid,
                         req.get(), c, status, failed, detail, &e)) {
                round_err = e;
                set_peer(&round_err, peer);
                return false;
            }
            round_ok_once = true;
            warnings += c.warning;
            peer_failed_count += c.failed;
            peer_failed.insert(peer_failed.end(), failed.begin(), failed.end());
            last_status = status;
            if (!status_ok(status)) {
                any_failure_status = true;
                last_detail = std::move(detail);
            }
        }
        a.release(nullptr);
        return true;
    };

    // Contexts one association can give each class in every syntax (Orthanc then picks
    // the stored one); a retrieve with more classes goes in groups, by UID list.
    size_t per_group = std::max<size_t>(1, 126 / xfers.size());
    bool stop = false;
    for (size_t round = 0; round < n_first && !stop; round++) {
        // What this round must fetch.
        std::vector<const Instance *> todo;
        if (planned) {
            for (auto &kv : plan)
                if (!kv.second.got) todo.push_back(&kv.second);
            if (todo.empty()) break;
        } else if (round > 0 && (peer_failed_count == 0 || peer_failed.empty())) {
            // Without a plan, only the peer's FailedSOPInstanceUIDList says what to ask
            // again; a peer that gives none would only send everything once more.
            break;
        }
        if (st.consumer_refused) break;
        // A round whose leading syntax none of the missing instances has is skipped.
        if (xfers_known && round > 0) {
            bool useful = false;
            for (const Instance *in : todo) useful = useful || in->xfer == xfers[round];
            if (!useful) continue;
        }
        std::vector<std::string> round_classes = classes;
        if (planned && classes_known) {
            std::set<std::string> pending_classes;
            for (const Instance *in : todo) pending_classes.insert(in->sop_class);
            round_classes.assign(pending_classes.begin(), pending_classes.end());
        }
        if (!(planned && classes_known) || round_classes.size() <= per_group) {
            bool as_asked = round == 0 || (!planned && peer_failed.empty());
            stop = !one_round(round, round_classes, todo, as_asked);
            continue;
        }
        for (size_t g = 0; g < round_classes.size() && !stop; g += per_group) {
            std::vector<std::string> group(round_classes.begin() + g,
                                           round_classes.begin() + std::min(g + per_group, round_classes.size()));
            std::vector<const Instance *> todo_g;
            for (const Instance *in : todo)
                if (std::find(group.begin(), group.end(), in->sop_class) != group.end()) todo_g.push_back(in);
            stop = !one_round(round, group, todo_g, false);
        }
    }

    // The outcome: what the plan expected and did not get, else what the peer said.
    std::vector<std::string> missing;
    if (planned) {
        for (auto &kv : plan)
            if (!kv.second.got) missing.push_back(kv.first);
        out->failed = static_cast<unsigned>(missing.size());
    } else {
        for (const std::string &u : peer_failed)
            if (!st.received.count(u)) missing.push_back(u);
        // The peer's list names what failed in the last round, some of it received in
        // an earlier one; without a list, its count is all there is.
        out->failed = peer_failed.empty() ? peer_failed_count : static_cast<unsigned>(missing.size());
    }
    out->completed = static_cast<unsigned>(out->received);
    out->warning = warnings;
    out->remaining = 0;
    if (!missing.empty()) {
        out->failed_uids = static_cast<char **>(calloc(missing.size(), sizeof(char *)));
        for (size_t i = 0; out->failed_uids && i < missing.size(); i++) {
            out->failed_uids[i] = strdup(missing[i].c_str());
            if (out->failed_uids[i]) out->n_failed_uids++;
        }
        if (planned && !classes_known)
            note(out, "%zu instance(s) did not arrive: the peer's C-FIND does not name SOP classes, and only "
                      "the storage classes this DCMTK knows could be offered (a newer or private class cannot)",
                 missing.size());
        else if (!xfers_known)
            note(out, "%zu instance(s) did not arrive in any of the offered transfer syntaxes", missing.size());
        else
            note(out, "%zu instance(s) did not arrive as stored", missing.size());
    }
    if (!round_ok_once) {
        if (err) *err = round_err;
        return -1;
    }
    if (round_err.kind != RTB_DICOM_OK && out->failed > 0) note(out, "%s", round_err.message);
    out->status = last_status;
    if (out->failed > 0 && status_ok(last_status)) out->status = 0xB000;
    if (out->failed > 0 && any_failure_status && out->received == 0)
        return fail_status(err, last_status, last_detail.get(), "C-GET");
    return 0;
}
