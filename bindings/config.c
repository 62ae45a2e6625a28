/* rtbackup.config: environments as Lua tables, secrets as opaque values.
 *
 * A resolved secret (a placeholder or *_env_var value) becomes a userdata whose
 * __tostring is "********": printing the environment, logging it or putting it in an
 * error message can never show the value. Only rtb_lua_secret_value() (for bindings
 * such as ODBC) and config.reveal() read it. */
#include <stdlib.h>
#include <string.h>

#include "config_lua.h"
#include "util.h"

#define STATE_MT "rtbackup.config.state"
#define SECRET_MT "rtbackup.secret"
#define MASK "********"

typedef struct {
    rtb_config *cfg;
    rtb_cfg_problems load_problems;
    char *path;
} config_state;

typedef struct {
    size_t len;
    char value[];
} secret;

/* ---- secrets ------------------------------------------------------------------ */

static void push_secret(lua_State *L, const char *value)
{
    size_t len = strlen(value);
    secret *s = lua_newuserdatauv(L, sizeof *s + len + 1, 0);
    s->len = len;
    memcpy(s->value, value, len + 1);
    luaL_setmetatable(L, SECRET_MT);
}

const char *rtb_lua_secret_value(lua_State *L, int idx, size_t *len)
{
    secret *s = luaL_testudata(L, idx, SECRET_MT);
    if (!s)
        return NULL;
    if (len)
        *len = s->len;
    return s->value;
}

static int secret_tostring(lua_State *L)
{
    lua_pushstring(L, MASK);
    return 1;
}

static int secret_gc(lua_State *L)
{
    secret *s = luaL_checkudata(L, 1, SECRET_MT);
    explicit_bzero(s->value, s->len);
    return 0;
}

/* config.reveal(secret) — the plain value. For the rare script that must pass a secret
 * on itself; never log what it returns. Plain strings pass through. */
static int config_reveal(lua_State *L)
{
    size_t len;
    const char *v = rtb_lua_secret_value(L, 1, &len);
    if (v)
        lua_pushlstring(L, v, len);
    else
        lua_pushstring(L, luaL_checkstring(L, 1));
    return 1;
}

static int config_is_secret(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, SECRET_MT) != NULL);
    return 1;
}

/* ---- state ---------------------------------------------------------------------- */

static config_state *get_state(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, STATE_MT ".instance");
    config_state *st = luaL_testudata(L, -1, STATE_MT);
    lua_pop(L, 1);
    if (!st)
        luaL_error(L, "no configuration was loaded by the host");
    return st;
}

static int state_gc(lua_State *L)
{
    config_state *st = luaL_checkudata(L, 1, STATE_MT);
    rtb_config_free(st->cfg);
    rtb_cfg_problems_free(&st->load_problems);
    free(st->path);
    st->cfg = NULL;
    st->path = NULL;
    return 0;
}

static void ensure_metatables(lua_State *L)
{
    if (luaL_newmetatable(L, SECRET_MT)) {
        lua_pushcfunction(L, secret_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, secret_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushstring(L, "secret");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, STATE_MT)) {
        lua_pushcfunction(L, state_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}

void rtb_lua_config_install(lua_State *L, rtb_config *cfg, rtb_cfg_problems *load_problems,
                            const char *path)
{
    ensure_metatables(L);
    config_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    luaL_setmetatable(L, STATE_MT);
    st->cfg = cfg;
    if (load_problems) {
        st->load_problems = *load_problems;
        memset(load_problems, 0, sizeof *load_problems);
    }
    st->path = strdup(path ? path : "");
    lua_setfield(L, LUA_REGISTRYINDEX, STATE_MT ".instance");
}

/* ---- conversions ------------------------------------------------------------- */

static void push_node(lua_State *L, const rtb_cfg_node *node)
{
    luaL_checkstack(L, 4, "configuration nested too deeply");
    switch (node->kind) {
    case RTB_CFG_TABLE:
        lua_createtable(L, 0, (int)node->n_children);
        for (size_t i = 0; i < node->n_children; i++) {
            push_node(L, &node->children[i]);
            lua_setfield(L, -2, node->children[i].key);
        }
        break;
    case RTB_CFG_ARRAY:
        lua_createtable(L, (int)node->n_children, 0);
        for (size_t i = 0; i < node->n_children; i++) {
            push_node(L, &node->children[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case RTB_CFG_STRING:
    case RTB_CFG_DATETIME:
        if (node->secret)
            push_secret(L, node->string);
        else
            lua_pushstring(L, node->string);
        break;
    case RTB_CFG_INTEGER:
        lua_pushinteger(L, node->integer);
        break;
    case RTB_CFG_FLOAT:
        lua_pushnumber(L, node->number);
        break;
    case RTB_CFG_BOOLEAN:
        lua_pushboolean(L, node->boolean);
        break;
    }
}

static void push_problem(lua_State *L, const rtb_cfg_problem *p)
{
    char text[1024];
    rtb_cfg_problem_format(p, text, sizeof text);
    lua_createtable(L, 0, 7);
    rtb_lua_set_string(L, "severity", p->severity == RTB_CFG_ERROR ? "error" : "warning");
    if (p->file)
        rtb_lua_set_string(L, "file", p->file);
    if (p->line)
        rtb_lua_set_integer(L, "line", p->line);
    if (p->env)
        rtb_lua_set_string(L, "env", p->env);
    if (p->key)
        rtb_lua_set_string(L, "key", p->key);
    rtb_lua_set_string(L, "message", p->message);
    rtb_lua_set_string(L, "text", text);
}

static void append_problems(lua_State *L, int list, const rtb_cfg_problems *problems)
{
    for (size_t i = 0; i < problems->count; i++) {
        push_problem(L, &problems->items[i]);
        lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
    }
}

/* Pushes a config error whose message lists every error in `problems`, with the
 * problems themselves as a list in err.problems. */
static void push_problems_error(lua_State *L, const char *headline,
                                const rtb_cfg_problems *problems)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, headline);
    for (size_t i = 0; i < problems->count; i++) {
        if (problems->items[i].severity != RTB_CFG_ERROR)
            continue;
        char text[1024];
        rtb_cfg_problem_format(&problems->items[i], text, sizeof text);
        luaL_addstring(&b, "\n  ");
        luaL_addstring(&b, text);
    }
    luaL_pushresult(&b);
    rtb_lua_error_push(L, "config", lua_tostring(L, -1));
    lua_remove(L, -2);
    lua_newtable(L);
    append_problems(L, lua_gettop(L), problems);
    lua_setfield(L, -2, "problems");
}

static const char *process_getenv(const char *name, void *ud)
{
    return getenv(name);
}

static size_t count_errors(const rtb_cfg_problems *problems)
{
    size_t n = 0;
    for (size_t i = 0; i < problems->count; i++)
        n += problems->items[i].severity == RTB_CFG_ERROR;
    return n;
}

/* ---- the module -------------------------------------------------------------- */

/* config.path() — the file or directory that was loaded. */
static int config_path(lua_State *L)
{
    lua_pushstring(L, get_state(L)->path);
    return 1;
}

/* config.environments() — names in load order. */
static int config_environments(lua_State *L)
{
    config_state *st = get_state(L);
    size_t n = st->cfg ? rtb_config_env_count(st->cfg) : 0;
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, rtb_config_env_name(st->cfg, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* config.problems([env]) — every problem (loading, validation, and for one named
 * environment also secret resolution) as a list of tables. */
static int config_problems(lua_State *L)
{
    config_state *st = get_state(L);
    const char *env = luaL_optstring(L, 1, NULL);
    lua_newtable(L);
    int list = lua_gettop(L);
    append_problems(L, list, &st->load_problems);
    if (!st->cfg)
        return 1;
    rtb_cfg_problems found = {0};
    if (env && !rtb_config_env(st->cfg, env)) {
        lua_pushfstring(L, "environment %s is not defined in %s", env, st->path);
        rtb_lua_error_push(L, "config", lua_tostring(L, -1));
        return lua_error(L);
    }
    rtb_config_validate(st->cfg, env, &found);
    if (env) {
        rtb_cfg_node *resolved = NULL;
        if (rtb_config_resolve(st->cfg, env, process_getenv, NULL, &resolved, &found) == 0)
            rtb_cfg_node_free(resolved);
    }
    append_problems(L, list, &found);
    rtb_cfg_problems_free(&found);
    return 1;
}

/* config.load(env) — the environment as a table, secrets resolved (as opaque secret
 * values). Raises a config error listing every problem when it is not usable. */
static int config_load(lua_State *L)
{
    config_state *st = get_state(L);
    const char *env = luaL_checkstring(L, 1);
    if (count_errors(&st->load_problems) > 0) {
        push_problems_error(L, "the configuration cannot be loaded:", &st->load_problems);
        return lua_error(L);
    }
    if (!st->cfg || !rtb_config_env(st->cfg, env)) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        lua_pushfstring(L, "environment %s is not defined in %s", env, st->path);
        luaL_addvalue(&b);
        size_t n = st->cfg ? rtb_config_env_count(st->cfg) : 0;
        for (size_t i = 0; i < n; i++) {
            luaL_addstring(&b, i == 0 ? " (defined: " : ", ");
            luaL_addstring(&b, rtb_config_env_name(st->cfg, i));
        }
        if (n)
            luaL_addchar(&b, ')');
        luaL_pushresult(&b);
        rtb_lua_error_push(L, "config", lua_tostring(L, -1));
        return lua_error(L);
    }
    rtb_cfg_problems found = {0};
    rtb_cfg_node *resolved = NULL;
    size_t errors = rtb_config_validate(st->cfg, env, &found);
    if (rtb_config_resolve(st->cfg, env, process_getenv, NULL, &resolved, &found) < 0 ||
        errors > 0) {
        rtb_cfg_node_free(resolved);
        lua_pushfstring(L, "environment %s in %s has problems:", env,
                        rtb_config_env_file(st->cfg, env));
        push_problems_error(L, lua_tostring(L, -1), &found);
        rtb_cfg_problems_free(&found);
        return lua_error(L);
    }
    rtb_cfg_problems_free(&found);
    push_node(L, resolved);
    rtb_cfg_node_free(resolved);
    if (lua_getfield(L, -1, "name") == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushstring(L, env);
        lua_setfield(L, -2, "name");
    } else {
        lua_pop(L, 1);
    }
    return 1;
}

int luaopen_rtbackup_config(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"path", config_path},
                                     {"environments", config_environments},
                                     {"problems", config_problems},
                                     {"load", config_load},
                                     {"reveal", config_reveal},
                                     {"is_secret", config_is_secret},
                                     {NULL, NULL}};
    ensure_metatables(L);
    luaL_newlib(L, funcs);
    lua_pushstring(L, MASK);
    lua_setfield(L, -2, "MASK");
    return 1;
}
