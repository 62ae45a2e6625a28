/* Writing units: upsert, mark, requeue. Each call is one transaction over its whole
 * batch, so a crash leaves the batch entirely done or not done at all.
 *
 * Every statement's WHERE clause carries the verified rule (see journal.h): SQLite
 * enforces it inside the same statement that writes, so no read-then-write window
 * exists in which a verified unit could be demoted. */
#include <string.h>

#include "internal.h"

static const char *const state_names[RTB_UNIT_STATE_COUNT] = {NULL, "queued", "moved",
                                                              "verified", "failed"};

const char *rtb_unit_state_name(rtb_unit_state state)
{
    if ((unsigned)state >= RTB_UNIT_STATE_COUNT)
        return NULL;
    return state_names[state];
}

rtb_unit_state rtb_unit_state_parse(const char *name)
{
    for (int s = RTB_UNIT_QUEUED; name && s < RTB_UNIT_STATE_COUNT; s++)
        if (strcmp(name, state_names[s]) == 0)
            return (rtb_unit_state)s;
    return RTB_UNIT_KEEP;
}

static int check_source(rtb_journal *j, const char *source, rtb_journal_error *err)
{
    if (source && *source)
        return 0;
    return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID, "journal %s: no source given", j->path);
}

static int check_keys(rtb_journal *j, const char *const *keys, size_t n, rtb_journal_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (!keys[i] || !*keys[i])
            return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID,
                                    "journal %s: key %zu is missing or empty", j->path, i + 1);
    return 0;
}

/* Runs a bound write statement and resets it for the next row. Returns the number of
 * rows it changed, or -1. */
static int step_write(rtb_journal *j, sqlite3_stmt *stmt, const char *what,
                      rtb_journal_error *err)
{
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        rtb_journal_fail_sqlite(j, rc, what, err); /* before reset: it keeps the message */
        sqlite3_reset(stmt);
        return -1;
    }
    int changes = sqlite3_changes(j->db);
    sqlite3_reset(stmt);
    return changes;
}

/* 1 when (source, key) is in the journal, 0 when not, -1 on error. */
static int unit_exists(rtb_journal *j, const char *source, const char *key,
                       rtb_journal_error *err)
{
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, "SELECT 1 FROM units WHERE source = ?1 AND key = ?2", &stmt,
                            err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, source);
    rtb_journal_bind_text(stmt, 2, key);
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot look a unit up", err);
    return rc == SQLITE_ROW;
}

/* ---- upsert ------------------------------------------------------------------------ */

/* Insert-or-nothing, then update-unless-verified: two statements rather than one
 * INSERT ... ON CONFLICT DO UPDATE, because the caller wants to know which units were
 * new, and the insert's change count says exactly that. Both share the parameters:
 * ?1 source ?2 key ?3 kind ?4 state ?5 expected ?6 data ?7 data_is_json ?8 now ?9 run */
static const char upsert_insert_sql[] =
    "INSERT INTO units (source, key, kind, state, expected, data, data_is_json, created_at,"
    " updated_at, verified_at, run_id)"
    " VALUES (?1, ?2, coalesce(?3, 'unit'), coalesce(?4, 'queued'), ?5, ?6, coalesce(?7, 0),"
    " ?8, ?8, CASE WHEN ?4 = 'verified' THEN ?8 END, ?9)"
    " ON CONFLICT (source, key) DO NOTHING";

static const char upsert_update_sql[] =
    "UPDATE units SET kind = coalesce(?3, kind), state = coalesce(?4, state),"
    " expected = coalesce(?5, expected), data = coalesce(?6, data),"
    " data_is_json = CASE WHEN ?6 IS NULL THEN data_is_json ELSE ?7 END,"
    " last_error = CASE WHEN ?4 = 'verified' THEN NULL ELSE last_error END,"
    " verified_at = CASE WHEN ?4 = 'verified' THEN ?8 ELSE verified_at END,"
    " updated_at = ?8, run_id = coalesce(?9, run_id)"
    " WHERE source = ?1 AND key = ?2 AND state <> 'verified'";

static void bind_unit(sqlite3_stmt *stmt, const char *source, const rtb_journal_unit_in *u,
                      const char *now, long long run_id)
{
    rtb_journal_bind_text(stmt, 1, source);
    rtb_journal_bind_text(stmt, 2, u->key);
    rtb_journal_bind_text(stmt, 3, u->kind);
    rtb_journal_bind_text(stmt, 4, rtb_unit_state_name(u->state));
    rtb_journal_bind_int(stmt, 5, u->expected, u->has_expected);
    rtb_journal_bind_text(stmt, 6, u->data);
    rtb_journal_bind_int(stmt, 7, u->data_is_json != 0, u->data != NULL);
    rtb_journal_bind_text(stmt, 8, now);
    rtb_journal_bind_int(stmt, 9, run_id, run_id != 0);
}

static int check_units(rtb_journal *j, const rtb_journal_unit_in *units, size_t n,
                       rtb_journal_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!units[i].key || !*units[i].key)
            return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID,
                                    "journal %s: unit %zu has no key", j->path, i + 1);
        if ((unsigned)units[i].state >= RTB_UNIT_STATE_COUNT)
            return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID,
                                    "journal %s: unit %zu has an unknown state", j->path, i + 1);
    }
    return 0;
}

static int upsert_rows(rtb_journal *j, sqlite3_stmt *insert, sqlite3_stmt *update,
                       const char *source, const rtb_journal_unit_in *units, size_t n,
                       size_t *added, rtb_journal_error *err)
{
    char now[RTB_JOURNAL_TIME_MAX];
    rtb_journal_now(now);
    for (size_t i = 0; i < n; i++) {
        bind_unit(insert, source, &units[i], now, j->run_id);
        int inserted = step_write(j, insert, "cannot add a unit", err);
        if (inserted < 0)
            return -1;
        if (inserted) {
            (*added)++;
            continue;
        }
        bind_unit(update, source, &units[i], now, j->run_id);
        if (step_write(j, update, "cannot update a unit", err) < 0)
            return -1;
    }
    return 0;
}

int rtb_journal_upsert(rtb_journal *j, const char *source, const rtb_journal_unit_in *units,
                       size_t n, size_t *added, rtb_journal_error *err)
{
    size_t count = 0;
    if (check_source(j, source, err) != 0 || check_units(j, units, n, err) != 0)
        return -1;
    sqlite3_stmt *insert = NULL, *update = NULL;
    int rc = -1;
    if (rtb_journal_prepare(j, upsert_insert_sql, &insert, err) == 0 &&
        rtb_journal_prepare(j, upsert_update_sql, &update, err) == 0 &&
        rtb_journal_begin(j, err) == 0) {
        rc = upsert_rows(j, insert, update, source, units, n, &count, err);
        if (rc == 0)
            rc = rtb_journal_commit(j, err);
        else
            rtb_journal_rollback(j);
    }
    sqlite3_finalize(insert);
    sqlite3_finalize(update);
    if (added)
        *added = rc == 0 ? count : 0;
    return rc;
}

/* ---- mark -------------------------------------------------------------------------- */

/* ?1 source ?2 key ?3 state ?4 error ?5 moved ?6 expected ?7 data ?8 data_is_json
 * ?9 attempts increment ?10 now ?11 run */
static const char mark_sql[] =
    "UPDATE units SET state = coalesce(?3, state),"
    " last_error = CASE WHEN ?4 IS NOT NULL THEN ?4 WHEN ?3 = 'verified' THEN NULL"
    "   ELSE last_error END,"
    " moved = coalesce(?5, moved), expected = coalesce(?6, expected),"
    " data = coalesce(?7, data),"
    " data_is_json = CASE WHEN ?7 IS NULL THEN data_is_json ELSE ?8 END,"
    " attempts = attempts + ?9,"
    " verified_at = CASE WHEN ?3 = 'verified' AND state <> 'verified' THEN ?10"
    "   ELSE verified_at END,"
    " updated_at = ?10, run_id = coalesce(?11, run_id)"
    " WHERE source = ?1 AND key = ?2 AND (state <> 'verified' OR ?3 = 'verified')";

static void bind_mark(sqlite3_stmt *stmt, const char *source, const rtb_journal_mark_fields *f,
                      const char *now, long long run_id)
{
    rtb_journal_bind_text(stmt, 1, source);
    rtb_journal_bind_text(stmt, 3, rtb_unit_state_name(f->state));
    rtb_journal_bind_text(stmt, 4, f->error);
    rtb_journal_bind_int(stmt, 5, f->moved, f->has_moved);
    rtb_journal_bind_int(stmt, 6, f->expected, f->has_expected);
    rtb_journal_bind_text(stmt, 7, f->data);
    rtb_journal_bind_int(stmt, 8, f->data_is_json != 0, f->data != NULL);
    sqlite3_bind_int(stmt, 9, f->attempts_increment ? 1 : 0);
    rtb_journal_bind_text(stmt, 10, now);
    rtb_journal_bind_int(stmt, 11, run_id, run_id != 0);
}

/* A mark that changed nothing hit either a verified unit (fine: the rule kept it) or a
 * key that does not exist (a caller bug worth stopping for). */
static int mark_rows(rtb_journal *j, sqlite3_stmt *stmt, const char *source,
                     const char *const *keys, size_t n, long long *changed,
                     rtb_journal_error *err)
{
    for (size_t i = 0; i < n; i++) {
        rtb_journal_bind_text(stmt, 2, keys[i]);
        int rows = step_write(j, stmt, "cannot mark a unit", err);
        if (rows < 0)
            return -1;
        *changed += rows;
        if (rows > 0)
            continue;
        int exists = unit_exists(j, source, keys[i], err);
        if (exists < 0)
            return -1;
        if (!exists)
            return rtb_journal_fail(err, RTB_JOURNAL_E_NOT_FOUND,
                                    "journal %s: no unit %s of source %s", j->path, keys[i],
                                    source);
    }
    return 0;
}

long long rtb_journal_mark(rtb_journal *j, const char *source, const char *const *keys, size_t n,
                           const rtb_journal_mark_fields *fields, rtb_journal_error *err)
{
    if (check_source(j, source, err) != 0 || check_keys(j, keys, n, err) != 0)
        return -1;
    if ((unsigned)fields->state >= RTB_UNIT_STATE_COUNT)
        return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID, "journal %s: unknown state",
                                j->path);
    char now[RTB_JOURNAL_TIME_MAX];
    rtb_journal_now(now);
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, mark_sql, &stmt, err) != 0)
        return -1;
    bind_mark(stmt, source, fields, now, j->run_id);
    long long changed = 0;
    int rc = rtb_journal_begin(j, err);
    if (rc == 0) {
        rc = mark_rows(j, stmt, source, keys, n, &changed, err);
        if (rc == 0)
            rc = rtb_journal_commit(j, err);
        else
            rtb_journal_rollback(j);
    }
    sqlite3_finalize(stmt);
    return rc == 0 ? changed : -1;
}

/* ---- requeue ----------------------------------------------------------------------- */

static const char requeue_sql[] =
    "UPDATE units SET state = 'queued', attempts = 0, moved = 0, last_error = NULL,"
    " verified_at = NULL, updated_at = ?3, run_id = coalesce(?4, run_id)"
    " WHERE source = ?1 AND key = ?2";

static int requeue_rows(rtb_journal *j, sqlite3_stmt *stmt, const char *const *keys, size_t n,
                        long long *changed, rtb_journal_error *err)
{
    for (size_t i = 0; i < n; i++) {
        rtb_journal_bind_text(stmt, 2, keys[i]);
        int rows = step_write(j, stmt, "cannot requeue a unit", err);
        if (rows < 0)
            return -1;
        *changed += rows;
    }
    return 0;
}

long long rtb_journal_requeue(rtb_journal *j, const char *source, const char *const *keys,
                              size_t n, rtb_journal_error *err)
{
    if (check_source(j, source, err) != 0 || check_keys(j, keys, n, err) != 0)
        return -1;
    char now[RTB_JOURNAL_TIME_MAX];
    rtb_journal_now(now);
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, requeue_sql, &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, source);
    rtb_journal_bind_text(stmt, 3, now);
    rtb_journal_bind_int(stmt, 4, j->run_id, j->run_id != 0);
    long long changed = 0;
    int rc = rtb_journal_begin(j, err);
    if (rc == 0) {
        rc = requeue_rows(j, stmt, keys, n, &changed, err);
        if (rc == 0)
            rc = rtb_journal_commit(j, err);
        else
            rtb_journal_rollback(j);
    }
    sqlite3_finalize(stmt);
    return rc == 0 ? changed : -1;
}
