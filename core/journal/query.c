/* Reading units: listings for the resume query, single lookups, counts per state.
 * Reads need no explicit transaction: each statement sees one committed snapshot
 * (WAL), which is all a listing needs. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define UNIT_COLUMNS                                                                               \
    "source, key, kind, state, attempts, last_error, expected, moved, created_at, updated_at,"     \
    " verified_at, run_id, data, data_is_json"

static void read_unit(sqlite3_stmt *stmt, rtb_journal_unit *u)
{
    u->source = rtb_journal_column_text(stmt, 0);
    u->key = rtb_journal_column_text(stmt, 1);
    u->kind = rtb_journal_column_text(stmt, 2);
    u->state = rtb_unit_state_parse(rtb_journal_column_text(stmt, 3));
    u->attempts = sqlite3_column_int64(stmt, 4);
    u->last_error = rtb_journal_column_text(stmt, 5);
    u->has_expected = sqlite3_column_type(stmt, 6) != SQLITE_NULL;
    u->expected = sqlite3_column_int64(stmt, 6);
    u->moved = sqlite3_column_int64(stmt, 7);
    u->created_at = rtb_journal_column_text(stmt, 8);
    u->updated_at = rtb_journal_column_text(stmt, 9);
    u->verified_at = rtb_journal_column_text(stmt, 10);
    u->run_id = sqlite3_column_int64(stmt, 11);
    u->data = rtb_journal_column_text(stmt, 12);
    u->data_is_json = sqlite3_column_int(stmt, 13);
}

/* Steps through the rows, handing each to fn until it asks to stop. Returns how many
 * rows fn saw, or -1. */
static long long deliver(rtb_journal *j, sqlite3_stmt *stmt, rtb_journal_unit_fn fn, void *ud,
                         rtb_journal_error *err)
{
    long long n = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        rtb_journal_unit u;
        read_unit(stmt, &u);
        n++;
        if (fn(ud, &u) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot read units", err);
    return n;
}

/* The state names come from our own table, never from the caller, so building the
 * IN list as text is safe; everything the caller gives is bound. */
static void build_listing_sql(const rtb_journal_filter *f, char *sql, size_t size)
{
    int used = snprintf(sql, size, "SELECT " UNIT_COLUMNS " FROM units WHERE source = ?1");
    if (f->states) {
        used += snprintf(sql + used, size - (size_t)used, " AND state IN (");
        const char *sep = "";
        for (int s = RTB_UNIT_QUEUED; s < RTB_UNIT_STATE_COUNT; s++) {
            if (!(f->states & (1u << s)))
                continue;
            used += snprintf(sql + used, size - (size_t)used, "%s'%s'", sep,
                             rtb_unit_state_name((rtb_unit_state)s));
            sep = ", ";
        }
        used += snprintf(sql + used, size - (size_t)used, ")");
    }
    if (f->kind)
        used += snprintf(sql + used, size - (size_t)used, " AND kind = ?2");
    const char *dir = f->order == RTB_JOURNAL_NEWEST_FIRST ? "DESC" : "ASC";
    snprintf(sql + used, size - (size_t)used, " ORDER BY created_at %s, rowid %s LIMIT ?3", dir,
             dir);
}

long long rtb_journal_units(rtb_journal *j, const char *source, const rtb_journal_filter *filter,
                            rtb_journal_unit_fn fn, void *ud, rtb_journal_error *err)
{
    static const rtb_journal_filter all = {0};
    const rtb_journal_filter *f = filter ? filter : &all;
    unsigned known = ((1u << RTB_UNIT_STATE_COUNT) - 1) & ~1u;
    if (f->states & ~known)
        return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID, "journal %s: unknown state in filter",
                                j->path);
    char sql[512];
    build_listing_sql(f, sql, sizeof sql);
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, sql, &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, source);
    if (f->kind)
        rtb_journal_bind_text(stmt, 2, f->kind);
    sqlite3_bind_int64(stmt, 3, f->limit > 0 ? f->limit : -1); /* -1: SQLite's "no limit" */
    long long n = deliver(j, stmt, fn, ud, err);
    sqlite3_finalize(stmt);
    return n;
}

typedef struct {
    rtb_journal_unit_fn fn;
    void *ud;
} get_ctx;

/* (source, key) is the primary key: one row at most, so stop after it. */
static int get_one(void *ud, const rtb_journal_unit *unit)
{
    get_ctx *c = ud;
    if (c->fn)
        c->fn(c->ud, unit);
    return 1;
}

int rtb_journal_get(rtb_journal *j, const char *source, const char *key, rtb_journal_unit_fn fn,
                    void *ud, rtb_journal_error *err)
{
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, "SELECT " UNIT_COLUMNS " FROM units WHERE source = ?1 AND key = ?2",
                            &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, source);
    rtb_journal_bind_text(stmt, 2, key);
    get_ctx ctx = {fn, ud};
    long long n = deliver(j, stmt, get_one, &ctx, err);
    sqlite3_finalize(stmt);
    return n < 0 ? -1 : n > 0;
}

int rtb_journal_counts(rtb_journal *j, const char *source,
                       long long counts[RTB_UNIT_STATE_COUNT], rtb_journal_error *err)
{
    memset(counts, 0, sizeof(long long) * RTB_UNIT_STATE_COUNT);
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, "SELECT state, count(*) FROM units WHERE source = ?1 GROUP BY state",
                            &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, source);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        rtb_unit_state s = rtb_unit_state_parse(rtb_journal_column_text(stmt, 0));
        long long n = sqlite3_column_int64(stmt, 1);
        counts[s] += n; /* an unknown state (impossible: CHECK) would land in the total */
        if (s != RTB_UNIT_KEEP)
            counts[RTB_UNIT_KEEP] += n;
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot count units", err);
    return 0;
}
