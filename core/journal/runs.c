/* Runs: one row per execution of a workflow, so the history shows what each run did
 * and whether it ended or was killed. */
#define _POSIX_C_SOURCE 200809L /* gethostname, kill */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static void host_name(char *buf, size_t size)
{
    if (gethostname(buf, size) != 0)
        snprintf(buf, size, "unknown");
    buf[size - 1] = '\0';
}

/* A zombie has exited and released everything; it only waits for its parent to reap
 * it, which some container inits never do. Linux: state is the field after "(comm)". */
static int is_zombie(long long pid)
{
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/%lld/stat", pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    const char *end_of_name = strrchr(text, ')'); /* the name itself may contain ')' */
    return end_of_name && end_of_name[1] == ' ' && end_of_name[2] == 'Z';
}

/* Only "gone" when the kernel says so: EPERM means the PID belongs to a live process
 * of another user, which is not ours to declare dead. */
static int process_gone(long long pid)
{
    if (pid <= 0)
        return 0;
    if (kill((pid_t)pid, 0) != 0)
        return errno == ESRCH;
    return is_zombie(pid);
}

/* A run still "running" whose process no longer exists on this host was killed (or
 * crashed) before finish_run: record that, so last_run() does not report a ghost as
 * live. Runs of other hosts are left alone: their PIDs mean nothing here. */
static int mark_interrupted(rtb_journal *j, const char *host, rtb_journal_error *err)
{
    sqlite3_stmt *select, *update;
    if (rtb_journal_prepare(j, "SELECT id, pid FROM runs WHERE status = 'running' AND host = ?1",
                            &select, err) != 0)
        return -1;
    if (rtb_journal_prepare(j, "UPDATE runs SET status = 'interrupted' WHERE id = ?1", &update,
                            err) != 0) {
        sqlite3_finalize(select);
        return -1;
    }
    rtb_journal_bind_text(select, 1, host);
    int rc;
    while ((rc = sqlite3_step(select)) == SQLITE_ROW) {
        if (!process_gone(sqlite3_column_int64(select, 1)))
            continue;
        sqlite3_bind_int64(update, 1, sqlite3_column_int64(select, 0));
        rc = sqlite3_step(update);
        sqlite3_reset(update);
        if (rc != SQLITE_DONE)
            break;
    }
    sqlite3_finalize(select);
    sqlite3_finalize(update);
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot mark interrupted runs", err);
    return 0;
}

static int insert_run(rtb_journal *j, const char *env, const char *source, const char *host,
                      long long *id, rtb_journal_error *err)
{
    char now[RTB_JOURNAL_TIME_MAX];
    rtb_journal_now(now);
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j,
                            "INSERT INTO runs (env, source, started_at, status, pid, host)"
                            " VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
                            &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, env);
    rtb_journal_bind_text(stmt, 2, source);
    rtb_journal_bind_text(stmt, 3, now);
    sqlite3_bind_int64(stmt, 4, (long long)getpid());
    rtb_journal_bind_text(stmt, 5, host);
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot record the run", err);
    *id = sqlite3_last_insert_rowid(j->db);
    return 0;
}

int rtb_journal_run_begin(rtb_journal *j, const char *env, const char *source, long long *id,
                          rtb_journal_error *err)
{
    if (!env || !source)
        return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID,
                                "journal %s: a run needs an environment and a source", j->path);
    char host[256];
    host_name(host, sizeof host);
    if (rtb_journal_begin(j, err) != 0)
        return -1;
    if (mark_interrupted(j, host, err) != 0 || insert_run(j, env, source, host, id, err) != 0) {
        rtb_journal_rollback(j);
        return -1;
    }
    if (rtb_journal_commit(j, err) != 0)
        return -1;
    j->run_id = *id;
    return 0;
}

int rtb_journal_run_finish(rtb_journal *j, long long id, const char *status, const char *summary,
                           rtb_journal_error *err)
{
    if (!status || !*status)
        return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID,
                                "journal %s: finishing run %lld needs a status", j->path, id);
    char now[RTB_JOURNAL_TIME_MAX];
    rtb_journal_now(now);
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j,
                            "UPDATE runs SET finished_at = ?2, status = ?3, summary = ?4"
                            " WHERE id = ?1",
                            &stmt, err) != 0)
        return -1;
    sqlite3_bind_int64(stmt, 1, id);
    rtb_journal_bind_text(stmt, 2, now);
    rtb_journal_bind_text(stmt, 3, status);
    rtb_journal_bind_text(stmt, 4, summary);
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot finish the run", err);
    if (sqlite3_changes(j->db) == 0)
        return rtb_journal_fail(err, RTB_JOURNAL_E_NOT_FOUND, "journal %s: no run %lld", j->path,
                                id);
    if (j->run_id == id)
        j->run_id = 0;
    return 0;
}

static void column_run(sqlite3_stmt *stmt, rtb_journal_run *run)
{
    run->id = sqlite3_column_int64(stmt, 0);
    run->env = rtb_journal_column_text(stmt, 1);
    run->source = rtb_journal_column_text(stmt, 2);
    run->started_at = rtb_journal_column_text(stmt, 3);
    run->finished_at = rtb_journal_column_text(stmt, 4);
    run->status = rtb_journal_column_text(stmt, 5);
    run->pid = sqlite3_column_int64(stmt, 6);
    run->host = rtb_journal_column_text(stmt, 7);
    run->summary = rtb_journal_column_text(stmt, 8);
}

long long rtb_journal_runs(rtb_journal *j, const char *source, long long limit,
                           rtb_journal_run_fn fn, void *ud, rtb_journal_error *err)
{
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j,
                            "SELECT id, env, source, started_at, finished_at, status, pid, host,"
                            " summary FROM runs WHERE (?1 IS NULL OR source = ?1)"
                            " ORDER BY id DESC LIMIT ?2",
                            &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, source);
    sqlite3_bind_int64(stmt, 2, limit > 0 ? limit : -1);
    long long n = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        rtb_journal_run run;
        column_run(stmt, &run);
        fn(ud, &run);
        n++;
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot list the runs", err);
    return n;
}

long long rtb_journal_runs_prune(rtb_journal *j, const char *before, rtb_journal_error *err)
{
    sqlite3_stmt *stmt;
    /* Units keep their run_id as history; a pruned run only loses its row. */
    if (rtb_journal_prepare(j,
                            "DELETE FROM runs WHERE started_at < ?1 AND status <> 'running'"
                            " AND id NOT IN (SELECT DISTINCT run_id FROM units WHERE run_id IS NOT NULL)",
                            &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, before);
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot prune the run history", err);
    return sqlite3_changes(j->db);
}

int rtb_journal_run_last(rtb_journal *j, const char *source, rtb_journal_run_fn fn, void *ud,
                         rtb_journal_error *err)
{
    sqlite3_stmt *stmt;
    if (rtb_journal_prepare(j,
                            "SELECT id, env, source, started_at, finished_at, status, pid, host,"
                            " summary FROM runs WHERE source = ?1 ORDER BY id DESC LIMIT 1",
                            &stmt, err) != 0)
        return -1;
    rtb_journal_bind_text(stmt, 1, source);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        rtb_journal_run run;
        column_run(stmt, &run);
        fn(ud, &run);
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return rtb_journal_fail_sqlite(j, rc, "cannot read the last run", err);
    return rc == SQLITE_ROW;
}
