/* rtbackup.host: line input for the REPL and facts about this executable.
 *
 * Reading a line blocks, so it runs on the pool (rtb_task_await): tasks the operator
 * started in the REPL keep running while the prompt waits. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <editline/readline.h>

#include "host.h"
#include "task.h"
#include "util.h"

#ifndef RTBACKUP_VERSION
#define RTBACKUP_VERSION "unknown"
#endif

void rtb_host_install(lua_State *L, const rtb_host_info *info)
{
    lua_createtable(L, 0, 4);
    rtb_lua_set_string(L, "scripts_dir", info->scripts_dir);
    rtb_lua_set_string(L, "command", info->command ? info->command : "");
    rtb_lua_set_string(L, "config_path", info->config_path ? info->config_path : "");
    rtb_lua_set_string(L, "version", RTBACKUP_VERSION);
    lua_setfield(L, LUA_REGISTRYINDEX, "rtbackup.host.info");
}

typedef struct {
    char *prompt;
    char *line;
    int interactive;
    int eof;
} read_req;

static void read_work(void *data)
{
    read_req *r = data;
    if (r->interactive) {
        r->line = readline(r->prompt);
        r->eof = r->line == NULL;
        return;
    }
    size_t cap = 0;
    ssize_t n = getline(&r->line, &cap, stdin);
    if (n < 0) {
        free(r->line);
        r->line = NULL;
        r->eof = 1;
    } else if (n > 0 && r->line[n - 1] == '\n') {
        r->line[n - 1] = '\0';
    }
}

static int read_done(lua_State *L, void *data)
{
    read_req *r = data;
    if (r->eof)
        lua_pushnil(L);
    else
        lua_pushstring(L, r->line);
    free(r->line);
    free(r->prompt);
    free(r);
    return 1;
}

/* host.readline(prompt) — a line without its newline, or nil at end of input. With a
 * terminal: line editing and history; otherwise plain lines, no prompt. */
static int host_readline(lua_State *L)
{
    const char *prompt = luaL_optstring(L, 1, "> ");
    read_req *r = calloc(1, sizeof *r);
    if (!r)
        return luaL_error(L, "out of memory");
    r->interactive = isatty(STDIN_FILENO);
    r->prompt = strdup(prompt);
    return rtb_task_await(L, read_work, read_done, r);
}

static int host_add_history(lua_State *L)
{
    add_history(luaL_checkstring(L, 1));
    return 0;
}

static int host_history_load(lua_State *L)
{
    read_history(luaL_checkstring(L, 1)); /* a missing file is a first session, not an error */
    return 0;
}

static int host_history_save(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_pushboolean(L, write_history(path) == 0);
    return 1;
}

static int host_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, STDIN_FILENO)));
    return 1;
}

/* host.monotonic() — seconds on a clock that never jumps, for measuring durations. */
static int host_monotonic(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* host.now() — wall-clock seconds since the epoch, with a fraction (CLOCK_REALTIME):
 * for timestamps with milliseconds, which os.time() cannot give. Durations use
 * host.monotonic(). */
static int host_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* fsync(2) of the directory holding path, so that a newly created file's name is as
 * durable as its content. */
static int fsync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* host.fsync_append(path, text) — appends text to path in O_APPEND mode (the file is
 * created 0640 when missing, its directory then fsynced too) and fsyncs it before
 * returning. For the audit log: one batch is one write(2), so concurrent writers never
 * interleave inside a line, and it is on disk when this returns. Synchronous on
 * purpose: a batch is small, and it must also work from a finalizer at exit, when the
 * loop is gone. Raises {kind = "io"}. */
static int host_fsync_append(lua_State *L)
{
    size_t len;
    const char *path = luaL_checkstring(L, 1);
    const char *text = luaL_checklstring(L, 2, &len);
    int created = access(path, F_OK) != 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return rtb_lua_error_raise(L, "io", "cannot open %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            close(fd);
            return rtb_lua_error_raise(L, "io", "cannot write %s: %s", path, strerror(saved));
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0) {
        int saved = errno;
        close(fd);
        return rtb_lua_error_raise(L, "io", "cannot fsync %s: %s", path, strerror(saved));
    }
    if (close(fd) != 0)
        return rtb_lua_error_raise(L, "io", "cannot close %s: %s", path, strerror(errno));
    if (created && fsync_parent(path) != 0)
        return rtb_lua_error_raise(L, "io", "cannot fsync the directory of %s: %s", path, strerror(errno));
    return 0;
}

/* host.info() — {scripts_dir, command, config_path, version}. */
static int host_info(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "rtbackup.host.info");
    return 1;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The summary of a command is the first line of its file: "--- text". */
static void read_summary(const char *path, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[256];
    if (fgets(line, sizeof line, f) && strncmp(line, "---", 3) == 0) {
        char *s = line + 3;
        while (*s == ' ')
            s++;
        s[strcspn(s, "\r\n")] = '\0';
        snprintf(out, size, "%s", s);
    }
    fclose(f);
}

void rtb_host_print_commands(const char *scripts_dir, FILE *out)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/cli", scripts_dir);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(out, "  (no commands: %s: %s)\n", dir, strerror(errno));
        return;
    }
    char *names[128];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 128) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".lua") == 0 && e->d_name[0] != '_')
            names[n++] = strndup(e->d_name, len - 4);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], compare_names);
    for (size_t i = 0; i < n; i++) {
        char path[4200], summary[256];
        snprintf(path, sizeof path, "%s/%s.lua", dir, names[i]);
        read_summary(path, summary, sizeof summary);
        fprintf(out, "  %-10s %s\n", names[i], summary);
        free(names[i]);
    }
}

int luaopen_rtbackup_host(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"readline", host_readline},
                                     {"add_history", host_add_history},
                                     {"history_load", host_history_load},
                                     {"history_save", host_history_save},
                                     {"isatty", host_isatty},
                                     {"info", host_info},
                                     {"monotonic", host_monotonic},
                                     {"now", host_now},
                                     {"fsync_append", host_fsync_append},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
