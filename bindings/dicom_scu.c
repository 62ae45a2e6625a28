/* rtbackup.dicom SCU operations: echo, find, move, get, store.
 *
 * Each call copies its inputs (peer, identifier) into a request, runs the DCMTK
 * operation on the pool through rtb_task_await, and turns the outcome into Lua
 * values on the loop thread. find and get can stream: matches / instances flow
 * through an rtb_queue to a task that takes them in batches (see stream_*). The
 * Lua side (scripts/lib/rtbackup/dicom.lua) builds the peer tables from the
 * environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dicom_lua.h"
#include "loop/loop.h"
#include "queue.h"
#include "task.h"
#include "util.h"

/* ---- peers ------------------------------------------------------------------------ */

typedef struct {
    rtb_dicom_peer peer;
    char *strings[7]; /* owned copies behind the peer's const char * fields */
} peer_copy;

static const char *copy_field(lua_State *L, int idx, const char *key, peer_copy *p, int slot,
                              int required)
{
    lua_getfield(L, idx, key);
    const char *v = lua_tostring(L, -1);
    if (!v && required) {
        lua_pop(L, 1);
        rtb_lua_error_raise(L, "invalid", "peer: '%s' is required", key);
    }
    p->strings[slot] = v ? strdup(v) : NULL;
    lua_pop(L, 1);
    return p->strings[slot];
}

static int int_field(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    int v = (int)luaL_optinteger(L, -1, 0);
    lua_pop(L, 1);
    return v;
}

static void peer_free(peer_copy *p)
{
    for (int i = 0; i < 7; i++)
        free(p->strings[i]);
}

/* Reads {aet, host, port, calling_aet, connect_timeout, acse_timeout, dimse_timeout,
 * max_pdu, tls = {cert, key, ca}} at idx. */
static void check_peer(lua_State *L, int idx, peer_copy *p)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    memset(p, 0, sizeof *p);
    p->peer.called_ae = copy_field(L, idx, "aet", p, 0, 1);
    p->peer.host = copy_field(L, idx, "host", p, 1, 1);
    p->peer.calling_ae = copy_field(L, idx, "calling_aet", p, 2, 1);
    p->peer.port = int_field(L, idx, "port");
    p->peer.connect_timeout = int_field(L, idx, "connect_timeout");
    p->peer.acse_timeout = int_field(L, idx, "acse_timeout");
    p->peer.dimse_timeout = int_field(L, idx, "dimse_timeout");
    p->peer.max_pdu = (unsigned)int_field(L, idx, "max_pdu");
    if (lua_getfield(L, idx, "tls") == LUA_TTABLE) {
        int t = lua_gettop(L);
        p->peer.tls = 1;
        p->peer.tls_cert = copy_field(L, t, "cert", p, 3, 0);
        p->peer.tls_key = copy_field(L, t, "key", p, 4, 0);
        p->peer.tls_ca = copy_field(L, t, "ca", p, 5, 0);
    }
    lua_pop(L, 1);
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

static int echo_done(lua_State *L, void *data)
{
    echo_req *r = data;
    int rc = r->rc;
    if (rc != 0)
        rtb_dicom_push_error(L, &r->err);
    else
        lua_pushnumber(L, r->seconds);
    peer_free(&r->peer);
    free(r);
    return rc != 0 ? lua_error(L) : 1;
}

/* core.echo(peer) -> seconds the association took */
static int l_echo(lua_State *L)
{
    rtb_dicom_ensure_init(L);
    echo_req *r = calloc(1, sizeof *r);
    check_peer(L, 1, &r->peer);
    return rtb_task_await(L, echo_work, echo_done, r);
}

/* ---- streams (find and get) -------------------------------------------------------- */

#define STREAM_MT "rtbackup.dicom.stream"
#define STREAM_QUEUE 256

typedef enum { STREAM_FIND, STREAM_GET } stream_kind;

typedef struct {
    stream_kind kind;
    int refs;     /* the userdata and the running operation; touched on the loop only */
    int finished; /* the operation returned */
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
    if (--s->refs > 0)
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
    stream *s = data;
    s->finished = 1;
    stream_unref(s);
}

static stream *check_stream(lua_State *L, int idx)
{
    return ((stream_ud *)luaL_checkudata(L, idx, STREAM_MT))->s;
}

static int stream_start(lua_State *L, stream *s)
{
    rtb_queue_init(&s->queue, STREAM_QUEUE, free_ds_item);
    stream_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = s;
    luaL_setmetatable(L, STREAM_MT);
    s->refs = 2;
    int rc = rtb_loop_queue_work(stream_work, stream_after, s);
    if (rc < 0) {
        s->refs = 1;
        return rtb_lua_error_raise(L, "internal", "cannot queue DICOM work: %s",
                                   rtb_loop_strerror(rc));
    }
    return 1;
}

typedef struct {
    stream *s;
    void *items[STREAM_QUEUE];
    size_t n;
} batch_req;

static void batch_work(void *data)
{
    batch_req *b = data;
    b->n = rtb_queue_pop_batch(&b->s->queue, b->items, STREAM_QUEUE);
}

static int batch_done(lua_State *L, void *data)
{
    batch_req *b = data;
    stream *s = b->s;
    size_t n = b->n;
    if (n == 0) {
        free(b);
        if (s->rc != 0)
            return rtb_dicom_raise(L, &s->err);
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        if (s->kind == STREAM_FIND) {
            rtb_dicom_push_table(L, b->items[i]);
            rtb_ds_free(b->items[i]);
        } else {
            rtb_dicom_push_dataset(L, b->items[i], 0); /* the userdata owns it now */
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(b);
    return 1;
}

/* stream:next() -> a list of matches (find: tables; get: datasets), nil at the end.
 * Raises the operation's error at the end if it failed. */
static int stream_next(lua_State *L)
{
    batch_req *b = calloc(1, sizeof *b);
    b->s = check_stream(L, 1);
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
        rtb_queue_cancel(&u->s->queue); /* unblocks a producer waiting for room */
        stream_unref(u->s);
        u->s = NULL;
    }
    return 0;
}

static stream *new_stream(lua_State *L, stream_kind kind)
{
    rtb_dicom_ensure_init(L);
    stream *s = calloc(1, sizeof *s);
    if (!s)
        luaL_error(L, "out of memory");
    s->kind = kind;
    return s;
}

/* core.find_start(peer, level, model, identifier_table) -> stream */
static int l_find_start(lua_State *L)
{
    luaL_checktype(L, 4, LUA_TTABLE);
    rtb_dicom_level level = check_level(L, 2);
    rtb_dicom_model model = check_model(L, 3);
    rtb_ds *identifier = rtb_dicom_dataset_from_table(L, 4);
    stream *s = new_stream(L, STREAM_FIND);
    s->level = level;
    s->model = model;
    s->identifier = identifier;
    check_peer(L, 1, &s->peer);
    return stream_start(L, s);
}

/* core.get_start(peer, level, model, identifier_table, out_dir|nil, deliver) -> stream */
static int l_get_start(lua_State *L)
{
    luaL_checktype(L, 4, LUA_TTABLE);
    rtb_dicom_level level = check_level(L, 2);
    rtb_dicom_model model = check_model(L, 3);
    const char *dir = luaL_optstring(L, 5, NULL);
    int deliver = lua_toboolean(L, 6);
    if (!dir && !deliver)
        return rtb_lua_error_raise(L, "invalid", "get: give a directory or a callback");
    rtb_ds *identifier = rtb_dicom_dataset_from_table(L, 4);
    stream *s = new_stream(L, STREAM_GET);
    s->level = level;
    s->model = model;
    s->identifier = identifier;
    s->out_dir = dir ? strdup(dir) : NULL;
    s->deliver = deliver;
    check_peer(L, 1, &s->peer);
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

static int move_done(lua_State *L, void *data)
{
    move_req *r = data;
    int rc = r->rc;
    if (rc != 0) {
        rtb_dicom_push_error(L, &r->err);
        if (r->err.kind == RTB_DICOM_E_STATUS)
            set_retrieve_fields(L, &r->result);
    } else {
        lua_newtable(L);
        rtb_lua_set_integer(L, "status", r->result.status);
        set_retrieve_fields(L, &r->result);
    }
    rtb_dicom_retrieve_result_clear(&r->result);
    rtb_ds_free(r->identifier);
    peer_free(&r->peer);
    free(r->destination);
    free(r);
    return rc != 0 ? lua_error(L) : 1;
}

/* core.move(peer, level, model, identifier_table, destination_ae) -> {status,
 * completed, failed, warning, remaining, failed_uids} */
static int l_move(lua_State *L)
{
    luaL_checktype(L, 4, LUA_TTABLE);
    const char *destination = luaL_checkstring(L, 5);
    rtb_dicom_level level = check_level(L, 2);
    rtb_dicom_model model = check_model(L, 3);
    rtb_dicom_ensure_init(L);
    rtb_ds *identifier = rtb_dicom_dataset_from_table(L, 4);
    move_req *r = calloc(1, sizeof *r);
    r->identifier = identifier;
    r->level = level;
    r->model = model;
    r->destination = strdup(destination);
    check_peer(L, 1, &r->peer);
    return rtb_task_await(L, move_work, move_done, r);
}

/* ---- store ------------------------------------------------------------------------ */

typedef struct {
    peer_copy peer;
    rtb_dicom_store_item *items;
    size_t n;
    rtb_dicom_store_options opts;
    rtb_dicom_store_summary sum;
    int rc;
    rtb_dicom_error err;
} store_req;

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

static int store_done(lua_State *L, void *data)
{
    store_req *r = data;
    const rtb_dicom_store_summary *sum = &r->sum;
    lua_createtable(L, 0, 10);
    rtb_lua_set_integer(L, "stored", (lua_Integer)sum->stored);
    rtb_lua_set_integer(L, "failed", (lua_Integer)(r->n - sum->stored));
    rtb_lua_set_integer(L, "refused", (lua_Integer)sum->refused);
    rtb_lua_set_integer(L, "unreadable", (lua_Integer)sum->unreadable);
    rtb_lua_set_integer(L, "not_sent", (lua_Integer)sum->not_sent);
    rtb_lua_set_integer(L, "associations", (lua_Integer)sum->associations);
    rtb_lua_set_integer(L, "reconnects", (lua_Integer)sum->reconnects);
    lua_pushboolean(L, sum->breaker_open);
    lua_setfield(L, -2, "breaker_open");
    lua_createtable(L, (int)r->n, 0);
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
        free((char *)it->path);
        rtb_ds_free(it->ds);
    }
    lua_setfield(L, -2, "items");
    if (r->rc != 0) {
        rtb_dicom_push_error(L, &r->err);
        lua_setfield(L, -2, "error");
    }
    free(r->items);
    peer_free(&r->peer);
    free(r);
    return 1;
}

/* core.store(peer, {path-or-dataset, ...}, opts) -> {stored, failed, refused, unreadable,
 * not_sent, associations, reconnects, breaker_open, items = {{ok, outcome, status,
 * sop_instance_uid, sop_class_uid, sop_class, transfer_syntax_uid, transfer_syntax, path,
 * error}}, error = association error or nil}. outcome is "stored" | "refused" |
 * "unreadable" | "not_sent"; failed counts all but stored. opts (optional) =
 * {max_reconnects, backoff_ms, max_backoff_ms, progress = true: a "done/total files"
 * line rewritten on stderr}. Datasets are copied first, so the
 * caller may go on using them. */
static int l_store(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    rtb_dicom_store_options opts = {0, 0, 0, NULL, NULL};
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        opts.max_reconnects = int_field(L, 3, "max_reconnects");
        opts.backoff_ms = int_field(L, 3, "backoff_ms");
        opts.max_backoff_ms = int_field(L, 3, "max_backoff_ms");
        lua_getfield(L, 3, "progress");
        if (lua_toboolean(L, -1))
            opts.progress = store_progress;
        lua_pop(L, 1);
        if (opts.backoff_ms < 0 || opts.max_backoff_ms < 0)
            return rtb_lua_error_raise(L, "invalid", "store: backoff_ms and max_backoff_ms must be >= 0");
    }
    rtb_dicom_ensure_init(L);
    size_t n = (size_t)luaL_len(L, 2);
    store_req *r = calloc(1, sizeof *r);
    r->opts = opts;
    r->items = calloc(n ? n : 1, sizeof *r->items);
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        rtb_ds *ds = rtb_dicom_test_dataset(L, -1);
        rtb_dicom_error err;
        if (ds) {
            if (rtb_ds_clone(ds, &r->items[i].ds, &err) != 0) {
                r->items[i].result = -1; /* reported per item; copying failed */
                r->items[i].outcome = RTB_STORE_UNREADABLE;
                r->items[i].error = err;
            }
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            r->items[i].path = strdup(lua_tostring(L, -1));
        } else {
            for (size_t k = 0; k < i; k++) {
                free((char *)r->items[k].path);
                rtb_ds_free(r->items[k].ds);
            }
            free(r->items);
            free(r);
            return rtb_lua_error_raise(L, "invalid", "store: item %d must be a path or a dataset",
                                       (int)i + 1);
        }
        lua_pop(L, 1);
    }
    check_peer(L, 1, &r->peer);
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
