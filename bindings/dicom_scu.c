/* rtbackup.dicom SCU operations: echo, find, move, get, store.
 *
 * Each call copies its inputs (peer, identifier) into a request, runs the DCMTK
 * operation on the pool through rtb_task_await, and turns the outcome into Lua
 * values on the loop thread. find and get can stream: matches / instances flow
 * through an rtb_queue to a task that takes them in batches (see stream_*). The
 * Lua side (scripts/lib/rtbackup/dicom.lua) builds the peer tables from the
 * environment. */
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dicom_lua.h"
#include "loop/loop.h"
#include "queue.h"
#include "task.h"
#include "util.h"

/* ---- arguments --------------------------------------------------------------------- *
 * Every argument is read and checked before anything is allocated: a bad peer or option
 * raises with nothing to free. Strings are borrowed meanwhile (left on the Lua stack,
 * where they live), then copied in one go; only running out of memory can fail after
 * that, and each request has one function that frees a half-built copy. */

static int out_of_memory(lua_State *L, const char *what)
{
    return luaL_error(L, "%s: out of memory", what);
}

/* The offending value, for an error message. */
static void describe(lua_State *L, int idx, char *buf, size_t size)
{
    if (lua_isinteger(L, idx))
        snprintf(buf, size, "%lld", (long long)lua_tointeger(L, idx));
    else if (lua_type(L, idx) == LUA_TNUMBER)
        snprintf(buf, size, "%.14g", (double)lua_tonumber(L, idx));
    else if (lua_type(L, idx) == LUA_TSTRING)
        snprintf(buf, size, "'%.40s'", lua_tostring(L, idx));
    else
        snprintf(buf, size, "a %s", luaL_typename(L, idx));
}

/* Field `key` of the table at idx, an integer in lo..hi; 0 when absent (or, when
 * required, an error). Never cast down unchecked: a port of 2^32 + 104 must not
 * become 104. */
static lua_Integer int_field(lua_State *L, int idx, const char *what, const char *key,
                             lua_Integer lo, lua_Integer hi, int required)
{
    if (lua_getfield(L, idx, key) == LUA_TNIL) {
        lua_pop(L, 1);
        if (required)
            return rtb_lua_error_raise(L, "invalid", "%s: '%s' is required", what, key);
        return 0;
    }
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < lo || v > hi) {
        char got[64];
        describe(L, -1, got, sizeof got);
        return rtb_lua_error_raise(L, "invalid", "%s: '%s' must be an integer from %lld to %lld (got %s)",
                                   what, key, (long long)lo, (long long)hi, got);
    }
    lua_pop(L, 1);
    return v;
}

/* Field `key` of the table at idx as a string, or NULL when absent. The value stays on
 * the stack (one slot, absent or not), which keeps the string alive until it is copied. */
static const char *string_field(lua_State *L, int idx, const char *what, const char *key,
                                int required)
{
    int type = lua_getfield(L, idx, key);
    if (type == LUA_TNIL) {
        if (required)
            rtb_lua_error_raise(L, "invalid", "%s: '%s' is required", what, key);
        return NULL;
    }
    if (type != LUA_TSTRING && type != LUA_TNUMBER)
        rtb_lua_error_raise(L, "invalid", "%s: '%s' must be a string (got a %s)", what, key,
                            luaL_typename(L, -1));
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len) /* the C side would see it cut at the NUL */
        rtb_lua_error_raise(L, "invalid", "%s: '%s' contains a NUL byte", what, key);
    return s;
}

/* Seconds for a timeout: 0 (the default) up to a day. */
#define MAX_TIMEOUT 86400
/* Milliseconds to back off between reconnects: up to an hour. */
#define MAX_BACKOFF_MS 3600000

/* The peer table at idx: {aet, host, port, calling_aet, connect_timeout, acse_timeout,
 * dimse_timeout, max_pdu, tls = {cert, key, ca}}. Fills *p with strings borrowed from
 * the Lua stack, where this leaves up to 7 values: keep them there until peer_copy_init. */
static void read_peer(lua_State *L, int idx, rtb_dicom_peer *p)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 8, "peer");
    memset(p, 0, sizeof *p);
    p->called_ae = string_field(L, idx, "peer", "aet", 1);
    p->host = string_field(L, idx, "peer", "host", 1);
    p->calling_ae = string_field(L, idx, "peer", "calling_aet", 1);
    p->port = (int)int_field(L, idx, "peer", "port", 1, 65535, 1);
    p->connect_timeout = (int)int_field(L, idx, "peer", "connect_timeout", 0, MAX_TIMEOUT, 0);
    p->acse_timeout = (int)int_field(L, idx, "peer", "acse_timeout", 0, MAX_TIMEOUT, 0);
    p->dimse_timeout = (int)int_field(L, idx, "peer", "dimse_timeout", 0, MAX_TIMEOUT, 0);
    /* The core checks the PDU size against DCMTK's limits; this only keeps it unwrapped. */
    p->max_pdu = (unsigned)int_field(L, idx, "peer", "max_pdu", 0, INT32_MAX, 0);
    int tls = lua_getfield(L, idx, "tls");
    if (tls == LUA_TTABLE) {
        int t = lua_gettop(L);
        p->tls = 1;
        p->tls_cert = string_field(L, t, "peer tls", "cert", 0);
        p->tls_key = string_field(L, t, "peer tls", "key", 0);
        p->tls_ca = string_field(L, t, "peer tls", "ca", 0);
    } else if (tls != LUA_TNIL && !(tls == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
        /* tls = true used to mean plain DICOM, silently */
        rtb_lua_error_raise(L, "invalid", "peer: 'tls' must be a table {cert, key, ca} (got a %s)",
                            luaL_typename(L, -1));
    }
}

typedef struct {
    rtb_dicom_peer peer;
    char *strings[6]; /* owned copies behind the peer's const char * fields */
} peer_copy;

static void peer_free(peer_copy *p)
{
    for (int i = 0; i < 6; i++)
        free(p->strings[i]);
    memset(p, 0, sizeof *p);
}

static int copy_string(peer_copy *p, int slot, const char **field)
{
    if (!*field)
        return 0;
    p->strings[slot] = strdup(*field);
    *field = p->strings[slot];
    return p->strings[slot] ? 0 : -1;
}

/* Copies a peer read by read_peer. -1 when out of memory (*dst then holds what to free). */
static int peer_copy_init(peer_copy *dst, const rtb_dicom_peer *src)
{
    memset(dst, 0, sizeof *dst);
    dst->peer = *src;
    rtb_dicom_peer *p = &dst->peer;
    if (copy_string(dst, 0, &p->called_ae) || copy_string(dst, 1, &p->host) ||
        copy_string(dst, 2, &p->calling_ae) || copy_string(dst, 3, &p->tls_cert) ||
        copy_string(dst, 4, &p->tls_key) || copy_string(dst, 5, &p->tls_ca))
        return -1;
    return 0;
}

/* rtb_task_await reserves LUA_MINSTACK slots for the done function and raises when it
 * cannot: reserved here first, before allocating, so it cannot raise once a request
 * is built (a few more for what a start function pushes before awaiting). */
static void reserve_for_await(lua_State *L)
{
    luaL_checkstack(L, LUA_MINSTACK + 4, "stack overflow (DICOM call)");
}

/* Runs push(L) with data as its one argument under lua_pcall, leaving one value: the
 * result, or the error. A done function builds its results this way, so an error while
 * pushing (out of memory, a match nested too deeply) still comes back to it, and it
 * frees its request before raising that error again. */
static int push_protected(lua_State *L, lua_CFunction push, void *data)
{
    lua_pushcfunction(L, push);
    lua_pushlightuserdata(L, data);
    return lua_pcall(L, 1, 1, 0);
}

static rtb_dicom_level check_level(lua_State *L, int idx)
{
    static const char *const names[] = {"PATIENT", "STUDY", "SERIES", "IMAGE", NULL};
    return (rtb_dicom_level)luaL_checkoption(L, idx, "STUDY", names);
}

static rtb_dicom_model check_model(lua_State *L, int idx)
{
    static const char *const names[] = {"study", "patient", NULL};
    return luaL_checkoption(L, idx, "study", names) == 0 ? RTB_QR_STUDY_ROOT : RTB_QR_PATIENT_ROOT;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- echo ------------------------------------------------------------------------ */

typedef struct {
    peer_copy peer;
    int rc;
    double seconds;
    rtb_dicom_error err;
} echo_req;

static void echo_work(void *data)
{
    echo_req *r = data;
    double start = now_seconds();
    r->rc = rtb_dicom_echo(&r->peer.peer, &r->err);
    r->seconds = now_seconds() - start;
}

static int echo_push(lua_State *L)
{
    echo_req *r = lua_touserdata(L, 1);
    if (r->rc != 0)
        rtb_dicom_push_error(L, &r->err);
    else
        lua_pushnumber(L, r->seconds);
    return 1;
}

static int echo_done(lua_State *L, void *data)
{
    echo_req *r = data;
    int failed = push_protected(L, echo_push, r) != LUA_OK || r->rc != 0;
    peer_free(&r->peer);
    free(r);
    return failed ? lua_error(L) : 1;
}

/* core.echo(peer) -> seconds the association took */
static int l_echo(lua_State *L)
{
    lua_settop(L, 1); /* read_peer leaves values on the stack: none may pose as an argument */
    rtb_dicom_peer peer;
    read_peer(L, 1, &peer);
    reserve_for_await(L);
    rtb_dicom_ensure_init(L);
    echo_req *r = calloc(1, sizeof *r);
    if (!r)
        return out_of_memory(L, "echo");
    if (peer_copy_init(&r->peer, &peer) != 0) {
        peer_free(&r->peer);
        free(r);
        return out_of_memory(L, "echo");
    }
    return rtb_task_await(L, echo_work, echo_done, r);
}

/* ---- streams (find and get) -------------------------------------------------------- */

#define STREAM_MT "rtbackup.dicom.stream"
#define STREAM_QUEUE 256

typedef enum { STREAM_FIND, STREAM_GET } stream_kind;

typedef struct {
    stream_kind kind;
    /* The userdata, the running operation, and each next() waiting on the pool. The last
     * one out frees the stream, on whichever thread: so the queue outlives every
     * pop_batch blocked in it, even when the userdata is collected meanwhile (lua_close). */
    atomic_int refs;
    peer_copy peer;
    rtb_dicom_model model;
    rtb_dicom_level level;
    rtb_ds *identifier;
    char *out_dir;
    int deliver;  /* get: hand instances to the consumer (else only out_dir) */
    rtb_queue queue;
    int rc;
    rtb_dicom_error err;
    rtb_dicom_find_result find;
    rtb_dicom_retrieve_result retrieve;
} stream;

typedef struct {
    stream *s;
} stream_ud;

static void stream_unref(stream *s)
{
    if (atomic_fetch_sub(&s->refs, 1) > 1)
        return;
    rtb_queue_destroy(&s->queue);
    rtb_ds_free(s->identifier);
    rtb_dicom_retrieve_result_clear(&s->retrieve);
    peer_free(&s->peer);
    free(s->out_dir);
    free(s);
}

static void free_ds_item(void *item)
{
    rtb_ds_free(item);
}

/* Producer side, on the pool thread: a clone of each match goes to the queue. */
static int stream_on_ds(void *ud, rtb_ds *ds)
{
    stream *s = ud;
    rtb_ds *copy;
    rtb_dicom_error err;
    if (rtb_ds_clone(ds, &copy, &err) != 0)
        return 1;
    return rtb_queue_push(&s->queue, copy) != 0; /* consumer gone: stop (C-CANCEL) */
}

static void stream_work(void *data)
{
    stream *s = data;
    if (s->kind == STREAM_FIND) {
        s->rc = rtb_dicom_find(&s->peer.peer, s->model, s->level, s->identifier, stream_on_ds, s,
                               &s->find, &s->err);
    } else {
        rtb_dicom_get_options opts = {s->out_dir, s->deliver ? stream_on_ds : NULL, s, NULL, 0, 0};
        s->rc = rtb_dicom_get(&s->peer.peer, s->model, s->level, s->identifier, &opts,
                              &s->retrieve, &s->err);
    }
    rtb_queue_close(&s->queue); /* after rc/err are set: the consumer reads them next */
}

static void stream_after(void *data)
{
    stream_unref(data);
}

static stream *check_stream(lua_State *L, int idx)
{
    stream *s = ((stream_ud *)luaL_checkudata(L, idx, STREAM_MT))->s;
    if (!s)
        luaL_argerror(L, idx, "stream was never started");
    return s;
}

/* Pushes the stream's userdata and a new stream it owns (its queue ready), before
 * anything else is allocated: whatever raises afterwards, __gc frees the stream. */
static stream *new_stream(lua_State *L, stream_kind kind)
{
    stream_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = NULL;
    luaL_setmetatable(L, STREAM_MT);
    stream *s = calloc(1, sizeof *s);
    if (!s)
        out_of_memory(L, "stream");
    atomic_init(&s->refs, 1);
    s->kind = kind;
    rtb_queue_init(&s->queue, STREAM_QUEUE, free_ds_item);
    u->s = s;
    if (s->queue.capacity == 0) /* rtb_queue_init could not allocate its ring */
        out_of_memory(L, "stream");
    return s;
}

/* Starts the operation of the stream whose userdata is on top of the stack. */
static int stream_start(lua_State *L, stream *s)
{
    atomic_fetch_add(&s->refs, 1); /* the operation's */
    int rc = rtb_loop_queue_work(stream_work, stream_after, s);
    if (rc < 0) {
        atomic_fetch_sub(&s->refs, 1);
        return rtb_lua_error_raise(L, "internal", "cannot queue DICOM work: %s",
                                   rtb_loop_strerror(rc));
    }
    return 1;
}

typedef struct {
    stream *s; /* referenced until pop_batch returns, then NULL */
    stream_kind kind;
    int rc;
    rtb_dicom_error err;
    void *items[STREAM_QUEUE];
    size_t n, pushed;
} batch_req;

static int queue_closed(rtb_queue *q)
{
    pthread_mutex_lock(&q->lock);
    int closed = q->closed;
    pthread_mutex_unlock(&q->lock);
    return closed;
}

static void batch_work(void *data)
{
    batch_req *b = data;
    stream *s = b->s;
    b->n = rtb_queue_pop_batch(&s->queue, b->items, STREAM_QUEUE);
    /* The end. Closed: the operation set rc and err before closing. Merely cancelled
     * (stream:cancel()): the operation may still be running, and ends as a success. */
    if (b->n == 0 && queue_closed(&s->queue)) {
        b->rc = s->rc;
        if (b->rc != 0)
            b->err = s->err;
    }
    b->s = NULL;
    stream_unref(s);
}

static int batch_push(lua_State *L)
{
    batch_req *b = lua_touserdata(L, 1);
    if (b->n == 0) {
        if (b->rc != 0)
            rtb_dicom_push_error(L, &b->err);
        else
            lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, (int)b->n, 0);
    for (; b->pushed < b->n; b->pushed++) {
        void *item = b->items[b->pushed];
        if (b->kind == STREAM_FIND) {
            rtb_dicom_push_table(L, item); /* may raise: the item is still ours */
            rtb_ds_free(item);
        } else {
            rtb_dicom_push_dataset(L, item, 0); /* the userdata owns it now */
        }
        lua_rawseti(L, -2, (lua_Integer)b->pushed + 1);
    }
    return 1;
}

static int batch_done(lua_State *L, void *data)
{
    batch_req *b = data;
    int failed = push_protected(L, batch_push, b) != LUA_OK || (b->n == 0 && b->rc != 0);
    for (size_t i = b->pushed; i < b->n; i++) /* those not handed over when pushing failed */
        rtb_ds_free(b->items[i]);
    free(b);
    return failed ? lua_error(L) : 1;
}

/* stream:next() -> a list of matches (find: tables; get: datasets), nil at the end.
 * Raises the operation's error at the end if it failed. */
static int stream_next(lua_State *L)
{
    stream *s = check_stream(L, 1);
    reserve_for_await(L);
    batch_req *b = calloc(1, sizeof *b);
    if (!b)
        return out_of_memory(L, "stream:next");
    b->s = s;
    b->kind = s->kind;
    atomic_fetch_add(&s->refs, 1);
    return rtb_task_await(L, batch_work, batch_done, b);
}

/* stream:cancel() — stop early; a find sends C-CANCEL and still succeeds. */
static int stream_cancel(lua_State *L)
{
    rtb_queue_cancel(&check_stream(L, 1)->queue);
    return 0;
}

/* stream:result() — after the end: {status, matches} or retrieve counts: {status,
 * completed, failed, warning, received, transcoded, associations, stored_syntax_known,
 * message, failed_uids}. */
static int stream_result(lua_State *L)
{
    stream *s = check_stream(L, 1);
    lua_newtable(L);
    if (s->kind == STREAM_FIND) {
        rtb_lua_set_integer(L, "status", s->find.status);
        rtb_lua_set_integer(L, "matches", (lua_Integer)s->find.matches);
        lua_pushboolean(L, s->find.cancelled);
        lua_setfield(L, -2, "cancelled");
        return 1;
    }
    const rtb_dicom_retrieve_result *r = &s->retrieve;
    rtb_lua_set_integer(L, "status", r->status);
    rtb_lua_set_integer(L, "completed", r->completed);
    rtb_lua_set_integer(L, "failed", r->failed);
    rtb_lua_set_integer(L, "warning", r->warning);
    rtb_lua_set_integer(L, "received", (lua_Integer)r->received);
    rtb_lua_set_integer(L, "transcoded", (lua_Integer)r->transcoded);
    rtb_lua_set_integer(L, "associations", (lua_Integer)r->associations);
    lua_pushboolean(L, r->stored_syntax_known);
    lua_setfield(L, -2, "stored_syntax_known");
    if (r->message[0])
        rtb_lua_set_string(L, "message", r->message);
    lua_createtable(L, (int)r->n_failed_uids, 0);
    for (size_t i = 0; i < r->n_failed_uids; i++) {
        lua_pushstring(L, r->failed_uids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "failed_uids");
    return 1;
}

static int stream_gc(lua_State *L)
{
    stream_ud *u = luaL_checkudata(L, 1, STREAM_MT);
    if (u->s) {
        /* Unblocks a producer waiting for room and a next() waiting for items; each
         * holds its own reference, so the queue stays until they are out. */
        rtb_queue_cancel(&u->s->queue);
        stream_unref(u->s);
        u->s = NULL;
    }
    return 0;
}

/* core.find_start(peer, level, model, identifier_table) -> stream */
static int l_find_start(lua_State *L)
{
    lua_settop(L, 4); /* read_peer leaves values on the stack: none may pose as an argument */
    rtb_dicom_peer peer;
    read_peer(L, 1, &peer);
    rtb_dicom_level level = check_level(L, 2);
    rtb_dicom_model model = check_model(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    rtb_dicom_ensure_init(L);
    stream *s = new_stream(L, STREAM_FIND);
    s->level = level;
    s->model = model;
    s->identifier = rtb_dicom_dataset_from_table(L, 4); /* may raise: the stream frees all */
    if (peer_copy_init(&s->peer, &peer) != 0)
        return out_of_memory(L, "find");
    return stream_start(L, s);
}

/* core.get_start(peer, level, model, identifier_table, out_dir|nil, deliver) -> stream */
static int l_get_start(lua_State *L)
{
    lua_settop(L, 6); /* read_peer leaves values on the stack: none may pose as an argument */
    rtb_dicom_peer peer;
    read_peer(L, 1, &peer);
    rtb_dicom_level level = check_level(L, 2);
    rtb_dicom_model model = check_model(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    const char *dir = luaL_optstring(L, 5, NULL);
    int deliver = lua_toboolean(L, 6);
    if (!dir && !deliver)
        return rtb_lua_error_raise(L, "invalid", "get: give a directory or a callback");
    rtb_dicom_ensure_init(L);
    stream *s = new_stream(L, STREAM_GET);
    s->level = level;
    s->model = model;
    s->deliver = deliver;
    s->identifier = rtb_dicom_dataset_from_table(L, 4); /* may raise: the stream frees all */
    if ((dir && !(s->out_dir = strdup(dir))) || peer_copy_init(&s->peer, &peer) != 0)
        return out_of_memory(L, "get");
    return stream_start(L, s);
}

/* ---- move ------------------------------------------------------------------------- */

typedef struct {
    peer_copy peer;
    rtb_dicom_model model;
    rtb_dicom_level level;
    rtb_ds *identifier;
    char *destination;
    int rc;
    rtb_dicom_retrieve_result result;
    rtb_dicom_error err;
} move_req;

static void move_req_free(move_req *r)
{
    rtb_dicom_retrieve_result_clear(&r->result);
    rtb_ds_free(r->identifier);
    peer_free(&r->peer);
    free(r->destination);
    free(r);
}

static void move_work(void *data)
{
    move_req *r = data;
    r->rc = rtb_dicom_move(&r->peer.peer, r->model, r->level, r->identifier, r->destination,
                           &r->result, &r->err);
}

static void set_retrieve_fields(lua_State *L, const rtb_dicom_retrieve_result *res)
{
    rtb_lua_set_integer(L, "completed", res->completed);
    rtb_lua_set_integer(L, "failed", res->failed);
    rtb_lua_set_integer(L, "warning", res->warning);
    rtb_lua_set_integer(L, "remaining", res->remaining);
    lua_createtable(L, (int)res->n_failed_uids, 0);
    for (size_t i = 0; i < res->n_failed_uids; i++) {
        lua_pushstring(L, res->failed_uids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "failed_uids");
}

static int move_push(lua_State *L)
{
    move_req *r = lua_touserdata(L, 1);
    if (r->rc != 0) {
        rtb_dicom_push_error(L, &r->err);
        if (r->err.kind == RTB_DICOM_E_STATUS)
            set_retrieve_fields(L, &r->result);
    } else {
        lua_newtable(L);
        rtb_lua_set_integer(L, "status", r->result.status);
        set_retrieve_fields(L, &r->result);
        lua_pushnumber(L, r->result.open_seconds);
        lua_setfield(L, -2, "open_seconds");
    }
    return 1;
}

static int move_done(lua_State *L, void *data)
{
    move_req *r = data;
    int failed = push_protected(L, move_push, r) != LUA_OK || r->rc != 0;
    move_req_free(r);
    return failed ? lua_error(L) : 1;
}

/* core.move(peer, level, model, identifier_table, destination_ae) -> {status,
 * completed, failed, warning, remaining, failed_uids, open_seconds (spent opening the
 * association, a wait for the peer to accept included)} */
static int l_move(lua_State *L)
{
    lua_settop(L, 5); /* read_peer leaves values on the stack: none may pose as an argument */
    rtb_dicom_peer peer;
    read_peer(L, 1, &peer);
    rtb_dicom_level level = check_level(L, 2);
    rtb_dicom_model model = check_model(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    const char *destination = luaL_checkstring(L, 5);
    rtb_dicom_ensure_init(L);
    reserve_for_await(L);
    rtb_ds *identifier = rtb_dicom_dataset_from_table(L, 4); /* raises with nothing to free */
    move_req *r = calloc(1, sizeof *r);
    if (!r) {
        rtb_ds_free(identifier);
        return out_of_memory(L, "move");
    }
    r->identifier = identifier;
    r->level = level;
    r->model = model;
    if (!(r->destination = strdup(destination)) || peer_copy_init(&r->peer, &peer) != 0) {
        move_req_free(r);
        return out_of_memory(L, "move");
    }
    return rtb_task_await(L, move_work, move_done, r);
}

/* ---- store ------------------------------------------------------------------------ */

/* A dataset item is lent to the store (the Lua dataset refuses every use until the
 * store is done: no copy of a record of thousands of elements), or, when it cannot be
 * (a sequence item), copied; one that appears twice in the list is sent twice. */
#define DS_COPIED LUA_NOREF /* refs[i]: the store owns a copy */
#define DS_AGAIN LUA_REFNIL /* refs[i]: lent already by this store, for an earlier item */

typedef struct {
    peer_copy peer;
    rtb_dicom_store_item *items;
    int *refs; /* per item: the registry reference of a lent dataset, DS_COPIED, DS_AGAIN */
    size_t n;
    rtb_dicom_store_options opts;
    rtb_dicom_store_summary sum;
    int rc;
    rtb_dicom_error err;
} store_req;

/* Gives the lent datasets back to Lua and frees the rest (Lua thread). */
static void store_req_free(lua_State *L, store_req *r)
{
    for (size_t i = 0; r->items && i < r->n; i++) {
        free((char *)r->items[i].path);
        if (r->refs[i] >= 0)
            rtb_dicom_give_back_dataset(L, r->refs[i]);
        else if (r->refs[i] == DS_COPIED)
            rtb_ds_free(r->items[i].ds);
    }
    free(r->items);
    free(r->refs);
    peer_free(&r->peer);
    free(r);
}

/* A progress line on stderr (the CLI asks for it on a terminal only): rewritten in
 * place, from the storing thread. */
static void store_progress(void *ud, size_t done, size_t total)
{
    (void)ud;
    size_t step = total / 200 + 1; /* about 200 updates for any folder */
    if (done % step != 0 && done != total)
        return;
    fprintf(stderr, "\r%zu/%zu files", done, total);
    fflush(stderr);
}

static void store_work(void *data)
{
    store_req *r = data;
    r->rc = rtb_dicom_store_with(&r->peer.peer, r->items, r->n, &r->opts, &r->sum, &r->err);
}

/* A UID and its readable name as two fields ("sop_class_uid", "sop_class"). */
static void set_uid_fields(lua_State *L, const char *uid_key, const char *name_key, const char *uid)
{
    char name[128];
    if (!uid[0])
        return;
    rtb_lua_set_string(L, uid_key, uid);
    rtb_dicom_uid_name(uid, name, sizeof name);
    rtb_lua_set_string(L, name_key, name);
}

static int store_push(lua_State *L)
{
    store_req *r = lua_touserdata(L, 1);
    const rtb_dicom_store_summary *sum = &r->sum;
    lua_createtable(L, 0, 11);
    rtb_lua_set_integer(L, "stored", (lua_Integer)sum->stored);
    rtb_lua_set_integer(L, "failed", (lua_Integer)(r->n - sum->stored));
    rtb_lua_set_integer(L, "refused", (lua_Integer)sum->refused);
    rtb_lua_set_integer(L, "unreadable", (lua_Integer)sum->unreadable);
    rtb_lua_set_integer(L, "not_sent", (lua_Integer)sum->not_sent);
    rtb_lua_set_integer(L, "associations", (lua_Integer)sum->associations);
    rtb_lua_set_integer(L, "reconnects", (lua_Integer)sum->reconnects);
    lua_pushboolean(L, sum->breaker_open);
    lua_setfield(L, -2, "breaker_open");
    lua_pushnumber(L, sum->open_seconds);
    lua_setfield(L, -2, "open_seconds");
    lua_createtable(L, r->n <= INT_MAX ? (int)r->n : 0, 0);
    for (size_t i = 0; i < r->n; i++) {
        rtb_dicom_store_item *it = &r->items[i];
        lua_createtable(L, 0, 10);
        lua_pushboolean(L, it->result == 0);
        lua_setfield(L, -2, "ok");
        rtb_lua_set_string(L, "outcome", rtb_dicom_store_outcome_name(it->outcome));
        rtb_lua_set_integer(L, "status", it->status);
        if (it->sop_instance_uid[0])
            rtb_lua_set_string(L, "sop_instance_uid", it->sop_instance_uid);
        set_uid_fields(L, "sop_class_uid", "sop_class", it->sop_class_uid);
        set_uid_fields(L, "transfer_syntax_uid", "transfer_syntax", it->transfer_syntax_uid);
        if (it->path)
            rtb_lua_set_string(L, "path", it->path);
        if (it->result != 0) {
            rtb_dicom_push_error(L, &it->error);
            lua_setfield(L, -2, "error");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "items");
    if (r->rc != 0) {
        rtb_dicom_push_error(L, &r->err);
        lua_setfield(L, -2, "error");
    }
    return 1;
}

static int store_done(lua_State *L, void *data)
{
    store_req *r = data;
    int failed = push_protected(L, store_push, r) != LUA_OK;
    store_req_free(L, r);
    return failed ? lua_error(L) : 1;
}

/* core.store(peer, {path-or-dataset, ...}, opts) -> {stored, failed, refused, unreadable,
 * not_sent, associations, reconnects, breaker_open, open_seconds (spent opening the
 * associations, waits for the peer to accept included), items = {{ok, outcome, status,
 * sop_instance_uid, sop_class_uid, sop_class, transfer_syntax_uid, transfer_syntax, path,
 * error}}, error = association error or nil}. outcome is "stored" | "refused" |
 * "unreadable" | "not_sent"; failed counts all but stored. opts (optional) =
 * {max_reconnects, backoff_ms, max_backoff_ms, progress = true: a "done/total files"
 * line rewritten on stderr}. A dataset is lent to the store, not copied: until the
 * store returns, every use of it from Lua raises (another task's, since this one
 * waits); a sequence item is copied. The list is read raw (its length without __len). */
static int l_store(lua_State *L)
{
    lua_settop(L, 3); /* read_peer leaves values on the stack: none may pose as an argument */
    rtb_dicom_peer peer;
    read_peer(L, 1, &peer);
    luaL_checktype(L, 2, LUA_TTABLE);
    rtb_dicom_store_options opts = {0, 0, 0, NULL, NULL};
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        /* -1: never reconnect */
        opts.max_reconnects = (int)int_field(L, 3, "store", "max_reconnects", -1, 1000, 0);
        opts.backoff_ms = (int)int_field(L, 3, "store", "backoff_ms", 0, MAX_BACKOFF_MS, 0);
        opts.max_backoff_ms = (int)int_field(L, 3, "store", "max_backoff_ms", 0, MAX_BACKOFF_MS, 0);
        lua_getfield(L, 3, "progress");
        if (lua_toboolean(L, -1))
            opts.progress = store_progress;
        lua_pop(L, 1);
    }
    /* Every item is checked before any is copied. */
    size_t n = lua_rawlen(L, 2);
    for (size_t i = 0; i < n; i++) {
        int type = lua_rawgeti(L, 2, (lua_Integer)i + 1);
        size_t len;
        if (rtb_dicom_lent_dataset(L, -1)) {
            return rtb_lua_error_raise(L, "invalid", "store: item %zu: the dataset is being sent by another "
                                                     "store; wait for it", i + 1);
        } else if (rtb_dicom_test_dataset(L, -1)) {
            /* a dataset */
        } else if (type != LUA_TSTRING) {
            return rtb_lua_error_raise(L, "invalid", "store: item %zu must be a path or a dataset (got a %s)",
                                       i + 1, luaL_typename(L, -1));
        } else if (strlen(lua_tolstring(L, -1, &len)) != len) {
            return rtb_lua_error_raise(L, "invalid", "store: item %zu: the path contains a NUL byte", i + 1);
        }
        lua_pop(L, 1);
    }
    reserve_for_await(L);
    rtb_dicom_ensure_init(L);
    store_req *r = calloc(1, sizeof *r);
    if (!r)
        return out_of_memory(L, "store");
    r->opts = opts;
    r->items = calloc(n ? n : 1, sizeof *r->items);
    r->refs = malloc((n ? n : 1) * sizeof *r->refs);
    if (!r->items || !r->refs || peer_copy_init(&r->peer, &peer) != 0) {
        store_req_free(L, r); /* r->n is 0: no item to give back yet */
        return out_of_memory(L, "store");
    }
    for (size_t i = 0; i < n; i++)
        r->refs[i] = DS_COPIED;
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        rtb_ds *ds = rtb_dicom_lend_dataset(L, -1, &r->refs[i]);
        rtb_dicom_error err;
        if (ds) {
            r->items[i].ds = ds;
        } else if ((ds = rtb_dicom_lent_dataset(L, -1))) {
            r->items[i].ds = ds;
            r->refs[i] = DS_AGAIN;
        } else if ((ds = rtb_dicom_test_dataset(L, -1))) {
            if (rtb_ds_clone(ds, &r->items[i].ds, &err) != 0) {
                r->items[i].result = -1; /* reported per item; copying failed */
                r->items[i].outcome = RTB_STORE_UNREADABLE;
                r->items[i].error = err;
            }
        } else if (!(r->items[i].path = strdup(lua_tostring(L, -1)))) {
            store_req_free(L, r);
            return out_of_memory(L, "store");
        }
        lua_pop(L, 1);
    }
    return rtb_task_await(L, store_work, store_done, r);
}

/* core.uid_name(uid) -> "MR Image Storage", "RLE Lossless"; the UID when unknown. */
static int l_uid_name(lua_State *L)
{
    const char *uid = luaL_checkstring(L, 1);
    char name[128];
    rtb_dicom_ensure_init(L);
    rtb_dicom_uid_name(uid, name, sizeof name);
    lua_pushstring(L, name);
    return 1;
}

void rtb_dicom_open_scu(lua_State *L)
{
    static const luaL_Reg stream_methods[] = {{"next", stream_next},
                                              {"cancel", stream_cancel},
                                              {"result", stream_result},
                                              {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"echo", l_echo},
                                     {"find_start", l_find_start},
                                     {"get_start", l_get_start},
                                     {"move", l_move},
                                     {"store", l_store},
                                     {"uid_name", l_uid_name},
                                     {NULL, NULL}};
    if (luaL_newmetatable(L, STREAM_MT)) {
        luaL_newlib(L, stream_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, stream_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
}
