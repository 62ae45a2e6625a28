/* rtbackup: the executable. Modelled on lua.c: parse the global options, load the
 * environments, create the Lua state, run scripts/cli/<command>.lua as the main task,
 * report, exit. Everything a command does is in its Lua file. */
#include <ctype.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config/config.h"
#include "config_lua.h"
#include "host.h"
#include "log/log.h"
#include "loop/loop.h"
#include "modules.h"
#include "task.h"
#include "util.h"

/* Exit codes shared by every command (commands add their own above 2). */
enum { EXIT_OK = 0, EXIT_FAILURE_ = 1, EXIT_USAGE = 2 };

static void usage(FILE *out, const char *scripts_dir)
{
    fprintf(out,
            "usage: rtbackup [global options] COMMAND [args]\n"
            "\n"
            "Backs up DICOM (ARIA, MIM) and Mosaiq treatment data into an Orthanc archive\n"
            "and proves every instance arrived. `rtbackup COMMAND --help` for a command.\n"
            "\n"
            "global options:\n"
            "  -c, --config PATH       environments: a TOML file or a directory of them\n"
            "                          (default /etc/rtbackup, or <prefix>/etc/rtbackup when\n"
            "                          installed under a prefix other than /usr or /usr/local;\n"
            "                          ./environments in a build tree)\n"
            "  -l, --log-level LEVEL   debug, info, warn or error (default: $LOG_LEVEL or info)\n"
            "      --log-format FMT    text or json (JSON lines on stderr)\n"
            "  -V, --version           print the version and exit\n"
            "  -h, --help              print this help and exit\n"
            "\n"
            "commands:\n");
    if (scripts_dir)
        rtb_host_print_commands(scripts_dir, out);
    fprintf(out, "\n"
                 "exit codes: 0 success, 1 failure, 2 usage or configuration error,\n"
                 "            130/143 stopped by SIGINT/SIGTERM; commands document others.\n");
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Where an installed rtbackup keeps its environments and its state. Under /usr or
 * /usr/local (a package, `cmake --install`) that is /etc/rtbackup and /var/lib/rtbackup,
 * as clinic IT expects; under any other prefix (/opt/rtbackup, a test's temporary
 * prefix) <prefix>/etc/rtbackup and <prefix>/var/lib/rtbackup, so that the install is
 * self-contained and needs no root. The same rule creates them in CMakeLists.txt. Both
 * are empty strings for a binary running from its build tree. */
static char installed_config_dir[PATH_MAX + 32];
static char installed_state_dir[PATH_MAX + 32];

static void find_installed_dirs(void)
{
    char exe[PATH_MAX], prefix[PATH_MAX], probe[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    snprintf(slash, sizeof exe - (size_t)(slash - exe), "/..");
    if (!realpath(exe, prefix))
        return;
    /* Installed means the scripts are where the install puts them. */
    snprintf(probe, sizeof probe, "%s/%s", prefix, RTBACKUP_SCRIPTS_RELATIVE);
    if (!is_dir(probe))
        return;
    const char *root = strcmp(prefix, "/usr") == 0 || strcmp(prefix, "/usr/local") == 0 ? "" : prefix;
    snprintf(installed_config_dir, sizeof installed_config_dir, "%s/etc/rtbackup", root);
    snprintf(installed_state_dir, sizeof installed_state_dir, "%s/var/lib/rtbackup", root);
}

/* RTBACKUP_SCRIPTS, then the installed layout next to the binary, then the source
 * tree this binary was built from. */
static const char *find_scripts_dir(char *buf, size_t size)
{
    const char *env = getenv("RTBACKUP_SCRIPTS");
    if (env && *env)
        return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            int len = snprintf(buf, size, "%s/../%s", exe, RTBACKUP_SCRIPTS_RELATIVE);
            if (len > 0 && (size_t)len < size && is_dir(buf))
                return buf;
        }
    }
    if (is_dir(RTBACKUP_SOURCE_SCRIPTS))
        return RTBACKUP_SOURCE_SCRIPTS;
    return RTBACKUP_INSTALLED_SCRIPTS;
}

/* --config, else the installed binary's config directory (never ./environments: the
 * working directory of an installed rtbackup must not choose its environments), else,
 * in a build tree, ./environments and then /etc/rtbackup. */
static const char *find_config_path(const char *option)
{
    if (option)
        return option;
    if (*installed_config_dir)
        return installed_config_dir;
    if (exists("environments"))
        return "environments";
    return "/etc/rtbackup";
}

static int valid_command_name(const char *name)
{
    if (!*name)
        return 0;
    for (const char *p = name; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' || *p == '_'))
            return 0;
    return name[0] != '_';
}

static void set_package_path(lua_State *L, const char *scripts_dir)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lib/?.lua;%s/lib/?/init.lua;%s/?.lua;%s", scripts_dir, scripts_dir,
                    scripts_dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* Reports the error at the top of the stack; returns the exit code it deserves. */
static int report_error(lua_State *L, const char *command)
{
    int code = EXIT_FAILURE_;
    const char *traceback = NULL;
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, -1, "kind");
        const char *kind = lua_tostring(L, -1);
        if (kind && (strcmp(kind, "usage") == 0 || strcmp(kind, "config") == 0))
            code = EXIT_USAGE;
        lua_pop(L, 1);
        if (lua_getfield(L, -1, "exit_code") == LUA_TNUMBER)
            code = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, -1, "traceback");
        traceback = lua_tostring(L, -1);
        lua_insert(L, -2);
    }
    const char *msg = luaL_tolstring(L, -1, NULL);
    fprintf(stderr, "rtbackup %s: %s\n", command, msg);
    /* Errors raised on purpose (tables) are sentences for the operator; the traceback
     * matters to whoever debugs, so it appears at debug level. String errors are bugs
     * in a script and always show where they happened (the message contains it). */
    if (traceback && rtb_log_enabled(RTB_LOG_DEBUG))
        fprintf(stderr, "%s\n", traceback);
    return code;
}

/* Maps what the command's chunk returned to an exit code, like lua.c's `os.exit`:
 * nothing or true -> 0, false -> 1, an integer -> itself. */
static int exit_code_of(lua_State *L, int nresults)
{
    if (nresults == 0)
        return EXIT_OK;
    int idx = lua_gettop(L) - nresults + 1;
    if (lua_isinteger(L, idx))
        return (int)lua_tointeger(L, idx);
    if (lua_isboolean(L, idx))
        return lua_toboolean(L, idx) ? EXIT_OK : EXIT_FAILURE_;
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"config", required_argument, NULL, 'c'},
                                            {"log-level", required_argument, NULL, 'l'},
                                            {"log-format", required_argument, NULL, 'F'},
                                            {"version", no_argument, NULL, 'V'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    char scripts_buf[PATH_MAX];
    find_installed_dirs();
    const char *scripts_dir = find_scripts_dir(scripts_buf, sizeof scripts_buf);
    const char *config_option = NULL;
    rtb_log_level level = RTB_LOG_INFO;
    rtb_log_format format = RTB_LOG_TEXT;
    const char *env_level = getenv("LOG_LEVEL");
    if (env_level && *env_level && rtb_log_level_parse(env_level, &level) < 0) {
        fprintf(stderr, "rtbackup: LOG_LEVEL=%s is not a level (debug, info, warn, error)\n",
                env_level);
        return EXIT_USAGE;
    }

    int opt;
    /* '+': stop at the command; everything after it belongs to the command. */
    while ((opt = getopt_long(argc, argv, "+c:l:Vh", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_option = optarg;
            break;
        case 'l':
            if (rtb_log_level_parse(optarg, &level) < 0) {
                fprintf(stderr, "rtbackup: --log-level %s: expected debug, info, warn or error\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 'F':
            if (rtb_log_format_parse(optarg, &format) < 0) {
                fprintf(stderr, "rtbackup: --log-format %s: expected text or json\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'V':
            printf("rtbackup %s\n", RTBACKUP_VERSION);
            return EXIT_OK;
        case 'h':
            usage(stdout, scripts_dir);
            return EXIT_OK;
        default:
            usage(stderr, scripts_dir);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr, scripts_dir);
        return EXIT_USAGE;
    }
    rtb_log_configure(level, format, stderr);
    /* Everything rtbackup creates may name patients (journals, summaries, received
     * instances, records, the audit log): private from the first moment, whatever the
     * umask cron or a shell hands us. Files meant for others (metrics for
     * node_exporter) get their mode explicitly. */
    umask(077);

    const char *command = argv[optind];
    char cli_path[PATH_MAX + 64];
    snprintf(cli_path, sizeof cli_path, "%s/cli/%s.lua", scripts_dir, command);
    if (!valid_command_name(command) || !exists(cli_path)) {
        fprintf(stderr, "rtbackup: unknown command '%s'\n\ncommands:\n", command);
        rtb_host_print_commands(scripts_dir, stderr);
        return EXIT_USAGE;
    }

    const char *config_path = find_config_path(config_option);
    rtb_config *cfg = NULL;
    rtb_cfg_problems load_problems = {0};
    rtb_config_load(config_path, &cfg, &load_problems);

    rtb_loop_init();
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "rtbackup: cannot create the Lua state (out of memory)\n");
        return EXIT_FAILURE_;
    }
    luaL_openlibs(L);
    set_package_path(L, scripts_dir);
    rtb_preload_modules(L);
    rtb_lua_config_install(L, cfg, &load_problems, config_path);
    rtb_host_info info = {scripts_dir, command, config_path, installed_state_dir};
    rtb_host_install(L, &info);

    /* arg[0] is the command, arg[1..] its arguments, as `lua script args` would.
     * Every argument is also pushed as a vararg of the chunk, so the stack must grow
     * by that many slots first: a shell glob easily passes thousands, and pushing past
     * the stack's end corrupts the heap. Room for the chunk and its arguments is
     * reserved once, before anything is pushed (lua_checkstack does not raise). */
    int nargs = argc - optind - 1;
    if (!lua_checkstack(L, nargs + LUA_MINSTACK)) {
        fprintf(stderr, "rtbackup %s: too many arguments (%d)\n", command, nargs);
        lua_close(L);
        rtb_loop_close();
        return EXIT_USAGE;
    }
    lua_createtable(L, nargs, 1);
    for (int i = optind; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - optind);
    }
    lua_setglobal(L, "arg");

    int code;
    if (luaL_loadfile(L, cli_path) != LUA_OK) {
        code = report_error(L, command);
    } else {
        for (int i = optind + 1; i < argc; i++)
            lua_pushstring(L, argv[i]);
        int nresults = 0;
        if (rtb_task_run_main(L, nargs, &nresults) == LUA_OK)
            code = exit_code_of(L, nresults);
        else
            code = report_error(L, command);
    }
    if (rtb_task_stop_signal())
        code = 128 + rtb_task_stop_signal();
    if (rtb_task_abandoned() > 0) {
        /* Tasks that did not stop after the script failed may still be inside the
         * state or the thread pool: closing either under them would crash. The
         * failure is reported; the journal's transactions and the files' atomic
         * renames make an exit here as safe as a kill. */
        fflush(stdout);
        fflush(stderr);
        _exit(code);
    }
    lua_close(L);
    rtb_loop_close();
    fflush(stdout);
    return code;
}
