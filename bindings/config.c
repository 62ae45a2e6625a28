/* rtbackup.config.core: environments as Lua tables, secrets as opaque values.
 * (scripts/lib/rtbackup/config.lua adds the settings schema's checks on top.)
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

/* The setting names a peer may carry, from the Lua table at idx
 * ({dicom = {...}, mosaiq = {...}, target = {...}}, or nil), as NULL-terminated C
 * lists kept alive by a userdata pushed on the stack (popped by the caller's return). */
typedef struct {
    rtb_cfg_setting_names names;
    const char **lists[3];
} names_box;

static int names_box_gc(lua_State *L)
{
    names_box *box = lua_touserdata(L, 1);
    for (int i = 0; i < 3; i++)
        free(box->lists[i]);
    return 0;
}

static const rtb_cfg_setting_names *check_names(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    luaL_checktype(L, idx, LUA_TTABLE);
    names_box *box = lua_newuserdatauv(L, sizeof *box, 1);
    memset(box, 0, sizeof *box);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, names_box_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, idx);
    lua_setiuservalue(L, -2, 1); /* the strings stay alive as long as the box */
    static const char *const kinds[] = {"dicom", "mosaiq", "target"};
    for (int k = 0; k < 3; k++) {
        lua_getfield(L, idx, kinds[k]);
        if (lua_type(L, -1) == LUA_TTABLE) {
            size_t n = lua_rawlen(L, -1);
            box->lists[k] = calloc(n + 1, sizeof(char *));
            if (!box->lists[k])
                luaL_error(L, "out of memory");
            for (size_t i = 0; i < n; i++) {
                lua_rawgeti(L, -1, (lua_Integer)i + 1);
                box->lists[k][i] = lua_tostring(L, -1); /* anchored by the table */
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    box->names.dicom = box->lists[0];
    box->names.mosaiq = box->lists[1];
    box->names.target = box->lists[2];
    return &box->names;
}

static void push_not_defined(lua_State *L, config_state *st, const char *env)
{
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
}

/* config.core.problems([env [, names]]) — every structural problem (loading first,
 * then validation, and for one named environment also secret resolution) as a list
 * of tables. A file that does not parse is reported as such, never hidden behind
 * "environment ENV is not defined". */
static int config_problems(lua_State *L)
{
    config_state *st = get_state(L);
    const char *env = luaL_optstring(L, 1, NULL);
    const rtb_cfg_setting_names *names = check_names(L, 2);
    lua_newtable(L);
    int list = lua_gettop(L);
    append_problems(L, list, &st->load_problems);
    if (!st->cfg)
        return 1;
    if (env && !rtb_config_env(st->cfg, env)) {
        if (count_errors(&st->load_problems) > 0)
            return 1; /* the parse errors say why it is not there */
        push_not_defined(L, st, env);
        rtb_lua_error_push(L, "config", lua_tostring(L, -1));
        return lua_error(L);
    }
    rtb_cfg_problems found = {0};
    rtb_config_validate(st->cfg, env, names, &found);
    if (env) {
        rtb_cfg_node *resolved = NULL;
        if (rtb_config_resolve(st->cfg, env, process_getenv, NULL, &resolved, &found) == 0)
            rtb_cfg_node_free(resolved);
    }
    append_problems(L, list, &found);
    rtb_cfg_problems_free(&found);
    return 1;
}

/* config.core.load(env [, names]) — the environment as a table, secrets resolved
 * (as opaque secret values), and the list of its structural problems. The table is
 * nil when it cannot be used (load errors, validation errors, a missing secret):
 * the caller raises, once it has added the settings' own problems. A missing
 * environment raises a config error at once. */
static int config_load(lua_State *L)
{
    config_state *st = get_state(L);
    const char *env = luaL_checkstring(L, 1);
    const rtb_cfg_setting_names *names = check_names(L, 2);
    if (count_errors(&st->load_problems) > 0) {
        lua_pushnil(L);
        lua_newtable(L);
        append_problems(L, lua_gettop(L), &st->load_problems);
        return 2;
    }
    if (!st->cfg || !rtb_config_env(st->cfg, env)) {
        push_not_defined(L, st, env);
        rtb_lua_error_push(L, "config", lua_tostring(L, -1));
        return lua_error(L);
    }
    rtb_cfg_problems found = {0};
    rtb_cfg_node *resolved = NULL;
    size_t errors = rtb_config_validate(st->cfg, env, names, &found);
    int failed = rtb_config_resolve(st->cfg, env, process_getenv, NULL, &resolved, &found) < 0 ||
                 errors > 0;
    if (failed) {
        lua_pushnil(L);
    } else {
        push_node(L, resolved);
        if (lua_getfield(L, -1, "name") == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushstring(L, env);
            lua_setfield(L, -2, "name");
        } else {
            lua_pop(L, 1);
        }
    }
    rtb_cfg_node_free(resolved);
    lua_newtable(L);
    append_problems(L, lua_gettop(L), &found);
    rtb_cfg_problems_free(&found);
    return 2;
}

/* config.core.raw(env) — the environment as written, secrets NOT resolved
 * (placeholders stay text), for checks that must not need the secrets; nil when it
 * is not defined. */
static int config_raw(lua_State *L)
{
    config_state *st = get_state(L);
    const char *env = luaL_checkstring(L, 1);
    const rtb_cfg_node *node = st->cfg ? rtb_config_env(st->cfg, env) : NULL;
    if (!node)
        return 0;
    push_node(L, node);
    lua_pushstring(L, env);
    lua_setfield(L, -2, "name");
    return 1;
}

/* config.core.locate(env, key) — file and line of a value ("settings.window"), or nil. */
static int config_locate(lua_State *L)
{
    config_state *st = get_state(L);
    const char *env = luaL_checkstring(L, 1);
    const char *key = luaL_checkstring(L, 2);
    const char *file = NULL;
    int line = 0;
    if (!st->cfg || rtb_config_locate(st->cfg, env, key, &file, &line) < 0)
        return 0;
    lua_pushstring(L, file ? file : "");
    lua_pushinteger(L, line);
    return 2;
}

/* config.core.format(problem) — "file:line: ENV: key: message". */
static int config_format(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    rtb_cfg_problem p = {0};
    lua_getfield(L, 1, "severity");
    p.severity = strcmp(luaL_optstring(L, -1, "error"), "warning") == 0 ? RTB_CFG_WARNING : RTB_CFG_ERROR;
    lua_getfield(L, 1, "file");
    p.file = (char *)lua_tostring(L, -1);
    lua_getfield(L, 1, "line");
    p.line = (int)lua_tointeger(L, -1);
    lua_getfield(L, 1, "env");
    p.env = (char *)lua_tostring(L, -1);
    lua_getfield(L, 1, "key");
    p.key = (char *)lua_tostring(L, -1);
    lua_getfield(L, 1, "message");
    p.message = (char *)luaL_optstring(L, -1, "");
    char text[1024];
    rtb_cfg_problem_format(&p, text, sizeof text);
    lua_pushstring(L, text);
    return 1;
}

int luaopen_rtbackup_config(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"path", config_path},
                                     {"environments", config_environments},
                                     {"problems", config_problems},
                                     {"load", config_load},
                                     {"raw", config_raw},
                                     {"locate", config_locate},
                                     {"format", config_format},
                                     {"reveal", config_reveal},
                                     {"is_secret", config_is_secret},
                                     {NULL, NULL}};
    ensure_metatables(L);
    luaL_newlib(L, funcs);
    lua_pushstring(L, MASK);
    lua_setfield(L, -2, "MASK");
    return 1;
}
