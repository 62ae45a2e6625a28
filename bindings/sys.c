/* rtbackup.sys: the operating system facts and file operations the Lua library needs
 * and Lua's standard library lacks: directories, file modes, durable writes, free
 * space, the user and host names, a host's addresses, wall-clock time in a time zone,
 * and running a program without a shell (sys.run).
 *
 * Why here and not a shell command: a shell command costs a process, cannot tell an
 * error from an answer, and quoting a path for it is a bug waiting to happen. Every
 * function raises {kind = "io" | "invalid" | "config", message, path} on failure;
 * nothing prints.
 *
 * Durability: write_file and append fsync the data and, when they create or rename a
 * file, its directory too, so what they return after survives a power loss. Modes are
 * set with fchmod on the open descriptor, so the umask cannot widen them and there is
 * no moment when the file exists with looser permissions. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "task.h"
#include "util.h"

extern char **environ;

static int raise_errno(lua_State *L, const char *what, const char *path, int err)
{
    rtb_lua_error_push(L, "io", "");
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(err));
    lua_setfield(L, -2, "message");
    rtb_lua_set_string(L, "path", path);
    rtb_lua_set_integer(L, "errno", err);
    return lua_error(L);
}

static mode_t check_mode(lua_State *L, int idx, mode_t dflt)
{
    lua_Integer m = luaL_optinteger(L, idx, dflt);
    luaL_argcheck(L, m >= 0 && m <= 07777, idx, "a file mode (0 to 07777)");
    return (mode_t)m;
}

static mode_t opt_mode_field(lua_State *L, int idx, const char *field, mode_t dflt)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return dflt;
    lua_getfield(L, idx, field);
    mode_t m = lua_isnil(L, -1) ? dflt : check_mode(L, -1, dflt);
    lua_pop(L, 1);
    return m;
}

/* The directory part of path ("." for a bare name). */
static void dir_of(const char *path, char *out, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, size, ".");
    else if (slash == path)
        snprintf(out, size, "/");
    else
        snprintf(out, size, "%.*s", (int)(slash - path), path);
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Writes all of data, retrying short writes and EINTR. */
static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* sys.mkdir(path [, mode]) — creates path and its missing parents (mode, default
 * 0755, for the ones it creates; an existing directory keeps its mode). */
static int sys_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mode_t mode = check_mode(L, 2, 0755);
    char buf[PATH_MAX];
    if (strlen(path) == 0 || strlen(path) >= sizeof buf)
        return rtb_lua_error_raise(L, "invalid", "mkdir: bad path \"%s\"", path);
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, mode) == 0) {
                chmod(buf, mode); /* the umask must not narrow or widen it */
            } else if (errno != EEXIST) {
                return raise_errno(L, "cannot create the directory", buf, errno);
            } else {
                struct stat st;
                if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
                    return raise_errno(L, "cannot create the directory", buf, ENOTDIR);
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    return 0;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entry names of a directory, sorted; NULL (errno set) if it cannot be read. */
static char **read_names(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    size_t n = 0, cap = 16;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    while (names && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            char **grown = realloc(names, 2 * cap * sizeof *names);
            if (!grown)
                break;
            names = grown;
            cap *= 2;
        }
        names[n] = strdup(e->d_name);
        if (!names[n])
            break;
        n++;
    }
    int saved = errno;
    closedir(d);
    if (names)
        qsort(names, n, sizeof *names, compare_strings);
    *count = n;
    errno = saved;
    return names;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* sys.list(dir) — the names in dir, sorted. */
static int sys_list(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    size_t n = 0;
    char **names = read_names(dir, &n);
    if (!names)
        return raise_errno(L, "cannot list", dir, errno);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free_names(names, n);
    return 1;
}

/* The directories a walk has entered, by device and inode: a link back to one of them
 * (a cycle) or a second link to it is not entered again. */
typedef struct {
    struct { dev_t dev; ino_t ino; } *dirs;
    size_t n, cap;
} visited;

/* 1 if the directory st was entered before; else records it and returns 0 (-1: no memory). */
static int seen_before(visited *v, const struct stat *st)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->dirs[i].dev == st->st_dev && v->dirs[i].ino == st->st_ino)
            return 1;
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        void *grown = realloc(v->dirs, cap * sizeof *v->dirs);
        if (!grown)
            return -1;
        v->dirs = grown, v->cap = cap;
    }
    v->dirs[v->n].dev = st->st_dev, v->dirs[v->n].ino = st->st_ino;
    v->n++;
    return 0;
}

static void push_path(lua_State *L, const char *path)
{
    lua_pushstring(L, path);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

/* Appends the regular files under path (depth first, names sorted) to the list at
 * the top of the stack. Links are followed, to files and to directories (each
 * directory entered once: no cycles). An entry under path that cannot be read (a
 * dangling link, a directory without permission) is listed all the same: whoever
 * opens it reports why, for that entry, and the rest of the tree is still listed.
 * Returns 0, or an errno with `path` in `failed` when path itself cannot be read
 * (the caller raises, once everything is freed). */
static int walk(lua_State *L, const char *path, int depth, visited *v, char *failed, size_t size)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (depth > 0) {
            push_path(L, path);
            return 0;
        }
        snprintf(failed, size, "%s", path);
        return errno;
    }
    if (S_ISREG(st.st_mode)) {
        push_path(L, path);
        return 0;
    }
    if (!S_ISDIR(st.st_mode) || depth > 64)
        return 0;
    int seen = seen_before(v, &st);
    if (seen)
        return seen < 0 ? ENOMEM : 0;
    size_t n = 0;
    char **names = read_names(path, &n);
    if (!names) {
        if (depth > 0) {
            push_path(L, path);
            return 0;
        }
        snprintf(failed, size, "%s", path);
        return errno;
    }
    int err = 0;
    for (size_t i = 0; i < n && !err; i++) {
        char child[PATH_MAX];
        int len = snprintf(child, sizeof child, "%s%s%s", path,
                           path[strlen(path) - 1] == '/' ? "" : "/", names[i]);
        if (len > 0 && (size_t)len < sizeof child)
            err = walk(L, child, depth + 1, v, failed, size);
    }
    free_names(names, n);
    return err;
}

/* sys.walk(path) — the regular files under path (or path itself when it is a file),
 * sorted by path as `find path -type f | sort` would list them. */
static int sys_walk(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char failed[PATH_MAX];
    lua_newtable(L);
    visited v = {0};
    int err = walk(L, path, 0, &v, failed, sizeof failed);
    free(v.dirs);
    if (err)
        return raise_errno(L, "cannot read", failed, err);
    return 1;
}

static const char *type_name(mode_t m)
{
    if (S_ISREG(m))
        return "file";
    if (S_ISDIR(m))
        return "directory";
    if (S_ISLNK(m))
        return "link";
    return "other";
}

/* sys.stat(path) — {type, mode, size, mtime, uid, gid}, or nil and a message when
 * the path does not exist (or cannot be read). */
static int sys_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        lua_pushinteger(L, errno);
        return 3;
    }
    lua_createtable(L, 0, 6);
    rtb_lua_set_string(L, "type", type_name(st.st_mode));
    rtb_lua_set_integer(L, "mode", st.st_mode & 07777);
    rtb_lua_set_integer(L, "size", (lua_Integer)st.st_size);
    lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9);
    lua_setfield(L, -2, "mtime");
    rtb_lua_set_integer(L, "uid", st.st_uid);
    rtb_lua_set_integer(L, "gid", st.st_gid);
    return 1;
}

/* sys.statvfs(path) — {size, free, avail} in bytes of the file system holding path
 * (avail: what an unprivileged user may still use). */
static int sys_statvfs(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct statvfs v;
    if (statvfs(path, &v) != 0)
        return raise_errno(L, "cannot read the free space of", path, errno);
    lua_createtable(L, 0, 3);
    rtb_lua_set_integer(L, "size", (lua_Integer)v.f_blocks * (lua_Integer)v.f_frsize);
    rtb_lua_set_integer(L, "free", (lua_Integer)v.f_bfree * (lua_Integer)v.f_frsize);
    rtb_lua_set_integer(L, "avail", (lua_Integer)v.f_bavail * (lua_Integer)v.f_frsize);
    return 1;
}

/* sys.fsync(path) — flushes a file or a directory to stable storage. */
static int sys_fsync(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (fsync_path(path) != 0)
        return raise_errno(L, "cannot fsync", path, errno);
    return 0;
}

/* sys.chmod(path, mode) */
static int sys_chmod(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mode_t mode = check_mode(L, 2, 0);
    if (chmod(path, mode) != 0)
        return raise_errno(L, "cannot change the mode of", path, errno);
    return 0;
}

/* sys.access(path, "rwx") — true when this process may read/write/execute path. */
static int sys_access(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *how = luaL_optstring(L, 2, "r");
    int mode = 0;
    for (const char *p = how; *p; p++)
        mode |= *p == 'r' ? R_OK : *p == 'w' ? W_OK : *p == 'x' ? X_OK : 0;
    lua_pushboolean(L, access(path, mode ? mode : F_OK) == 0);
    return 1;
}

/* sys.write_file(path, data [, {mode = 0644, fsync = true}]) — replaces path
 * atomically: a new file beside it (created with `mode`, whatever the umask),
 * written, fsynced, renamed over path, and the directory fsynced. A reader sees the
 * old content or the new, never a part. Temporaries are named "<path>.tmp.<pid>". */
static int sys_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    mode_t mode = opt_mode_field(L, 3, "mode", 0644);
    int durable = 1;
    if (lua_type(L, 3) == LUA_TTABLE) {
        lua_getfield(L, 3, "fsync");
        if (!lua_isnil(L, -1))
            durable = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return rtb_lua_error_raise(L, "invalid", "write_file: path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return raise_errno(L, "cannot create", tmp, errno);
    int err = 0;
    if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || (durable && fsync(fd) != 0))
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (!err && rename(tmp, path) != 0)
        err = errno;
    if (err) {
        unlink(tmp);
        return raise_errno(L, "cannot write", path, err);
    }
    if (durable) {
        char dir[PATH_MAX];
        dir_of(path, dir, sizeof dir);
        if (fsync_path(dir) != 0)
            return raise_errno(L, "cannot fsync the directory of", path, errno);
    }
    return 0;
}

/* sys.append(path, data [, {mode = 0600}]) — appends data with one write(2) on an
 * O_APPEND descriptor (concurrent writers never overwrite each other) and fsyncs it.
 * A file it creates gets `mode` from the first moment, and its directory is fsynced
 * so the file itself survives a crash. */
static int sys_append(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    mode_t mode = opt_mode_field(L, 3, "mode", 0600);
    int created = 1;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd >= 0) {
        if (fchmod(fd, mode) != 0) {
            int err = errno;
            close(fd);
            return raise_errno(L, "cannot set the mode of", path, err);
        }
    } else if (errno == EEXIST) {
        created = 0;
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0)
        return raise_errno(L, "cannot open", path, errno);
    int err = 0;
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (err)
        return raise_errno(L, "cannot append to", path, err);
    if (created) {
        char dir[PATH_MAX];
        dir_of(path, dir, sizeof dir);
        fsync_path(dir);
    }
    lua_pushboolean(L, created);
    return 1;
}

/* sys.user() — the name of the effective user (from the password database, not from
 * $USER, which the caller controls), or its number when it has no entry. */
static int sys_user(lua_State *L)
{
    uid_t uid = geteuid();
    struct passwd pw, *found = NULL;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found)
        lua_pushstring(L, found->pw_name);
    else
        lua_pushfstring(L, "%d", (int)uid);
    return 1;
}

static int sys_hostname(lua_State *L)
{
    char name[256];
    if (gethostname(name, sizeof name) != 0)
        return raise_errno(L, "cannot read", "the host name", errno);
    name[sizeof name - 1] = '\0';
    lua_pushstring(L, name);
    return 1;
}

/* sys.addresses(host) -> {"127.0.0.1", "::1", ...} (numeric, each once), or nil and
 * why the name does not resolve. A name service may take its time: a config check
 * asks, never a transfer. */
static int sys_addresses(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, gai_strerror(rc));
        return 2;
    }
    lua_newtable(L);
    lua_Integer n = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        char text[NI_MAXHOST];
        if (getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof text, NULL, 0, NI_NUMERICHOST) != 0)
            continue;
        int seen = 0;
        for (lua_Integer i = 1; i <= n && !seen; i++) {
            lua_rawgeti(L, -1, i);
            seen = strcmp(lua_tostring(L, -1), text) == 0;
            lua_pop(L, 1);
        }
        if (!seen) {
            lua_pushstring(L, text);
            lua_rawseti(L, -2, ++n);
        }
    }
    freeaddrinfo(res);
    return 1;
}

static int sys_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* A time zone name is a file of the tz database; glibc silently falls back to UTC
 * for a name it cannot find, which would shift a clinic's day by hours. */
static int tz_exists(const char *tz)
{
    if (tz[0] == ':')
        tz++;
    if (tz[0] == '/' || strstr(tz, ".."))
        return access(tz, R_OK) == 0;
    const char *dir = getenv("TZDIR");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", tz);
    return access(path, R_OK) == 0 || strcmp(tz, "UTC") == 0;
}

/* sys.localtime([t [, tz]]) — the calendar fields of epoch seconds t (default: now)
 * in time zone tz ("America/Los_Angeles"; default: the host's):
 * {year, month, day, hour, min, sec, wday (1 = Monday .. 7), yday, isdst, gmtoff}.
 * TZ is switched for the call and restored: the loop thread is the only one that
 * reads local time (DCMTK's threads do not), so no other thread sees it change. */
static int sys_localtime(lua_State *L)
{
    time_t t = lua_isnoneornil(L, 1) ? time(NULL) : (time_t)luaL_checknumber(L, 1);
    const char *tz = luaL_optstring(L, 2, NULL);
    struct tm tm;
    if (tz && *tz) {
        if (!tz_exists(tz))
            return rtb_lua_error_raise(L, "config", "unknown time zone \"%s\" (not in the tz database)", tz);
        const char *old = getenv("TZ");
        char *saved = old ? strdup(old) : NULL;
        setenv("TZ", tz, 1);
        tzset();
        localtime_r(&t, &tm);
        if (saved) {
            setenv("TZ", saved, 1);
            free(saved);
        } else {
            unsetenv("TZ");
        }
        tzset();
    } else {
        localtime_r(&t, &tm);
    }
    lua_createtable(L, 0, 10);
    rtb_lua_set_integer(L, "year", tm.tm_year + 1900);
    rtb_lua_set_integer(L, "month", tm.tm_mon + 1);
    rtb_lua_set_integer(L, "day", tm.tm_mday);
    rtb_lua_set_integer(L, "hour", tm.tm_hour);
    rtb_lua_set_integer(L, "min", tm.tm_min);
    rtb_lua_set_integer(L, "sec", tm.tm_sec);
    rtb_lua_set_integer(L, "wday", tm.tm_wday == 0 ? 7 : tm.tm_wday);
    rtb_lua_set_integer(L, "yday", tm.tm_yday + 1);
    lua_pushboolean(L, tm.tm_isdst > 0);
    lua_setfield(L, -2, "isdst");
    rtb_lua_set_integer(L, "gmtoff", tm.tm_gmtoff);
    return 1;
}

/* sys.now() — wall-clock seconds since the epoch with a fraction. */
static int sys_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* ---- sys.run: a program, without a shell ------------------------------------------ */

/* sys.run(argv [, {stdin = text, timeout = 60, max_output = 65536}]) ->
 *     {status = exit code | nil, signal = number | nil, output = text, truncated = bool,
 *      timed_out = bool}
 * Runs argv[1] (looked up in PATH) with the other entries as its arguments — no shell,
 * so nothing in them is ever interpreted. `stdin` is written to its standard input (then
 * closed; /dev/null without it); standard output and error are captured together, the
 * first max_output bytes kept. A program still running after `timeout` seconds gets
 * SIGTERM, then SIGKILL 2 s later, with its whole process group. Raises {kind = "io"}
 * when the program cannot be started (not found, not executable); bad arguments are
 * argument errors. Runs on the thread pool: the calling task waits, the loop does not.
 *
 * The child starts with default signal dispositions and an empty mask (the host ignores
 * SIGPIPE, and exec would keep that), in a process group of its own (so a timeout
 * reaches what it started), and with no descriptor above 2 (journal, sockets). */
typedef struct {
    char **argv;
    char *in;
    size_t in_len;
    long timeout_ms;
    size_t max_output;
    /* results */
    int spawn_errno;
    int status, signal, timed_out, truncated;
    char *out;
    size_t out_len;
} run_job;

static void free_run_job(run_job *j)
{
    if (j->argv)
        for (char **a = j->argv; *a; a++)
            free(*a);
    free(j->argv);
    free(j->in);
    free(j->out);
    free(j);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for pid until deadline (ms, monotonic); 1 when it was reaped. */
static int reap_until(pid_t pid, int *wstatus, long deadline)
{
    for (;;) {
        pid_t r = waitpid(pid, wstatus, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return 1;
        if (now_ms() >= deadline)
            return 0;
        struct timespec pause = {0, 10 * 1000000};
        nanosleep(&pause, NULL);
    }
}

static void run_work(void *data)
{
    run_job *j = data;
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
    if (pipe2(out_pipe, O_CLOEXEC) != 0 || (j->in && pipe2(in_pipe, O_CLOEXEC) != 0)) {
        j->spawn_errno = errno;
        goto fail_pipes;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    if (j->in)
        posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
    posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int rc = posix_spawnp(&pid, j->argv[0], &fa, &attr, j->argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(out_pipe[1]);
    out_pipe[1] = -1;
    if (in_pipe[0] >= 0) {
        close(in_pipe[0]);
        in_pipe[0] = -1;
    }
    if (rc != 0) {
        j->spawn_errno = rc;
        goto fail_pipes;
    }

    long deadline = now_ms() + j->timeout_ms;
    size_t written = 0, cap = 0;
    int out_open = 1;
    if (in_pipe[1] >= 0)
        fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
    while (out_open) {
        struct pollfd fds[2];
        int n = 0;
        fds[n++] = (struct pollfd){.fd = out_pipe[0], .events = POLLIN};
        int in_at = -1;
        if (in_pipe[1] >= 0) {
            in_at = n;
            fds[n++] = (struct pollfd){.fd = in_pipe[1], .events = POLLOUT};
        }
        long left = deadline - now_ms();
        if (left <= 0) {
            j->timed_out = 1;
            break;
        }
        int ready = poll(fds, (nfds_t)n, (int)(left > 1000 ? 1000 : left));
        if (ready < 0 && errno != EINTR)
            break;
        if (ready <= 0)
            continue;
        if (fds[0].revents) {
            char buf[8192];
            ssize_t got = read(out_pipe[0], buf, sizeof buf);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) {
                out_open = 0;
            } else if (got > 0) {
                size_t keep = j->out_len < j->max_output ? j->max_output - j->out_len : 0;
                if ((size_t)got > keep)
                    j->truncated = 1;
                if (keep > (size_t)got)
                    keep = (size_t)got;
                if (keep && j->out_len + keep > cap) {
                    size_t ncap = cap ? cap * 2 : 8192;
                    while (ncap < j->out_len + keep)
                        ncap *= 2;
                    char *b = realloc(j->out, ncap);
                    if (b) {
                        j->out = b;
                        cap = ncap;
                    } else {
                        keep = 0;
                        j->truncated = 1;
                    }
                }
                if (keep) {
                    memcpy(j->out + j->out_len, buf, keep);
                    j->out_len += keep;
                }
            }
        }
        if (in_at >= 0 && fds[in_at].revents) {
            /* POLLERR/POLLHUP: the program closed its input without reading it all;
             * that is its business, not an error. */
            ssize_t w = (fds[in_at].revents & POLLOUT)
                            ? write(in_pipe[1], j->in + written, j->in_len - written)
                            : -1;
            if (w > 0)
                written += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || written >= j->in_len ||
                !(fds[in_at].revents & POLLOUT)) {
                close(in_pipe[1]);
                in_pipe[1] = -1;
            }
        }
        if (in_pipe[1] >= 0 && written >= j->in_len) {
            close(in_pipe[1]);
            in_pipe[1] = -1;
        }
    }
    if (in_pipe[1] >= 0) {
        close(in_pipe[1]);
        in_pipe[1] = -1;
    }
    int wstatus = 0;
    /* Output closed: the program is ending (or left a child holding its output). */
    if (!j->timed_out && !reap_until(pid, &wstatus, deadline))
        j->timed_out = 1;
    if (j->timed_out) {
        kill(-pid, SIGTERM);
        if (!reap_until(pid, &wstatus, now_ms() + 2000)) {
            kill(-pid, SIGKILL);
            while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
            }
        }
    }
    j->status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    j->signal = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
    close(out_pipe[0]);
    return;

fail_pipes:
    for (int i = 0; i < 2; i++) {
        if (in_pipe[i] >= 0)
            close(in_pipe[i]);
        if (out_pipe[i] >= 0)
            close(out_pipe[i]);
    }
}

static int run_done(lua_State *L, void *data)
{
    run_job *j = data;
    if (j->spawn_errno) {
        rtb_lua_error_push(L, "io", "");
        lua_pushfstring(L, "cannot run %s: %s", j->argv[0], strerror(j->spawn_errno));
        lua_setfield(L, -2, "message");
        rtb_lua_set_string(L, "path", j->argv[0]);
        rtb_lua_set_integer(L, "errno", j->spawn_errno);
        free_run_job(j);
        return lua_error(L);
    }
    lua_createtable(L, 0, 5);
    if (j->status >= 0) {
        lua_pushinteger(L, j->status);
        lua_setfield(L, -2, "status");
    }
    if (j->signal) {
        lua_pushinteger(L, j->signal);
        lua_setfield(L, -2, "signal");
    }
    lua_pushlstring(L, j->out ? j->out : "", j->out_len);
    lua_setfield(L, -2, "output");
    lua_pushboolean(L, j->truncated);
    lua_setfield(L, -2, "truncated");
    lua_pushboolean(L, j->timed_out);
    lua_setfield(L, -2, "timed_out");
    free_run_job(j);
    return 1;
}

static int sys_run(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer argc = (lua_Integer)lua_rawlen(L, 1);
    luaL_argcheck(L, argc >= 1 && argc <= 4096, 1, "a list of 1 to 4096 strings (the program first)");
    for (lua_Integer i = 1; i <= argc; i++) {
        if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
            return luaL_argerror(L, 1, "every argument must be a string");
        size_t len;
        const char *a = lua_tolstring(L, -1, &len);
        if (strlen(a) != len)
            return luaL_argerror(L, 1, "an argument holds a NUL byte");
        if (i == 1 && len == 0)
            return luaL_argerror(L, 1, "the program name is empty");
        lua_pop(L, 1);
    }
    const char *in = NULL;
    size_t in_len = 0;
    double timeout = 60;
    lua_Integer max_output = 65536;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "stdin") != LUA_TNIL) {
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_argerror(L, 2, "stdin must be a string");
            in = lua_tolstring(L, -1, &in_len);
        }
        lua_pop(L, 1); /* the string stays referenced by the options table */
        if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
            timeout = luaL_checknumber(L, -1);
            luaL_argcheck(L, timeout > 0 && timeout <= 86400, 2, "timeout: 0 to 86400 seconds");
        }
        lua_pop(L, 1);
        if (lua_getfield(L, 2, "max_output") != LUA_TNIL) {
            max_output = luaL_checkinteger(L, -1);
            luaL_argcheck(L, max_output >= 0 && max_output <= (64 << 20), 2,
                          "max_output: 0 to 64 MiB");
        }
        lua_pop(L, 1);
    }
    /* A program that closes its input early must not kill us with SIGPIPE (DICOM and
     * HTTP already ignore it; this may run before either). */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        sigaction(SIGPIPE, &sa, NULL);
    }
    run_job *j = calloc(1, sizeof *j);
    if (!j)
        return luaL_error(L, "out of memory");
    j->argv = calloc((size_t)argc + 1, sizeof *j->argv);
    int oom = !j->argv;
    for (lua_Integer i = 1; !oom && i <= argc; i++) {
        lua_rawgeti(L, 1, i);
        oom = !(j->argv[i - 1] = strdup(lua_tostring(L, -1)));
        lua_pop(L, 1);
    }
    if (!oom && in) {
        j->in = malloc(in_len ? in_len : 1);
        oom = !j->in;
        if (!oom)
            memcpy(j->in, in, in_len);
        j->in_len = in_len;
    }
    if (oom) {
        free_run_job(j);
        return luaL_error(L, "out of memory");
    }
    j->timeout_ms = (long)(timeout * 1000);
    j->max_output = (size_t)max_output;
    return rtb_task_await(L, run_work, run_done, j);
}

int luaopen_rtbackup_sys(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"mkdir", sys_mkdir},       {"list", sys_list},           {"walk", sys_walk},
        {"stat", sys_stat},         {"statvfs", sys_statvfs},     {"fsync", sys_fsync},
        {"chmod", sys_chmod},       {"access", sys_access},       {"write_file", sys_write_file},
        {"append", sys_append},     {"user", sys_user},           {"hostname", sys_hostname},
        {"pid", sys_pid},           {"addresses", sys_addresses},           {"localtime", sys_localtime}, {"now", sys_now},
        {"run", sys_run},
        {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
