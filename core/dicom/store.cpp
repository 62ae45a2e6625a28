// C-STORE of files and in-memory datasets over one association.
//
// Pass 1 reads only what negotiation needs (meta header and the dataset up to
// SOP Instance UID), so a bad file costs nothing and is reported on its own.
// Pass 2 negotiates one presentation context per SOP class / transfer syntax
// pair present, then sends the items in order.
#include "internal.hpp"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>

using namespace rtb;

namespace {

struct Plan {
    std::string sop_class, sop_instance, xfer;
    DcmDataset *dataset = nullptr;            // in-memory items
    std::unique_ptr<rtb_ds> copy;             // item views are sent from a copy
    int context = -1;                         // index into the proposed contexts
    bool ready = false;
};

bool is_uncompressed(const std::string &xfer)
{
    return xfer == UID_LittleEndianExplicitTransferSyntax ||
           xfer == UID_LittleEndianImplicitTransferSyntax ||
           xfer == UID_BigEndianExplicitTransferSyntax;
}

__attribute__((format(printf, 4, 5)))
void item_fail(rtb_dicom_store_item *it, const rtb_dicom_peer *peer, rtb_dicom_error_kind kind,
               const char *fmt, ...)
{
    it->result = -1;
    set_peer(&it->error, peer);
    it->error.kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->error.message, sizeof it->error.message, fmt, ap);
    va_end(ap);
}

void plan_file(rtb_dicom_store_item *it, const rtb_dicom_peer *peer, Plan &p)
{
    struct stat st;
    if (stat(it->path, &st) != 0) {
        item_fail(it, peer, RTB_DICOM_E_IO, "%s: %s", it->path, strerror(errno));
        return;
    }
    DcmFileFormat ff;
    // Stop right after SOP Instance UID: enough to negotiate, cheap for big files.
    OFCondition cond = ff.loadFileUntilTag(it->path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength,
                                           ERM_autoDetect, DcmTagKey(0x0008, 0x0019));
    if (cond.bad()) {
        item_fail(it, peer, RTB_DICOM_E_IO, "%s: not a readable DICOM file (%s)", it->path, cond.text());
        return;
    }
    OFString sop_class, sop_instance, xfer;
    DcmDataset *ds = ff.getDataset();
    DcmMetaInfo *meta = ff.getMetaInfo();
    ds->findAndGetOFString(DCM_SOPClassUID, sop_class);
    ds->findAndGetOFString(DCM_SOPInstanceUID, sop_instance);
    if (meta && meta->card() > 0) {
        meta->findAndGetOFString(DCM_TransferSyntaxUID, xfer);
        if (sop_class.empty()) meta->findAndGetOFString(DCM_MediaStorageSOPClassUID, sop_class);
        if (sop_instance.empty()) meta->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, sop_instance);
    }
    if (xfer.empty()) xfer = DcmXfer(ds->getOriginalXfer()).getXferID();
    if (sop_class.empty() || sop_instance.empty()) {
        item_fail(it, peer, RTB_DICOM_E_IO, "%s: not a DICOM instance (no SOP Class/Instance UID)",
                  it->path);
        return;
    }
    p.sop_class = sop_class.c_str();
    p.sop_instance = sop_instance.c_str();
    p.xfer = xfer.c_str();
    p.ready = true;
}

void plan_dataset(rtb_dicom_store_item *it, const rtb_dicom_peer *peer, Plan &p)
{
    DcmDataset *ds = it->ds->dataset();
    if (!ds) {
        rtb_ds *c = nullptr;
        if (rtb_ds_clone(it->ds, &c, &it->error) != 0) {
            it->result = -1;
            return;
        }
        p.copy.reset(c);
        ds = c->dataset();
    }
    OFString sop_class, sop_instance;
    ds->findAndGetOFString(DCM_SOPClassUID, sop_class);
    ds->findAndGetOFString(DCM_SOPInstanceUID, sop_instance);
    if (sop_class.empty() || sop_instance.empty()) {
        item_fail(it, peer, RTB_DICOM_E_INVALID, "dataset has no SOP Class UID or SOP Instance UID");
        return;
    }
    E_TransferSyntax x = ds->getOriginalXfer();
    // A dataset built in memory has no transfer syntax yet: any uncompressed one will do.
    if (x == EXS_Unknown) x = EXS_LittleEndianExplicit;
    p.sop_class = sop_class.c_str();
    p.sop_instance = sop_instance.c_str();
    p.xfer = DcmXfer(x).getXferID();
    p.dataset = ds;
    p.ready = true;
}

// One context per distinct (SOP class, transfer syntax). Uncompressed data may
// travel in any uncompressed syntax (DCMTK converts while sending); compressed
// data is offered only as it is, because a backup must not transcode it.
std::vector<PresContext> build_contexts(std::vector<Plan> &plans, rtb_dicom_store_item *items,
                                        const rtb_dicom_peer *peer)
{
    std::vector<PresContext> contexts;
    std::map<std::pair<std::string, std::string>, int> index;
    for (size_t i = 0; i < plans.size(); i++) {
        Plan &p = plans[i];
        if (!p.ready) continue;
        auto key = std::make_pair(p.sop_class, p.xfer);
        auto found = index.find(key);
        if (found != index.end()) {
            p.context = found->second;
            continue;
        }
        if (contexts.size() >= 128) {
            p.ready = false;
            item_fail(&items[i], peer, RTB_DICOM_E_NEGOTIATION,
                      "more than 128 SOP class/transfer syntax combinations in one store (%s, %s)",
                      p.sop_class.c_str(), p.xfer.c_str());
            continue;
        }
        PresContext pc;
        pc.abstract_syntax = p.sop_class;
        pc.transfer_syntaxes.push_back(p.xfer);
        if (is_uncompressed(p.xfer))
            for (size_t k = 0; k < kNumUncompressedXfers; k++)
                if (p.xfer != kUncompressedXfers[k]) pc.transfer_syntaxes.push_back(kUncompressedXfers[k]);
        p.context = static_cast<int>(contexts.size());
        index[key] = p.context;
        contexts.push_back(pc);
    }
    return contexts;
}

bool network_broken(const OFCondition &cond)
{
    rtb_dicom_error_kind k = kind_of(cond);
    return k == RTB_DICOM_E_ABORTED || k == RTB_DICOM_E_TIMEOUT || k == RTB_DICOM_E_CONNECT_FAILED ||
           (cond.module() == OFM_dcmnet && cond.code() >= 0x300 && cond.code() < 0x400);
}

} // namespace

extern "C" int rtb_dicom_store(const rtb_dicom_peer *peer, rtb_dicom_store_item *items,
                               size_t n_items, size_t *n_stored, rtb_dicom_error *err)
{
    clear_error(err);
    if (n_stored) *n_stored = 0;
    if (!ensure_init(err)) return -1;
    if (!validate_peer(peer, err)) return -1;
    if (n_items == 0) return 0;
    if (!items) return fail(err, RTB_DICOM_E_INVALID, "no items");

    std::vector<Plan> plans(n_items);
    for (size_t i = 0; i < n_items; i++) {
        rtb_dicom_store_item *it = &items[i];
        it->result = -1;
        it->status = 0;
        it->sop_instance_uid[0] = '\0';
        clear_error(&it->error);
        if (it->path) plan_file(it, peer, plans[i]);
        else if (it->ds) plan_dataset(it, peer, plans[i]);
        else item_fail(it, peer, RTB_DICOM_E_INVALID, "store item %zu has neither a path nor a dataset", i + 1);
        copy_str(it->sop_instance_uid, sizeof it->sop_instance_uid, plans[i].sop_instance.c_str());
    }
    std::vector<PresContext> contexts = build_contexts(plans, items, peer);
    if (contexts.empty()) return 0; // nothing sendable: every item carries its error

    Association a(peer);
    if (!a.open(contexts, err)) {
        for (size_t i = 0; i < n_items; i++)
            if (plans[i].ready) { items[i].error = *err; items[i].result = -1; }
        return -1;
    }

    size_t stored = 0;
    for (size_t i = 0; i < n_items; i++) {
        Plan &p = plans[i];
        rtb_dicom_store_item *it = &items[i];
        if (!p.ready) continue;
        T_ASC_PresentationContextID id = static_cast<T_ASC_PresentationContextID>(2 * p.context + 1);
        std::string accepted_xfer;
        if (!a.accepted_context(id, nullptr, &accepted_xfer)) {
            item_fail(it, peer, RTB_DICOM_E_NEGOTIATION, "the peer refused %s in transfer syntax %s",
                      dcmFindNameOfUID(p.sop_class.c_str(), p.sop_class.c_str()),
                      dcmFindNameOfUID(p.xfer.c_str(), p.xfer.c_str()));
            continue;
        }
        T_DIMSE_C_StoreRQ req = {};
        req.MessageID = a.next_message_id();
        OFStandard::strlcpy(req.AffectedSOPClassUID, p.sop_class.c_str(), sizeof req.AffectedSOPClassUID);
        OFStandard::strlcpy(req.AffectedSOPInstanceUID, p.sop_instance.c_str(),
                            sizeof req.AffectedSOPInstanceUID);
        req.DataSetType = DIMSE_DATASET_PRESENT;
        req.Priority = DIMSE_PRIORITY_MEDIUM;
        T_DIMSE_C_StoreRSP rsp = {};
        DcmDataset *detail = nullptr;
        OFCondition cond = DIMSE_storeUser(a.assoc(), id, &req, p.dataset ? nullptr : it->path,
                                           p.dataset, nullptr, nullptr, DIMSE_NONBLOCKING,
                                           a.dimse_timeout(), &rsp, &detail);
        std::unique_ptr<DcmDataset> hold(detail);
        if (cond.bad()) {
            set_peer(&it->error, peer);
            fail_cond(&it->error, cond, "C-STORE");
            if (network_broken(cond)) {
                // The association is gone: this and every later item are not stored.
                a.mark_broken();
                *err = it->error;
                for (size_t j = i + 1; j < n_items; j++)
                    if (plans[j].ready) {
                        items[j].error = *err;
                        snprintf(items[j].error.message, sizeof items[j].error.message,
                                 "not sent: association lost (%.400s)", err->message);
                    }
                if (n_stored) *n_stored = stored;
                return -1;
            }
            continue;
        }
        it->status = rsp.DimseStatus;
        if (rsp.DimseStatus == STATUS_Success || (rsp.DimseStatus & 0xF000) == 0xB000 ||
            rsp.DimseStatus == 0x0001) {
            it->result = 0;
            stored++;
        } else {
            set_peer(&it->error, peer);
            fail_status(&it->error, rsp.DimseStatus, detail, "C-STORE");
        }
    }
    a.release(err);
    if (n_stored) *n_stored = stored;
    return 0;
}
