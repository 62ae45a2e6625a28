/* Fuzz target: the environments loader, on one TOML text.
 *
 * rtb_config_load (toml++ and our tree), rtb_config_validate of every environment and
 * of all at once, rtb_config_resolve with secrets both present and missing, the
 * problems formatted as the operator reads them; then the Lua binding over the same
 * configuration: config.load and config.problems of every environment, which turn the
 * tree and the problems into Lua values. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config/config.h"
#include "config_lua.h"

static char dir[] = "/tmp/rtb-fuzz-config-XXXXXX";
static char path[sizeof dir + 16];

/* Secrets: a name of even length is set, of odd length missing, so both paths run. */
static const char *fake_getenv(const char *name, void *ud)
{
    return strlen(name) % 2 == 0 ? "fuzz-secret-value" : NULL;
}

static void format_all(const rtb_cfg_problems *problems)
{
    for (size_t i = 0; i < problems->count; i++) {
        char text[1024], tiny[8];
        rtb_cfg_problem_format(&problems->items[i], text, sizeof text);
        rtb_cfg_problem_format(&problems->items[i], tiny, sizeof tiny); /* truncates */
    }
}

static void remove_dir(void)
{
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(path, sizeof path, "%s/env.toml", dir);
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();

    rtb_config *cfg = NULL;
    rtb_cfg_problems problems = {0};
    rtb_config_load(path, &cfg, &problems);
    size_t n = rtb_config_env_count(cfg);
    rtb_cfg_problems found = {0};
    for (size_t i = 0; i < n; i++) {
        const char *name = rtb_config_env_name(cfg, i);
        rtb_config_env(cfg, name);
        rtb_config_env_file(cfg, name);
        rtb_config_validate(cfg, name, NULL, &found);
        rtb_cfg_node *resolved = NULL;
        if (rtb_config_resolve(cfg, name, fake_getenv, NULL, &resolved, &found) == 0)
            rtb_cfg_node_free(resolved);
    }
    rtb_config_validate(cfg, NULL, NULL, &found);
    format_all(&problems);
    format_all(&found);
    rtb_cfg_problems_free(&found);

    /* The binding owns cfg and the load problems from here; lua_close frees them. */
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    rtb_lua_config_install(L, cfg, &problems, path);
    luaL_requiref(L, "rtbackup.config", luaopen_rtbackup_config, 0);
    int config = lua_gettop(L);
    for (size_t i = 0; i < n; i++) {
        static const char *const functions[] = {"load", "problems"};
        for (int k = 0; k < 2; k++) {
            lua_getfield(L, config, functions[k]);
            lua_pushstring(L, rtb_config_env_name(cfg, i));
            lua_pcall(L, 1, 0, 0); /* a raised config error is an answer, not a bug */
            lua_settop(L, config);
        }
    }
    lua_getfield(L, config, "problems");
    lua_pcall(L, 0, 0, 0);
    lua_close(L);
    rtb_cfg_problems_free(&problems); /* emptied by the install; harmless */
    return 0;
}
