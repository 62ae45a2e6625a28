/* rtbackup.journal.core: the run journal and run locks over core/journal.
 *
 * scripts/lib/rtbackup/journal.lua wraps this: it turns tables into JSON, accepts
 * one key or many, and gives lock errors their exit code. Here every string argument
 * must already be a string (the wrapper converts), so the C pointers taken from the
 * argument tables stay valid for the whole call.
 *
 * Why SQLite runs on the loop thread (not through rtb_task_await): every call is one
 * short transaction on a local file — a few hundred microseconds of SQL and one fsync
 * of the WAL at commit, milliseconds even for a batch of thousands of units. Workflows
 * write once per batch or per series, never per instance, and the DICOM work they
 * wait on keeps running on pool threads meanwhile. Staying on the loop thread also
 * makes each call atomic with respect to the other tasks (no two transactions of one
 * connection can interleave), which a pooled version would need a mutex for. The one
 * long wait would be another writer on the same file; the run lock excludes other
 * runs, so only an operator's write could cause it, bounded by the busy timeout. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal/journal.h"
#include "util.h"

#define JOURNAL_MT "rtbackup.journal.handle"
#define LOCK_MT "rtbackup.journal.lock"

typedef struct {
    rtb_journal *j;
} journal_ud;

typedef struct {
    rtb_journal_lock *lock;
} lock_ud;

/* ---- errors and arguments ------------------------------------------------------------ */

static int raise_journal_error(lua_State *L, const rtb_journal_error *err, const char *path)
{
    rtb_lua_error_push(L, rtb_journal_error_kind_name(err->kind), err->message);
    if (path)
        rtb_lua_set_string(L, "path", path);
    if (err->kind == RTB_JOURNAL_E_LOCKED) {
        rtb_lua_set_integer(L, "holder_pid", err->holder_pid);
        if (err->holder_started[0])
            rtb_lua_set_string(L, "holder_started", err->holder_started);
    }
    return lua_error(L);
}

static rtb_journal *check_journal(lua_State *L)
{
    journal_ud *u = luaL_checkudata(L, 1, JOURNAL_MT);
    if (!u->j)
        rtb_lua_error_raise(L, "invalid", "the journal is closed");
    return u->j;
}

/* Pushes t[key] without metamethods (t is an absolute index) and returns its type.
 * The C pointers taken from argument tables are valid because the table holds the
 * string; a value made up by an __index function would be held by nothing. */
static int raw_field(lua_State *L, int t, const char *key)
{
    lua_pushstring(L, key);
    return lua_rawget(L, t);
}

/* t[key] as a string, NULL when absent; anything else is a caller error. */
static const char *opt_string_field(lua_State *L, int t, const char *key)
{
    int type = raw_field(L, t, key);
    const char *s = type == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the table still holds the string, so s stays valid */
    if (type != LUA_TSTRING && type != LUA_TNIL)
        rtb_lua_error_raise(L, "invalid", "'%s' must be a string", key);
    return s;
}

/* t[key] as an integer; *has = 0 when absent. */
static long long opt_int_field(lua_State *L, int t, const char *key, int *has)
{
    int type = raw_field(L, t, key);
    int isint = 0;
    long long v = (long long)lua_tointegerx(L, -1, &isint);
    lua_pop(L, 1);
    if (type != LUA_TNIL && !isint)
        rtb_lua_error_raise(L, "invalid", "'%s' must be an integer", key);
    *has = type != LUA_TNIL;
    return v;
}

static int bool_field(lua_State *L, int t, const char *key)
{
    raw_field(L, t, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static rtb_unit_state check_state(lua_State *L, const char *name)
{
    if (!name)
        return RTB_UNIT_KEEP;
    rtb_unit_state s = rtb_unit_state_parse(name);
    if (s == RTB_UNIT_KEEP)
        rtb_lua_error_raise(L, "invalid",
                            "unknown state '%s' (expected queued, moved, verified or failed)",
                            name);
    return s;
}

/* A list of strings at idx as a C array living in a userdata pushed on the stack, so
 * Lua frees it even when a later check raises. */
static const char **check_keys(lua_State *L, int idx, size_t *n)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    *n = lua_rawlen(L, idx);
    const char **keys = lua_newuserdatauv(L, (*n ? *n : 1) * sizeof *keys, 0);
    for (size_t i = 0; i < *n; i++) {
        if (lua_rawgeti(L, idx, (lua_Integer)i + 1) != LUA_TSTRING)
            rtb_lua_error_raise(L, "invalid", "key %zu must be a string", i + 1);
        keys[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    return keys;
}

/* ---- open / close ----------------------------------------------------------------- */

/* core.open(path [, {busy_timeout_ms =}]) -> handle */
static int l_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    rtb_journal_options opts = {0};
    if (lua_istable(L, 2)) {
        int has;
        opts.busy_timeout_ms = (int)opt_int_field(L, 2, "busy_timeout_ms", &has);
    }
    journal_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->j = NULL;
    luaL_setmetatable(L, JOURNAL_MT);
    rtb_journal_error err;
    if (rtb_journal_open(path, &opts, &u->j, &err) != 0)
        return raise_journal_error(L, &err, path);
    return 1;
}

static int journal_close(lua_State *L)
{
    journal_ud *u = luaL_checkudata(L, 1, JOURNAL_MT);
    rtb_journal_close(u->j);
    u->j = NULL;
    return 0;
}

static int journal_path(lua_State *L)
{
    lua_pushstring(L, rtb_journal_path(check_journal(L)));
    return 1;
}

/* ---- runs ------------------------------------------------------------------------- */

/* h:begin_run(env, source) -> id */
static int journal_begin_run(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *env = luaL_checkstring(L, 2), *source = luaL_checkstring(L, 3);
    long long id;
    rtb_journal_error err;
    if (rtb_journal_run_begin(j, env, source, &id, &err) != 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    lua_pushinteger(L, id);
    return 1;
}

/* h:finish_run(id, status [, summary_json]) */
static int journal_finish_run(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    const char *status = luaL_checkstring(L, 3), *summary = luaL_optstring(L, 4, NULL);
    rtb_journal_error err;
    if (rtb_journal_run_finish(j, id, status, summary, &err) != 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    return 0;
}

static void push_run(void *ud, const rtb_journal_run *r)
{
    lua_State *L = ud;
    lua_createtable(L, 0, 9);
    rtb_lua_set_integer(L, "id", r->id);
    rtb_lua_set_string(L, "env", r->env);
    rtb_lua_set_string(L, "source", r->source);
    rtb_lua_set_string(L, "started_at", r->started_at);
    rtb_lua_set_string(L, "finished_at", r->finished_at); /* NULL leaves it nil */
    rtb_lua_set_string(L, "status", r->status);
    rtb_lua_set_integer(L, "pid", r->pid);
    rtb_lua_set_string(L, "host", r->host);
    rtb_lua_set_string(L, "summary", r->summary);
}

/* h:last_run(source) -> run table (summary as JSON text) or nil */
static int journal_last_run(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_checkstring(L, 2);
    rtb_journal_error err;
    int found = rtb_journal_run_last(j, source, push_run, L, &err);
    if (found < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    if (!found)
        lua_pushnil(L);
    return 1;
}

/* Appends a run to the list at the top of the stack. */
static void append_run(void *ud, const rtb_journal_run *r)
{
    lua_State *L = ud;
    luaL_checkstack(L, 3, "too many runs");
    push_run(L, r);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

/* h:runs([source [, limit]]) -> list of runs, newest first */
static int journal_runs(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_optstring(L, 2, NULL);
    lua_Integer limit = luaL_optinteger(L, 3, 0);
    lua_newtable(L);
    rtb_journal_error err;
    if (rtb_journal_runs(j, source, limit, append_run, L, &err) < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    return 1;
}

/* h:prune_runs(before_iso) -> how many were deleted */
static int journal_prune_runs(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *before = luaL_checkstring(L, 2);
    rtb_journal_error err;
    long long n = rtb_journal_runs_prune(j, before, &err);
    if (n < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    lua_pushinteger(L, n);
    return 1;
}

/* h:fact(scope, key) -> value or nil */
static int journal_fact(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *scope = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    char *value = NULL;
    rtb_journal_error err;
    int found = rtb_journal_fact_get(j, scope, key, &value, &err);
    if (found < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    if (found)
        lua_pushstring(L, value);
    else
        lua_pushnil(L);
    free(value);
    return 1;
}

/* h:set_fact(scope, key, value | nil) */
static int journal_set_fact(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *scope = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    const char *value = luaL_optstring(L, 4, NULL);
    rtb_journal_error err;
    if (rtb_journal_fact_set(j, scope, key, value, &err) != 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    return 0;
}

/* h:put_ref{source=, from=, to=, kind=, state=, detail=} */
static int journal_put_ref(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    rtb_journal_ref ref = {
        .source = opt_string_field(L, 2, "source"), .from_uid = opt_string_field(L, 2, "from"),
        .to_uid = opt_string_field(L, 2, "to"), .kind = opt_string_field(L, 2, "kind"),
        .state = opt_string_field(L, 2, "state"), .detail = opt_string_field(L, 2, "detail"),
    };
    rtb_journal_error err;
    if (rtb_journal_ref_put(j, &ref, &err) != 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    return 0;
}

static int append_ref(void *ud, const rtb_journal_ref *r)
{
    lua_State *L = ud;
    luaL_checkstack(L, 3, "too many references");
    lua_createtable(L, 0, 8);
    rtb_lua_set_string(L, "source", r->source);
    rtb_lua_set_string(L, "from", r->from_uid);
    rtb_lua_set_string(L, "to", r->to_uid);
    rtb_lua_set_string(L, "kind", r->kind);
    rtb_lua_set_string(L, "state", r->state);
    rtb_lua_set_string(L, "detail", r->detail);
    rtb_lua_set_string(L, "first_seen", r->first_seen);
    rtb_lua_set_string(L, "last_checked", r->last_checked);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* h:refs(source [, state]) -> list */
static int journal_refs(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_checkstring(L, 2);
    const char *state = luaL_optstring(L, 3, NULL);
    lua_newtable(L);
    rtb_journal_error err;
    if (rtb_journal_refs(j, source, state, append_ref, L, &err) < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    return 1;
}

/* ---- units: writes ---------------------------------------------------------------- */

static void check_unit(lua_State *L, int t, size_t i, rtb_journal_unit_in *u)
{
    if (!lua_istable(L, t))
        rtb_lua_error_raise(L, "invalid", "unit %zu must be a table", i + 1);
    u->key = opt_string_field(L, t, "key");
    u->kind = opt_string_field(L, t, "kind");
    u->expected = opt_int_field(L, t, "expected", &u->has_expected);
    u->data = opt_string_field(L, t, "data");
    u->data_is_json = bool_field(L, t, "data_json");
    u->state = check_state(L, opt_string_field(L, t, "state"));
}

/* h:upsert(source, {{key=, kind=, expected=, data=, data_json=, state=}, ...}) -> added */
static int journal_upsert(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    size_t n = lua_rawlen(L, 3);
    rtb_journal_unit_in *units = lua_newuserdatauv(L, (n ? n : 1) * sizeof *units, 0);
    memset(units, 0, (n ? n : 1) * sizeof *units);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, (lua_Integer)i + 1);
        check_unit(L, lua_gettop(L), i, &units[i]);
        lua_pop(L, 1); /* the list at 3 keeps the unit table and its strings alive */
    }
    size_t added;
    rtb_journal_error err;
    if (rtb_journal_upsert(j, source, units, n, &added, &err) != 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    lua_pushinteger(L, (lua_Integer)added);
    return 1;
}

static void check_mark_fields(lua_State *L, int state_idx, int t, rtb_journal_mark_fields *f)
{
    memset(f, 0, sizeof *f);
    f->state = check_state(L, luaL_optstring(L, state_idx, NULL));
    if (lua_isnoneornil(L, t))
        return;
    luaL_checktype(L, t, LUA_TTABLE);
    f->error = opt_string_field(L, t, "error");
    f->moved = opt_int_field(L, t, "moved", &f->has_moved);
    f->expected = opt_int_field(L, t, "expected", &f->has_expected);
    f->data = opt_string_field(L, t, "data");
    f->data_is_json = bool_field(L, t, "data_json");
    f->attempts_increment = bool_field(L, t, "attempts_increment");
}

/* h:mark(source, keys, state|nil [, {error=, moved=, expected=, data=, data_json=,
 * attempts_increment=}]) -> number of units changed */
static int journal_mark(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_checkstring(L, 2);
    rtb_journal_mark_fields fields;
    check_mark_fields(L, 4, 5, &fields);
    size_t n;
    const char **keys = check_keys(L, 3, &n);
    rtb_journal_error err;
    long long changed = rtb_journal_mark(j, source, keys, n, &fields, &err);
    if (changed < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    lua_pushinteger(L, changed);
    return 1;
}

/* h:requeue(source, keys) -> number requeued */
static int journal_requeue(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_checkstring(L, 2);
    size_t n;
    const char **keys = check_keys(L, 3, &n);
    rtb_journal_error err;
    long long changed = rtb_journal_requeue(j, source, keys, n, &err);
    if (changed < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    lua_pushinteger(L, changed);
    return 1;
}

/* ---- units: reads ----------------------------------------------------------------- */

static void push_unit_table(lua_State *L, const rtb_journal_unit *u)
{
    lua_createtable(L, 0, 14);
    rtb_lua_set_string(L, "source", u->source);
    rtb_lua_set_string(L, "key", u->key);
    rtb_lua_set_string(L, "kind", u->kind);
    rtb_lua_set_string(L, "state", rtb_unit_state_name(u->state));
    rtb_lua_set_integer(L, "attempts", u->attempts);
    rtb_lua_set_string(L, "last_error", u->last_error);
    if (u->has_expected)
        rtb_lua_set_integer(L, "expected", u->expected);
    rtb_lua_set_integer(L, "moved", u->moved);
    rtb_lua_set_string(L, "created_at", u->created_at);
    rtb_lua_set_string(L, "updated_at", u->updated_at);
    rtb_lua_set_string(L, "verified_at", u->verified_at);
    if (u->run_id)
        rtb_lua_set_integer(L, "run_id", u->run_id);
    rtb_lua_set_string(L, "data", u->data);
    lua_pushboolean(L, u->data_is_json);
    lua_setfield(L, -2, "data_json");
}

/* Appends each unit to the list on top of the stack. */
static int append_unit(void *ud, const rtb_journal_unit *u)
{
    lua_State *L = ud;
    push_unit_table(L, u);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* Leaves the unit on the stack. */
static int push_found_unit(void *ud, const rtb_journal_unit *u)
{
    push_unit_table(ud, u);
    return 0;
}

static unsigned check_states(lua_State *L, int t)
{
    unsigned states = 0;
    int type = lua_getfield(L, t, "state");
    if (type == LUA_TSTRING) {
        states = 1u << check_state(L, lua_tostring(L, -1));
    } else if (type == LUA_TTABLE) {
        for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
            states |= 1u << check_state(L, luaL_tolstring(L, -1, NULL));
            lua_pop(L, 2);
        }
        lua_pop(L, 1);
    } else if (type != LUA_TNIL) {
        rtb_lua_error_raise(L, "invalid", "'state' must be a state name or a list of them");
    }
    lua_pop(L, 1);
    return states;
}

static void check_filter(lua_State *L, int t, rtb_journal_filter *f)
{
    static const char *const orders[] = {"oldest", "newest", NULL};
    memset(f, 0, sizeof *f);
    if (lua_isnoneornil(L, t))
        return;
    luaL_checktype(L, t, LUA_TTABLE);
    int has;
    f->states = check_states(L, t);
    f->kind = opt_string_field(L, t, "kind");
    f->limit = opt_int_field(L, t, "limit", &has);
    lua_getfield(L, t, "order");
    f->order = (rtb_journal_order)luaL_checkoption(L, -1, "oldest", orders);
    lua_pop(L, 1);
}

/* h:units(source [, {state = name | {names}, kind =, limit =, order = "oldest"|"newest"}])
 * -> list of unit tables (data as stored, data_json telling whether it is JSON) */
static int journal_units(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_checkstring(L, 2);
    rtb_journal_filter filter;
    check_filter(L, 3, &filter);
    lua_newtable(L);
    rtb_journal_error err;
    if (rtb_journal_units(j, source, &filter, append_unit, L, &err) < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    return 1;
}

/* h:get(source, key) -> unit table or nil */
static int journal_get(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    rtb_journal_error err;
    int found = rtb_journal_get(j, source, key, push_found_unit, L, &err);
    if (found < 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    if (!found)
        lua_pushnil(L);
    return 1;
}

/* h:counts(source) -> {queued =, moved =, verified =, failed =, total =} */
static int journal_counts(lua_State *L)
{
    rtb_journal *j = check_journal(L);
    const char *source = luaL_checkstring(L, 2);
    long long counts[RTB_UNIT_STATE_COUNT];
    rtb_journal_error err;
    if (rtb_journal_counts(j, source, counts, &err) != 0)
        return raise_journal_error(L, &err, rtb_journal_path(j));
    lua_createtable(L, 0, RTB_UNIT_STATE_COUNT);
    for (int s = RTB_UNIT_QUEUED; s < RTB_UNIT_STATE_COUNT; s++)
        rtb_lua_set_integer(L, rtb_unit_state_name((rtb_unit_state)s), counts[s]);
    rtb_lua_set_integer(L, "total", counts[RTB_UNIT_KEEP]);
    return 1;
}

/* ---- locks ------------------------------------------------------------------------ */

/* core.lock(path) -> lock; raises {kind = "locked", holder_pid =, holder_started =} */
static int l_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int shared = lua_toboolean(L, 2);
    lock_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->lock = NULL;
    luaL_setmetatable(L, LOCK_MT);
    rtb_journal_error err;
    if (rtb_journal_lock_acquire_mode(path, shared, &u->lock, &err) != 0)
        return raise_journal_error(L, &err, path);
    return 1;
}

/* lock:release() — also __gc and __close; releasing twice is harmless. */
static int lock_release(lua_State *L)
{
    lock_ud *u = luaL_checkudata(L, 1, LOCK_MT);
    rtb_journal_lock_release(u->lock);
    u->lock = NULL;
    return 0;
}

/* lock:info() -> path, started, pid (nothing once released) */
static int lock_info(lua_State *L)
{
    lock_ud *u = luaL_checkudata(L, 1, LOCK_MT);
    if (!u->lock)
        return 0;
    lua_pushstring(L, rtb_journal_lock_path(u->lock));
    lua_pushstring(L, rtb_journal_lock_started(u->lock));
    lua_pushinteger(L, (lua_Integer)getpid()); /* the holder is this process */
    return 3;
}

/* ---- module ----------------------------------------------------------------------- */

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
    if (luaL_newmetatable(L, name)) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
}

int luaopen_rtbackup_journal_core(lua_State *L)
{
    static const luaL_Reg journal_methods[] = {
        {"close", journal_close},       {"path", journal_path},
        {"begin_run", journal_begin_run}, {"finish_run", journal_finish_run},
        {"last_run", journal_last_run}, {"upsert", journal_upsert},
        {"runs", journal_runs},         {"prune_runs", journal_prune_runs},
        {"fact", journal_fact},         {"set_fact", journal_set_fact},
        {"put_ref", journal_put_ref},   {"refs", journal_refs},
        {"mark", journal_mark},         {"requeue", journal_requeue},
        {"units", journal_units},       {"get", journal_get},
        {"counts", journal_counts},     {NULL, NULL}};
    static const luaL_Reg lock_methods[] = {
        {"release", lock_release}, {"info", lock_info}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"open", l_open}, {"lock", l_lock}, {NULL, NULL}};
    new_class(L, JOURNAL_MT, journal_methods, journal_close);
    new_class(L, LOCK_MT, lock_methods, lock_release);
    luaL_newlib(L, funcs);
    return 1;
}
