/* Run locks: flock(2) on a file per environment and source.
 *
 * flock rather than a PID file: the kernel drops the lock when the holder dies, however
 * it dies, so a stale file never blocks the next cron run and no one has to guess
 * whether a recorded PID is still alive. The file's content (pid=, started=, host=) is
 * only there to tell a blocked run who holds the lock. */
#define _DEFAULT_SOURCE /* flock, gethostname */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "internal.h"

struct rtb_journal_lock {
    int fd;
    int shared;
    char *path;
    char started[RTB_JOURNAL_TIME_MAX];
};

/* The holder takes the lock and then writes its details; a contender can look in
 * between and find the file empty. Waiting a little for the details is better than a
 * message without a PID. */
#define HOLDER_READ_TRIES 10
#define HOLDER_READ_PAUSE_MS 20

typedef struct {
    int pid;
    char started[RTB_JOURNAL_TIME_MAX];
} holder_info;

static void parse_holder(const char *text, holder_info *h)
{
    const char *p = strstr(text, "pid=");
    if (p)
        h->pid = atoi(p + 4);
    p = strstr(text, "started=");
    if (p)
        sscanf(p + 8, "%31[^\n]", h->started);
}

static void read_holder(int fd, holder_info *h)
{
    memset(h, 0, sizeof *h);
    for (int i = 0; i < HOLDER_READ_TRIES && h->pid == 0; i++) {
        if (i > 0) {
            struct timespec pause = {0, HOLDER_READ_PAUSE_MS * 1000000L};
            nanosleep(&pause, NULL);
        }
        char text[512];
        ssize_t n = pread(fd, text, sizeof text - 1, 0);
        if (n < 0)
            return;
        text[n] = '\0';
        parse_holder(text, h);
    }
}

static int fail_locked(const char *path, int fd, int shared, rtb_journal_error *err)
{
    holder_info h;
    read_holder(fd, &h);
    if (h.pid == 0 && !shared)
        /* Held, but nobody wrote a PID: shared holders (sharded runs) never do. */
        rtb_journal_fail(err, RTB_JOURNAL_E_LOCKED,
                         "sharded runs hold the lock %s: an unsharded run waits until none runs",
                         path);
    else if (h.pid > 0)
        rtb_journal_fail(err, RTB_JOURNAL_E_LOCKED,
                         "another run holds the lock %s: PID %d, started %s", path, h.pid,
                         h.started[0] ? h.started : "at an unknown time");
    else
        rtb_journal_fail(err, RTB_JOURNAL_E_LOCKED,
                         "another process holds the lock %s (it has not written its PID)", path);
    err->holder_pid = h.pid;
    snprintf(err->holder_started, sizeof err->holder_started, "%s", h.started);
    return -1;
}

/* Replaces the file's content with ours in one write, after truncating, so a reader
 * sees either nothing (and retries) or our whole record. */
static int write_holder(int fd, const char *started)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    char text[512];
    int len = snprintf(text, sizeof text, "pid=%d\nstarted=%s\nhost=%s\n", (int)getpid(),
                       started, host);
    if (ftruncate(fd, 0) != 0)
        return -1;
    return pwrite(fd, text, (size_t)len, 0) == len ? 0 : -1;
}

/* flock with EINTR retried: a signal arriving during the call is not contention. */
static int try_flock(int fd, int shared)
{
    int rc;
    do
        rc = flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB);
    while (rc != 0 && errno == EINTR);
    return rc;
}

int rtb_journal_lock_acquire(const char *path, rtb_journal_lock **out, rtb_journal_error *err)
{
    return rtb_journal_lock_acquire_mode(path, 0, out, err);
}

int rtb_journal_lock_acquire_mode(const char *path, int shared, rtb_journal_lock **out,
                                  rtb_journal_error *err)
{
    *out = NULL;
    if (!path || !*path)
        return rtb_journal_fail(err, RTB_JOURNAL_E_INVALID, "lock: no path given");
    /* O_CLOEXEC: a child we start (a DICOM tool, a shell) must not inherit the lock
     * and keep holding it after we are gone. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return rtb_journal_fail(err, RTB_JOURNAL_E_IO, "cannot open the lock %s: %s", path,
                                strerror(errno));
    if (try_flock(fd, shared) != 0) {
        int e = errno;
        int rc = e == EWOULDBLOCK ? fail_locked(path, fd, shared, err)
                                  : rtb_journal_fail(err, RTB_JOURNAL_E_IO,
                                                     "cannot lock %s: %s", path, strerror(e));
        close(fd);
        return rc;
    }
    rtb_journal_lock *lock = calloc(1, sizeof *lock);
    if (!lock || !(lock->path = strdup(path))) {
        free(lock);
        close(fd);
        return rtb_journal_fail(err, RTB_JOURNAL_E_INTERNAL, "lock %s: out of memory", path);
    }
    lock->fd = fd;
    lock->shared = shared;
    rtb_journal_now(lock->started);
    /* Shared holders are many: none of them owns the file's content. */
    if (!shared && write_holder(fd, lock->started) != 0) {
        int e = errno;
        rtb_journal_lock_release(lock);
        return rtb_journal_fail(err, RTB_JOURNAL_E_IO, "cannot write to the lock %s: %s", path,
                                strerror(e));
    }
    *out = lock;
    return 0;
}

void rtb_journal_lock_release(rtb_journal_lock *lock)
{
    if (!lock)
        return;
    /* Empty it while still holding it, so a clean exit leaves no holder behind to
     * confuse a person reading the file. Closing the descriptor drops the lock. */
    if (!lock->shared && ftruncate(lock->fd, 0) != 0) {
        /* Nothing to do: the stale content is harmless, flock is what counts. */
    }
    close(lock->fd);
    free(lock->path);
    free(lock);
}

const char *rtb_journal_lock_path(const rtb_journal_lock *lock)
{
    return lock->path;
}

const char *rtb_journal_lock_started(const rtb_journal_lock *lock)
{
    return lock->started;
}
