/* rtbackup.dicom storage SCP: core.listen{...} -> scp with :next() (event batches),
 * :port(), :stored(), :stats(), :stop().
 *
 * The SCP serves on its own thread. When Lua wants to hear about stored instances,
 * each one becomes an event in an rtb_queue, which a task drains in batches
 * (scripts/lib/rtbackup/dicom.lua runs the on_store callback from that task). */
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom_lua.h"
#include "queue.h"
#include "task.h"
#include "util.h"

#define SCP_MT "rtbackup.dicom.scp"
#define SCP_QUEUE 1024
#define MAX_ALLOW 64
#define MAX_EXEC_ARGS 64

typedef struct {
    char *path, *sop_class_uid, *sop_instance_uid, *calling_ae, *transfer_syntax_uid;
    unsigned status;
} stored_event;

/* The SCP and its event queue, apart from the userdata: a next() or stop() running on
 * the pool holds a reference, so when the userdata is collected meanwhile (lua_close
 * with a task still waiting for events), the queue outlives the pop_batch blocked in it
 * and the last one out, on whichever thread, frees it. */
typedef struct {
    rtb_dicom_scp *scp;
    rtb_queue events;
    int deliver; /* queue events for Lua */
    int stopped; /* stop asked (loop thread only) */
    rtb_dicom_scp_stats final; /* the counters as they were when the SCP stopped */
    atomic_int refs;
} scp_state;

typedef struct {
    scp_state *s;
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

/* On the SCP's thread. An event that cannot be built whole is dropped, rather than
 * handed on with NULL strings. */
static void on_stored(void *ud, const rtb_dicom_stored_instance *inst)
{
    scp_state *s = ud;
    stored_event *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->path = dup_or_empty(inst->path);
    e->sop_class_uid = dup_or_empty(inst->sop_class_uid);
    e->sop_instance_uid = dup_or_empty(inst->sop_instance_uid);
    e->calling_ae = dup_or_empty(inst->calling_ae);
    e->transfer_syntax_uid = dup_or_empty(inst->transfer_syntax_uid);
    e->status = inst->status;
    if (!e->path || !e->sop_class_uid || !e->sop_instance_uid || !e->calling_ae ||
        !e->transfer_syntax_uid) {
        free_event(e);
        return;
    }
    rtb_queue_push(&s->events, e);
}

static void scp_unref(scp_state *s)
{
    if (atomic_fetch_sub(&s->refs, 1) > 1)
        return;
    rtb_queue_destroy(&s->events);
    free(s);
}

static scp_state *check_scp(lua_State *L)
{
    scp_state *s = ((scp_ud *)luaL_checkudata(L, 1, SCP_MT))->s;
    if (!s)
        luaL_argerror(L, 1, "SCP was never started");
    return s;
}

/* An optional integer field in lo..hi (absent: 0). Never cast down unchecked: a port
 * of 2^32 + 104 must not become 104. */
static int opt_int_field(lua_State *L, int idx, const char *key, lua_Integer lo, lua_Integer hi)
{
    if (lua_getfield(L, idx, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < lo || v > hi) {
        char got[64];
        if (lua_isinteger(L, -1))
            snprintf(got, sizeof got, "%lld", (long long)lua_tointeger(L, -1));
        else if (lua_type(L, -1) == LUA_TNUMBER)
            snprintf(got, sizeof got, "%.14g", (double)lua_tonumber(L, -1));
        else
            snprintf(got, sizeof got, "a %s", luaL_typename(L, -1));
        return luaL_error(L, "listen: '%s' must be an integer from %d to %d (got %s)", key,
                          (int)lo, (int)hi, got);
    }
    lua_pop(L, 1);
    return (int)v;
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
 * exec = {program, arg, ...} (placeholders #p #f #a #c #r, no shell)}.
 * Lists are read raw (their length without __len). Every field is checked before
 * anything is allocated; the strings stay on the Lua stack while the SCP starts. */
static int l_listen(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkstack(L, 16, "listen");
    rtb_dicom_scp_config cfg = {0};
    if (!(cfg.aet = opt_string_field(L, 1, "aet")))
        return luaL_error(L, "listen: 'aet' is required");
    if (!(cfg.dir = opt_string_field(L, 1, "dir")))
        return luaL_error(L, "listen: 'dir' is required");
    cfg.port = opt_int_field(L, 1, "port", 0, 65535); /* 0: any free port */
    cfg.acse_timeout = opt_int_field(L, 1, "acse_timeout", 0, 86400);
    cfg.dimse_timeout = opt_int_field(L, 1, "dimse_timeout", 0, 86400);
    cfg.request_timeout = opt_int_field(L, 1, "request_timeout", 0, 86400);
    /* The core checks the PDU size against DCMTK's limits; this only keeps it unwrapped. */
    cfg.max_pdu = (unsigned)opt_int_field(L, 1, "max_pdu", 0, INT32_MAX);
    cfg.max_associations = opt_int_field(L, 1, "max_associations", 0, 65535);
    cfg.max_per_host = opt_int_field(L, 1, "max_per_host", 0, 65535);
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
    const char *exec_argv[MAX_EXEC_ARGS];
    int exec_type = lua_getfield(L, 1, "exec");
    if (exec_type == LUA_TTABLE) {
        int t = lua_gettop(L);
        size_t n = lua_rawlen(L, t);
        if (n == 0 || n > MAX_EXEC_ARGS)
            return luaL_error(L, "listen: 'exec' must list 1 to %d strings (the program, then its arguments)",
                              MAX_EXEC_ARGS);
        luaL_checkstack(L, (int)n + LUA_MINSTACK, "listen: exec");
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
    const char *allow[MAX_ALLOW];
    int allow_type = lua_getfield(L, 1, "allow");
    if (allow_type == LUA_TTABLE) {
        int t = lua_gettop(L);
        size_t n = lua_rawlen(L, t);
        if (n > MAX_ALLOW)
            return luaL_error(L, "listen: at most %d allowed AE titles (got %d)", MAX_ALLOW,
                              n > INT_MAX ? INT_MAX : (int)n);
        luaL_checkstack(L, (int)n + LUA_MINSTACK, "listen: allow");
        for (size_t i = 0; i < n; i++) {
            int type = lua_rawgeti(L, t, (lua_Integer)i + 1);
            if (type != LUA_TSTRING && type != LUA_TNUMBER)
                return luaL_error(L, "listen: 'allow' must list AE titles (item %d is a %s)",
                                  (int)i + 1, luaL_typename(L, -1));
            allow[i] = lua_tostring(L, -1); /* stays on the stack while we start */
        }
        cfg.allow = allow;
        cfg.n_allow = n;
    } else if (allow_type != LUA_TNIL) {
        return luaL_error(L, "listen: 'allow' must be a list of AE titles");
    }
    rtb_dicom_ensure_init(L);

    /* The userdata first, so __gc frees whatever is allocated after it. */
    scp_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = NULL;
    luaL_setmetatable(L, SCP_MT);
    scp_state *s = calloc(1, sizeof *s);
    if (!s)
        return luaL_error(L, "listen: out of memory");
    s->stopped = 1; /* nothing to stop until it runs */
    atomic_init(&s->refs, 1);
    rtb_queue_init(&s->events, SCP_QUEUE, free_event);
    u->s = s;
    if (s->events.capacity == 0) /* rtb_queue_init could not allocate its ring */
        return luaL_error(L, "listen: out of memory");
    s->deliver = deliver;
    cfg.on_store = deliver ? on_stored : NULL;
    cfg.ud = s;
    rtb_dicom_error err;
    if (rtb_dicom_scp_start(&cfg, &s->scp, &err) != 0)
        return rtb_dicom_raise(L, &err);
    s->stopped = 0;
    return 1;
}

static int scp_port(lua_State *L)
{
    scp_state *s = check_scp(L);
    lua_pushinteger(L, s->scp ? rtb_dicom_scp_port(s->scp) : 0);
    return 1;
}

static void current_stats(scp_state *s, rtb_dicom_scp_stats *st)
{
    if (s->scp)
        rtb_dicom_scp_get_stats(s->scp, st);
    else
        *st = s->final; /* stopped: what it counted until then */
}

static int scp_stored(lua_State *L)
{
    scp_state *s = check_scp(L);
    rtb_dicom_scp_stats st;
    current_stats(s, &st);
    lua_pushinteger(L, (lua_Integer)st.stored);
    return 1;
}

/* scp:stats() -> {stored, associations, refused, rejected, dropped, exec_ran, exec_failed,
 * stale_removed} */
static int scp_stats(lua_State *L)
{
    scp_state *s = check_scp(L);
    rtb_dicom_scp_stats st;
    current_stats(s, &st);
    lua_createtable(L, 0, 8);
    rtb_lua_set_integer(L, "stored", (lua_Integer)st.stored);
    rtb_lua_set_integer(L, "associations", (lua_Integer)st.associations);
    rtb_lua_set_integer(L, "refused", (lua_Integer)st.refused);
    rtb_lua_set_integer(L, "rejected", (lua_Integer)st.rejected);
    rtb_lua_set_integer(L, "dropped", (lua_Integer)st.dropped);
    rtb_lua_set_integer(L, "exec_ran", (lua_Integer)st.exec_ran);
    rtb_lua_set_integer(L, "exec_failed", (lua_Integer)st.exec_failed);
    rtb_lua_set_integer(L, "stale_removed", (lua_Integer)st.stale_removed);
    return 1;
}

/* Stops the SCP, keeping its final counters (scp:stored() after stop() used to
 * read a stopped SCP and say 0). */
static void stop_keep_stats(scp_state *s)
{
    rtb_dicom_scp_stop_stats(s->scp, &s->final);
    s->scp = NULL;
}

typedef struct {
    scp_state *s; /* referenced until pop_batch returns, then NULL */
    void *items[SCP_QUEUE];
    size_t n, pushed;
} events_req;

static void events_work(void *data)
{
    events_req *r = data;
    r->n = rtb_queue_pop_batch(&r->s->events, r->items, SCP_QUEUE);
    scp_unref(r->s);
    r->s = NULL;
}

static int events_push(lua_State *L)
{
    events_req *r = lua_touserdata(L, 1);
    if (r->n == 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, (int)r->n, 0);
    for (; r->pushed < r->n; r->pushed++) {
        stored_event *e = r->items[r->pushed];
        lua_createtable(L, 0, 7);
        rtb_lua_set_string(L, "path", e->path);
        rtb_lua_set_string(L, "sop_class_uid", e->sop_class_uid);
        rtb_lua_set_string(L, "sop_instance_uid", e->sop_instance_uid);
        rtb_lua_set_string(L, "calling_aet", e->calling_ae);
        rtb_lua_set_string(L, "transfer_syntax_uid", e->transfer_syntax_uid);
        rtb_lua_set_integer(L, "status", e->status);
        lua_rawseti(L, -2, (lua_Integer)r->pushed + 1);
        free_event(e);
    }
    return 1;
}

static int events_done(lua_State *L, void *data)
{
    events_req *r = data;
    /* Protected, so that running out of memory midway still frees the rest. */
    lua_pushcfunction(L, events_push);
    lua_pushlightuserdata(L, r);
    int failed = lua_pcall(L, 1, 1, 0) != LUA_OK;
    for (size_t i = r->pushed; i < r->n; i++)
        free_event(r->items[i]);
    free(r);
    return failed ? lua_error(L) : 1;
}

/* scp:next() -> a list of stored-instance events, nil once stopped and drained. */
static int scp_next(lua_State *L)
{
    scp_state *s = check_scp(L);
    if (!s->deliver)
        return luaL_error(L, "this SCP was started without events");
    /* rtb_task_await's own reservation, made before allocating so it cannot raise after */
    luaL_checkstack(L, LUA_MINSTACK + 2, "stack overflow (scp:next)");
    events_req *r = calloc(1, sizeof *r);
    if (!r)
        return luaL_error(L, "scp:next: out of memory");
    r->s = s;
    atomic_fetch_add(&s->refs, 1);
    return rtb_task_await(L, events_work, events_done, r);
}

static void stop_work(void *data)
{
    scp_state *s = data;
    stop_keep_stats(s); /* joins the SCP's threads: may take a second */
    rtb_queue_close(&s->events);
    scp_unref(s);
}

static int stop_done(lua_State *L, void *data)
{
    (void)L;
    (void)data;
    return 0;
}

/* scp:stop() — stop accepting, finish or abort running associations, and end the
 * event stream. */
static int scp_stop(lua_State *L)
{
    scp_state *s = check_scp(L);
    if (s->stopped)
        return 0;
    /* rtb_task_await's own reservation, made first so it cannot raise after the flag */
    luaL_checkstack(L, LUA_MINSTACK + 2, "stack overflow (scp:stop)");
    s->stopped = 1;
    atomic_fetch_add(&s->refs, 1);
    return rtb_task_await(L, stop_work, stop_done, s);
}

static int scp_gc(lua_State *L)
{
    scp_ud *u = luaL_checkudata(L, 1, SCP_MT);
    scp_state *s = u->s;
    if (!s)
        return 0;
    u->s = NULL;
    /* Wakes a next() waiting on the pool, and a full queue must not block the stop. */
    rtb_queue_cancel(&s->events);
    if (!s->stopped) {
        s->stopped = 1;
        stop_keep_stats(s);
    }
    scp_unref(s); /* a stop() or next() still running frees it when it is done */
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
