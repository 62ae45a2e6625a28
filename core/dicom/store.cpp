// C-STORE of files and in-memory datasets: every item gets its own outcome.
//
// Pass 1 reads only what negotiation needs (meta header and the dataset up to
// SOP Instance UID), so a file that is not DICOM costs nothing. Then associations
// are opened for the pending items, each with one presentation context per SOP
// class / transfer syntax pair (128 at most; the others wait for the next one).
//
// Why a bad file used to break a run: DIMSE_storeUser() given a file name loads it
// whole itself, and a file it cannot read (truncated: "premature end of stream")
// makes it return DIMSE_SENDFAILED, the very condition a broken socket gives. Taken
// for a lost association, it ended the run and every later item was "not sent",
// although nothing had gone over the wire. Now each file is read whole here, before
// its C-STORE-RQ: a file DCMTK cannot read is "unreadable" and the association never
// sees it, and a send failure of a dataset already in memory really is the network.
//
// A lost association (abort, reset, timeout) is reopened for the remaining items with
// a growing backoff; a peer that keeps failing (max_reconnects in a row without
// anything stored) trips the breaker and the rest is reported not sent.
#include "internal.hpp"

#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>
#include <thread>

using namespace rtb;

namespace {

struct Plan {
    std::string sop_class, sop_instance, xfer;
    DcmDataset *dataset = nullptr; // in-memory items
    std::unique_ptr<rtb_ds> copy;  // item views are sent from a copy
    bool pending = false;          // still to be sent
    int losses = 0;                // associations lost while this item was in flight
};

bool is_uncompressed(const std::string &xfer)
{
    return xfer == UID_LittleEndianExplicitTransferSyntax ||
           xfer == UID_LittleEndianImplicitTransferSyntax ||
           xfer == UID_BigEndianExplicitTransferSyntax;
}

__attribute__((format(printf, 5, 6)))
void item_fail(rtb_dicom_store_item *it, const rtb_dicom_peer *peer, rtb_dicom_store_outcome outcome,
               rtb_dicom_error_kind kind, const char *fmt, ...)
{
    it->result = -1;
    it->outcome = outcome;
    clear_error(&it->error);
    set_peer(&it->error, peer);
    it->error.kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->error.message, sizeof it->error.message, fmt, ap);
    va_end(ap);
}

// "MR Image Storage in JPEG 2000 (Lossless only)"
std::string what(const Plan &p)
{
    return uid_name(p.sop_class) + " in " + uid_name(p.xfer);
}

void plan_file(rtb_dicom_store_item *it, const rtb_dicom_peer *peer, Plan &p)
{
    struct stat st;
    if (stat(it->path, &st) != 0) {
        item_fail(it, peer, RTB_STORE_UNREADABLE, RTB_DICOM_E_IO, "%s: %s", it->path, strerror(errno));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        item_fail(it, peer, RTB_STORE_UNREADABLE, RTB_DICOM_E_IO, "%s: not a regular file", it->path);
        return;
    }
    DcmFileFormat ff;
    // Stop right after SOP Instance UID: enough to negotiate, cheap for big files.
    OFCondition cond = ff.loadFileUntilTag(it->path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength,
                                           ERM_autoDetect, DcmTagKey(0x0008, 0x0019));
    if (cond.bad()) {
        item_fail(it, peer, RTB_STORE_UNREADABLE, RTB_DICOM_E_IO, "%s: not a readable DICOM file (%s)",
                  it->path, cond.text());
        return;
    }
    DcmDataset *ds = ff.getDataset();
    DcmMetaInfo *meta = ff.getMetaInfo();
    std::string sop_class = read_uid(ds, DCM_SOPClassUID);
    std::string sop_instance = read_uid(ds, DCM_SOPInstanceUID);
    std::string xfer, media_class;
    if (meta && meta->card() > 0) {
        xfer = read_uid(meta, DCM_TransferSyntaxUID);
        media_class = read_uid(meta, DCM_MediaStorageSOPClassUID);
    }
    // The syntax the dataset was actually read in: a meta header may name another.
    E_TransferSyntax read_as = ds->getOriginalXfer();
    if (read_as != EXS_Unknown) xfer = DcmXfer(read_as).getXferID();
    copy_str(it->sop_class_uid, sizeof it->sop_class_uid, sop_class.c_str());
    copy_str(it->transfer_syntax_uid, sizeof it->transfer_syntax_uid, xfer.c_str());
    copy_str(it->sop_instance_uid, sizeof it->sop_instance_uid, sop_instance.c_str());
    if (media_class == UID_MediaStorageDirectoryStorage) {
        item_fail(it, peer, RTB_STORE_UNREADABLE, RTB_DICOM_E_IO,
                  "%s: a DICOMDIR (the index of a medium), not an instance", it->path);
        return;
    }
    // The UIDs must be the dataset's own (as storescu requires): the meta header's
    // copies alone would send a dataset the peer cannot index and we cannot verify.
    if (sop_class.empty() || sop_instance.empty()) {
        item_fail(it, peer, RTB_STORE_UNREADABLE, RTB_DICOM_E_IO,
                  "%s: not a DICOM instance (no SOP %s UID in its dataset)", it->path,
                  sop_class.empty() ? "Class" : "Instance");
        return;
    }
    p.sop_class = sop_class;
    p.sop_instance = sop_instance;
    p.xfer = xfer;
    p.pending = true;
}

void plan_dataset(rtb_dicom_store_item *it, const rtb_dicom_peer *peer, Plan &p)
{
    DcmDataset *ds = it->ds->dataset();
    if (!ds) {
        rtb_ds *c = nullptr;
        if (rtb_ds_clone(it->ds, &c, &it->error) != 0) {
            it->result = -1;
            it->outcome = RTB_STORE_UNREADABLE;
            return;
        }
        p.copy.reset(c);
        ds = c->dataset();
    }
    std::string sop_class = read_uid(ds, DCM_SOPClassUID);
    std::string sop_instance = read_uid(ds, DCM_SOPInstanceUID);
    copy_str(it->sop_class_uid, sizeof it->sop_class_uid, sop_class.c_str());
    copy_str(it->sop_instance_uid, sizeof it->sop_instance_uid, sop_instance.c_str());
    if (sop_class.empty() || sop_instance.empty()) {
        item_fail(it, peer, RTB_STORE_UNREADABLE, RTB_DICOM_E_INVALID,
                  "dataset has no SOP Class UID or SOP Instance UID");
        return;
    }
    E_TransferSyntax x = ds->getOriginalXfer();
    // A dataset built in memory has no transfer syntax yet: any uncompressed one will do.
    if (x == EXS_Unknown) x = EXS_LittleEndianExplicit;
    p.sop_class = sop_class;
    p.sop_instance = sop_instance;
    p.xfer = DcmXfer(x).getXferID();
    copy_str(it->transfer_syntax_uid, sizeof it->transfer_syntax_uid, p.xfer.c_str());
    p.dataset = ds;
    p.pending = true;
}

// One context per distinct (SOP class, transfer syntax) among the pending items, at
// most 128: the item's own syntax alone, so that a peer accepting it stores the
// instance byte for byte (a big-endian file stays big endian). Uncompressed data gets a
// second context with every uncompressed syntax, for peers that refuse its own (DCMTK
// converts while sending, values unchanged); compressed and deflated data is offered
// only as it is, because a backup must not transcode it. index maps a pair to its
// first context.
std::vector<PresContext> build_contexts(const std::vector<Plan> &plans,
                                        std::map<std::pair<std::string, std::string>, int> &index)
{
    std::vector<PresContext> contexts;
    index.clear();
    for (const Plan &p : plans) {
        if (!p.pending) continue;
        auto key = std::make_pair(p.sop_class, p.xfer);
        if (index.count(key) || contexts.size() + (is_uncompressed(p.xfer) ? 2 : 1) > 128) continue;
        PresContext pc;
        pc.abstract_syntax = p.sop_class;
        pc.transfer_syntaxes.push_back(p.xfer);
        index[key] = static_cast<int>(contexts.size());
        if (is_uncompressed(p.xfer)) {
            contexts.push_back(pc);
            for (size_t k = 0; k < kNumUncompressedXfers; k++)
                if (p.xfer != kUncompressedXfers[k]) pc.transfer_syntaxes.push_back(kUncompressedXfers[k]);
            if (p.xfer != UID_BigEndianExplicitTransferSyntax)
                pc.transfer_syntaxes.push_back(UID_BigEndianExplicitTransferSyntax);
        }
        contexts.push_back(pc);
    }
    return contexts;
}

// Reads a file whole, so that nothing can go wrong with it once its C-STORE-RQ is out.
std::unique_ptr<DcmFileFormat> load_whole(const char *path, std::string *why)
{
    std::unique_ptr<DcmFileFormat> ff(new DcmFileFormat());
    // Every value in one pass (no limit on a value's length): with DCMTK's default limit
    // the large values (pixel data) are read later by opening the file again, which
    // cost a sixth of the CPU of a store of 128 KiB CT slices.
    OFCondition cond = ff->loadFile(path, EXS_Unknown, EGL_noChange, UINT32_MAX, ERM_autoDetect);
    if (cond.bad()) {
        // Read again the default way for the reason: of a truncated file it says
        // "premature end of stream" where the one pass says only "Invalid stream".
        ff.reset(new DcmFileFormat());
        cond = ff->loadFile(path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
        if (cond.good()) cond = ff->loadAllDataIntoMemory();
    }
    if (cond.bad()) {
        *why = cond.text();
        return nullptr;
    }
    return ff;
}

bool status_stored(unsigned s)
{
    return s == STATUS_Success || (s & 0xF000) == 0xB000 || s == 0x0001;
}

struct Policy {
    int max_reconnects, backoff_ms, max_backoff_ms;
    void (*progress)(void *, size_t, size_t);
    void *progress_ud;
};

Policy policy_of(const rtb_dicom_store_options *o)
{
    Policy p{3, 500, 8000, nullptr, nullptr};
    if (!o) return p;
    p.progress = o->progress;
    p.progress_ud = o->progress_ud;
    if (o->max_reconnects < 0) p.max_reconnects = 0;
    else if (o->max_reconnects > 0) p.max_reconnects = o->max_reconnects;
    if (o->backoff_ms > 0) p.backoff_ms = o->backoff_ms;
    if (o->max_backoff_ms > 0) p.max_backoff_ms = o->max_backoff_ms;
    if (p.max_backoff_ms < p.backoff_ms) p.max_backoff_ms = p.backoff_ms;
    return p;
}

// Result of sending over one association.
enum class Run { done, lost, open_failed, open_refused };

struct Store {
    const rtb_dicom_peer *peer;
    rtb_dicom_store_item *items;
    std::vector<Plan> &plans;
    rtb_dicom_store_summary &sum;
    rtb_dicom_error last; // the last association error
    const Policy &pol;
    size_t done = 0; // items with their final outcome

    void finished()
    {
        done++;
        if (pol.progress) pol.progress(pol.progress_ud, done, plans.size());
    }

    // Sends the pending items whose context this association carries.
    Run one_association()
    {
        std::map<std::pair<std::string, std::string>, int> index;
        std::vector<PresContext> contexts = build_contexts(plans, index);
        if (contexts.empty()) return Run::done;
        Association a(peer);
        sum.associations++;
        rtb_dicom_error e;
        clear_error(&e);
        auto t0 = std::chrono::steady_clock::now();
        bool opened = a.open(contexts, &e);
        sum.open_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!opened) {
            last = e;
            // A rejection or a peer accepting none of the contexts will not change
            // by asking again; a refused connect or an abort may.
            if (e.kind == RTB_DICOM_E_REJECTED || e.kind == RTB_DICOM_E_NEGOTIATION ||
                e.kind == RTB_DICOM_E_INVALID) {
                if (e.kind == RTB_DICOM_E_NEGOTIATION) {
                    // Every pending item of this association is refused, by name.
                    for (size_t i = 0; i < plans.size(); i++) {
                        Plan &p = plans[i];
                        if (!p.pending || !index.count({p.sop_class, p.xfer})) continue;
                        p.pending = false;
                        item_fail(&items[i], peer, RTB_STORE_REFUSED, RTB_DICOM_E_NEGOTIATION,
                                  "the peer refused %s (no presentation context accepted)", what(p).c_str());
                        finished();
                    }
                    return Run::done;
                }
                return Run::open_refused;
            }
            return Run::open_failed;
        }
        for (size_t i = 0; i < plans.size(); i++) {
            Plan &p = plans[i];
            if (!p.pending) continue;
            auto found = index.find({p.sop_class, p.xfer});
            if (found == index.end()) continue; // its context waits for another association
            bool alive = send_one(a, i, static_cast<T_ASC_PresentationContextID>(2 * found->second + 1));
            if (!p.pending) finished();
            if (!alive) return Run::lost;
        }
        a.release(nullptr);
        return Run::done;
    }

    // false: the association is lost (the item stays pending unless given up).
    bool send_one(Association &a, size_t i, T_ASC_PresentationContextID id)
    {
        Plan &p = plans[i];
        rtb_dicom_store_item *it = &items[i];
        std::string accepted;
        // The exact context, else (uncompressed) the one with every uncompressed syntax.
        if (!a.accepted_context(id, nullptr, &accepted) && is_uncompressed(p.xfer))
            id = static_cast<T_ASC_PresentationContextID>(id + 2);
        if (!a.accepted_context(id, nullptr, &accepted)) {
            p.pending = false;
            item_fail(it, peer, RTB_STORE_REFUSED, RTB_DICOM_E_NEGOTIATION, "the peer refused %s",
                      what(p).c_str());
            return true;
        }
        std::unique_ptr<DcmFileFormat> file;
        DcmDataset *ds = p.dataset;
        if (!ds) {
            std::string why;
            file = load_whole(it->path, &why);
            if (!file) {
                p.pending = false;
                item_fail(it, peer, RTB_STORE_UNREADABLE, RTB_DICOM_E_IO,
                          "%s: cannot be read whole (%s); not sent", it->path, why.c_str());
                return true;
            }
            ds = file->getDataset();
        }
        E_TransferSyntax to = DcmXfer(accepted.c_str()).getXfer();
        if (!ds->canWriteXfer(to, ds->getOriginalXfer())) {
            p.pending = false;
            item_fail(it, peer, RTB_STORE_REFUSED, RTB_DICOM_E_NEGOTIATION,
                      "%s cannot be sent in %s, the only syntax the peer accepted for it", what(p).c_str(),
                      uid_name(accepted).c_str());
            return true;
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
        OFCondition cond = DIMSE_storeUser(a.assoc(), id, &req, nullptr, ds, nullptr, nullptr,
                                           DIMSE_NONBLOCKING, a.dimse_timeout(), &rsp, &detail);
        std::unique_ptr<DcmDataset> hold(detail);
        if (cond.bad()) {
            // The dataset is in memory and writable in this syntax: what failed is the
            // association. Its state is unknown, so it is never used again.
            a.mark_broken();
            clear_error(&last);
            set_peer(&last, peer);
            fail_cond(&last, cond, "C-STORE");
            p.losses++;
            if (p.losses >= 2) {
                p.pending = false;
                item_fail(it, peer, RTB_STORE_NOT_SENT, last.kind,
                          "not sent: the association was lost twice while sending it (%.380s)", last.message);
            }
            return false;
        }
        it->status = rsp.DimseStatus;
        p.pending = false;
        if (status_stored(rsp.DimseStatus)) {
            it->result = 0;
            it->outcome = RTB_STORE_STORED;
            clear_error(&it->error);
            sum.stored++;
        } else {
            it->outcome = RTB_STORE_REFUSED;
            it->result = -1;
            clear_error(&it->error);
            set_peer(&it->error, peer);
            std::string doing = "C-STORE of " + what(p);
            fail_status(&it->error, rsp.DimseStatus, detail, doing.c_str());
        }
        return true;
    }

    size_t stored_so_far() const { return sum.stored; }
};

void sleep_ms(int ms)
{
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

} // namespace

extern "C" const char *rtb_dicom_store_outcome_name(rtb_dicom_store_outcome outcome)
{
    switch (outcome) {
    case RTB_STORE_STORED: return "stored";
    case RTB_STORE_REFUSED: return "refused";
    case RTB_STORE_UNREADABLE: return "unreadable";
    case RTB_STORE_NOT_SENT: return "not_sent";
    }
    return "not_sent";
}

extern "C" int rtb_dicom_store_with(const rtb_dicom_peer *peer, rtb_dicom_store_item *items,
                                    size_t n_items, const rtb_dicom_store_options *opts,
                                    rtb_dicom_store_summary *summary, rtb_dicom_error *err)
{
    clear_error(err);
    rtb_dicom_store_summary local = {};
    rtb_dicom_store_summary &sum = summary ? *summary : local;
    memset(&sum, 0, sizeof sum);
    if (!ensure_init(err)) return -1;
    if (!validate_peer(peer, err)) return -1;
    if (n_items == 0) return 0;
    if (!items) return fail(err, RTB_DICOM_E_INVALID, "no items");
    Policy pol = policy_of(opts);

    std::vector<Plan> plans(n_items);
    for (size_t i = 0; i < n_items; i++) {
        rtb_dicom_store_item *it = &items[i];
        it->result = -1;
        it->status = 0;
        it->outcome = RTB_STORE_NOT_SENT;
        it->sop_instance_uid[0] = it->sop_class_uid[0] = it->transfer_syntax_uid[0] = '\0';
        clear_error(&it->error);
        if (it->path) plan_file(it, peer, plans[i]);
        else if (it->ds) plan_dataset(it, peer, plans[i]);
        else item_fail(it, peer, RTB_STORE_UNREADABLE, RTB_DICOM_E_INVALID,
                       "store item %zu has neither a path nor a dataset", i + 1);
    }

    Store st{peer, items, plans, sum, {}, pol};
    clear_error(&st.last);
    for (const Plan &p : plans)
        if (!p.pending) st.finished(); // unreadable before any association
    int failures_in_a_row = 0;
    int backoff = pol.backoff_ms;
    bool association_trouble = false;
    for (;;) {
        size_t stored_before = st.stored_so_far();
        Run run = st.one_association();
        if (st.stored_so_far() > stored_before) {
            failures_in_a_row = 0;
            backoff = pol.backoff_ms;
        }
        bool left = false;
        for (const Plan &p : plans) left = left || p.pending;
        if (!left) break;
        if (run == Run::done) continue; // more contexts than one association carries
        association_trouble = true;
        if (run == Run::open_refused) break;
        failures_in_a_row++;
        if (failures_in_a_row > pol.max_reconnects) {
            sum.breaker_open = pol.max_reconnects > 0 || run == Run::lost;
            break;
        }
        sleep_ms(backoff);
        backoff = std::min(backoff * 2, pol.max_backoff_ms);
        sum.reconnects++;
    }

    for (size_t i = 0; i < n_items; i++) {
        if (!plans[i].pending) continue;
        rtb_dicom_store_item *it = &items[i];
        it->outcome = RTB_STORE_NOT_SENT;
        it->result = -1;
        it->error = st.last;
        if (sum.breaker_open)
            snprintf(it->error.message, sizeof it->error.message,
                     "not sent: the peer failed %d associations in a row (%.400s)", failures_in_a_row,
                     st.last.message);
        else
            snprintf(it->error.message, sizeof it->error.message, "not sent: %.480s", st.last.message);
    }
    for (size_t i = 0; i < n_items; i++) {
        switch (items[i].outcome) {
        case RTB_STORE_STORED: break;
        case RTB_STORE_REFUSED: sum.refused++; break;
        case RTB_STORE_UNREADABLE: sum.unreadable++; break;
        case RTB_STORE_NOT_SENT: sum.not_sent++; break;
        }
    }
    if (sum.not_sent > 0 && association_trouble) {
        if (err) *err = st.last;
        return -1;
    }
    return 0;
}

extern "C" int rtb_dicom_store(const rtb_dicom_peer *peer, rtb_dicom_store_item *items,
                               size_t n_items, size_t *n_stored, rtb_dicom_error *err)
{
    rtb_dicom_store_summary sum;
    int rc = rtb_dicom_store_with(peer, items, n_items, nullptr, &sum, err);
    if (n_stored) *n_stored = sum.stored;
    return rc;
}
