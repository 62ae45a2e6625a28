/* rtbackup.odbc.core: connections, statements and cursors over core/odbc.
 *
 * Every call that talks to the driver runs on the libuv pool through rtb_task_await:
 * the inputs (SQL, parameters) are read into a request on the loop thread, the work
 * runs without Lua, and the done callback turns rows into Lua tables. A connection
 * serves one request at a time; a second task using it meanwhile gets an error
 * rather than sharing an ODBC handle across threads. scripts/lib/rtbackup/odbc.lua
 * builds the public API on top (connect from an environment source, rows iterator).
 *
 * Values: SQL NULL is core.NULL (a unique userdata, so a NULL column is present in the
 * row table and distinguishable from a missing column); bytes to bind as BINARY are
 * wrapped with core.binary(s). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_lua.h"
#include "odbc/odbc.h"
#include "task.h"
#include "util.h"

#define CONN_MT "rtbackup.odbc.connection"
#define CURSOR_MT "rtbackup.odbc.cursor"
#define BINARY_MT "rtbackup.odbc.binary"
#define NULL_KEY "rtbackup.odbc.NULL"
/* ODBC numbers parameters with an SQLUSMALLINT; drivers allow far fewer. */
#define MAX_PARAMS 32767

typedef struct cursor cursor;

typedef struct {
    rtb_odbc_conn *conn; /* NULL once closed */
    int busy;            /* a request is on the pool */
    cursor *cursors;     /* open cursors: their statements die with the connection */
} lconn;

struct cursor {
    lconn *c;            /* NULL once closed */
    rtb_odbc_stmt *stmt; /* NULL when closed or exhausted */
    cursor *next;        /* in c->cursors */
    int orphaned;        /* its connection was closed under it */
};

/* ---- errors ------------------------------------------------------------------------ */

static void push_error(lua_State *L, const rtb_odbc_error *e)
{
    rtb_lua_error_push(L, rtb_odbc_error_kind_name(e->kind), e->message);
    if (e->sqlstate[0]) {
        rtb_lua_set_string(L, "sqlstate", e->sqlstate);
        rtb_lua_set_integer(L, "native", e->native);
    }
}

/* ---- values -------------------------------------------------------------------------- */

/* Pushes the rows as a list of tables keyed by the column names in the list at names_idx. */
static void push_rows(lua_State *L, const rtb_odbc_rows *rows, int names_idx)
{
    lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY);
    int null_idx = lua_gettop(L);
    lua_createtable(L, (int)rows->count, 0);
    for (size_t r = 0; r < rows->count; r++) {
        lua_createtable(L, 0, (int)rows->ncols);
        for (size_t i = 0; i < rows->ncols; i++) {
            const rtb_odbc_value *v = rtb_odbc_rows_at(rows, r, i);
            lua_rawgeti(L, names_idx, (lua_Integer)i + 1);
            switch (v->type) {
            case RTB_ODBC_NULL: lua_pushvalue(L, null_idx); break;
            case RTB_ODBC_INTEGER: lua_pushinteger(L, v->integer); break;
            case RTB_ODBC_FLOAT: lua_pushnumber(L, v->number); break;
            case RTB_ODBC_BOOLEAN: lua_pushboolean(L, v->boolean); break;
            default: lua_pushlstring(L, v->data, v->len); break;
            }
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, (lua_Integer)r + 1);
    }
    lua_remove(L, null_idx);
}

static int is_binary(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, BINARY_MT);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

/* Reads the parameter list at idx (nil = none; its length is t.n or #t). Pushes a
 * userdata with the values, then every string parameter: on the stack they stay alive
 * and in place until the call returns, so the pool thread can read them without a
 * copy, and a task changing the table meanwhile cannot change what is bound. */
static rtb_odbc_value *push_params(lua_State *L, int idx, size_t *count)
{
    size_t n = 0;
    if (!lua_isnoneornil(L, idx)) {
        luaL_checktype(L, idx, LUA_TTABLE);
        lua_getfield(L, idx, "n");
        /* t.n is the caller's word: a negative or huge one must not size the array
         * (n * sizeof wraps around to a few bytes, then the loop writes past them). */
        lua_Integer given = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, idx);
        lua_pop(L, 1);
        if (given < 0 || given > MAX_PARAMS)
            rtb_lua_error_raise(L, "invalid", "parameters: n = %lld is not a count (0..%d)",
                                (long long)given, MAX_PARAMS);
        n = (size_t)given;
    }
    rtb_odbc_value *values = lua_newuserdatauv(L, (n ? n : 1) * sizeof *values, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY);
    int null_idx = lua_gettop(L);
    for (size_t i = 0; i < n; i++) {
        rtb_odbc_value *v = &values[i];
        memset(v, 0, sizeof *v);
        luaL_checkstack(L, 3, "too many parameters");
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        int binary = is_binary(L, -1);
        if (binary) {
            lua_rawgeti(L, -1, 1);
            lua_remove(L, -2);
        }
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING) {
            v->type = binary ? RTB_ODBC_BINARY : RTB_ODBC_STRING;
            v->data = lua_tolstring(L, -1, &v->len);
            continue; /* stays on the stack */
        }
        if (lua_rawequal(L, -1, null_idx)) {
            v->type = RTB_ODBC_NULL;
        } else if (t == LUA_TBOOLEAN) {
            v->type = RTB_ODBC_BOOLEAN;
            v->boolean = lua_toboolean(L, -1);
        } else if (lua_isinteger(L, -1)) {
            v->type = RTB_ODBC_INTEGER;
            v->integer = lua_tointeger(L, -1);
        } else if (t == LUA_TNUMBER) {
            v->type = RTB_ODBC_FLOAT;
            v->number = lua_tonumber(L, -1);
        } else if (t == LUA_TNIL) {
            rtb_lua_error_raise(L, "invalid", "parameter %zu is nil; use odbc.NULL for SQL NULL", i + 1);
        } else {
            rtb_lua_error_raise(L, "invalid", "parameter %zu: cannot bind a %s", i + 1,
                                luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    lua_remove(L, null_idx);
    *count = n;
    return values;
}

/* ---- connections --------------------------------------------------------------------- */

static lconn *check_conn(lua_State *L, int idx)
{
    lconn *c = luaL_checkudata(L, idx, CONN_MT);
    if (!c->conn)
        rtb_lua_error_raise(L, "invalid", "the database connection is closed");
    if (c->busy)
        rtb_lua_error_raise(L, "busy", "the database connection is busy with another task's "
                                       "statement (open one connection per task)");
    return c;
}

static void close_cursors(lconn *c)
{
    for (cursor *k = c->cursors; k; k = k->next) {
        rtb_odbc_stmt_free(k->stmt);
        k->stmt = NULL;
        k->c = NULL;
        k->orphaned = 1;
    }
    c->cursors = NULL;
}

static void unlink_cursor(cursor *k)
{
    if (!k->c)
        return;
    for (cursor **p = &k->c->cursors; *p; p = &(*p)->next)
        if (*p == k) {
            *p = k->next;
            break;
        }
    k->c = NULL;
}

#define MAX_ATTRIBUTES 16

typedef struct {
    rtb_odbc_connect_params p;
    rtb_odbc_attribute attrs[MAX_ATTRIBUTES];
    char *strings[6 + 2 * MAX_ATTRIBUTES]; /* owned copies behind p and attrs */
    size_t n_strings;
    rtb_odbc_conn *conn;
    rtb_odbc_error err;
    int rc;
} connect_req;

static const char *keep(connect_req *r, const char *s)
{
    return s ? (r->strings[r->n_strings++] = strdup(s)) : NULL;
}

static void connect_req_free(connect_req *r)
{
    for (size_t i = 0; i < r->n_strings; i++)
        if (r->strings[i]) {
            memset(r->strings[i], 0, strlen(r->strings[i])); /* one of them is the password */
            free(r->strings[i]);
        }
    free(r);
}

static void connect_work(void *data)
{
    connect_req *r = data;
    r->rc = rtb_odbc_connect(&r->p, &r->conn, &r->err);
}

static int connect_done(lua_State *L, void *data)
{
    connect_req *r = data;
    if (r->rc != 0) {
        push_error(L, &r->err);
        connect_req_free(r);
        return lua_error(L);
    }
    lconn *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    c->conn = r->conn;
    luaL_setmetatable(L, CONN_MT);
    connect_req_free(r);
    return 1;
}

static const char *field(lua_State *L, connect_req *r, const char *key)
{
    lua_getfield(L, 1, key);
    size_t len;
    const char *secret = rtb_lua_secret_value(L, -1, &len); /* only the password is one */
    const char *v = keep(r, secret ? secret : lua_tostring(L, -1));
    lua_pop(L, 1);
    return v;
}

/* core.connect{driver, server, database, username, password (string or secret), dsn,
 * attributes = {Key = value}, login_timeout, query_timeout} -> connection */
static int l_connect(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    /* Everything that can raise is checked before the request is allocated (its
     * strings include the password, which must not leak). */
    if (lua_getfield(L, 1, "attributes") == LUA_TTABLE) {
        int count = 0;
        for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
            int t = lua_type(L, -1);
            if (++count > MAX_ATTRIBUTES || lua_type(L, -2) != LUA_TSTRING ||
                (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN))
                return rtb_lua_error_raise(L, "invalid", "odbc attributes: at most %d, "
                                           "each Name = string, number or boolean",
                                           MAX_ATTRIBUTES);
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "login_timeout");
    lua_getfield(L, 1, "query_timeout");
    int login_timeout = (int)luaL_optinteger(L, -2, 0); /* may raise: nothing allocated yet */
    int query_timeout = (int)luaL_optinteger(L, -1, 0);
    lua_pop(L, 2);
    connect_req *r = calloc(1, sizeof *r);
    if (!r)
        return luaL_error(L, "out of memory");
    r->p.login_timeout = login_timeout;
    r->p.query_timeout = query_timeout;
    r->p.dsn = field(L, r, "dsn");
    r->p.driver = field(L, r, "driver");
    r->p.server = field(L, r, "server");
    r->p.database = field(L, r, "database");
    r->p.username = field(L, r, "username");
    r->p.password = field(L, r, "password");
    if (lua_getfield(L, 1, "attributes") == LUA_TTABLE) {
        for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
            if (r->p.n_attributes == MAX_ATTRIBUTES) /* checked above; the table changed? */
                break;
            rtb_odbc_attribute *a = &r->attrs[r->p.n_attributes++];
            a->key = keep(r, lua_tostring(L, -2));
            a->value = keep(r, luaL_tolstring(L, -1, NULL));
            lua_pop(L, 1);
        }
        r->p.attributes = r->attrs;
    }
    lua_pop(L, 1);
    return rtb_task_await(L, connect_work, connect_done, r);
}

/* ---- statements: exec, query, open ------------------------------------------------- */

typedef enum { RUN_EXEC, RUN_QUERY, RUN_OPEN } run_kind;

typedef struct {
    run_kind kind;
    lconn *c;
    const char *sql;              /* on the caller's stack */
    const rtb_odbc_value *params; /* likewise (push_params) */
    size_t n_params;
    rtb_odbc_stmt *stmt;
    long long affected;
    rtb_odbc_rows rows;
    int rc;
    rtb_odbc_error err;
} run_req;

/* A name used twice is refused: the second would silently replace the first in every
 * row table. Checked on the pool; results have tens of columns, not thousands. */
static int check_names(rtb_odbc_stmt *s, rtb_odbc_error *err)
{
    size_t n = rtb_odbc_column_count(s);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(rtb_odbc_column_name(s, i), rtb_odbc_column_name(s, j)) == 0) {
                *err = (rtb_odbc_error){.kind = RTB_ODBC_E_INVALID};
                snprintf(err->message, sizeof err->message,
                         "the result has two columns named '%s'; give one an alias (AS)",
                         rtb_odbc_column_name(s, i));
                return -1;
            }
    return 0;
}

static void run_work(void *data)
{
    run_req *r = data;
    r->rc = rtb_odbc_execute(r->c->conn, r->sql, r->params, r->n_params, &r->stmt, &r->err);
    if (r->rc == 0 && r->kind == RUN_EXEC)
        r->affected = rtb_odbc_affected_rows(r->stmt);
    if (r->rc == 0 && r->kind != RUN_EXEC)
        r->rc = check_names(r->stmt, &r->err);
    if (r->rc == 0 && r->kind == RUN_QUERY)
        r->rc = rtb_odbc_fetch_rows(r->stmt, 0, &r->rows, &r->err) < 0 ? -1 : 0;
}

static void push_names(lua_State *L, rtb_odbc_stmt *s)
{
    size_t n = rtb_odbc_column_count(s);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, rtb_odbc_column_name(s, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int run_done(lua_State *L, void *data)
{
    run_req *r = data;
    r->c->busy = 0;
    int nres = 1;
    if (r->rc != 0) {
        push_error(L, &r->err);
        nres = -1;
    } else if (r->kind == RUN_EXEC) {
        lua_pushinteger(L, r->affected);
    } else if (r->kind == RUN_QUERY) {
        push_names(L, r->stmt);
        push_rows(L, &r->rows, lua_gettop(L));
        lua_insert(L, -2); /* rows, names */
        nres = 2;
    } else {
        /* uservalues: the column names, and the connection, which must outlive the
         * cursor's statement (its collector would free it under a running fetch) */
        cursor *k = lua_newuserdatauv(L, sizeof *k, 2);
        luaL_setmetatable(L, CURSOR_MT);
        push_names(L, r->stmt);
        lua_setiuservalue(L, -2, 1);
        lua_pushvalue(L, 1);
        lua_setiuservalue(L, -2, 2);
        *k = (cursor){r->c, r->stmt, r->c->cursors, 0};
        r->c->cursors = k;
        r->stmt = NULL;
    }
    rtb_odbc_stmt_free(r->stmt);
    rtb_odbc_rows_free(&r->rows);
    free(r);
    return nres < 0 ? lua_error(L) : nres;
}

/* conn:exec(sql [, params]) -> affected rows (-1 when the driver cannot tell)
 * conn:query(sql [, params]) -> rows, column names
 * conn:open(sql [, params]) -> cursor  (which of the three: upvalue 1) */
static int l_run(lua_State *L)
{
    lconn *c = check_conn(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    size_t n;
    const rtb_odbc_value *params = push_params(L, 3, &n);
    /* The string parameters stay on the stack; run_done pushes rows above them. */
    luaL_checkstack(L, LUA_MINSTACK, "too many parameters");
    run_req *r = calloc(1, sizeof *r);
    if (!r)
        return luaL_error(L, "out of memory");
    *r = (run_req){.kind = (run_kind)lua_tointeger(L, lua_upvalueindex(1)), .c = c, .sql = sql,
                   .params = params, .n_params = n};
    c->busy = 1;
    return rtb_task_await(L, run_work, run_done, r);
}

/* ---- cursors -------------------------------------------------------------------------- */

static cursor *check_cursor(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CURSOR_MT);
}

typedef struct {
    cursor *k;
    size_t max;
    rtb_odbc_rows rows;
    long got;
    rtb_odbc_error err;
} fetch_req;

static void fetch_work(void *data)
{
    fetch_req *f = data;
    f->got = rtb_odbc_fetch_rows(f->k->stmt, f->max, &f->rows, &f->err);
}

static void cursor_release(cursor *k)
{
    rtb_odbc_stmt_free(k->stmt);
    k->stmt = NULL;
    unlink_cursor(k);
}

static int fetch_done(lua_State *L, void *data)
{
    fetch_req *f = data;
    cursor *k = f->k;
    k->c->busy = 0;
    if (f->got <= 0) /* the end, or an error: the statement has nothing more to give */
        cursor_release(k);
    if (f->got < 0) {
        push_error(L, &f->err);
        rtb_odbc_rows_free(&f->rows);
        free(f);
        return lua_error(L);
    }
    if (f->got == 0) {
        lua_pushnil(L);
    } else {
        lua_getiuservalue(L, 1, 1);
        push_rows(L, &f->rows, lua_gettop(L));
        lua_remove(L, -2);
    }
    rtb_odbc_rows_free(&f->rows);
    free(f);
    return 1;
}

/* cursor:next([n]) -> a list of up to n (default 256) rows, nil at the end */
static int cursor_next(lua_State *L)
{
    cursor *k = check_cursor(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 256);
    luaL_argcheck(L, max > 0, 2, "must be positive");
    if (k->orphaned)
        return rtb_lua_error_raise(L, "invalid", "the database connection of this cursor is closed");
    if (!k->stmt) {
        lua_pushnil(L);
        return 1;
    }
    if (k->c->busy)
        return rtb_lua_error_raise(L, "busy", "the database connection is busy with another "
                                              "task's statement (open one connection per task)");
    fetch_req *f = calloc(1, sizeof *f);
    if (!f)
        return luaL_error(L, "out of memory");
    f->k = k;
    f->max = (size_t)max;
    k->c->busy = 1;
    return rtb_task_await(L, fetch_work, fetch_done, f);
}

static int cursor_columns(lua_State *L)
{
    check_cursor(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* cursor:close(): frees the statement now (also its __close and __gc). */
static int cursor_close(lua_State *L)
{
    cursor *k = check_cursor(L, 1);
    if (k->c && k->c->busy && k->stmt)
        return rtb_lua_error_raise(L, "busy", "cannot close a cursor while its connection works");
    cursor_release(k);
    return 0;
}

static int cursor_gc(lua_State *L)
{
    cursor *k = check_cursor(L, 1);
    /* A fetch of this cursor cannot be in flight: its userdata is on that task's stack. */
    cursor_release(k);
    return 0;
}

/* ---- connection: close, info, transactions ------------------------------------------- */

typedef struct {
    lconn *c;
    int what; /* 0 close, 1 info, 2 begin, 3 commit, 4 rollback */
    rtb_odbc_conn *closing;
    rtb_odbc_info info;
    int rc;
    rtb_odbc_error err;
} conn_req;

static void conn_work(void *data)
{
    conn_req *q = data;
    switch (q->what) {
    case 0: rtb_odbc_disconnect(q->closing); q->rc = 0; break;
    case 1: q->rc = rtb_odbc_get_info(q->c->conn, &q->info, &q->err); break;
    case 2: q->rc = rtb_odbc_begin(q->c->conn, &q->err); break;
    default: q->rc = rtb_odbc_end(q->c->conn, q->what == 3, &q->err); break;
    }
}

static int conn_done(lua_State *L, void *data)
{
    conn_req *q = data;
    q->c->busy = 0;
    int rc = q->rc, what = q->what;
    if (rc != 0)
        push_error(L, &q->err);
    else if (what == 1) {
        lua_createtable(L, 0, 3);
        rtb_lua_set_string(L, "dbms_name", q->info.dbms_name);
        rtb_lua_set_string(L, "dbms_version", q->info.dbms_version);
        rtb_lua_set_string(L, "driver_name", q->info.driver_name);
    }
    free(q);
    if (rc != 0)
        return lua_error(L);
    return what == 1 ? 1 : 0;
}

static int conn_request(lua_State *L, int what)
{
    lconn *c = check_conn(L, 1);
    conn_req *q = calloc(1, sizeof *q);
    if (!q)
        return luaL_error(L, "out of memory");
    q->c = c;
    q->what = what;
    if (what == 0) { /* the statements go first: a disconnect must not find them open */
        close_cursors(q->c);
        q->closing = q->c->conn;
        q->c->conn = NULL;
    }
    q->c->busy = 1;
    return rtb_task_await(L, conn_work, conn_done, q);
}

/* conn:close() — idempotent. */
static int l_close(lua_State *L)
{
    lconn *c = luaL_checkudata(L, 1, CONN_MT);
    return c->conn ? conn_request(L, 0) : 0;
}

static int l_info(lua_State *L) { return conn_request(L, 1); }
static int l_begin(lua_State *L) { return conn_request(L, 2); }
static int l_commit(lua_State *L) { return conn_request(L, 3); }
static int l_rollback(lua_State *L) { return conn_request(L, 4); }

static int l_is_open(lua_State *L)
{
    lua_pushboolean(L, ((lconn *)luaL_checkudata(L, 1, CONN_MT))->conn != NULL);
    return 1;
}

/* A connection nobody closed: disconnect here, on the loop thread, since a collector
 * cannot wait for the pool. (No request can be in flight: it would hold the userdata.) */
static int conn_gc(lua_State *L)
{
    lconn *c = luaL_checkudata(L, 1, CONN_MT);
    close_cursors(c);
    rtb_odbc_disconnect(c->conn);
    c->conn = NULL;
    return 0;
}

/* ---- module -------------------------------------------------------------------------- */

/* core.binary(bytes) -> a value bound as VARBINARY instead of text */
static int l_binary(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, BINARY_MT);
    return 1;
}

static int null_tostring(lua_State *L)
{
    lua_pushliteral(L, "odbc.NULL");
    return 1;
}

int luaopen_rtbackup_odbc_core(lua_State *L)
{
    static const luaL_Reg conn_methods[] = {
        {"close", l_close}, {"info", l_info}, {"begin", l_begin}, {"commit", l_commit},
        {"rollback", l_rollback}, {"is_open", l_is_open}, {NULL, NULL}};
    static const char *const run_names[] = {"exec", "query", "open"};
    static const luaL_Reg cursor_methods[] = {
        {"next", cursor_next}, {"columns", cursor_columns}, {"close", cursor_close}, {NULL, NULL}};
    if (luaL_newmetatable(L, CONN_MT)) {
        luaL_newlib(L, conn_methods);
        for (int kind = RUN_EXEC; kind <= RUN_OPEN; kind++) {
            lua_pushinteger(L, kind);
            lua_pushcclosure(L, l_run, 1);
            lua_setfield(L, -2, run_names[kind]);
        }
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, conn_gc);
        lua_setfield(L, -2, "__gc");
    }
    if (luaL_newmetatable(L, CURSOR_MT)) {
        luaL_newlib(L, cursor_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, cursor_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, cursor_close);
        lua_setfield(L, -2, "__close");
    }
    luaL_newmetatable(L, BINARY_MT);
    lua_pop(L, 3);
    if (lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY) == LUA_TNIL) {
        lua_newuserdatauv(L, 0, 0);
        lua_createtable(L, 0, 2);
        lua_pushcfunction(L, null_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "odbc.NULL");
        lua_setfield(L, -2, "__name");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, NULL_KEY);
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"connect", l_connect}, {"binary", l_binary}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY);
    lua_setfield(L, -2, "NULL");
    return 1;
}
