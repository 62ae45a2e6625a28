// Shared inside core/dicom only: the rtb_ds layout, error helpers and the
// association wrapper every SCU operation is built on.
#ifndef RTB_DICOM_INTERNAL_HPP
#define RTB_DICOM_INTERNAL_HPP

#include "dicom.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

// A dataset handle. Roots own a DcmFileFormat (so a read keeps its meta header
// and original transfer syntax); a view wraps a DcmItem owned by someone else:
// a sequence item of a root, or a dataset DCMTK hands us during a callback.
// Handles of sequence items are created on demand and owned by the root, so
// the caller never frees them and they stay valid as long as the root.
struct rtb_ds {
    DcmItem *item = nullptr;
    std::unique_ptr<DcmFileFormat> file; // set for roots we own
    bool borrowed = false;               // views: rtb_ds_free ignores them
    rtb_ds *root = this;
    std::map<DcmItem *, std::unique_ptr<rtb_ds>> views; // only used in the root

    DcmDataset *dataset() const { return dynamic_cast<DcmDataset *>(item); }
    rtb_ds *view_of(DcmItem *child);
};

namespace rtb {

// A stack wrapper for datasets DCMTK owns (C-FIND matches, C-GET instances).
struct BorrowedDs {
    rtb_ds ds;
    explicit BorrowedDs(DcmItem *item) { ds.item = item; ds.borrowed = true; }
};

std::unique_ptr<rtb_ds> make_root(std::unique_ptr<DcmFileFormat> file);

// Errors ------------------------------------------------------------------
void clear_error(rtb_dicom_error *err);
int fail(rtb_dicom_error *err, rtb_dicom_error_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Maps a DCMTK network condition to an error kind, with what we were doing.
int fail_cond(rtb_dicom_error *err, const OFCondition &cond, const char *doing);
rtb_dicom_error_kind kind_of(const OFCondition &cond);
void set_peer(rtb_dicom_error *err, const rtb_dicom_peer *peer);
// Status text such as "0xA801 (Refused: Move Destination unknown)".
std::string status_text(unsigned status);
// "status 0xC000 ...: <ErrorComment>" for a failure response.
int fail_status(rtb_dicom_error *err, unsigned status, DcmDataset *detail, const char *what);

// Must have been called successfully before any DCMTK use.
bool ensure_init(rtb_dicom_error *err);

// Keyword or "gggg,eeee" → tag; INVALID error naming the keyword otherwise.
bool lookup_tag(const char *keyword, DcmTag &tag, rtb_dicom_error *err);

// Files -------------------------------------------------------------------
// Writes via temp file + fdatasync + rename + fsync(dir).
bool save_atomic(DcmFileFormat &ff, const std::string &path, E_TransferSyntax xfer,
                 rtb_dicom_error *err);
// fdatasync(fd, the open tmp; closed here) then rename over dest, then
// sync_dir(dest's directory). The temporary file is removed on failure.
bool commit_fd(int fd, const std::string &tmp, const std::string &dest, rtb_dicom_error *err);
// The same, never replacing another file: dest is kept when it holds the same data
// set bytes (a repeat; the meta headers may differ), and another data set goes
// beside it as "<stem>.2<ext>", ".3", ...
// *final_out names the file that holds the data.
bool commit_fd_keeping(int fd, const std::string &tmp, const std::string &dest, std::string *final_out,
                       rtb_dicom_error *err);
// Returns once every rename into dir done before the call is on disk: an fsync
// of dir that started after the call, ours or another thread's (group commit).
bool sync_dir(const std::string &dir, rtb_dicom_error *err);
// "<dir>/.<name>.XXXXXX" created with mkstemp and left open (close-on-exec) in
// *fd_out, for commit_fd; empty (and -1) on failure.
std::string temp_path_in(const std::string &dir, const std::string &name, int *fd_out, rtb_dicom_error *err);

// Transfer syntaxes we offer and accept, preferred first.
extern const char *const kUncompressedXfers[];
extern const size_t kNumUncompressedXfers;
extern const char *const kAllXfers[];
extern const size_t kNumAllXfers;

// Association ---------------------------------------------------------------
struct PresContext {
    std::string abstract_syntax;
    std::vector<std::string> transfer_syntaxes;
    T_ASC_SC_ROLE role = ASC_SC_ROLE_DEFAULT;
};

// One association to one peer: open() negotiates, the destructor releases
// (or aborts after an error). Owns its T_ASC_Network, so nothing is shared
// between threads.
class Association {
public:
    explicit Association(const rtb_dicom_peer *peer) : peer_(peer) {}
    ~Association();
    Association(const Association &) = delete;
    Association &operator=(const Association &) = delete;

    bool open(const std::vector<PresContext> &contexts, rtb_dicom_error *err);
    // Opens the association for one service (explicit or implicit VR little endian)
    // and returns its accepted context, or 0 with err filled (kind NEGOTIATION when
    // the peer refused the service).
    T_ASC_PresentationContextID open_for(const char *sop_class, rtb_dicom_error *err);
    // Accepted context for the abstract syntax (and transfer syntax if given), 0 if none.
    T_ASC_PresentationContextID find_context(const char *abstract_syntax,
                                             const char *transfer_syntax = nullptr) const;
    // 0 if nothing acceptable; fills *xfer with the accepted transfer syntax.
    T_ASC_PresentationContextID accepted_context(T_ASC_PresentationContextID id,
                                                 std::string *abstract_syntax,
                                                 std::string *xfer) const;
    bool release(rtb_dicom_error *err);
    void abort();
    // After a network error the association cannot be released any more.
    void mark_broken() { broken_ = true; }

    T_ASC_Association *assoc() { return assoc_; }
    T_ASC_Network *net() { return net_; }
    DIC_US next_message_id() { return assoc_->nextMsgID++; }
    int dimse_timeout() const;
    const rtb_dicom_peer *peer() const { return peer_; }

private:
    const rtb_dicom_peer *peer_;
    T_ASC_Network *net_ = nullptr;
    T_ASC_Association *assoc_ = nullptr;
    void *tls_ = nullptr; // DcmTLSTransportLayer*, kept opaque here
    bool broken_ = false;
};

bool validate_peer(const rtb_dicom_peer *peer, rtb_dicom_error *err);
void set_nodelay(T_ASC_Association *assoc);

// Query/retrieve helpers (qr.cpp).
const char *level_name(rtb_dicom_level level);
const char *find_model_uid(rtb_dicom_model model);
const char *move_model_uid(rtb_dicom_model model);
const char *get_model_uid(rtb_dicom_model model);
// A copy of the identifier with QueryRetrieveLevel set; nullptr + err on failure.
std::unique_ptr<DcmDataset> make_identifier(const rtb_ds *identifier, rtb_dicom_level level,
                                            rtb_dicom_error *err);
bool check_model_level(rtb_dicom_model model, rtb_dicom_level level, rtb_dicom_error *err);
bool check_retrieve_keys(DcmDataset *ds, rtb_dicom_model model, rtb_dicom_level level,
                         rtb_dicom_error *err);
// FailedSOPInstanceUIDList of a final C-MOVE/C-GET response into out.
void collect_failed_uids(DcmDataset *rsp_ids, rtb_dicom_retrieve_result *out);

// Strings ---------------------------------------------------------------------
void copy_str(char *dst, size_t size, const char *src);
std::string trim(const std::string &s);

// Names (names.cpp) -------------------------------------------------------------
// "MR Image Storage", "JPEG 2000 (Lossless only)"; the UID itself when unknown.
std::string uid_name(const std::string &uid);
// A UID element's value, also when a file encodes it with VR UN/OB; "" if absent.
std::string read_uid(DcmItem *item, const DcmTagKey &key);
// Whether a text element at the top level of ds (names, descriptions; not UIDs)
// holds a byte outside ASCII, or an ISO 2022 escape.
bool has_non_ascii_text(DcmItem *ds);
// Whether a received data set is the instance its C-STORE request announced: its own
// SOP Class and Instance UIDs are the request's (not only present).
bool is_announced_instance(DcmItem *ds, const T_DIMSE_C_StoreRQ &req);

} // namespace rtb

#endif
