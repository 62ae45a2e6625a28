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

#include <ctype.h>
#include <histedit.h>
#include <signal.h>

#include "host.h"
#include "task.h"
#include "util.h"

#ifndef RTBACKUP_VERSION
#define RTBACKUP_VERSION "unknown"
#endif

void rtb_host_install(lua_State *L, const rtb_host_info *info)
{
    lua_createtable(L, 0, 5);
    rtb_lua_set_string(L, "scripts_dir", info->scripts_dir);
    rtb_lua_set_string(L, "command", info->command ? info->command : "");
    rtb_lua_set_string(L, "config_path", info->config_path ? info->config_path : "");
    if (info->state_dir && *info->state_dir)
        rtb_lua_set_string(L, "state_dir", info->state_dir);
    rtb_lua_set_string(L, "version", RTBACKUP_VERSION);
    lua_setfield(L, LUA_REGISTRYINDEX, "rtbackup.host.info");
}

/* ---- line editing (libedit's own API) ---------------------------------------------
 *
 * The terminal is read by libedit's el_gets() on a pool thread. While it edits a line
 * the terminal's ISIG is off, so Ctrl-C arrives as a key, bound to rtb-interrupt: the
 * line is dropped and host.readline() returns false (no signal, nothing else stops).
 * Tab is bound to rtb-complete, which completes the word before the cursor from a
 * list of names the REPL hands over before each line (host.set_completions): a plain
 * array of strings, so the pool thread never touches the Lua state. */
static EditLine *el;
static History *hist;
static char *el_prompt_text;
static int el_interrupted;

typedef struct {
    char **items;
    size_t n;
} name_list;
static name_list completion_names, completion_aliases;

static void name_list_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static char *prompt_of(EditLine *e)
{
    (void)e;
    return el_prompt_text ? el_prompt_text : "";
}

static unsigned char on_interrupt_key(EditLine *e, int ch)
{
    (void)e;
    (void)ch;
    el_interrupted = 1;
    return CC_NEWLINE;
}

static int is_word_char(int c)
{
    return isalnum(c) || c == '_' || c == '.' || c == ':';
}

static int is_alias_char(int c)
{
    return isalnum(c) || c == '_' || c == '-';
}

/* Shows the candidates below the line, in columns, at most 100 of them. */
static void list_candidates(EditLine *e, const char **matches, size_t n, size_t shown_from)
{
    FILE *out = stdout;
    size_t width = 0;
    for (size_t i = 0; i < n && i < 100; i++) {
        size_t len = strlen(matches[i] + shown_from);
        if (len > width)
            width = len;
    }
    width += 2;
    size_t columns = width < 80 ? 80 / width : 1;
    fputc('\n', out);
    for (size_t i = 0; i < n && i < 100; i++)
        fprintf(out, "%-*s%s", (int)width, matches[i] + shown_from,
                (i + 1) % columns == 0 || i + 1 == n || i + 1 == 100 ? "\n" : "");
    if (n > 100)
        fprintf(out, "... and %zu more\n", n - 100);
    fflush(out);
    (void)e;
}

static unsigned char on_complete_key(EditLine *e, int ch)
{
    (void)ch;
    const LineInfo *li = el_line(e);
    const char *start = li->cursor;
    while (start > li->buffer && is_word_char((unsigned char)start[-1]))
        start--;
    const name_list *list = &completion_names;
    const char *alias_start = li->cursor;
    while (alias_start > li->buffer && is_alias_char((unsigned char)alias_start[-1]))
        alias_start--;
    if (alias_start > li->buffer && (alias_start[-1] == '"' || alias_start[-1] == '\'')) {
        start = alias_start; /* inside a string: an alias of the environment */
        list = &completion_aliases;
    }
    size_t len = (size_t)(li->cursor - start);
    char key[256];
    if (len >= sizeof key)
        return CC_REFRESH_BEEP;
    memcpy(key, start, len);
    key[len] = '\0';
    for (char *c = key; *c; c++)
        if (*c == ':')
            *c = '.'; /* peer:fi completes like peer.fi: methods are listed with dots */
    const char **matches = malloc((list->n + 1) * sizeof *matches);
    if (!matches)
        return CC_REFRESH_BEEP;
    size_t n = 0;
    for (size_t i = 0; i < list->n; i++)
        if (strncmp(list->items[i], key, len) == 0)
            matches[n++] = list->items[i];
    if (n == 0) {
        free(matches);
        return CC_REFRESH_BEEP;
    }
    /* The longest common prefix of the matches, beyond what is typed. */
    size_t common = strlen(matches[0]);
    for (size_t i = 1; i < n; i++) {
        size_t j = 0;
        while (j < common && matches[i][j] == matches[0][j])
            j++;
        common = j;
    }
    unsigned char rc = CC_REFRESH;
    if (common > len) {
        char add[256];
        size_t extra = common - len < sizeof add - 1 ? common - len : sizeof add - 1;
        memcpy(add, matches[0] + len, extra);
        add[extra] = '\0';
        el_insertstr(e, add);
    } else if (n > 1) {
        /* Show the last part of each name: "dicom.peer(" lists as "peer(". */
        const char *dot = strrchr(key, '.');
        list_candidates(e, matches, n, dot ? (size_t)(dot - key) + 1 : 0);
        rc = CC_REDISPLAY;
    }
    free(matches);
    return rc;
}

static int line_editor_init(void)
{
    if (el)
        return 0;
    el = el_init("rtbackup", stdin, stdout, stderr);
    hist = history_init();
    if (!el || !hist)
        return -1;
    HistEvent ev;
    history(hist, &ev, H_SETSIZE, 1000);
    history(hist, &ev, H_SETUNIQUE, 1);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_PROMPT, prompt_of);
    el_set(el, EL_HIST, history, hist);
    /* No signal handlers of libedit's: it would re-send each signal to the whole
     * process group (kill(0, sig)) behind libuv's back. */
    el_set(el, EL_SIGNAL, 0);
    el_set(el, EL_ADDFN, "rtb-interrupt", "drop the line (Ctrl-C)", on_interrupt_key);
    el_set(el, EL_ADDFN, "rtb-complete", "complete a name (Tab)", on_complete_key);
    /* Terminal modes first: setting them binds the terminal's special characters
     * (^C as intr) again, over our own bindings. */
    el_set(el, EL_SETTY, "-d", "-isig", NULL);
    el_source(el, NULL); /* the operator's ~/.editrc, if any */
    el_set(el, EL_BIND, "^C", "rtb-interrupt", NULL);
    el_set(el, EL_BIND, "^I", "rtb-complete", NULL);
    /* Ctrl-D: end of input on an empty line, else delete (rebinding the terminal's
     * characters above leaves it inserting a literal ^D). */
    el_set(el, EL_BIND, "^D", "em-delete-or-list", NULL);
    return 0;
}

typedef struct {
    char *prompt;
    char *line;
    int interactive;
    int eof;
    int interrupted;
} read_req;

static void read_work(void *data)
{
    read_req *r = data;
    if (r->interactive) {
        el_resize(el); /* no SIGWINCH handler: look at the size before each line */
        el_prompt_text = r->prompt;
        el_interrupted = 0;
        int count = 0;
        const char *line = el_gets(el, &count);
        el_prompt_text = NULL;
        if (el_interrupted) {
            r->interrupted = 1;
            return;
        }
        if (!line || count <= 0) {
            r->eof = 1;
            return;
        }
        r->line = strdup(line);
        if (!r->line) {
            r->eof = 1;
            return;
        }
        size_t n = strlen(r->line);
        if (n > 0 && r->line[n - 1] == '\n')
            r->line[n - 1] = '\0';
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
    if (r->interrupted)
        lua_pushboolean(L, 0);
    else if (r->eof)
        lua_pushnil(L);
    else
        lua_pushstring(L, r->line);
    free(r->line);
    free(r->prompt);
    free(r);
    return 1;
}

/* host.readline(prompt) — a line without its newline, nil at end of input, or false
 * when Ctrl-C dropped the line. With a terminal: line editing, history, completion;
 * otherwise plain lines, no prompt. */
static int host_readline(lua_State *L)
{
    const char *prompt = luaL_optstring(L, 1, "> ");
    int interactive = isatty(STDIN_FILENO);
    if (interactive && line_editor_init() < 0)
        return luaL_error(L, "cannot start line editing");
    read_req *r = calloc(1, sizeof *r);
    if (!r)
        return luaL_error(L, "out of memory");
    r->interactive = interactive;
    r->prompt = strdup(prompt);
    if (!r->prompt) {
        free(r);
        return luaL_error(L, "out of memory");
    }
    return rtb_task_await(L, read_work, read_done, r);
}

/* Copies the strings of the array at idx into l (replacing what it held). */
static void name_list_set(lua_State *L, int idx, name_list *l)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = luaL_len(L, idx);
    char **items = calloc((size_t)(n > 0 ? n : 1), sizeof *items);
    if (!items)
        luaL_error(L, "out of memory");
    size_t count = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        const char *s = lua_tostring(L, -1);
        if (s && (items[count] = strdup(s)))
            count++;
        lua_pop(L, 1);
    }
    name_list_free(l);
    l->items = items;
    l->n = count;
}

/* host.set_completions(names, aliases) — what Tab offers: names (dotted paths, "x."
 * for a table, "f(" for a function) and, inside a string, the aliases. */
static int host_set_completions(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    name_list_set(L, 1, &completion_names);
    name_list_set(L, 2, &completion_aliases);
    return 0;
}

static int host_add_history(lua_State *L)
{
    const char *line = luaL_checkstring(L, 1);
    if (line_editor_init() == 0) {
        HistEvent ev;
        history(hist, &ev, H_ENTER, line);
    }
    return 0;
}

static int host_history_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (line_editor_init() == 0) {
        HistEvent ev;
        history(hist, &ev, H_LOAD, path); /* a missing file is a first session, not an error */
    }
    return 0;
}

static int host_history_save(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    HistEvent ev;
    lua_pushboolean(L, line_editor_init() == 0 && history(hist, &ev, H_SAVE, path) >= 0);
    return 1;
}

/* host.line_editor_end() — gives the terminal back as it was (the REPL's end). */
static int host_line_editor_end(lua_State *L)
{
    (void)L;
    if (el)
        el_end(el);
    if (hist)
        history_end(hist);
    el = NULL;
    hist = NULL;
    name_list_free(&completion_names);
    name_list_free(&completion_aliases);
    return 0;
}

/* ---- Ctrl-C while the REPL evaluates ---------------------------------------------
 *
 * While the REPL runs (host.catch_interrupts(true)), SIGINT is ours rather than
 * libuv's, so it never asks the run to stop. The handler counts the interrupt and, like
 * lua.c's, sets a hook on the coroutine evaluating the operator's input
 * (host.interrupt_target()): at its next instruction, call or return it raises
 * {kind = "interrupted"}. A coroutine waiting for pool work gets the error when that
 * work comes back; the REPL does not wait for it (host.interrupts()). */
static lua_State *volatile interrupt_target;
static volatile sig_atomic_t interrupt_count;
static struct sigaction saved_sigint;
static int catching_interrupts;

static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    rtb_lua_error_raise(L, "interrupted", "interrupted (Ctrl-C)");
}

static void on_sigint(int signum)
{
    (void)signum;
    interrupt_count++;
    lua_State *target = interrupt_target;
    if (target) /* lua_sethook may be called from a signal handler */
        lua_sethook(target, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* host.catch_interrupts(on) — SIGINT to the REPL (true) or back to the run (false). */
static int host_catch_interrupts(lua_State *L)
{
    int on = lua_toboolean(L, 1);
    if (on && !catching_interrupts) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        if (sigaction(SIGINT, &sa, &saved_sigint) != 0)
            return rtb_lua_error_raise(L, "io", "cannot catch SIGINT: %s", strerror(errno));
        catching_interrupts = 1;
    } else if (!on && catching_interrupts) {
        sigaction(SIGINT, &saved_sigint, NULL);
        catching_interrupts = 0;
        interrupt_target = NULL;
    }
    return 0;
}

/* host.interrupt_target(on) — the calling coroutine is (true) or is no longer (false)
 * the one a Ctrl-C interrupts. */
static int host_interrupt_target(lua_State *L)
{
    if (lua_toboolean(L, 1)) {
        interrupt_target = L;
    } else if (interrupt_target == L) {
        interrupt_target = NULL;
        lua_sethook(L, NULL, 0, 0); /* an interrupt that came too late to matter */
    }
    return 0;
}

/* host.interrupts() — Ctrl-Cs since the last call. */
static int host_interrupts(lua_State *L)
{
    lua_pushinteger(L, interrupt_count);
    interrupt_count = 0;
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

/* host.info() — {scripts_dir, command, config_path, version, state_dir (installed only)}. */
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
                                     {"set_completions", host_set_completions},
                                     {"line_editor_end", host_line_editor_end},
                                     {"catch_interrupts", host_catch_interrupts},
                                     {"interrupt_target", host_interrupt_target},
                                     {"interrupts", host_interrupts},
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
