/* The journal's schema and its versions.
 *
 * PRAGMA user_version holds the schema version. A new file is version 0 and gets
 * every step; a file from an older rtbackup gets the steps it lacks; a file from a
 * newer one is refused, because this code would not know what its columns mean.
 * Steps run in one transaction with the version bump, so a crash during an upgrade
 * leaves the old version intact. */
#include <stddef.h>
#include <stdio.h>

#include "internal.h"

/* steps[v] upgrades version v to v + 1. Append; never edit a released step. */
static const char *const steps[RTB_JOURNAL_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE runs ("
    "  id INTEGER PRIMARY KEY,"
    "  env TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  started_at TEXT NOT NULL,"
    "  finished_at TEXT,"
    "  status TEXT NOT NULL,"
    "  pid INTEGER NOT NULL,"
    "  host TEXT NOT NULL,"
    "  summary TEXT"
    ");"
    "CREATE INDEX runs_by_source ON runs (source, id);"
    "CREATE TABLE units ("
    "  source TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'moved', 'verified', 'failed')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  expected INTEGER,"
    "  moved INTEGER NOT NULL DEFAULT 0,"
    "  created_at TEXT NOT NULL,"
    "  updated_at TEXT NOT NULL,"
    "  verified_at TEXT,"
    "  run_id INTEGER REFERENCES runs (id),"
    "  data TEXT,"
    "  data_is_json INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (source, key)"
    ");"
    /* The resume query: "units of SOURCE in these states, oldest first". */
    "CREATE INDEX units_by_state ON units (source, state, created_at);",
    /* 1 -> 2: what a run learns and the next must remember (a peer's retry rung, the
     * UID namespace of a Mosaiq database), and references between instances that the
     * archive must hold together (a plan and its structure set), open until resolved. */
    "CREATE TABLE facts ("
    "  scope TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value TEXT,"
    "  updated_at TEXT NOT NULL,"
    "  PRIMARY KEY (scope, key)"
    ");"
    "CREATE TABLE refs ("
    "  source TEXT NOT NULL,"
    "  from_uid TEXT NOT NULL,"
    "  to_uid TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('open', 'resolved', 'acknowledged')),"
    "  detail TEXT,"
    "  first_seen TEXT NOT NULL,"
    "  last_checked TEXT NOT NULL,"
    "  PRIMARY KEY (source, from_uid, to_uid)"
    ");"
    "CREATE INDEX refs_by_state ON refs (source, state);"
    "CREATE INDEX runs_by_start ON runs (started_at);",
};

static int read_version(rtb_journal *j, int *version, rtb_journal_error *err)
{
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j, "PRAGMA user_version", &stmt, err) != 0)
        return -1;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        *version = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW)
        return rtb_journal_fail_sqlite(j, rc, "cannot read the schema version", err);
    return 0;
}

static int check_not_newer(rtb_journal *j, int version, rtb_journal_error *err)
{
    if (version <= RTB_JOURNAL_SCHEMA_VERSION)
        return 0;
    return rtb_journal_fail(err, RTB_JOURNAL_E_VERSION,
                            "journal %s: written by a newer rtbackup (schema version %d; this one "
                            "knows up to %d)",
                            j->path, version, RTB_JOURNAL_SCHEMA_VERSION);
}

static int upgrade(rtb_journal *j, int from, rtb_journal_error *err)
{
    for (int v = from; v < RTB_JOURNAL_SCHEMA_VERSION; v++)
        if (rtb_journal_exec(j, steps[v], err) != 0)
            return -1;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", RTB_JOURNAL_SCHEMA_VERSION);
    return rtb_journal_exec(j, sql, err);
}

int rtb_journal_schema_ensure(rtb_journal *j, rtb_journal_error *err)
{
    int version;
    if (read_version(j, &version, err) != 0 || check_not_newer(j, version, err) != 0)
        return -1;
    if (version == RTB_JOURNAL_SCHEMA_VERSION)
        return 0;
    if (rtb_journal_begin(j, err) != 0)
        return -1;
    /* Read again under the write lock: another process may have created the schema
     * between our first look and BEGIN IMMEDIATE. */
    if (read_version(j, &version, err) != 0 || check_not_newer(j, version, err) != 0 ||
        upgrade(j, version, err) != 0) {
        rtb_journal_rollback(j);
        return -1;
    }
    return rtb_journal_commit(j, err);
}
