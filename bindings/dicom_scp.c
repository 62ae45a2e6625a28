/* rtbackup.dicom storage SCP: core.listen{...} -> scp with :next() (event batches),
 * :port(), :stored(), :stats(), :stop().
 *
 * The SCP serves on its own thread. When Lua wants to hear about stored instances,
 * each one becomes an event in an rtb_queue, which a task drains in batches
 * (scripts/lib/rtbackup/dicom.lua runs the on_store callback from that task). */
#include <stdlib.h>
#include <string.h>

#include "dicom_lua.h"
#include "queue.h"
#include "task.h"
#include "util.h"

#define SCP_MT "rtbackup.dicom.scp"
#define SCP_QUEUE 1024

typedef struct {
    char *path, *sop_class_uid, *sop_instance_uid, *calling_ae, *transfer_syntax_uid;
} stored_event;

typedef struct {
    rtb_dicom_scp *scp;
    rtb_queue events;
    int deliver; /* queue events for Lua */
    int stopped;
    rtb_dicom_scp_stats final; /* the counters as they were when the SCP stopped */
} scp_ud;

static void free_event(void *item)
{
    stored_event *e = item;
    free(e->path);
    free(e->sop_class_uid);
    free(e->sop_instance_uid);
    free(e->calling_ae);
    free(e->transfer_syntax_uid);
    free(e);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* On the SCP's thread. */
static void on_stored(void *ud, const rtb_dicom_stored_instance *inst)
{
    scp_ud *u = ud;
    stored_event *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->path = dup_or_empty(inst->path);
    e->sop_class_uid = dup_or_empty(inst->sop_class_uid);
    e->sop_instance_uid = dup_or_empty(inst->sop_instance_uid);
    e->calling_ae = dup_or_empty(inst->calling_ae);
    e->transfer_syntax_uid = dup_or_empty(inst->transfer_syntax_uid);
    rtb_queue_push(&u->events, e);
}

static scp_ud *check_scp(lua_State *L)
{
    return luaL_checkudata(L, 1, SCP_MT);
}

static int opt_int_field(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    if (!lua_isnoneornil(L, -1) && !lua_isinteger(L, -1))
        return luaL_error(L, "listen: '%s' must be an integer", key);
    int v = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (v < 0)
        return luaL_error(L, "listen: '%s' must not be negative", key);
    return v;
}

/* A string field, left on the stack (so it lives while the SCP starts). */
static const char *opt_string_field(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    if (lua_isnil(L, -1))
        return NULL;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "listen: '%s' must be a string", key);
    return lua_tostring(L, -1);
}

/* core.listen{aet, port, allow = {...}, dir, events = bool, acse_timeout,
 * dimse_timeout, request_timeout, max_pdu, max_associations, max_per_host,
 * sort_by_study = bool, tls = {cert, key, ca, require_client_cert = bool},
 * exec = {program, arg, ...} (placeholders #p #f #a #c #r, no shell)} */
static int l_listen(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    rtb_dicom_scp_config cfg = {0};
    lua_getfield(L, 1, "aet");
    cfg.aet = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "dir");
    cfg.dir = luaL_checkstring(L, -1);
    cfg.port = opt_int_field(L, 1, "port");
    cfg.acse_timeout = opt_int_field(L, 1, "acse_timeout");
    cfg.dimse_timeout = opt_int_field(L, 1, "dimse_timeout");
    cfg.request_timeout = opt_int_field(L, 1, "request_timeout");
    cfg.max_pdu = (unsigned)opt_int_field(L, 1, "max_pdu");
    cfg.max_associations = opt_int_field(L, 1, "max_associations");
    cfg.max_per_host = opt_int_field(L, 1, "max_per_host");
    lua_getfield(L, 1, "sort_by_study");
    cfg.sort_by_study = lua_toboolean(L, -1);
    lua_getfield(L, 1, "events");
    int deliver = lua_toboolean(L, -1);
    int tls_type = lua_getfield(L, 1, "tls");
    if (tls_type == LUA_TTABLE) {
        int t = lua_gettop(L);
        cfg.tls = 1;
        cfg.tls_cert = opt_string_field(L, t, "cert");
        cfg.tls_key = opt_string_field(L, t, "key");
        cfg.tls_ca = opt_string_field(L, t, "ca");
        lua_getfield(L, t, "require_client_cert");
        cfg.tls_require_client_cert = lua_toboolean(L, -1);
    } else if (tls_type != LUA_TNIL) {
        return luaL_error(L, "listen: 'tls' must be a table {cert, key, ca, require_client_cert}");
    }
    const char *exec_argv[64];
    int exec_type = lua_getfield(L, 1, "exec");
    if (exec_type == LUA_TTABLE) {
        int t = lua_gettop(L);
        size_t n = (size_t)luaL_len(L, t);
        if (n == 0 || n > 64)
            return luaL_error(L, "listen: 'exec' must list 1 to 64 strings (the program, then its arguments)");
        for (size_t i = 0; i < n; i++) {
            if (lua_rawgeti(L, t, (lua_Integer)i + 1) != LUA_TSTRING)
                return luaL_error(L, "listen: 'exec' must list strings");
            exec_argv[i] = lua_tostring(L, -1); /* stays on the stack while we start */
        }
        cfg.exec_argv = exec_argv;
        cfg.n_exec_argv = n;
    } else if (exec_type != LUA_TNIL) {
        return luaL_error(L, "listen: 'exec' must be a list {program, arg, ...}");
    }
    const char *allow[64];
    if (lua_getfield(L, 1, "allow") == LUA_TTABLE) {
        int t = lua_gettop(L);
        size_t n = (size_t)luaL_len(L, t);
        if (n > 64)
            return luaL_error(L, "listen: at most 64 allowed AE titles");
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, t, (lua_Integer)i + 1);
            allow[i] = luaL_checkstring(L, -1); /* stays on the stack while we start */
        }
        cfg.allow = allow;
        cfg.n_allow = n;
    }
    rtb_dicom_ensure_init(L);

    scp_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    rtb_queue_init(&u->events, SCP_QUEUE, free_event);
    u->deliver = deliver;
    luaL_setmetatable(L, SCP_MT);
    cfg.on_store = deliver ? on_stored : NULL;
    cfg.ud = u;
    rtb_dicom_error err;
    if (rtb_dicom_scp_start(&cfg, &u->scp, &err) != 0) {
        u->stopped = 1;
        return rtb_dicom_raise(L, &err);
    }
    return 1;
}

static int scp_port(lua_State *L)
{
    scp_ud *u = check_scp(L);
    lua_pushinteger(L, u->scp ? rtb_dicom_scp_port(u->scp) : 0);
    return 1;
}

static void current_stats(scp_ud *u, rtb_dicom_scp_stats *st)
{
    if (u->scp)
        rtb_dicom_scp_get_stats(u->scp, st);
    else
        *st = u->final; /* stopped: what it counted until then */
}

static int scp_stored(lua_State *L)
{
    scp_ud *u = check_scp(L);
    rtb_dicom_scp_stats st;
    current_stats(u, &st);
    lua_pushinteger(L, (lua_Integer)st.stored);
    return 1;
}

/* scp:stats() -> {stored, associations, refused, rejected, dropped, exec_ran, exec_failed} */
static int scp_stats(lua_State *L)
{
    scp_ud *u = check_scp(L);
    rtb_dicom_scp_stats st;
    current_stats(u, &st);
    lua_createtable(L, 0, 7);
    rtb_lua_set_integer(L, "stored", (lua_Integer)st.stored);
    rtb_lua_set_integer(L, "associations", (lua_Integer)st.associations);
    rtb_lua_set_integer(L, "refused", (lua_Integer)st.refused);
    rtb_lua_set_integer(L, "rejected", (lua_Integer)st.rejected);
    rtb_lua_set_integer(L, "dropped", (lua_Integer)st.dropped);
    rtb_lua_set_integer(L, "exec_ran", (lua_Integer)st.exec_ran);
    rtb_lua_set_integer(L, "exec_failed", (lua_Integer)st.exec_failed);
    return 1;
}

/* Stops the SCP, keeping its final counters (scp:stored() after stop() used to
 * read a stopped SCP and say 0). */
static void stop_keep_stats(scp_ud *u)
{
    rtb_dicom_scp_stop_stats(u->scp, &u->final);
    u->scp = NULL;
}

typedef struct {
    scp_ud *u;
    void *items[SCP_QUEUE];
    size_t n;
} events_req;

static void events_work(void *data)
{
    events_req *r = data;
    r->n = rtb_queue_pop_batch(&r->u->events, r->items, SCP_QUEUE);
}

static int events_done(lua_State *L, void *data)
{
    events_req *r = data;
    if (r->n == 0) {
        free(r);
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, (int)r->n, 0);
    for (size_t i = 0; i < r->n; i++) {
        stored_event *e = r->items[i];
        lua_createtable(L, 0, 7);
        rtb_lua_set_string(L, "path", e->path);
        rtb_lua_set_string(L, "sop_class_uid", e->sop_class_uid);
        rtb_lua_set_string(L, "sop_instance_uid", e->sop_instance_uid);
        rtb_lua_set_string(L, "calling_aet", e->calling_ae);
        rtb_lua_set_string(L, "transfer_syntax_uid", e->transfer_syntax_uid);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        free_event(e);
    }
    free(r);
    return 1;
}

/* scp:next() -> a list of stored-instance events, nil once stopped and drained. */
static int scp_next(lua_State *L)
{
    scp_ud *u = check_scp(L);
    if (!u->deliver)
        return luaL_error(L, "this SCP was started without events");
    events_req *r = calloc(1, sizeof *r);
    r->u = u;
    return rtb_task_await(L, events_work, events_done, r);
}

static void stop_work(void *data)
{
    scp_ud *u = data;
    stop_keep_stats(u); /* joins the SCP's threads: may take a second */
    rtb_queue_close(&u->events);
}

static int stop_done(lua_State *L, void *data)
{
    return 0;
}

/* scp:stop() — stop accepting, finish or abort running associations, and end the
 * event stream. */
static int scp_stop(lua_State *L)
{
    scp_ud *u = check_scp(L);
    if (u->stopped)
        return 0;
    u->stopped = 1;
    return rtb_task_await(L, stop_work, stop_done, u);
}

static int scp_gc(lua_State *L)
{
    scp_ud *u = check_scp(L);
    if (!u->stopped) {
        u->stopped = 1;
        rtb_queue_cancel(&u->events); /* a full queue must not block the stop */
        stop_keep_stats(u);
    }
    rtb_queue_destroy(&u->events);
    return 0;
}

void rtb_dicom_open_scp(lua_State *L)
{
    static const luaL_Reg methods[] = {{"port", scp_port},
                                       {"stored", scp_stored},
                                       {"stats", scp_stats},
                                       {"next", scp_next},
                                       {"stop", scp_stop},
                                       {NULL, NULL}};
    if (luaL_newmetatable(L, SCP_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, scp_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_listen);
    lua_setfield(L, -2, "listen");
}
