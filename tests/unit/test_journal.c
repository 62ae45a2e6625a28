/* core/journal: schema, the verified rule, transactional batches that survive kill -9,
 * runs, and flock locks between processes.
 *
 * Each test gets a fresh temporary directory holding journal.db and run.lock. Tests
 * that need a second process fork one; children report with their exit status and
 * never call cmocka (its longjmp belongs to the parent). The parent closes its journal
 * before forking a child that opens one: SQLite connections must not cross fork(). */
#define _GNU_SOURCE /* mkdtemp, usleep */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal/journal.h"

extern char **environ;

/* ---- fixture ----------------------------------------------------------------------- */

typedef struct {
    char dir[64];
    char db[128];
    char lock[128];
    rtb_journal *j;
    rtb_journal_error err;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->dir, "/tmp/rtb_journal_test.XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->db, sizeof f->db, "%s/journal.db", f->dir);
    snprintf(f->lock, sizeof f->lock, "%s/run.lock", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rtb_journal_close(f->j);
    DIR *d = opendir(f->dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        char path[sizeof f->dir + sizeof e->d_name + 1];
        snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
        if (e->d_name[0] != '.')
            unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void close_journal(fixture *f)
{
    rtb_journal_close(f->j);
    f->j = NULL;
}

static void open_journal(fixture *f)
{
    int rc = rtb_journal_open(f->db, NULL, &f->j, &f->err);
    if (rc != 0)
        fail_msg("open: %s", f->err.message);
}

/* One integer from SQL run on the file directly (a second connection). */
static long long sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *stmt;
    long long v = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return v;
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* A copy of one unit, taken in the rtb_journal_get callback. */
typedef struct {
    char key[64], kind[32], data[128], last_error[128];
    rtb_unit_state state;
    long long attempts, moved, expected;
    int has_expected, has_verified_at;
} unit_copy;

static int copy_unit(void *ud, const rtb_journal_unit *u)
{
    unit_copy *c = ud;
    snprintf(c->key, sizeof c->key, "%s", u->key);
    snprintf(c->kind, sizeof c->kind, "%s", u->kind);
    snprintf(c->data, sizeof c->data, "%s", u->data ? u->data : "");
    snprintf(c->last_error, sizeof c->last_error, "%s", u->last_error ? u->last_error : "");
    c->state = u->state;
    c->attempts = u->attempts;
    c->moved = u->moved;
    c->expected = u->expected;
    c->has_expected = u->has_expected;
    c->has_verified_at = u->verified_at != NULL;
    return 0;
}

static unit_copy get_unit(fixture *f, const char *source, const char *key)
{
    unit_copy c = {0};
    assert_int_equal(rtb_journal_get(f->j, source, key, copy_unit, &c, &f->err), 1);
    return c;
}

static void upsert_one(fixture *f, rtb_journal_unit_in u)
{
    assert_int_equal(rtb_journal_upsert(f->j, "ARIA", &u, 1, NULL, &f->err), 0);
}

static long long mark_one(fixture *f, const char *key, rtb_journal_mark_fields fields)
{
    const char *keys[] = {key};
    return rtb_journal_mark(f->j, "ARIA", keys, 1, &fields, &f->err);
}

/* ---- schema ----------------------------------------------------------------------- */

static void a_new_file_gets_the_schema_in_wal_mode(void **state)
{
    fixture *f = *state;
    open_journal(f);
    assert_int_equal(sql_int(f->db, "PRAGMA user_version"), RTB_JOURNAL_SCHEMA_VERSION);
    assert_int_equal(sql_int(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                                    " AND name IN ('runs', 'units')"),
                     2);
    /* journal_mode is persistent for WAL: a second connection sees it. */
    assert_int_equal(sql_int(f->db, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
}

static void reopening_keeps_the_units(void **state)
{
    fixture *f = *state;
    open_journal(f);
    upsert_one(f, (rtb_journal_unit_in){.key = "1.2.3", .kind = "series"});
    close_journal(f);
    open_journal(f);
    assert_string_equal(get_unit(f, "ARIA", "1.2.3").kind, "series");
}

static void a_journal_from_a_newer_rtbackup_is_refused(void **state)
{
    fixture *f = *state;
    sql_exec(f->db, "PRAGMA user_version = 99");
    assert_int_equal(rtb_journal_open(f->db, NULL, &f->j, &f->err), -1);
    assert_null(f->j);
    assert_int_equal(f->err.kind, RTB_JOURNAL_E_VERSION);
    assert_non_null(strstr(f->err.message, "schema version 99"));
}

static void a_file_that_is_not_a_database_is_reported_corrupt(void **state)
{
    fixture *f = *state;
    FILE *fp = fopen(f->db, "w");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite file. ", fp);
    fclose(fp);
    assert_int_equal(rtb_journal_open(f->db, NULL, &f->j, &f->err), -1);
    assert_int_equal(f->err.kind, RTB_JOURNAL_E_CORRUPT);
    assert_non_null(strstr(f->err.message, f->db));
}

static void a_missing_directory_is_an_io_error_naming_the_file(void **state)
{
    fixture *f = *state;
    char path[256];
    snprintf(path, sizeof path, "%s/missing/journal.db", f->dir);
    assert_int_equal(rtb_journal_open(path, NULL, &f->j, &f->err), -1);
    assert_int_equal(f->err.kind, RTB_JOURNAL_E_IO);
    assert_non_null(strstr(f->err.message, path));
}

/* ---- upsert and the verified rule --------------------------------------------------- */

static void upsert_counts_new_units_and_keeps_fields_not_given(void **state)
{
    fixture *f = *state;
    open_journal(f);
    rtb_journal_unit_in first[] = {
        {.key = "s1", .kind = "series", .expected = 120, .has_expected = 1, .data = "{\"p\":1}",
         .data_is_json = 1},
        {.key = "s2"}};
    size_t added;
    assert_int_equal(rtb_journal_upsert(f->j, "ARIA", first, 2, &added, &f->err), 0);
    assert_int_equal(added, 2);
    rtb_journal_unit_in second[] = {{.key = "s1", .state = RTB_UNIT_MOVED}, {.key = "s3"}};
    assert_int_equal(rtb_journal_upsert(f->j, "ARIA", second, 2, &added, &f->err), 0);
    assert_int_equal(added, 1);
    unit_copy s1 = get_unit(f, "ARIA", "s1");
    assert_int_equal(s1.state, RTB_UNIT_MOVED);
    assert_string_equal(s1.kind, "series");
    assert_int_equal(s1.expected, 120);
    assert_string_equal(s1.data, "{\"p\":1}");
    unit_copy s2 = get_unit(f, "ARIA", "s2");
    assert_int_equal(s2.state, RTB_UNIT_QUEUED);
    assert_string_equal(s2.kind, "unit");
    assert_false(s2.has_expected);
}

static void upsert_never_demotes_a_verified_unit(void **state)
{
    fixture *f = *state;
    open_journal(f);
    upsert_one(f, (rtb_journal_unit_in){.key = "s1", .data = "old", .state = RTB_UNIT_VERIFIED});
    upsert_one(f, (rtb_journal_unit_in){.key = "s1", .data = "new", .state = RTB_UNIT_QUEUED});
    upsert_one(f, (rtb_journal_unit_in){.key = "s1", .state = RTB_UNIT_FAILED});
    unit_copy s1 = get_unit(f, "ARIA", "s1");
    assert_int_equal(s1.state, RTB_UNIT_VERIFIED);
    assert_string_equal(s1.data, "old");
    assert_true(s1.has_verified_at);
}

static void mark_changes_a_verified_unit_only_to_verified(void **state)
{
    fixture *f = *state;
    open_journal(f);
    upsert_one(f, (rtb_journal_unit_in){.key = "s1"});
    assert_int_equal(mark_one(f, "s1", (rtb_journal_mark_fields){.state = RTB_UNIT_VERIFIED,
                                                                  .moved = 10, .has_moved = 1}),
                     1);
    assert_int_equal(mark_one(f, "s1", (rtb_journal_mark_fields){.state = RTB_UNIT_QUEUED}), 0);
    assert_int_equal(mark_one(f, "s1", (rtb_journal_mark_fields){.attempts_increment = 1}), 0);
    unit_copy s1 = get_unit(f, "ARIA", "s1");
    assert_int_equal(s1.state, RTB_UNIT_VERIFIED);
    assert_int_equal(s1.attempts, 0);
    assert_int_equal(mark_one(f, "s1", (rtb_journal_mark_fields){.state = RTB_UNIT_VERIFIED,
                                                                  .moved = 12, .has_moved = 1}),
                     1);
    assert_int_equal(get_unit(f, "ARIA", "s1").moved, 12);
}

static void mark_records_errors_attempts_and_clears_the_error_once_verified(void **state)
{
    fixture *f = *state;
    open_journal(f);
    upsert_one(f, (rtb_journal_unit_in){.key = "s1"});
    rtb_journal_mark_fields failed = {.state = RTB_UNIT_FAILED, .error = "C-MOVE refused",
                                      .attempts_increment = 1};
    assert_int_equal(mark_one(f, "s1", failed), 1);
    assert_int_equal(mark_one(f, "s1", failed), 1);
    unit_copy s1 = get_unit(f, "ARIA", "s1");
    assert_int_equal(s1.attempts, 2);
    assert_string_equal(s1.last_error, "C-MOVE refused");
    assert_int_equal(mark_one(f, "s1", (rtb_journal_mark_fields){.state = RTB_UNIT_VERIFIED}), 1);
    assert_string_equal(get_unit(f, "ARIA", "s1").last_error, "");
}

static void requeue_brings_a_verified_unit_back_with_counters_reset(void **state)
{
    fixture *f = *state;
    open_journal(f);
    upsert_one(f, (rtb_journal_unit_in){.key = "s1"});
    mark_one(f, "s1", (rtb_journal_mark_fields){.state = RTB_UNIT_VERIFIED, .moved = 5,
                                                .has_moved = 1, .attempts_increment = 1});
    const char *keys[] = {"s1", "not-in-journal"};
    assert_int_equal(rtb_journal_requeue(f->j, "ARIA", keys, 2, &f->err), 1);
    unit_copy s1 = get_unit(f, "ARIA", "s1");
    assert_int_equal(s1.state, RTB_UNIT_QUEUED);
    assert_int_equal(s1.attempts, 0);
    assert_int_equal(s1.moved, 0);
    assert_false(s1.has_verified_at);
}

static void mark_of_an_unknown_key_changes_nothing_in_its_batch(void **state)
{
    fixture *f = *state;
    open_journal(f);
    upsert_one(f, (rtb_journal_unit_in){.key = "s1"});
    const char *keys[] = {"s1", "typo"};
    rtb_journal_mark_fields moved = {.state = RTB_UNIT_MOVED};
    assert_int_equal(rtb_journal_mark(f->j, "ARIA", keys, 2, &moved, &f->err), -1);
    assert_int_equal(f->err.kind, RTB_JOURNAL_E_NOT_FOUND);
    assert_non_null(strstr(f->err.message, "typo"));
    assert_int_equal(get_unit(f, "ARIA", "s1").state, RTB_UNIT_QUEUED);
}

static void a_failure_inside_a_batch_rolls_the_whole_batch_back(void **state)
{
    fixture *f = *state;
    open_journal(f);
    /* A trigger makes the third insert fail half-way through the transaction. */
    sql_exec(f->db, "CREATE TRIGGER boom BEFORE INSERT ON units WHEN NEW.key = 'k3'"
                    " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    rtb_journal_unit_in units[] = {{.key = "k1"}, {.key = "k2"}, {.key = "k3"}, {.key = "k4"}};
    size_t added = 99;
    assert_int_equal(rtb_journal_upsert(f->j, "ARIA", units, 4, &added, &f->err), -1);
    assert_int_equal(added, 0);
    assert_non_null(strstr(f->err.message, "refused by the test"));
    long long counts[RTB_UNIT_STATE_COUNT];
    assert_int_equal(rtb_journal_counts(f->j, "ARIA", counts, &f->err), 0);
    assert_int_equal(counts[RTB_UNIT_KEEP], 0);
}

/* ---- kill -9 in the middle of batches ------------------------------------------------ */

#define KILL_BATCH 4000
#define KILL_ROUNDS 6

/* Child: upserts batches of KILL_BATCH units until killed, writing one byte to
 * `notify` just before each batch starts. */
static void upsert_batches_until_killed(const char *path, const char *source, int notify)
{
    rtb_journal *j;
    rtb_journal_error err;
    static rtb_journal_unit_in units[KILL_BATCH];
    static char keys[KILL_BATCH][40];
    if (rtb_journal_open(path, NULL, &j, &err) != 0)
        _exit(2);
    for (int batch = 0;; batch++) {
        for (int i = 0; i < KILL_BATCH; i++) {
            snprintf(keys[i], sizeof keys[i], "1.2.840.%d.%d", batch, i);
            units[i] = (rtb_journal_unit_in){.key = keys[i], .kind = "instance",
                                             .data = "{\"study\":\"1.2.3\"}", .data_is_json = 1};
        }
        if (write(notify, "b", 1) != 1)
            _exit(3);
        if (rtb_journal_upsert(j, source, units, KILL_BATCH, NULL, &err) != 0)
            _exit(4);
    }
}

/* Forks the writer, lets it start its second batch, waits `delay_us`, kills it and
 * returns how many batches it had started. */
static int kill_writer_after(const char *path, const char *source, useconds_t delay_us)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        upsert_batches_until_killed(path, source, fds[1]);
    }
    close(fds[1]);
    char byte;
    int started = 0;
    while (started < 2 && read(fds[0], &byte, 1) == 1)
        started++;
    usleep(delay_us);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status)); /* killed, not exited on an error of its own */
    while (read(fds[0], &byte, 1) == 1)
        started++;
    close(fds[0]);
    return started;
}

static long long units_of(fixture *f, const char *source)
{
    long long counts[RTB_UNIT_STATE_COUNT];
    open_journal(f);
    assert_int_equal(rtb_journal_counts(f->j, source, counts, &f->err), 0);
    close_journal(f);
    return counts[RTB_UNIT_KEEP];
}

static void a_writer_killed_mid_batch_leaves_whole_batches_only(void **state)
{
    fixture *f = *state;
    open_journal(f); /* create the schema before the first child */
    close_journal(f);
    int killed_mid_batch = 0;
    for (int round = 0; round < KILL_ROUNDS; round++) {
        char source[16];
        snprintf(source, sizeof source, "round%d", round);
        int started = kill_writer_after(f->db, source, (useconds_t)(round * 7000));
        long long total = units_of(f, source);
        assert_int_equal(total % KILL_BATCH, 0);
        long long committed = total / KILL_BATCH;
        /* Every batch it started is either all there or (the last one) not at all. */
        assert_true(committed == started || committed == started - 1);
        killed_mid_batch += committed == started - 1;
    }
    /* Otherwise the kills all fell between batches and nothing was proved. */
    assert_true(killed_mid_batch > 0);
    assert_int_equal(sql_int(f->db, "SELECT count(*) FROM pragma_integrity_check"
                                    " WHERE integrity_check <> 'ok'"),
                     0);
}

/* ---- listing and counts ------------------------------------------------------------- */

static int collect_keys(void *ud, const rtb_journal_unit *u)
{
    char *out = ud;
    strcat(out, u->key);
    strcat(out, " ");
    return 0;
}

static void listing_filters_by_state_kind_and_limit_oldest_first(void **state)
{
    fixture *f = *state;
    open_journal(f);
    rtb_journal_unit_in units[] = {{.key = "a", .kind = "series"},
                                   {.key = "b", .kind = "series", .state = RTB_UNIT_FAILED},
                                   {.key = "c", .kind = "instance"},
                                   {.key = "d", .kind = "series", .state = RTB_UNIT_VERIFIED},
                                   {.key = "e", .kind = "series"}};
    assert_int_equal(rtb_journal_upsert(f->j, "ARIA", units, 5, NULL, &f->err), 0);
    char keys[64] = "";
    rtb_journal_filter pending = {.states = (1u << RTB_UNIT_QUEUED) | (1u << RTB_UNIT_FAILED),
                                  .kind = "series"};
    assert_int_equal(rtb_journal_units(f->j, "ARIA", &pending, collect_keys, keys, &f->err), 3);
    assert_string_equal(keys, "a b e ");
    keys[0] = '\0';
    pending.limit = 2;
    pending.order = RTB_JOURNAL_NEWEST_FIRST;
    assert_int_equal(rtb_journal_units(f->j, "ARIA", &pending, collect_keys, keys, &f->err), 2);
    assert_string_equal(keys, "e b ");
    long long counts[RTB_UNIT_STATE_COUNT];
    assert_int_equal(rtb_journal_counts(f->j, "ARIA", counts, &f->err), 0);
    assert_int_equal(counts[RTB_UNIT_QUEUED], 3);
    assert_int_equal(counts[RTB_UNIT_FAILED], 1);
    assert_int_equal(counts[RTB_UNIT_VERIFIED], 1);
    assert_int_equal(counts[RTB_UNIT_MOVED], 0);
    assert_int_equal(counts[RTB_UNIT_KEEP], 5);
    assert_int_equal(rtb_journal_counts(f->j, "MIM", counts, &f->err), 0);
    assert_int_equal(counts[RTB_UNIT_KEEP], 0);
}

/* ---- runs ------------------------------------------------------------------------- */

static void copy_run(void *ud, const rtb_journal_run *r)
{
    snprintf(ud, 256, "%lld %s %s %s", r->id, r->status, r->finished_at ? "finished" : "open",
             r->summary ? r->summary : "-");
}

static void finished_run_keeps_status_and_summary(void **state)
{
    fixture *f = *state;
    open_journal(f);
    long long id;
    assert_int_equal(rtb_journal_run_begin(f->j, "UCLA", "ARIA", &id, &f->err), 0);
    upsert_one(f, (rtb_journal_unit_in){.key = "s1"});
    assert_int_equal(sql_int(f->db, "SELECT run_id FROM units WHERE key = 's1'"), id);
    assert_int_equal(rtb_journal_run_finish(f->j, id, "ok", "{\"moved\":3}", &f->err), 0);
    char text[256] = "";
    assert_int_equal(rtb_journal_run_last(f->j, "ARIA", copy_run, text, &f->err), 1);
    char want[256];
    snprintf(want, sizeof want, "%lld ok finished {\"moved\":3}", id);
    assert_string_equal(text, want);
    assert_int_equal(rtb_journal_run_last(f->j, "MIM", copy_run, text, &f->err), 0);
    assert_int_equal(rtb_journal_run_finish(f->j, id + 100, "ok", NULL, &f->err), -1);
    assert_int_equal(f->err.kind, RTB_JOURNAL_E_NOT_FOUND);
}

static void a_run_whose_process_died_is_marked_interrupted(void **state)
{
    fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        rtb_journal *j;
        rtb_journal_error err;
        long long id;
        if (rtb_journal_open(f->db, NULL, &j, &err) != 0 ||
            rtb_journal_run_begin(j, "UCLA", "ARIA", &id, &err) != 0)
            _exit(2);
        raise(SIGKILL); /* dies without finish_run */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    open_journal(f);
    long long id;
    assert_int_equal(rtb_journal_run_begin(f->j, "UCLA", "MIM", &id, &f->err), 0);
    char text[256] = "";
    assert_int_equal(rtb_journal_run_last(f->j, "ARIA", copy_run, text, &f->err), 1);
    assert_non_null(strstr(text, " interrupted open"));
    assert_int_equal(rtb_journal_run_last(f->j, "MIM", copy_run, text, &f->err), 1);
    assert_non_null(strstr(text, " running open")); /* ours: alive, left alone */
}

/* ---- locks ------------------------------------------------------------------------ */

/* Child: takes the lock, says so on `ready`, then waits to be killed. */
static pid_t fork_lock_holder(const char *path)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        rtb_journal_lock *lock;
        rtb_journal_error err;
        if (rtb_journal_lock_acquire(path, &lock, &err) != 0)
            _exit(2);
        if (write(fds[1], "L", 1) != 1)
            _exit(3);
        for (;;)
            pause();
    }
    close(fds[1]);
    char byte;
    assert_int_equal(read(fds[0], &byte, 1), 1);
    close(fds[0]);
    return pid;
}

static void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
}

static void a_lock_held_by_another_process_fails_naming_its_pid(void **state)
{
    fixture *f = *state;
    pid_t holder = fork_lock_holder(f->lock);
    rtb_journal_lock *lock = NULL;
    int rc = rtb_journal_lock_acquire(f->lock, &lock, &f->err);
    kill_and_reap(holder);
    assert_int_equal(rc, -1);
    assert_null(lock);
    assert_int_equal(f->err.kind, RTB_JOURNAL_E_LOCKED);
    assert_int_equal(f->err.holder_pid, holder);
    assert_int_equal(strlen(f->err.holder_started), 24); /* 2026-11-23T04:51:58.123Z */
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "PID %d", (int)holder);
    assert_non_null(strstr(f->err.message, pid_text));
    assert_non_null(strstr(f->err.message, f->err.holder_started));
}

static void a_lock_left_by_a_killed_holder_can_be_taken(void **state)
{
    fixture *f = *state;
    kill_and_reap(fork_lock_holder(f->lock));
    /* The file still names the dead holder; flock is what counts. */
    FILE *fp = fopen(f->lock, "r");
    assert_non_null(fp);
    char text[128] = "";
    assert_non_null(fgets(text, sizeof text, fp));
    fclose(fp);
    assert_non_null(strstr(text, "pid="));
    rtb_journal_lock *lock;
    assert_int_equal(rtb_journal_lock_acquire(f->lock, &lock, &f->err), 0);
    rtb_journal_lock_release(lock);
}

static void a_released_lock_is_emptied_and_can_be_taken_again(void **state)
{
    fixture *f = *state;
    rtb_journal_lock *lock, *again;
    assert_int_equal(rtb_journal_lock_acquire(f->lock, &lock, &f->err), 0);
    /* flock locks belong to the open file: a second acquire in this process fails. */
    assert_int_equal(rtb_journal_lock_acquire(f->lock, &again, &f->err), -1);
    assert_int_equal(f->err.holder_pid, getpid());
    rtb_journal_lock_release(lock);
    FILE *fp = fopen(f->lock, "r");
    assert_non_null(fp);
    assert_int_equal(fgetc(fp), EOF);
    fclose(fp);
    assert_int_equal(rtb_journal_lock_acquire(f->lock, &again, &f->err), 0);
    rtb_journal_lock_release(again);
}

static void a_child_program_does_not_inherit_the_lock(void **state)
{
    fixture *f = *state;
    rtb_journal_lock *lock;
    assert_int_equal(rtb_journal_lock_acquire(f->lock, &lock, &f->err), 0);
    pid_t sleeper;
    char *argv[] = {"sleep", "30", NULL};
    assert_int_equal(posix_spawnp(&sleeper, "sleep", NULL, NULL, argv, environ), 0);
    rtb_journal_lock_release(lock);
    /* The sleeper still runs; had it inherited the descriptor it would hold the lock. */
    int rc = rtb_journal_lock_acquire(f->lock, &lock, &f->err);
    kill_and_reap(sleeper);
    assert_int_equal(rc, 0);
    rtb_journal_lock_release(lock);
}

int main(int argc, char **argv)
{
    /* ctest runs one test per process: `test_journal <name>` (see CMakeLists.txt). */
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_new_file_gets_the_schema_in_wal_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(reopening_keeps_the_units, setup, teardown),
        cmocka_unit_test_setup_teardown(a_journal_from_a_newer_rtbackup_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(a_file_that_is_not_a_database_is_reported_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(a_missing_directory_is_an_io_error_naming_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(upsert_counts_new_units_and_keeps_fields_not_given, setup, teardown),
        cmocka_unit_test_setup_teardown(upsert_never_demotes_a_verified_unit, setup, teardown),
        cmocka_unit_test_setup_teardown(mark_changes_a_verified_unit_only_to_verified, setup, teardown),
        cmocka_unit_test_setup_teardown(mark_records_errors_attempts_and_clears_the_error_once_verified, setup, teardown),
        cmocka_unit_test_setup_teardown(requeue_brings_a_verified_unit_back_with_counters_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(mark_of_an_unknown_key_changes_nothing_in_its_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failure_inside_a_batch_rolls_the_whole_batch_back, setup, teardown),
        cmocka_unit_test_setup_teardown(a_writer_killed_mid_batch_leaves_whole_batches_only, setup, teardown),
        cmocka_unit_test_setup_teardown(listing_filters_by_state_kind_and_limit_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(finished_run_keeps_status_and_summary, setup, teardown),
        cmocka_unit_test_setup_teardown(a_run_whose_process_died_is_marked_interrupted, setup, teardown),
        cmocka_unit_test_setup_teardown(a_lock_held_by_another_process_fails_naming_its_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(a_lock_left_by_a_killed_holder_can_be_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(a_released_lock_is_emptied_and_can_be_taken_again, setup, teardown),
        cmocka_unit_test_setup_teardown(a_child_program_does_not_inherit_the_lock, setup, teardown),
    };
    return cmocka_run_group_tests_name("unit.journal", tests, NULL, NULL);
}
