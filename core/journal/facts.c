/* Facts (what a run learned for the next ones) and references (instances the archive
 * must hold together). Small key-value tables beside the units, in the same file and
 * the same transactions discipline. */
#define _POSIX_C_SOURCE 200809L /* strdup */

#include <stdlib.h>
#include <string.h>

#include "internal.h"

int rtb_journal_fact_get(rtb_journal *j, const char *scope, const char *key, char **value,
                         rtb_journal_error *err)
{
    *value = NULL;
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, "SELECT value FROM facts WHERE scope = ?1 AND key = ?2", &stmt,
                            err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, scope);
    rtb_journal_bind_text(stmt, 2, key);
    int rc = sqlite3_step(stmt);
    int found = 0;
    if (rc == SQLITE_ROW) {
        const char *v = rtb_journal_column_text(stmt, 0);
        *value = strdup(v ? v : "");
        found = 1;
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot read a fact", err);
    if (found && !*value)
        return rtb_journal_fail(err, RTB_JOURNAL_E_INTERNAL, "journal %s: out of memory", j->path);
    return found;
}

int rtb_journal_fact_set(rtb_journal *j, const char *scope, const char *key, const char *value,
                         rtb_journal_error *err)
{
    if (!scope || !key)
        return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID, "journal %s: a fact needs a scope and a key",
                                j->path);
    char now[RTB_JOURNAL_TIME_MAX];
    rtb_journal_now(now);
    sqlite3_stmt *stmt;
    const char *sql = value ? "INSERT INTO facts (scope, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)"
                              " ON CONFLICT (scope, key) DO UPDATE SET value = ?3, updated_at = ?4"
                            : "DELETE FROM facts WHERE scope = ?1 AND key = ?2";
    if (rtb_journal_prepare(j, sql, &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, scope);
    rtb_journal_bind_text(stmt, 2, key);
    if (value) {
        rtb_journal_bind_text(stmt, 3, value);
        rtb_journal_bind_text(stmt, 4, now);
    }
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot record a fact", err);
    return 0;
}

static int valid_ref_state(const char *state)
{
    return state && (strcmp(state, "open") == 0 || strcmp(state, "resolved") == 0 ||
                     strcmp(state, "acknowledged") == 0);
}

int rtb_journal_ref_put(rtb_journal *j, const rtb_journal_ref *ref, rtb_journal_error *err)
{
    if (!ref->source || !ref->from_uid || !ref->to_uid || !ref->kind || !valid_ref_state(ref->state))
        return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID,
                                "journal %s: a reference needs source, from, to, kind and a state "
                                "(open, resolved, acknowledged)",
                                j->path);
    char now[RTB_JOURNAL_TIME_MAX];
    rtb_journal_now(now);
    sqlite3_stmt *stmt;
    /* An acknowledged reference stays so until it resolves: the operator said it may
     * stay open, and a run that finds it open again must not undo that. */
    if (rtb_journal_prepare(j,
                            "INSERT INTO refs (source, from_uid, to_uid, kind, state, detail,"
                            " first_seen, last_checked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)"
                            " ON CONFLICT (source, from_uid, to_uid) DO UPDATE SET kind = ?4,"
                            " state = CASE WHEN state = 'acknowledged' AND ?5 = 'open'"
                            " THEN 'acknowledged' ELSE ?5 END,"
                            " detail = COALESCE(?6, detail), last_checked = ?7",
                            &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, ref->source);
    rtb_journal_bind_text(stmt, 2, ref->from_uid);
    rtb_journal_bind_text(stmt, 3, ref->to_uid);
    rtb_journal_bind_text(stmt, 4, ref->kind);
    rtb_journal_bind_text(stmt, 5, ref->state);
    rtb_journal_bind_text(stmt, 6, ref->detail);
    rtb_journal_bind_text(stmt, 7, now);
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot record a reference", err);
    return 0;
}

long long rtb_journal_refs(rtb_journal *j, const char *source, const char *state,
                           rtb_journal_ref_fn fn, void *ud, rtb_journal_error *err)
{
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j,
                            "SELECT source, from_uid, to_uid, kind, state, detail, first_seen,"
                            " last_checked FROM refs WHERE source = ?1 AND (?2 IS NULL OR state = ?2)"
                            " ORDER BY first_seen, rowid",
                            &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, source);
    rtb_journal_bind_text(stmt, 2, state);
    long long n = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        rtb_journal_ref ref = {
            .source = rtb_journal_column_text(stmt, 0), .from_uid = rtb_journal_column_text(stmt, 1),
            .to_uid = rtb_journal_column_text(stmt, 2), .kind = rtb_journal_column_text(stmt, 3),
            .state = rtb_journal_column_text(stmt, 4), .detail = rtb_journal_column_text(stmt, 5),
            .first_seen = rtb_journal_column_text(stmt, 6), .last_checked = rtb_journal_column_text(stmt, 7),
        };
        n++;
        if (fn(ud, &ref))
            break;
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return rtb_journal_fail_sqlite(j, rc, "cannot list the references", err);
    return n;
}
