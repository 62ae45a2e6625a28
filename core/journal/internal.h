/* Shared by the journal sources (db.c, runs.c, units.c). Not part of the public API. */
#ifndef RTB_JOURNAL_INTERNAL_H
#define RTB_JOURNAL_INTERNAL_H

#include <sqlite3.h>

#include "journal.h"

struct rtb_journal {
    sqlite3 *db;
    char *path;
    long long run_id; /* current run (rtb_journal_run_begin), 0 when none */
};

#if defined(__GNUC__)
#define RTB_JOURNAL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define RTB_JOURNAL_PRINTF(f, a)
#endif

/* Fills err (kind and formatted message, nothing else) and returns -1. */
int rtb_journal_fail(rtb_journal_error *err, rtb_journal_error_kind kind, const char *fmt, ...)
    RTB_JOURNAL_PRINTF(3, 4);

/* Fills err from SQLite's last error on j: "journal PATH: WHAT: sqlite's message",
 * with the kind chosen from the result code `rc`. Returns -1. */
int rtb_journal_fail_sqlite(rtb_journal *j, int rc, const char *what, rtb_journal_error *err);

/* Prepares one statement; -1 with err filled on failure. */
int rtb_journal_prepare(rtb_journal *j, const char *sql, sqlite3_stmt **stmt,
                        rtb_journal_error *err);
/* Runs a statement that returns no rows (BEGIN, COMMIT, DDL, ...). */
int rtb_journal_exec(rtb_journal *j, const char *sql, rtb_journal_error *err);

/* Write transactions. BEGIN IMMEDIATE takes the write lock at the start, so waiting
 * for another writer happens there (under the busy timeout) and never as a deadlock
 * half-way through a batch. rollback ignores errors: it runs on a path that already
 * failed and must not hide the first error. */
int rtb_journal_begin(rtb_journal *j, rtb_journal_error *err);
int rtb_journal_commit(rtb_journal *j, rtb_journal_error *err);
void rtb_journal_rollback(rtb_journal *j);

/* Binds text, or NULL when s is NULL. */
int rtb_journal_bind_text(sqlite3_stmt *stmt, int index, const char *s);
/* Binds v when `has`, otherwise NULL. */
int rtb_journal_bind_int(sqlite3_stmt *stmt, int index, long long v, int has);
/* Text of a column, NULL for SQL NULL. */
const char *rtb_journal_column_text(sqlite3_stmt *stmt, int col);

/* Creates the schema on a new file and upgrades an older one (db.c). */
int rtb_journal_schema_ensure(rtb_journal *j, rtb_journal_error *err);

#endif
