/* The run journal (SQLite) and the per-source run locks (flock).
 *
 * A journal is one SQLite file per environment (or per shard; the caller picks the
 * path). It records runs, and one row per unit of work keyed by (source, key) — a
 * series to move, an instance, a Mosaiq record — with its state:
 *
 *     queued -> moved -> verified        (failed: gave up for now; retried later)
 *
 * so that a run killed at any moment is finished by the next one without querying
 * the sources again and without moving anything that was already verified.
 *
 * Durability. The file is in WAL mode with synchronous=FULL: a function that
 * returned 0 has its transaction on disk, and every function that writes does so in
 * one transaction, so a process killed (kill -9, power loss) in the middle leaves all
 * of that call's changes or none of them.
 *
 * The verified rule. A verified unit is only changed by rtb_journal_requeue() (the
 * target lost it) or by a mark to verified again; an upsert or a mark to another
 * state leaves it exactly as it is. That one rule is what stops a rerun from moving
 * verified data twice.
 *
 * Every function that can fail returns -1 (or a count / 0 / 1 as documented) and
 * fills a caller-provided rtb_journal_error; nothing here prints. Handles are
 * caller-owned: rtb_journal_open() / rtb_journal_close(), rtb_journal_lock_acquire() /
 * rtb_journal_lock_release(). A journal handle must be used by one thread at a time.
 *
 * Timestamps are UTC ISO-8601 text with milliseconds ("2026-11-23T04:51:58.123Z"),
 * so they sort as text and read well in the sqlite3 shell. */
#ifndef RTB_JOURNAL_H
#define RTB_JOURNAL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------------------- */

typedef enum {
    RTB_JOURNAL_OK = 0,
    RTB_JOURNAL_E_LOCKED,    /* the lock is held by another process (see holder_*) */
    RTB_JOURNAL_E_BUSY,      /* another connection kept the database locked past the timeout */
    RTB_JOURNAL_E_IO,        /* cannot open/read/write the file, disk full, read-only */
    RTB_JOURNAL_E_CORRUPT,   /* not a journal, or a damaged one */
    RTB_JOURNAL_E_VERSION,   /* written by a newer rtbackup (schema version too high) */
    RTB_JOURNAL_E_NOT_FOUND, /* a unit or run that is not in the journal */
    RTB_JOURNAL_E_INVALID,   /* caller mistake: missing key, unknown state, closed handle */
    RTB_JOURNAL_E_SQL,       /* any other SQLite error */
    RTB_JOURNAL_E_INTERNAL   /* out of memory */
} rtb_journal_error_kind;

#define RTB_JOURNAL_MESSAGE_MAX 1024
#define RTB_JOURNAL_TIME_MAX 32 /* "2026-11-23T04:51:58.123Z" and its NUL, with room */

typedef struct {
    rtb_journal_error_kind kind;
    int sqlite_code;                          /* extended SQLite result code, or 0 */
    int holder_pid;                           /* RTB_JOURNAL_E_LOCKED: 0 when unknown */
    char holder_started[RTB_JOURNAL_TIME_MAX]; /* RTB_JOURNAL_E_LOCKED: "" when unknown */
    char message[RTB_JOURNAL_MESSAGE_MAX];    /* one sentence naming the file */
} rtb_journal_error;

/* "locked", "busy", "io", "corrupt", "version", "not_found", "invalid", "sql",
 * "internal" ("ok" for RTB_JOURNAL_OK). */
const char *rtb_journal_error_kind_name(rtb_journal_error_kind kind);

/* ---- opening ----------------------------------------------------------------------- */

typedef struct rtb_journal rtb_journal;

/* The schema version this code writes (PRAGMA user_version). */
#define RTB_JOURNAL_SCHEMA_VERSION 2

typedef struct {
    int busy_timeout_ms; /* how long a write waits for another connection; 0 = 5000 */
} rtb_journal_options;

/* Opens (creating when missing) the journal at `path`, sets WAL mode, synchronous=FULL
 * and the busy timeout, and creates or upgrades the schema. The directory must exist.
 * `options` may be NULL. Returns 0 and sets *out, or -1. */
int rtb_journal_open(const char *path, const rtb_journal_options *options, rtb_journal **out,
                     rtb_journal_error *err);
/* Closes the database; NULL is allowed. */
void rtb_journal_close(rtb_journal *j);
const char *rtb_journal_path(const rtb_journal *j);

/* ---- runs ------------------------------------------------------------------------- */

typedef struct {
    long long id;
    const char *env, *source;
    const char *started_at, *finished_at; /* finished_at NULL while running */
    const char *status;                   /* "running", "interrupted", or the caller's */
    long long pid;
    const char *host;
    const char *summary; /* JSON text or NULL */
} rtb_journal_run;

/* Called with a borrowed row, valid during the call only. */
typedef void (*rtb_journal_run_fn)(void *ud, const rtb_journal_run *run);

/* Records a new run (status "running", this process's PID and host name) and makes it
 * the handle's current run: later unit writes record it in their run_id. First, runs
 * still "running" whose process is gone from this host are set to "interrupted", so
 * the history tells a killed run from a live one. */
int rtb_journal_run_begin(rtb_journal *j, const char *env, const char *source, long long *id,
                          rtb_journal_error *err);
/* Sets finished_at, status (e.g. "ok", "partial", "failed") and the summary (JSON text,
 * may be NULL). Unknown id: RTB_JOURNAL_E_NOT_FOUND. */
int rtb_journal_run_finish(rtb_journal *j, long long id, const char *status, const char *summary,
                           rtb_journal_error *err);
/* The most recent run of `source` (any status). 1 and calls fn, 0 when none, -1. */
int rtb_journal_run_last(rtb_journal *j, const char *source, rtb_journal_run_fn fn, void *ud,
                         rtb_journal_error *err);

/* Every run of `source` (NULL: of every source), newest first, at most `limit` (0: all).
 * Returns how many were passed to fn, or -1. */
long long rtb_journal_runs(rtb_journal *j, const char *source, long long limit,
                           rtb_journal_run_fn fn, void *ud, rtb_journal_error *err);
/* Deletes the finished runs that started before `before` (ISO-8601 UTC, as the
 * journal writes times): the run history's retention. Returns how many, or -1. */
long long rtb_journal_runs_prune(rtb_journal *j, const char *before, rtb_journal_error *err);

/* ---- facts ------------------------------------------------------------------------- */

/* A value a run learned for later runs, by scope and key ("peer ARIA", "move_rung").
 * get: 1 and *value (malloc'd, the caller frees it) when set, 0 when not, -1.
 * set: value NULL deletes it. */
int rtb_journal_fact_get(rtb_journal *j, const char *scope, const char *key, char **value,
                         rtb_journal_error *err);
int rtb_journal_fact_set(rtb_journal *j, const char *scope, const char *key, const char *value,
                         rtb_journal_error *err);

/* ---- references ---------------------------------------------------------------------- */

/* A reference from one instance of `source` to another instance or series it needs
 * (state "open" until the archive holds it, "resolved" then, "acknowledged" when an
 * operator says it may stay open). detail: JSON text. */
typedef struct {
    const char *source, *from_uid, *to_uid, *kind, *state, *detail;
    const char *first_seen, *last_checked;
} rtb_journal_ref;

typedef int (*rtb_journal_ref_fn)(void *ud, const rtb_journal_ref *ref);

/* Inserts or updates a reference: kind, state and detail are set (detail kept when
 * NULL), last_checked is now. An acknowledged reference stays acknowledged unless
 * state is "resolved". */
int rtb_journal_ref_put(rtb_journal *j, const rtb_journal_ref *ref, rtb_journal_error *err);
/* References of `source` in `state` (NULL: any), oldest first. Returns the count, or -1. */
long long rtb_journal_refs(rtb_journal *j, const char *source, const char *state,
                           rtb_journal_ref_fn fn, void *ud, rtb_journal_error *err);

/* ---- units ------------------------------------------------------------------------ */

typedef enum {
    RTB_UNIT_KEEP = 0, /* as an input: leave the state as it is */
    RTB_UNIT_QUEUED,
    RTB_UNIT_MOVED,
    RTB_UNIT_VERIFIED,
    RTB_UNIT_FAILED
} rtb_unit_state;
#define RTB_UNIT_STATE_COUNT 5 /* for arrays indexed by rtb_unit_state */

/* "queued", "moved", "verified", "failed" (NULL for RTB_UNIT_KEEP). */
const char *rtb_unit_state_name(rtb_unit_state state);
/* The state with that name; RTB_UNIT_KEEP when `name` is not one. */
rtb_unit_state rtb_unit_state_parse(const char *name);

/* One unit to upsert. Zero-initialised fields mean "not given". */
typedef struct {
    const char *key;    /* required: e.g. a Series Instance UID */
    const char *kind;   /* "series", "instance", "record"; new units default to "unit" */
    long long expected; /* instances expected, when has_expected */
    int has_expected;
    const char *data;   /* free text for a later run (often JSON) */
    int data_is_json;   /* remembered so readers can decode it */
    rtb_unit_state state; /* KEEP: "queued" for a new unit, unchanged for an existing one */
} rtb_journal_unit_in;

/* Inserts the units that are new and updates the others (only the fields given), in
 * one transaction. Verified units are left untouched. *added (may be NULL) receives
 * how many were new. */
int rtb_journal_upsert(rtb_journal *j, const char *source, const rtb_journal_unit_in *units,
                       size_t n, size_t *added, rtb_journal_error *err);

/* What a mark changes. Zero-initialised fields mean "leave as it is". */
typedef struct {
    rtb_unit_state state;
    const char *error;      /* sets last_error; a mark to verified clears it when NULL */
    long long moved;        /* instances moved so far, when has_moved */
    int has_moved;
    long long expected;
    int has_expected;
    const char *data;
    int data_is_json;
    int attempts_increment; /* adds 1 to attempts */
} rtb_journal_mark_fields;

/* Applies `fields` to each of keys[0..n) in one transaction. A verified unit changes
 * only when fields->state is RTB_UNIT_VERIFIED (verified_at is kept). Returns how many
 * units changed, or -1; a key that is not in the journal is RTB_JOURNAL_E_NOT_FOUND and
 * nothing is changed. */
long long rtb_journal_mark(rtb_journal *j, const char *source, const char *const *keys, size_t n,
                           const rtb_journal_mark_fields *fields, rtb_journal_error *err);

/* Puts units back to "queued" whatever their state — the one way out of "verified",
 * for when the target lost the data. Resets attempts, moved, last_error and
 * verified_at. Keys not in the journal are skipped. Returns how many were requeued. */
long long rtb_journal_requeue(rtb_journal *j, const char *source, const char *const *keys,
                              size_t n, rtb_journal_error *err);

/* A unit as stored; strings are borrowed, valid during the callback only. */
typedef struct {
    const char *source, *key, *kind;
    rtb_unit_state state;
    long long attempts;
    const char *last_error; /* NULL when none */
    long long expected;
    int has_expected;
    long long moved;
    const char *created_at, *updated_at, *verified_at; /* verified_at NULL until verified */
    long long run_id;                                  /* 0 when no run touched it */
    const char *data;                                  /* NULL when none */
    int data_is_json;
} rtb_journal_unit;

/* Return non-zero to stop the listing early. */
typedef int (*rtb_journal_unit_fn)(void *ud, const rtb_journal_unit *unit);

typedef enum { RTB_JOURNAL_OLDEST_FIRST = 0, RTB_JOURNAL_NEWEST_FIRST } rtb_journal_order;

typedef struct {
    unsigned states;  /* bit (1u << state) per wanted state; 0 = every state */
    const char *kind; /* NULL = every kind */
    long long limit;  /* 0 = no limit */
    rtb_journal_order order; /* by created_at, then insertion order */
} rtb_journal_filter;

/* Calls fn for each unit of `source` matching `filter` (NULL: all, oldest first).
 * Returns how many were passed to fn, or -1. */
long long rtb_journal_units(rtb_journal *j, const char *source, const rtb_journal_filter *filter,
                            rtb_journal_unit_fn fn, void *ud, rtb_journal_error *err);
/* 1 and calls fn when the unit exists, 0 when it does not, -1 on error. */
int rtb_journal_get(rtb_journal *j, const char *source, const char *key, rtb_journal_unit_fn fn,
                    void *ud, rtb_journal_error *err);
/* counts[state] for each state of `source` (counts[RTB_UNIT_KEEP] is the total). */
int rtb_journal_counts(rtb_journal *j, const char *source,
                       long long counts[RTB_UNIT_STATE_COUNT], rtb_journal_error *err);

/* ---- locks ------------------------------------------------------------------------ */

typedef struct rtb_journal_lock rtb_journal_lock;

/* Takes an exclusive flock(2) on `path` (created when missing) without waiting, and
 * writes this process's PID and start time into it. When another process holds it:
 * -1 with RTB_JOURNAL_E_LOCKED and err->holder_pid / holder_started read from the file.
 * The lock ends with rtb_journal_lock_release() or with the process, however it dies,
 * so a file left by a killed holder never blocks anyone. A second acquire of the same
 * path in the same process fails too (flock locks belong to the open file). */
int rtb_journal_lock_acquire(const char *path, rtb_journal_lock **out, rtb_journal_error *err);
/* As rtb_journal_lock_acquire, or with shared = 1 a shared flock: any number of shared
 * holders at once, never together with an exclusive one. Sharded runs of a source hold
 * its lock shared (each its own shard's lock exclusively); an unsharded run holds it
 * exclusively, so the two never move the same studies at once. A shared holder writes
 * no PID into the file. */
int rtb_journal_lock_acquire_mode(const char *path, int shared, rtb_journal_lock **out,
                                  rtb_journal_error *err);
/* Empties the file (so it names no holder) and unlocks it; NULL is allowed. The file
 * is not removed: unlinking a lock file lets two processes lock two different files. */
void rtb_journal_lock_release(rtb_journal_lock *lock);
const char *rtb_journal_lock_path(const rtb_journal_lock *lock);
const char *rtb_journal_lock_started(const rtb_journal_lock *lock);

/* ---- shared helpers ---------------------------------------------------------------- */

/* Writes the current UTC time as ISO-8601 with milliseconds. */
void rtb_journal_now(char out[RTB_JOURNAL_TIME_MAX]);

#ifdef __cplusplus
}
#endif

#endif
