/* rtbackup.http server: core.serve{...} -> server with :port(), :respond(id, res),
 * :close(), :unfinished(), :stop() (scripts/lib/rtbackup/http.lua wraps it).
 *
 * Threads. libmicrohttpd parses HTTP (and TLS, through GnuTLS) on one internal
 * polling thread (epoll) for all connections. When a request is complete, that thread
 * suspends the connection (MHD_suspend_connection), puts the request on an inbox and
 * wakes the loop (rtb_loop_wake: a uv_async). On the loop thread each request becomes
 * a Lua task running the handler; its answer is stored on the request and the
 * connection resumed (MHD_resume_connection, safe from any thread: it signals MHD's
 * thread through its inter-thread channel), and MHD's thread sends it.
 *
 * Why suspend/resume rather than a thread per connection blocked on a condition
 * variable: a slow handler (a C-ECHO, a journal query) then costs a suspended
 * connection, not a thread, so the connection cap rather than a thread count bounds
 * what is in flight; and neither side ever blocks the other: the MHD thread never
 * waits for Lua, and the loop only takes a mutex for a list swap.
 *
 * Ownership of a request (struct pending): MHD's thread creates it; from the moment it
 * is on the inbox until the connection is resumed the loop owns it; then MHD's thread
 * again, which frees it when the request completes (MHD_OPTION_NOTIFY_COMPLETED). MHD
 * must not be stopped with a connection suspended, so stopping first answers every
 * request the loop owns.
 *
 * The wake does not keep the loop alive: a running server never keeps a finished run
 * from exiting; when the host closes the Lua state, the server's finalizer stops it. */
#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_lua.h"
#include "log/log.h"
#include "loop/loop.h"
#include "task.h"
#include "util.h"

#define SERVER_MT "rtbackup.http.server"

#define DEFAULT_MAX_BODY 65536
#define DEFAULT_IDLE_TIMEOUT 10
#define DEFAULT_MAX_CONNECTIONS 64
#define DEFAULT_MAX_PER_IP 16
/* How long stopping waits for answers already given to be sent. */
#define DRAIN_MS 1000

typedef struct kv kv;
struct kv {
    char *key, *value;
    kv *next;
};

typedef enum { REQ_RECEIVING, REQ_WITH_LOOP, REQ_ANSWERED } req_state;

typedef struct server server;
typedef struct pending pending;

struct pending {
    server *srv;
    struct MHD_Connection *connection;
    req_state state;
    int counted;   /* counted in srv->unfinished until it completes */
    int too_large; /* the body went over max_body: it is dropped, the answer is 413 */
    long long id;
    char *method, *path, *user, *password;
    char remote[INET6_ADDRSTRLEN + 8];
    char *body;
    size_t body_len, body_cap;
    kv *headers, *query;
    /* The answer, set on the loop thread before the connection is resumed. */
    struct MHD_Response *response;
    unsigned int status;
    pending *next, *prev; /* inbox (next only), then the in-flight list */
};

struct server {
    struct MHD_Daemon *daemon;
    rtb_loop_wake *wake;
    pthread_mutex_t lock; /* guards inbox, closing, unfinished, next_id, last_log */
    pthread_cond_t drained; /* unfinished reached 0 */
    pending *inbox_head, *inbox_tail;
    int closing; /* no request goes to Lua any more */
    size_t unfinished; /* handed to the loop and not yet completed (sent or dropped) */
    long long next_id;
    char last_log[256];
    /* Loop thread only. */
    pending *in_flight; /* handed to a Lua task, not answered yet */
    size_t max_body;
    int port;
    MHD_socket quiesced_fd;
    char *cert, *key;
    lua_State *scratch; /* a thread of our own to spawn handler tasks from the wake */
    int ref_self, ref_dispatch, ref_spawn, ref_scratch;
    int stopped;
};

/* ---- helpers ------------------------------------------------------------------- */

static void free_kv(kv *k)
{
    while (k) {
        kv *next = k->next;
        free(k->key);
        free(k->value);
        free(k);
        k = next;
    }
}

/* What Lua got already (or never needs): freed once the handler task has its table. */
static void free_request_parts(pending *p)
{
    free(p->method);
    free(p->path);
    free(p->body);
    free_kv(p->headers);
    free_kv(p->query);
    if (p->password) {
        memset(p->password, 0, strlen(p->password));
        free(p->password);
    }
    free(p->user);
    p->method = p->path = p->body = p->user = p->password = NULL;
    p->headers = p->query = NULL;
}

static void free_pending(pending *p)
{
    free_request_parts(p);
    if (p->response)
        MHD_destroy_response(p->response);
    free(p);
}

static struct MHD_Response *text_response(const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    return r;
}

/* ---- on MHD's thread ------------------------------------------------------------ */

static void on_log(void *cls, const char *fmt, va_list ap)
{
    server *s = cls;
    char line[256];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    pthread_mutex_lock(&s->lock);
    snprintf(s->last_log, sizeof s->last_log, "%s", line);
    pthread_mutex_unlock(&s->lock);
    rtb_log(RTB_LOG_DEBUG, "http server: %s", line);
}

static enum MHD_Result queue_text(struct MHD_Connection *c, unsigned int status, const char *text)
{
    struct MHD_Response *r = text_response(text);
    if (!r)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

typedef struct {
    kv **tail;
    int lower; /* header names are case-insensitive: Lua sees them lower-cased */
    int failed;
} kv_collector;

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    kv_collector *col = cls;
    kv *k = calloc(1, sizeof *k);
    if (!k || !(k->key = strdup(key ? key : "")) || !(k->value = strdup(value ? value : ""))) {
        if (k) {
            free(k->key);
            free(k);
        }
        col->failed = 1;
        return MHD_NO;
    }
    if (col->lower)
        for (char *q = k->key; *q; q++)
            *q = (char)tolower((unsigned char)*q);
    *col->tail = k;
    col->tail = &k->next;
    return MHD_YES;
}

static void format_remote(struct MHD_Connection *c, char *out, size_t size)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (!info || !info->client_addr)
        return;
    char ip[INET6_ADDRSTRLEN];
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(out, size, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(out, size, "[%s]:%u", ip, ntohs(in6->sin6_port));
    }
}

/* Copies what Lua will see out of MHD's connection memory. 0, or -1 out of memory. */
static int capture_request(pending *p, struct MHD_Connection *c, const char *url,
                           const char *method)
{
    p->method = strdup(method);
    p->path = strdup(url);
    kv_collector headers = {&p->headers, 1, 0}, query = {&p->query, 0, 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_kv, &headers);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_kv, &query);
    char *password = NULL;
    char *user = MHD_basic_auth_get_username_password(c, &password);
    if (user) {
        p->user = strdup(user);
        p->password = strdup(password ? password : "");
        MHD_free(user);
    }
    if (password) {
        memset(password, 0, strlen(password));
        MHD_free(password);
    }
    format_remote(c, p->remote, sizeof p->remote);
    if (!p->method || !p->path || headers.failed || query.failed || (user && (!p->user || !p->password)))
        return -1;
    return 0;
}

/* MHD calls this several times per request: once the headers are in (*con_cls still
 * NULL), once per piece of body, once when the request is complete, and once more
 * after we resume the connection with the loop's answer. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    server *s = cls;
    pending *p = *con_cls;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return MHD_NO; /* closes the connection */
        p->srv = s;
        p->connection = c;
        *con_cls = p;
        /* A declared body over the limit is refused before it is read. */
        const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, NULL, 10) > s->max_body)
            return queue_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
        return MHD_YES;
    }
    if (p->state == REQ_ANSWERED) {
        if (!p->response)
            return MHD_NO; /* no memory left even for an error page */
        enum MHD_Result ret = MHD_queue_response(c, p->status, p->response);
        MHD_destroy_response(p->response);
        p->response = NULL;
        return ret;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (p->too_large)
            return MHD_YES;
        if (p->body_len + n > s->max_body) {
            /* Chunked, so no length was declared: read and drop the rest. */
            p->too_large = 1;
            free(p->body);
            p->body = NULL;
            p->body_len = p->body_cap = 0;
            return MHD_YES;
        }
        if (p->body_len + n > p->body_cap) {
            size_t cap = p->body_cap ? p->body_cap : 1024;
            while (cap < p->body_len + n)
                cap *= 2;
            char *b = realloc(p->body, cap);
            if (!b)
                return MHD_NO;
            p->body = b;
            p->body_cap = cap;
        }
        memcpy(p->body + p->body_len, upload_data, n);
        p->body_len += n;
        return MHD_YES;
    }
    /* The request is complete. */
    if (p->too_large)
        return queue_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
    if (capture_request(p, c, url, method) < 0)
        return queue_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    pthread_mutex_lock(&s->lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        return queue_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "server stopping\n");
    }
    /* Suspended before the loop can see it, so a quick answer cannot resume a
     * connection that is not suspended yet. */
    MHD_suspend_connection(c);
    p->state = REQ_WITH_LOOP;
    p->id = ++s->next_id;
    p->counted = 1;
    s->unfinished++;
    p->next = NULL;
    if (s->inbox_tail)
        s->inbox_tail->next = p;
    else
        s->inbox_head = p;
    s->inbox_tail = p;
    pthread_mutex_unlock(&s->lock);
    rtb_loop_wake_send(s->wake);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    server *s = cls;
    pending *p = *con_cls;
    if (!p)
        return;
    if (p->counted) {
        pthread_mutex_lock(&s->lock);
        if (--s->unfinished == 0)
            pthread_cond_broadcast(&s->drained);
        pthread_mutex_unlock(&s->lock);
    }
    free_pending(p);
    *con_cls = NULL;
}

/* ---- on the loop thread ---------------------------------------------------------- */

static void unlink_in_flight(server *s, pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else if (s->in_flight == p)
        s->in_flight = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

/* Hands the answer to MHD's thread. The loop must not touch p afterwards. */
static void answer(pending *p, unsigned int status, struct MHD_Response *response)
{
    free_request_parts(p);
    p->status = status;
    p->response = response;
    p->state = REQ_ANSWERED;
    MHD_resume_connection(p->connection);
}

static void answer_text(pending *p, unsigned int status, const char *text)
{
    answer(p, status, text_response(text));
}

static void set_kv_table(lua_State *L, const kv *k, int join)
{
    lua_newtable(L);
    for (; k; k = k->next) {
        lua_pushstring(L, k->key);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            if (join) { /* a repeated header: one value, as RFC 9110 combines them */
                lua_pushliteral(L, ", ");
                lua_pushstring(L, k->value);
                lua_concat(L, 3);
                lua_rawset(L, -3);
            } else { /* a repeated query key: the first one counts */
                lua_pop(L, 2);
            }
            continue;
        }
        lua_pop(L, 1);
        lua_pushstring(L, k->value);
        lua_rawset(L, -3);
    }
}

/* In a protected call on the scratch thread: spawn(dispatch, server, req, id). */
static int dispatch_one(lua_State *L)
{
    pending *p = lua_touserdata(L, 1);
    server *s = p->srv;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_spawn);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_dispatch);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_self);
    lua_createtable(L, 0, 8);
    rtb_lua_set_string(L, "method", p->method);
    rtb_lua_set_string(L, "path", p->path);
    set_kv_table(L, p->query, 0);
    lua_setfield(L, -2, "query");
    set_kv_table(L, p->headers, 1);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, p->body ? p->body : "", p->body_len);
    lua_setfield(L, -2, "body");
    rtb_lua_set_string(L, "remote", p->remote);
    if (p->user) {
        rtb_lua_set_string(L, "user", p->user);
        rtb_lua_set_string(L, "password", p->password);
    }
    lua_pushinteger(L, (lua_Integer)p->id);
    lua_call(L, 4, 0);
    return 0;
}

static void dispatch(server *s, pending *p)
{
    p->prev = NULL;
    p->next = s->in_flight;
    if (s->in_flight)
        s->in_flight->prev = p;
    s->in_flight = p;
    lua_State *S = s->scratch;
    lua_settop(S, 0);
    lua_pushcfunction(S, dispatch_one);
    lua_pushlightuserdata(S, p);
    if (lua_pcall(S, 1, 0, 0) != LUA_OK) {
        rtb_log(RTB_LOG_ERROR, "http server: cannot start a task for %s %s: %s", p->method,
                p->path, lua_tostring(S, -1) ? lua_tostring(S, -1) : "?");
        unlink_in_flight(s, p);
        answer_text(p, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal server error\n");
    } else {
        free_request_parts(p); /* the task has its table */
    }
    lua_settop(S, 0);
}

static void on_wake(void *arg)
{
    server *s = arg;
    pthread_mutex_lock(&s->lock);
    pending *p = s->inbox_head;
    s->inbox_head = s->inbox_tail = NULL;
    int closing = s->closing;
    pthread_mutex_unlock(&s->lock);
    while (p) {
        pending *next = p->next;
        if (closing)
            answer_text(p, MHD_HTTP_SERVICE_UNAVAILABLE, "server stopping\n");
        else
            dispatch(s, p);
        p = next;
    }
}

/* Nothing more goes to Lua: queued requests and new ones are answered 503; new
 * connections are no longer accepted. Requests already in a handler go on. */
static void begin_close(server *s)
{
    pthread_mutex_lock(&s->lock);
    int was_closing = s->closing;
    s->closing = 1;
    pending *p = s->inbox_head;
    s->inbox_head = s->inbox_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    while (p) {
        pending *next = p->next;
        answer_text(p, MHD_HTTP_SERVICE_UNAVAILABLE, "server stopping\n");
        p = next;
    }
    if (!was_closing && s->daemon)
        s->quiesced_fd = MHD_quiesce_daemon(s->daemon);
}

/* Answers what handlers still hold, so no connection is suspended when MHD stops. */
static void answer_in_flight(server *s)
{
    while (s->in_flight) {
        pending *p = s->in_flight;
        unlink_in_flight(s, p);
        answer_text(p, MHD_HTTP_SERVICE_UNAVAILABLE, "server stopping\n");
    }
}

static void release_lua(lua_State *L, server *s)
{
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref_self);
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref_dispatch);
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref_spawn);
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref_scratch);
    s->ref_self = s->ref_dispatch = s->ref_spawn = s->ref_scratch = LUA_NOREF;
    s->scratch = NULL;
}

/* After MHD's thread is gone: nothing can send a wake or touch s any more. */
static void release_rest(server *s)
{
    s->daemon = NULL;
    if (s->wake)
        rtb_loop_wake_close(s->wake);
    s->wake = NULL;
    if (s->quiesced_fd != MHD_INVALID_SOCKET)
        close(s->quiesced_fd);
    s->quiesced_fd = MHD_INVALID_SOCKET;
    free(s->cert);
    free(s->key);
    s->cert = s->key = NULL;
}

/* ---- Lua API ------------------------------------------------------------------- */

static server *check_server(lua_State *L)
{
    return luaL_checkudata(L, 1, SERVER_MT);
}

static lua_Integer opt_int_field(lua_State *L, const char *key, lua_Integer def, lua_Integer min,
                                 lua_Integer max)
{
    lua_getfield(L, 1, key);
    lua_Integer v = luaL_optinteger(L, -1, def);
    lua_pop(L, 1);
    if (v < min || v > max)
        luaL_error(L, "%s: expected %I to %I", key, min, max);
    return v;
}

static char *opt_dup_field(lua_State *L, const char *key)
{
    lua_getfield(L, 1, key);
    const char *v = luaL_optstring(L, -1, NULL);
    char *copy = v ? strdup(v) : NULL;
    lua_pop(L, 1);
    return copy;
}

/* core.serve{host = "127.0.0.1", port = 0, max_body, idle_timeout (s),
 * max_connections, max_per_ip, cert_pem, key_pem, dispatch = fn(server, req, id),
 * spawn = task.spawn} -> server. dispatch must end with server:respond(id, res). */
static int l_serve(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "127.0.0.1");
    lua_Integer port = opt_int_field(L, "port", 0, 0, 65535);
    lua_Integer max_body = opt_int_field(L, "max_body", DEFAULT_MAX_BODY, 0, 1 << 30);
    lua_Integer idle = opt_int_field(L, "idle_timeout", DEFAULT_IDLE_TIMEOUT, 1, 86400);
    lua_Integer max_conn = opt_int_field(L, "max_connections", DEFAULT_MAX_CONNECTIONS, 1, 100000);
    lua_Integer per_ip = opt_int_field(L, "max_per_ip", DEFAULT_MAX_PER_IP, 0, 100000);
    lua_getfield(L, 1, "cert_pem");
    int has_cert = !lua_isnil(L, -1);
    lua_getfield(L, 1, "key_pem");
    int has_key = !lua_isnil(L, -1);
    lua_pop(L, 2);
    if (has_cert != has_key)
        return rtb_lua_error_raise(L, "config", "TLS needs both a certificate and its key");
    if (has_cert && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return rtb_lua_error_raise(L, "config", "this libmicrohttpd was built without TLS");
    if (lua_getfield(L, 1, "dispatch") != LUA_TFUNCTION)
        return luaL_error(L, "dispatch: expected a function");
    int dispatch_idx = lua_gettop(L);
    if (lua_getfield(L, 1, "spawn") != LUA_TFUNCTION)
        return luaL_error(L, "spawn: expected a function");
    int spawn_idx = lua_gettop(L);

    /* The address first: a typo in host is a configuration error, not a bind error. */
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%d", (int)port);
    int gai = getaddrinfo(host, port_text, &hints, &ai);
    if (gai != 0)
        return rtb_lua_error_raise(L, "config", "cannot resolve host '%s': %s", host,
                                   gai_strerror(gai));
    struct sockaddr_storage addr;
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);

    server *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->drained, NULL);
    s->quiesced_fd = MHD_INVALID_SOCKET;
    s->ref_self = s->ref_dispatch = s->ref_spawn = s->ref_scratch = LUA_NOREF;
    s->stopped = 1; /* until it runs: the finalizer then only frees */
    s->max_body = (size_t)max_body;
    luaL_setmetatable(L, SERVER_MT);
    int self_idx = lua_gettop(L);
    if (has_cert) {
        s->cert = opt_dup_field(L, "cert_pem");
        s->key = opt_dup_field(L, "key_pem");
        if (!s->cert || !s->key)
            return luaL_error(L, "out of memory");
    }
    s->scratch = lua_newthread(L);
    s->ref_scratch = luaL_ref(L, LUA_REGISTRYINDEX);
    if (rtb_loop_wake_open(&s->wake, on_wake, s) < 0)
        return luaL_error(L, "cannot create a loop wake-up");

    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (has_cert)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[12] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_log, s},
        {MHD_OPTION_SOCK_ADDR, 0, &addr},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)idle, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)max_conn, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)per_ip, NULL},
    };
    int n_opts = 6;
    if (has_cert) {
        opts[n_opts++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert};
        opts[n_opts++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->key};
        /* TLS 1.2 and 1.3 only, GnuTLS's usual choices otherwise. */
        opts[n_opts++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                                 (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"};
    }
    opts[n_opts] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    s->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s,
                                 MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->daemon) {
        char why[256];
        pthread_mutex_lock(&s->lock);
        snprintf(why, sizeof why, "%s", s->last_log[0] ? s->last_log : "libmicrohttpd refused to start");
        pthread_mutex_unlock(&s->lock);
        return rtb_lua_error_raise(L, "listen", "cannot serve HTTP%s on %s port %d: %s",
                                   has_cert ? "S" : "", host, (int)port, why);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : (int)port;
    s->stopped = 0;
    lua_pushvalue(L, dispatch_idx);
    s->ref_dispatch = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, spawn_idx);
    s->ref_spawn = luaL_ref(L, LUA_REGISTRYINDEX);
    /* Anchored while it runs: a server nobody holds on to keeps serving. */
    lua_pushvalue(L, self_idx);
    s->ref_self = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, self_idx);
    return 1;
}

static int server_port(lua_State *L)
{
    lua_pushinteger(L, check_server(L)->port);
    return 1;
}

/* Builds the MHD response for a Lua answer {status, headers, body}; raises on a bad
 * one (nothing is left allocated then). */
static struct MHD_Response *build_response(lua_State *L, int idx, unsigned int *status)
{
    if (!lua_istable(L, idx))
        rtb_lua_error_raise(L, "http", "the handler returned %s, not a response table",
                            luaL_typename(L, idx));
    lua_getfield(L, idx, "status");
    int isnum = 1;
    lua_Integer st = lua_isnil(L, -1) ? 200 : lua_tointegerx(L, -1, &isnum);
    if (!lua_isnil(L, -1) && (!isnum || st < 100 || st > 599))
        rtb_lua_error_raise(L, "http", "response status: expected 100 to 599");
    lua_getfield(L, idx, "body");
    size_t len = 0;
    const char *body = "";
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            rtb_lua_error_raise(L, "http", "response body: expected a string");
        body = lua_tolstring(L, -1, &len);
    }
    int headers_type = lua_getfield(L, idx, "headers");
    if (headers_type != LUA_TNIL && headers_type != LUA_TTABLE)
        rtb_lua_error_raise(L, "http", "response headers: expected a table");
    int headers = lua_gettop(L);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        luaL_error(L, "out of memory");
    if (headers_type == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, headers)) {
            const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            const char *value = lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER
                                    ? lua_tostring(L, -1)
                                    : NULL;
            /* MHD refuses CR/LF in either, and headers it sets itself (Content-Length). */
            if (!name || !value || MHD_add_response_header(r, name, value) != MHD_YES) {
                MHD_destroy_response(r);
                rtb_lua_error_raise(L, "http", "response header '%s': invalid name or value",
                                    name ? name : "?");
            }
            lua_pop(L, 1);
        }
    }
    *status = (unsigned int)st;
    return r;
}

/* server:respond(id, {status = 200, headers = {...}, body = "..."}) -> true, or false
 * when the request was already answered (the server stopped meanwhile). Raises
 * {kind = "http"} for a response it cannot send; the request is then still open. */
static int server_respond(lua_State *L)
{
    server *s = check_server(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    pending *p = s->in_flight;
    while (p && p->id != id)
        p = p->next;
    if (!p) {
        lua_pushboolean(L, 0);
        return 1;
    }
    unsigned int status;
    struct MHD_Response *r = build_response(L, 3, &status);
    unlink_in_flight(s, p);
    answer(p, status, r);
    lua_pushboolean(L, 1);
    return 1;
}

/* server:close() — stop accepting; what is queued and what comes on open
 * connections gets 503; handlers already running go on. */
static int server_close(lua_State *L)
{
    server *s = check_server(L);
    if (!s->stopped)
        begin_close(s);
    return 0;
}

/* server:unfinished() — requests handed to Lua and not yet sent. */
static int server_unfinished(lua_State *L)
{
    server *s = check_server(L);
    pthread_mutex_lock(&s->lock);
    size_t n = s->unfinished;
    pthread_mutex_unlock(&s->lock);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* Gives answers already handed to MHD up to DRAIN_MS to go out (stopping closes
 * every connection), then stops MHD and joins its thread. */
static void drain_and_stop(server *s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += DRAIN_MS / 1000;
    deadline.tv_nsec += (long)(DRAIN_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    while (s->unfinished > 0)
        if (pthread_cond_timedwait(&s->drained, &s->lock, &deadline) != 0)
            break;
    pthread_mutex_unlock(&s->lock);
    MHD_stop_daemon(s->daemon);
}

static void stop_work(void *data)
{
    drain_and_stop(data);
}

static int stop_done(lua_State *L, void *data)
{
    server *s = data;
    release_rest(s);
    release_lua(L, s);
    return 0;
}

/* server:stop() — close, answer what handlers still hold with 503, let the answers
 * go out (up to DRAIN_MS), stop MHD (its thread is joined on the pool). */
static int server_stop(lua_State *L)
{
    server *s = check_server(L);
    if (s->stopped)
        return 0;
    begin_close(s);
    answer_in_flight(s);
    s->stopped = 1;
    return rtb_task_await(L, stop_work, stop_done, s);
}

/* At exit (the host closes the state), or when a server that never started is
 * collected. Stops MHD right here: the loop may be gone. */
static int server_gc(lua_State *L)
{
    server *s = check_server(L);
    if (!s->stopped) {
        s->stopped = 1;
        begin_close(s);
        answer_in_flight(s);
    }
    if (s->daemon)
        drain_and_stop(s);
    release_rest(s);
    release_lua(L, s);
    pthread_cond_destroy(&s->drained);
    pthread_mutex_destroy(&s->lock);
    return 0;
}

static int server_tostring(lua_State *L)
{
    server *s = check_server(L);
    lua_pushfstring(L, "http server on port %d%s", s->port, s->stopped ? " (stopped)" : "");
    return 1;
}

void rtb_http_open_server(lua_State *L)
{
    static const luaL_Reg methods[] = {{"port", server_port},
                                       {"respond", server_respond},
                                       {"close", server_close},
                                       {"unfinished", server_unfinished},
                                       {"stop", server_stop},
                                       {NULL, NULL}};
    /* A client that goes away mid-response must not kill the process; as in DICOM's
     * init, only when nobody chose a SIGPIPE handler already. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
    if (luaL_newmetatable(L, SERVER_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, server_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, server_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_serve);
    lua_setfield(L, -2, "serve");
}
