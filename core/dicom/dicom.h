/* DICOM adapter over DCMTK: datasets, UIDs, SCU operations and a storage SCP.
 *
 * C++ inside, this C header outside. Every function that can fail returns 0 or -1
 * and fills a caller-provided rtb_dicom_error; nothing here prints. Handles are
 * caller-owned: whatever a *_new / *_read / *_clone / *_start returns is released
 * by the matching *_free / *_stop.
 *
 * Threads. Call rtb_dicom_init() once before anything else (it is idempotent and
 * safe to call from several threads). After that every SCU function is a blocking
 * call that opens its own association, so several may run at once on different
 * threads (the libuv pool). A single rtb_ds must not be used from two threads at
 * the same time; distinct datasets may.
 *
 * Speed. Every association socket gets TCP_NODELAY: DCMTK on Debian leaves Nagle's
 * algorithm on, which makes each small PDU wait for a delayed ACK (100x slower
 * C-STORE on loopback). */
#ifndef RTB_DICOM_H
#define RTB_DICOM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------------ */

typedef enum {
    RTB_DICOM_OK = 0,
    RTB_DICOM_E_CONNECT_FAILED, /* TCP connect refused, unreachable, unknown host, connect timeout */
    RTB_DICOM_E_REJECTED,       /* A-ASSOCIATE-RJ; see .reject and the message */
    RTB_DICOM_E_ABORTED,        /* A-ABORT, or the peer closed the connection */
    RTB_DICOM_E_TIMEOUT,        /* no answer within the ACSE or DIMSE timeout */
    RTB_DICOM_E_STATUS,         /* DIMSE failure status; .status, ErrorComment in the message */
    RTB_DICOM_E_NEGOTIATION,    /* association accepted, but not the presentation context needed */
    RTB_DICOM_E_PROTOCOL,       /* unexpected or malformed DIMSE message */
    RTB_DICOM_E_IO,             /* file read/write/rename failed, or a file is not DICOM */
    RTB_DICOM_E_INVALID,        /* bad input: unknown keyword, missing calling AE, bad value */
    RTB_DICOM_E_INTERNAL        /* DCMTK could not be initialised, out of memory, ... */
} rtb_dicom_error_kind;

#define RTB_DICOM_MESSAGE_MAX 512
#define RTB_DICOM_PEER_MAX 128

typedef struct {
    rtb_dicom_error_kind kind;
    unsigned status; /* DIMSE status (kind STATUS; also set for a C-STORE item), else 0 */
    struct {
        int result, source, reason; /* A-ASSOCIATE-RJ fields (PS3.8 9.3.4), kind REJECTED only */
    } reject;
    char message[RTB_DICOM_MESSAGE_MAX]; /* one readable sentence */
    char peer[RTB_DICOM_PEER_MAX];       /* "AE@host:port", "" for local errors */
} rtb_dicom_error;

/* "connect_failed", "rejected", "aborted", "timeout", "status", "negotiation",
 * "protocol", "io", "invalid", "internal" ("ok" for RTB_DICOM_OK). */
const char *rtb_dicom_error_kind_name(rtb_dicom_error_kind kind);

/* Loads the data dictionary, registers the codecs, silences DCMTK's own logging
 * (set RTB_DCMTK_LOG=trace|debug|info|warn|error to see it on stderr while
 * troubleshooting). Runs its body once; later calls return the first result. */
int rtb_dicom_init(rtb_dicom_error *err);

/* ---- datasets ---------------------------------------------------------------- */

/* An opaque dataset. A handle obtained from rtb_ds_item(), rtb_ds_item_append()
 * or passed to a callback is *borrowed*: valid while its owner lives (callbacks:
 * during the call only), never freed by the caller. */
typedef struct rtb_ds rtb_ds;

int rtb_ds_new(rtb_ds **out, rtb_dicom_error *err);
/* Reads a DICOM file (Part 10, or a bare dataset with a SOP Class UID). */
int rtb_ds_read(const char *path, rtb_ds **out, rtb_dicom_error *err);
/* The same from the bytes of such a file in memory (`name` says whose, in errors). */
int rtb_ds_parse(const void *bytes, size_t len, const char *name, rtb_ds **out, rtb_dicom_error *err);
int rtb_ds_clone(const rtb_ds *ds, rtb_ds **out, rtb_dicom_error *err);
void rtb_ds_free(rtb_ds *ds); /* NULL is fine; borrowed handles are ignored */

typedef enum {
    RTB_DS_XFER_AUTO = 0,    /* as read (may be compressed); explicit VR LE for new datasets */
    RTB_DS_XFER_EXPLICIT_LE, /* decompresses if needed */
    RTB_DS_XFER_IMPLICIT_LE
} rtb_ds_xfer;

typedef struct {
    rtb_ds_xfer transfer_syntax;
} rtb_ds_save_options;

/* Writes a Part 10 file with a fresh meta header, atomically: a temporary file in
 * the same directory, fdatasync, rename, fsync of the directory (shared with
 * other threads renaming into it at the same time). opts may be NULL. */
int rtb_ds_save(rtb_ds *ds, const char *path, const rtb_ds_save_options *opts,
                rtb_dicom_error *err);

/* One element as the caller sees it. Filled by rtb_ds_get / rtb_ds_element_at;
 * release with rtb_ds_element_clear (safe on a zeroed struct). */
typedef struct {
    unsigned group, element;
    char keyword[64];  /* dictionary keyword, "" for private or unknown elements */
    char vr[3];        /* "PN", "SQ", ... */
    int present;       /* rtb_ds_get: 0 when the dataset has no such element */
    int is_sequence;   /* count = number of items, values = NULL */
    int is_binary;     /* OB/OW/OF/OD/OL/OV/UN: values = NULL, see length */
    size_t length;     /* value length in bytes */
    size_t count;      /* number of values (VM), 0 for an empty value */
    char **values;     /* count NUL-terminated strings; numbers in their DICOM string form */
} rtb_ds_element;

void rtb_ds_element_clear(rtb_ds_element *e);

/* Keywords are DICOM dictionary keywords ("PatientID") or a tag "0010,0020".
 * An unknown keyword is an error of kind INVALID naming it. */
int rtb_ds_get(const rtb_ds *ds, const char *keyword, rtb_ds_element *out, rtb_dicom_error *err);
/* Replaces the element with count values (count 0: an empty value). Numbers are
 * given in their string form; VR rules are checked by DCMTK. */
int rtb_ds_set(rtb_ds *ds, const char *keyword, const char *const *values, size_t count,
               rtb_dicom_error *err);
int rtb_ds_remove(rtb_ds *ds, const char *keyword, rtb_dicom_error *err); /* absent is fine */
/* Binary values (OB, OW incl. uncompressed Pixel Data, UN), little endian bytes.
 * get: *data is malloc'd (free() it), NULL with len 0 when absent or empty. */
int rtb_ds_get_bytes(const rtb_ds *ds, const char *keyword, void **data, size_t *len,
                     rtb_dicom_error *err);
int rtb_ds_set_bytes(rtb_ds *ds, const char *keyword, const void *data, size_t len,
                     rtb_dicom_error *err);

/* Sets a text element by tag "gggg,eeee" with the VR the caller names: for private
 * elements the dictionary cannot type, and for builders that know their VRs (no
 * dictionary lookup). Group 0002 is refused. */
int rtb_ds_set_vr(rtb_ds *ds, const char *tag, const char *vr, const char *const *values,
                  size_t count, rtb_dicom_error *err);

/* Top-level elements in tag order. */
size_t rtb_ds_count(const rtb_ds *ds);
int rtb_ds_element_at(const rtb_ds *ds, size_t index, rtb_ds_element *out, rtb_dicom_error *err);

/* Sequences. item_count is 0 when the element is absent. */
int rtb_ds_item_count(const rtb_ds *ds, const char *keyword, size_t *count, rtb_dicom_error *err);
int rtb_ds_item(rtb_ds *ds, const char *keyword, size_t index, rtb_ds **item,
                rtb_dicom_error *err);
/* Appends an empty item (creating the sequence if needed) and returns it. */
int rtb_ds_item_append(rtb_ds *ds, const char *keyword, rtb_ds **item, rtb_dicom_error *err);
/* Items of the element at index (as in rtb_ds_element_at), for iterating. */
int rtb_ds_item_at(rtb_ds *ds, size_t element_index, size_t item_index, rtb_ds **item,
                   rtb_dicom_error *err);

/* Text dump like dcmdump, at most max_lines lines (0 = no limit). *out is
 * malloc'd, the caller free()s it. */
int rtb_ds_dump(const rtb_ds *ds, size_t max_lines, char **out, rtb_dicom_error *err);

/* SHA-256 (64 hex digits + NUL) over a canonical form of the dataset content: the
 * same for the same content read from implicit or explicit VR little endian. */
int rtb_ds_digest(const rtb_ds *ds, char hex[65], rtb_dicom_error *err);

/* ---- UIDs -------------------------------------------------------------------- */

#define RTB_DICOM_UID_MAX 65 /* 64 characters + NUL */

/* "2.25.<decimal>" from a UUIDv5 (SHA-1) of the names: the same names always give
 * the same UID; names are length-prefixed, so ("ab","c") differs from ("a","bc"). */
int rtb_dicom_uid_from_names(const char *const *names, size_t count, char out[RTB_DICOM_UID_MAX],
                             rtb_dicom_error *err);
/* The same over byte strings of the given lengths (names may hold NUL bytes); for
 * NUL-free names it gives what rtb_dicom_uid_from_names gives. lengths NULL = strlen. */
int rtb_dicom_uid_from_bytes(const char *const *names, const size_t *lengths, size_t count,
                             char out[RTB_DICOM_UID_MAX], rtb_dicom_error *err);
/* "2.25.<decimal>" of a random (version 4) UUID from getrandom(). */
int rtb_dicom_uid_random(char out[RTB_DICOM_UID_MAX], rtb_dicom_error *err);
/* 1 if s is a syntactically valid UID (digits and dots, no leading zeros, <= 64). */
int rtb_dicom_uid_valid(const char *s);

/* ---- peers and SCU operations ------------------------------------------------ */

typedef struct {
    const char *called_ae;  /* the peer's AE title (required) */
    const char *host;       /* required */
    int port;               /* required, 1..65535 */
    const char *calling_ae; /* our AE title (required: never defaulted) */
    int connect_timeout;    /* seconds; 0 = 10. Process-wide in DCMTK 3.6.7: the last value set wins */
    int acse_timeout;       /* seconds; 0 = 30 */
    int dimse_timeout;      /* seconds between two messages; 0 = 60 */
    unsigned max_pdu;       /* our maximum receive PDU; 0 = 116794 */
    int tls;                /* 1: TLS (DCMTK dcmtls, non-downgrading BCP 195 profile) */
    const char *tls_cert;   /* our certificate (PEM), optional */
    const char *tls_key;    /* its private key (PEM), required with tls_cert */
    const char *tls_ca;     /* CA file (PEM) the peer certificate must chain to; required with tls */
} rtb_dicom_peer;

typedef enum { RTB_QR_PATIENT, RTB_QR_STUDY, RTB_QR_SERIES, RTB_QR_IMAGE } rtb_dicom_level;
typedef enum { RTB_QR_STUDY_ROOT = 0, RTB_QR_PATIENT_ROOT } rtb_dicom_model;

int rtb_dicom_echo(const rtb_dicom_peer *peer, rtb_dicom_error *err);

/* Called once per pending match with a borrowed dataset (valid during the call).
 * Return non-zero to stop: a C-CANCEL is sent and the find still succeeds. */
typedef int (*rtb_dicom_match_fn)(void *ud, rtb_ds *match);

typedef struct {
    size_t matches; /* pending responses delivered to the callback */
    int cancelled;  /* the callback asked to stop */
    unsigned status;
} rtb_dicom_find_result;

/* C-FIND. QueryRetrieveLevel is set from level; the identifier is not modified.
 * Zero matches is success. */
int rtb_dicom_find(const rtb_dicom_peer *peer, rtb_dicom_model model, rtb_dicom_level level,
                   const rtb_ds *identifier, rtb_dicom_match_fn fn, void *ud,
                   rtb_dicom_find_result *out, rtb_dicom_error *err);

typedef struct {
    unsigned status; /* final DIMSE status */
    unsigned completed, failed, warning, remaining;
    size_t received;      /* C-GET: instances received on our side */
    size_t n_failed_uids; /* from FailedSOPInstanceUIDList of the final response */
    char **failed_uids;
    /* C-GET only (see rtb_dicom_get): */
    size_t transcoded;    /* arrived in another transfer syntax than the peer stores: refused */
    size_t associations;  /* opened for this retrieve (query and rounds) */
    double open_seconds;  /* C-MOVE: spent opening its association, any wait for the peer
                           * to accept included (a peer serving fewer associations at once
                           * than it is offered queues the others) */
    int stored_syntax_known; /* 1: the peer's C-FIND told the transfer syntax of every instance */
    char message[RTB_DICOM_MESSAGE_MAX]; /* why the first failed instance failed, "" if none */
} rtb_dicom_retrieve_result;

void rtb_dicom_retrieve_result_clear(rtb_dicom_retrieve_result *r);

/* C-MOVE to destination_ae. Returns 0 for a final status of success or warning
 * (check .failed); -1 with kind STATUS for a failure status (e.g. 0xA801 unknown
 * destination), out filled either way. */
int rtb_dicom_move(const rtb_dicom_peer *peer, rtb_dicom_model model, rtb_dicom_level level,
                   const rtb_ds *identifier, const char *destination_ae,
                   rtb_dicom_retrieve_result *out, rtb_dicom_error *err);

/* Receives one C-GET instance (borrowed dataset). Non-zero: answer the C-STORE
 * with 0xA700 (out of resources) and count it as failed. */
typedef int (*rtb_dicom_instance_fn)(void *ud, rtb_ds *instance);

typedef struct {
    const char *out_dir;           /* write <SOPInstanceUID>.dcm atomically here, and/or */
    rtb_dicom_instance_fn fn;      /* hand each instance to fn */
    void *ud;
    const char *const *sop_classes; /* storage classes to offer (SCP role) when the peer does not
                                       say which it stores; NULL = RT-oriented default */
    size_t n_sop_classes;
    int no_plan;                   /* 1: skip the C-FIND plan, one round with the fallback contexts */
} rtb_dicom_get_options;

/* C-GET with SCP/SCU role selection for the storage classes (PS3.4 C.4.3).
 * Instances arrive exactly as the peer stores them, or fail; never transcoded:
 *  1. plan: a C-FIND at IMAGE level under the identifier asks each instance's
 *     SOPClassUID and TransferSyntaxUID (0002,0010) / AvailableTransferSyntaxUID;
 *  2. rounds: one association per round, offering each SOP class in exactly one
 *     transfer syntax (a peer such as dcmqrscp sends on the first context accepted for
 *     the class, Orthanc picks the stored syntax if offered, else transcodes); a class
 *     stored in several syntaxes takes several rounds, each retrieving its instances by
 *     SOP Instance UID (Composite Instance Root where accepted, else per series);
 *  3. a peer that does not tell the stored syntax gets an uncompressed round, then one
 *     round per compressed syntax for the instances it reported failed.
 * An instance whose syntax differs from the stored one is answered with 0xC000 and
 * counted in .failed and .transcoded. .failed counts the instances the plan expected
 * that did not arrive as stored (at least what the peer reported failed); .completed
 * the instances received and kept; .failed_uids lists the failed instances. Returns 0
 * for success or warning; -1 with kind STATUS for a failure status. */
int rtb_dicom_get(const rtb_dicom_peer *peer, rtb_dicom_model model, rtb_dicom_level level,
                  const rtb_ds *identifier, const rtb_dicom_get_options *opts,
                  rtb_dicom_retrieve_result *out, rtb_dicom_error *err);

typedef enum {
    RTB_STORE_NOT_SENT = 0, /* never answered: association lost, breaker open, peer unreachable */
    RTB_STORE_STORED,       /* status success or warning (0xB000-0xBFFF, 0x0001) */
    RTB_STORE_REFUSED,      /* the peer's failure status, or no accepted presentation context */
    RTB_STORE_UNREADABLE    /* not a (complete) DICOM file or dataset: never sent */
} rtb_dicom_store_outcome;

/* "not_sent", "stored", "refused", "unreadable". */
const char *rtb_dicom_store_outcome_name(rtb_dicom_store_outcome outcome);

typedef struct {
    const char *path;  /* in: a DICOM file, or NULL and */
    rtb_ds *ds;        /* in: a dataset (not modified) */
    int result;        /* out: 0 stored (status success or warning 0xB000-0xBFFF), -1 not */
    unsigned status;   /* out: C-STORE-RSP status, 0 if none was received */
    char sop_instance_uid[RTB_DICOM_UID_MAX]; /* out, when known */
    rtb_dicom_error error; /* out: why this item was not stored (kind IO/INVALID/STATUS/...) */
    rtb_dicom_store_outcome outcome;             /* out */
    char sop_class_uid[RTB_DICOM_UID_MAX];       /* out, when known (also when encoded as UN) */
    char transfer_syntax_uid[RTB_DICOM_UID_MAX]; /* out: the item's own syntax, when known */
} rtb_dicom_store_item;

/* What to do when the association is lost mid-run (A-ABORT, reset, timeout). */
typedef struct {
    int max_reconnects; /* associations lost or failing to open in a row, with nothing stored in
                           between, before the rest is given up (breaker); 0 = 3, -1 = never reconnect */
    int backoff_ms;     /* wait before the first reconnect, doubled each time; 0 = 500 */
    int max_backoff_ms; /* 0 = 8000 */
    /* Optional: called on the storing thread each time an item has its final outcome
     * (done of total), e.g. for a progress line. */
    void (*progress)(void *ud, size_t done, size_t total);
    void *progress_ud;
} rtb_dicom_store_options;

typedef struct {
    size_t stored, refused, unreadable, not_sent; /* items by outcome */
    size_t associations; /* opened (or tried) */
    size_t reconnects;   /* after a lost association */
    int breaker_open;    /* the peer kept failing: the rest was not sent */
    double open_seconds; /* spent opening associations: connect, negotiation and any wait
                          * for the peer to accept (a peer serving fewer associations at
                          * once than it is offered queues the others) */
} rtb_dicom_store_summary;

/* C-STORE of all items. Every item gets its own outcome. Each file is read whole
 * before its C-STORE-RQ, so an unreadable or truncated file is "unreadable" and never
 * reaches the association. Presentation contexts are the SOP class / transfer syntax
 * pairs present (at most 128 an association; more take further associations);
 * compressed data is offered only in its own syntax, never transcoded. A lost
 * association is reopened for the remaining items (opts); an item in flight during
 * two losses is given up as not sent. Returns -1 (err: the association error) when an
 * item was not sent because of the association, 0 otherwise. opts and summary may be
 * NULL. */
int rtb_dicom_store_with(const rtb_dicom_peer *peer, rtb_dicom_store_item *items, size_t n_items,
                         const rtb_dicom_store_options *opts, rtb_dicom_store_summary *summary,
                         rtb_dicom_error *err);
/* rtb_dicom_store_with default options; n_stored (may be NULL) counts result 0. */
int rtb_dicom_store(const rtb_dicom_peer *peer, rtb_dicom_store_item *items, size_t n_items,
                    size_t *n_stored, rtb_dicom_error *err);

/* A readable name for a SOP class or transfer syntax UID ("MR Image Storage",
 * "JPEG 2000 (Lossless Only)"); the UID itself when unknown. Always NUL-terminates. */
void rtb_dicom_uid_name(const char *uid, char *out, size_t size);

/* ---- storage SCP ------------------------------------------------------------- */

typedef struct {
    const char *path; /* the file written, <dir>/<SOPInstanceUID>.dcm; "" when not kept */
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *calling_ae;
    const char *transfer_syntax_uid;
    unsigned status;  /* the C-STORE response: 0 stored; else why nothing was kept (0xA900
                         another instance than announced, 0xA700 no room, ...; 0xFFFF the
                         transfer broke off) */
} rtb_dicom_stored_instance;

/* For each instance stored, and each C-STORE it kept nothing of (status != 0, path
 * ""). Runs on a thread owned by the SCP, never on the thread that called start;
 * calls are serialised (never two at once). */
typedef void (*rtb_dicom_stored_fn)(void *ud, const rtb_dicom_stored_instance *inst);

typedef struct {
    const char *aet;              /* our AE title; associations calling another title are rejected */
    int port;                     /* 0 = an ephemeral port, see rtb_dicom_scp_port() */
    const char *const *allow;     /* calling AE titles accepted; NULL = any */
    size_t n_allow;
    const char *dir;              /* required: received instances land here */
    rtb_dicom_stored_fn on_store; /* optional */
    void *ud;
    int acse_timeout;             /* 0 = 30 */
    int dimse_timeout;            /* idle seconds before an association is aborted; 0 = 60 */
    unsigned max_pdu;             /* 0 = 116794 */
    int max_associations;         /* connections handled at once (including those still
                                     sending their request); 0 = 8 */
    /* Admission. The acceptor only accepts TCP connections; each one gets a worker of its
     * own, which must see the A-ASSOCIATE-RQ (and, with TLS, the handshake done) within
     * request_timeout, or the connection is closed. A connection beyond max_associations,
     * or beyond max_per_host from one remote address, is refused at once: A-ASSOCIATE-RJ
     * (transient, local limit exceeded) on a plain port, closed on a TLS port. */
    int request_timeout;          /* seconds; 0 = 5 */
    int max_per_host;             /* 0 = 4 */
    /* DICOM TLS (DCMTK dcmtls, non-downgrading BCP 195 profile). Every connection
     * must then speak TLS. */
    int tls;                      /* 1: TLS on */
    const char *tls_cert;         /* our certificate (PEM), required with tls */
    const char *tls_key;          /* its private key (PEM), required with tls */
    const char *tls_ca;           /* CA file (PEM) client certificates must chain to; a client
                                     certificate, when presented, is checked against it */
    int tls_require_client_cert;  /* 1: refuse clients without a certificate from tls_ca */
    int sort_by_study;            /* 1: write <dir>/<StudyInstanceUID>/<SOPInstanceUID>.dcm */
    /* A program run for each stored instance (storescp's --exec-on-reception), without a
     * shell: exec_argv[0] is looked up in PATH, and in every argument #p becomes the
     * directory the file was written to, #f its file name, #a the calling AE title, #c
     * the called AE title, #r the peer's address. One at a time, on a thread of its own
     * (never delaying a C-STORE response); stop runs what is still queued. */
    const char *const *exec_argv;
    size_t n_exec_argv;           /* 0: none */
} rtb_dicom_scp_config;

typedef struct rtb_dicom_scp rtb_dicom_scp;

typedef struct {
    size_t stored;       /* instances stored (durable) */
    size_t associations; /* associations acknowledged */
    size_t refused;      /* connections refused at accept: over max_associations or max_per_host */
    size_t rejected;     /* A-ASSOCIATE-RQs rejected: called or calling AE title */
    size_t dropped;      /* connections closed without an association: no request within
                            request_timeout, failed TLS handshake, not DICOM */
    size_t exec_ran;     /* reception commands that exited 0 */
    size_t exec_failed;  /* reception commands that could not start or exited non-zero */
    size_t stale_removed; /* temporary files an SCP stopped by a signal or a power cut had
                             left in dir, removed at start (none while another SCP serves it) */
} rtb_dicom_scp_stats;

/* Binds, then serves on its own threads until rtb_dicom_scp_stop(). Accepts
 * C-ECHO and C-STORE for every storage SOP class (DCMTK's list, and any proposed
 * class under 1.2.840.10008.5.1.4.1.1 or outside the standard's root: newer and
 * private storage classes), uncompressed and the common compressed transfer syntaxes. A C-STORE is answered with success only
 * once its file is durable (fdatasync, rename, fsync of the directory, the last
 * shared by the associations storing into the same directory at once); a data
 * set whose own SOP Class/Instance UIDs are not the request's is refused with
 * 0xA900 and not kept (the file is named after the request). */
int rtb_dicom_scp_start(const rtb_dicom_scp_config *cfg, rtb_dicom_scp **out, rtb_dicom_error *err);
int rtb_dicom_scp_port(const rtb_dicom_scp *scp);
/* Number of instances stored so far. */
size_t rtb_dicom_scp_stored(const rtb_dicom_scp *scp);
/* All the counters so far (zeros for NULL). */
void rtb_dicom_scp_get_stats(const rtb_dicom_scp *scp, rtb_dicom_scp_stats *out);
/* Stops accepting, cuts connections still in their request phase, lets running
 * associations end (aborting them after at most a second), joins every thread and
 * frees the SCP. NULL is fine. */
void rtb_dicom_scp_stop(rtb_dicom_scp *scp);
/* The same, and fills *final (if not NULL) with the counters once every thread has
 * ended: the true totals, including associations that finished during the stop. */
void rtb_dicom_scp_stop_stats(rtb_dicom_scp *scp, rtb_dicom_scp_stats *final);

#ifdef __cplusplus
}
#endif

#endif
