/* Opening the journal, SQLite settings, errors and the small helpers every
 * statement uses. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "internal.h"

#define DEFAULT_BUSY_TIMEOUT_MS 5000

static const char *const kind_names[] = {"ok",      "locked",    "busy",    "io",
                                         "corrupt", "version",   "not_found", "invalid",
                                         "sql",     "internal"};

const char *rtb_journal_error_kind_name(rtb_journal_error_kind kind)
{
    if ((unsigned)kind >= sizeof kind_names / sizeof kind_names[0])
        return "internal";
    return kind_names[kind];
}

static void error_reset(rtb_journal_error *err, rtb_journal_error_kind kind)
{
    err->kind = kind;
    err->sqlite_code = 0;
    err->holder_pid = 0;
    err->holder_started[0] = '\0';
}

int rtb_journal_fail(rtb_journal_error *err, rtb_journal_error_kind kind, const char *fmt, ...)
{
    error_reset(err, kind);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static rtb_journal_error_kind kind_of_sqlite(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return RTB_JOURNAL_E_BUSY;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
        return RTB_JOURNAL_E_IO;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return RTB_JOURNAL_E_CORRUPT;
    case SQLITE_NOMEM:
        return RTB_JOURNAL_E_INTERNAL;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        return RTB_JOURNAL_E_INVALID;
    default:
        return RTB_JOURNAL_E_SQL;
    }
}

int rtb_journal_fail_sqlite(rtb_journal *j, int rc, const char *what, rtb_journal_error *err)
{
    const char *detail = j->db ? sqlite3_errmsg(j->db) : sqlite3_errstr(rc);
    rtb_journal_fail(err, kind_of_sqlite(rc), "journal %s: %s: %s", j->path, what, detail);
    err->sqlite_code = rc;
    return -1;
}

int rtb_journal_prepare(rtb_journal *j, const char *sql, sqlite3_stmt **stmt,
                        rtb_journal_error *err)
{
    int rc = sqlite3_prepare_v2(j->db, sql, -1, stmt, NULL);
    if (rc != SQLITE_OK)
        return rtb_journal_fail_sqlite(j, rc, "cannot prepare a statement", err);
    return 0;
}

int rtb_journal_exec(rtb_journal *j, const char *sql, rtb_journal_error *err)
{
    int rc = sqlite3_exec(j->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return rtb_journal_fail_sqlite(j, rc, sql, err);
    return 0;
}

int rtb_journal_begin(rtb_journal *j, rtb_journal_error *err)
{
    return rtb_journal_exec(j, "BEGIN IMMEDIATE", err);
}

int rtb_journal_commit(rtb_journal *j, rtb_journal_error *err)
{
    if (rtb_journal_exec(j, "COMMIT", err) != 0) {
        rtb_journal_rollback(j);
        return -1;
    }
    return 0;
}

void rtb_journal_rollback(rtb_journal *j)
{
    if (!sqlite3_get_autocommit(j->db))
        sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
}

int rtb_journal_bind_text(sqlite3_stmt *stmt, int index, const char *s)
{
    if (!s)
        return sqlite3_bind_null(stmt, index);
    return sqlite3_bind_text(stmt, index, s, -1, SQLITE_TRANSIENT);
}

int rtb_journal_bind_int(sqlite3_stmt *stmt, int index, long long v, int has)
{
    if (!has)
        return sqlite3_bind_null(stmt, index);
    return sqlite3_bind_int64(stmt, index, v);
}

const char *rtb_journal_column_text(sqlite3_stmt *stmt, int col)
{
    return (const char *)sqlite3_column_text(stmt, col);
}

void rtb_journal_now(char out[RTB_JOURNAL_TIME_MAX])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, RTB_JOURNAL_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, RTB_JOURNAL_TIME_MAX - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* WAL lets an operator read the journal (sqlite3 shell, `rtbackup report`) while a
 * run writes, and with synchronous=FULL a commit is on disk before the call returns,
 * so a power loss cannot take back a unit we already reported as verified. Some file
 * systems (NFS without shared memory) cannot do WAL: refuse them rather than run with
 * weaker guarantees than the ones documented. */
static int configure(rtb_journal *j, int busy_timeout_ms, rtb_journal_error *err)
{
    int rc = sqlite3_busy_timeout(j->db, busy_timeout_ms);
    if (rc != SQLITE_OK)
        return rtb_journal_fail_sqlite(j, rc, "cannot set the busy timeout", err);
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, "PRAGMA journal_mode = WAL", &stmt, err) != 0)
        return -1;
    rc = sqlite3_step(stmt);
    int wal = rc == SQLITE_ROW && strcasecmp(rtb_journal_column_text(stmt, 0), "wal") == 0;
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW)
        return rtb_journal_fail_sqlite(j, rc, "cannot read the file", err);
    if (!wal)
        return rtb_journal_fail(err, RTB_JOURNAL_E_IO,
                                "journal %s: the file system does not support SQLite's WAL mode",
                                j->path);
    if (rtb_journal_exec(j, "PRAGMA synchronous = FULL", err) != 0)
        return -1;
    return rtb_journal_exec(j, "PRAGMA foreign_keys = ON", err);
}

int rtb_journal_open(const char *path, const rtb_journal_options *options, rtb_journal **out,
                     rtb_journal_error *err)
{
    *out = NULL;
    if (!path || !*path)
        return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID, "journal: no path given");
    rtb_journal *j = calloc(1, sizeof *j);
    if (!j || !(j->path = strdup(path))) {
        free(j);
        return rtb_journal_fail(err, RTB_JOURNAL_E_INTERNAL, "journal %s: out of memory", path);
    }
    int timeout = options && options->busy_timeout_ms > 0 ? options->busy_timeout_ms
                                                          : DEFAULT_BUSY_TIMEOUT_MS;
    int rc = sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        rtb_journal_fail_sqlite(j, rc, "cannot open", err);
        rtb_journal_close(j);
        return -1;
    }
    sqlite3_extended_result_codes(j->db, 1);
    if (configure(j, timeout, err) != 0 || rtb_journal_schema_ensure(j, err) != 0) {
        rtb_journal_close(j);
        return -1;
    }
    *out = j;
    return 0;
}

void rtb_journal_close(rtb_journal *j)
{
    if (!j)
        return;
    /* sqlite3_close_v2 defers the close until statements are finalised; every function
     * here finalises its own, so this closes now and checkpoints the WAL. */
    sqlite3_close_v2(j->db);
    free(j->path);
    free(j);
}

const char *rtb_journal_path(const rtb_journal *j)
{
    return j->path;
}
