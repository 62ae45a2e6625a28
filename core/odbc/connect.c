/* Connections: the connection string, SQLDriverConnect, timeouts, driver info. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- connection string ----------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t size, len; /* len counts what would have been written */
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, b->len++)
        if (b->len + 1 < b->size)
            b->buf[b->len] = s[i];
    if (b->size)
        b->buf[b->len < b->size ? b->len : b->size - 1] = '\0';
}

static int needs_braces(const char *v)
{
    size_t n = strlen(v);
    return strpbrk(v, ";{}=") != NULL || (n && (v[0] == ' ' || v[n - 1] == ' '));
}

static void put_braced(sbuf *b, const char *value)
{
    put(b, "{", 1);
    for (const char *p = value; *p; p++) {
        put(b, p, 1);
        if (*p == '}')
            put(b, "}", 1); /* a closing brace inside is doubled */
    }
    put(b, "}", 1);
}

/* KEY=value; with the value braced when it must be, or always. */
static void put_pair(sbuf *b, const char *key, const char *value, int always_brace)
{
    put(b, key, strlen(key));
    put(b, "=", 1);
    if (always_brace || needs_braces(value))
        put_braced(b, value);
    else
        put(b, value, strlen(value));
    put(b, ";", 1);
}

int rtb_odbc_connection_string(const rtb_odbc_connect_params *p, char *buf, size_t size)
{
    sbuf b = {buf, size, 0};
    if (size)
        buf[0] = '\0';
    if (p->dsn && *p->dsn)
        put_pair(&b, "DSN", p->dsn, 0);
    /* The driver manager itself parses DRIVER and understands braces there. */
    if (p->driver && *p->driver)
        put_pair(&b, "DRIVER", p->driver, 1);
    if (p->server && *p->server)
        put_pair(&b, "SERVER", p->server, 0);
    if (p->database && *p->database)
        put_pair(&b, "DATABASE", p->database, 0);
    if (p->username && *p->username)
        put_pair(&b, "UID", p->username, 0);
    for (size_t i = 0; i < p->n_attributes; i++)
        if (p->attributes[i].key && p->attributes[i].value)
            put_pair(&b, p->attributes[i].key, p->attributes[i].value, 0);
    if (p->password)
        put_pair(&b, "PWD", p->password, 1);
    return (int)b.len;
}

/* ---- scrubbing ------------------------------------------------------------------- */

static char *percent_encoded(const char *s, const char *digits)
{
    char *out = malloc(strlen(s) * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = digits[*p >> 4];
            *o++ = digits[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

static void add_scrub(rtb_odbc_conn *c, char *s)
{
    if (s && *s && c->n_scrub < sizeof c->scrub / sizeof c->scrub[0])
        c->scrub[c->n_scrub++] = s;
    else
        free(s);
}

/* The whole connection string first, then each way a driver may spell the password;
 * masking any of them leaves no complete secret behind. */
static void remember_password(rtb_odbc_conn *c, const char *password, const char *connstr)
{
    if (!password || !*password)
        return;
    add_scrub(c, strdup(connstr));
    sbuf measure = {NULL, 0, 0};
    put_braced(&measure, password);
    char *braced = malloc(measure.len + 1);
    if (braced) {
        sbuf b = {braced, measure.len + 1, 0};
        put_braced(&b, password);
    }
    add_scrub(c, percent_encoded(password, "0123456789ABCDEF"));
    add_scrub(c, percent_encoded(password, "0123456789abcdef"));
    add_scrub(c, braced);
    add_scrub(c, strdup(password));
}

static void wipe(char *s)
{
    if (s) {
        volatile char *v = s;
        while (*v)
            *v++ = '\0';
        free(s);
    }
}

/* ---- connect / disconnect ---------------------------------------------------------- */

int rtb_odbc_connect(const rtb_odbc_connect_params *p, rtb_odbc_conn **out, rtb_odbc_error *err)
{
    *out = NULL;
    if (!(p->dsn && *p->dsn) && !(p->driver && *p->driver))
        return odbc_fail(err, RTB_ODBC_E_INVALID, "cannot connect: give an ODBC driver or a DSN");
    /* Keys cannot be quoted, so one with ';' or '=' would inject another key. */
    for (size_t i = 0; i < p->n_attributes; i++) {
        const char *k = p->attributes[i].key;
        if (!k || !*k || strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != strlen(k))
            return odbc_fail(err, RTB_ODBC_E_INVALID,
                             "connection attribute name '%s' must be letters, digits or '_'",
                             k ? k : "");
    }
    rtb_odbc_conn *c = calloc(1, sizeof *c);
    if (!c)
        return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
    c->query_timeout = p->query_timeout;

    int n = rtb_odbc_connection_string(p, NULL, 0);
    char *connstr = malloc((size_t)n + 1);
    if (!connstr) {
        free(c);
        return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
    }
    rtb_odbc_connection_string(p, connstr, (size_t)n + 1);
    remember_password(c, p->password, connstr);

    /* One environment per connection: nothing is shared between connections used on
     * different pool threads. */
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_ENV, SQL_NULL_HANDLE, &c->env)) ||
        !SQL_SUCCEEDED(SQLSetEnvAttr(c->env, SQL_ATTR_ODBC_VERSION, (SQLPOINTER)SQL_OV_ODBC3, 0)) ||
        !SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_DBC, c->env, &c->dbc))) {
        wipe(connstr);
        rtb_odbc_disconnect(c);
        return odbc_fail(err, RTB_ODBC_E_INTERNAL, "cannot allocate ODBC handles");
    }
    if (p->login_timeout > 0)
        SQLSetConnectAttr(c->dbc, SQL_ATTR_LOGIN_TIMEOUT, (SQLPOINTER)(SQLULEN)p->login_timeout, 0);

    size_t units;
    int invalid;
    SQLWCHAR *wconn = odbc_utf16_from_utf8(connstr, (size_t)n, &units, &invalid);
    wipe(connstr);
    if (!wconn) {
        rtb_odbc_disconnect(c);
        return invalid ? odbc_fail(err, RTB_ODBC_E_INVALID,
                                   "cannot connect: a connection value is not valid UTF-8")
                       : odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
    }
    /* No output connection string: drivers echo the password into it. */
    SQLRETURN rc = SQLDriverConnectW(c->dbc, NULL, wconn, (SQLSMALLINT)units, NULL, 0, NULL,
                                     SQL_DRIVER_NOPROMPT);
    memset(wconn, 0, units * sizeof *wconn);
    free(wconn);
    if (!SQL_SUCCEEDED(rc)) {
        /* Names what was tried, never the password. */
        char what[300];
        if (p->dsn && *p->dsn)
            snprintf(what, sizeof what, "cannot connect to DSN %s", p->dsn);
        else
            snprintf(what, sizeof what, "cannot connect to %s%s%s with driver %s",
                     p->database && *p->database ? p->database : "",
                     p->server && *p->server ? " on " : "", p->server ? p->server : "", p->driver);
        odbc_fail_diag(err, SQL_HANDLE_DBC, c->dbc, c, 1, 0, what);
        rtb_odbc_disconnect(c);
        return -1;
    }
    c->connected = 1;
    SQLSetConnectAttr(c->dbc, SQL_ATTR_AUTOCOMMIT, (SQLPOINTER)SQL_AUTOCOMMIT_ON, 0);
    *out = c;
    return 0;
}

void rtb_odbc_disconnect(rtb_odbc_conn *c)
{
    if (!c)
        return;
    if (c->connected)
        SQLDisconnect(c->dbc);
    if (c->dbc)
        SQLFreeHandle(SQL_HANDLE_DBC, c->dbc);
    if (c->env)
        SQLFreeHandle(SQL_HANDLE_ENV, c->env);
    for (size_t i = 0; i < c->n_scrub; i++)
        wipe(c->scrub[i]);
    free(c);
}

static void info_string(SQLHDBC dbc, SQLUSMALLINT what, char *out, size_t size)
{
    SQLSMALLINT len = 0;
    out[0] = '\0';
    if (!SQL_SUCCEEDED(SQLGetInfo(dbc, what, out, (SQLSMALLINT)size, &len)))
        out[0] = '\0';
}

int rtb_odbc_get_info(rtb_odbc_conn *c, rtb_odbc_info *info, rtb_odbc_error *err)
{
    if (!c || !c->connected)
        return odbc_fail(err, RTB_ODBC_E_INVALID, "the connection is closed");
    info_string(c->dbc, SQL_DBMS_NAME, info->dbms_name, sizeof info->dbms_name);
    info_string(c->dbc, SQL_DBMS_VER, info->dbms_version, sizeof info->dbms_version);
    info_string(c->dbc, SQL_DRIVER_NAME, info->driver_name, sizeof info->driver_name);
    return 0;
}

/* ---- transactions ------------------------------------------------------------------ */

int rtb_odbc_begin(rtb_odbc_conn *c, rtb_odbc_error *err)
{
    if (!c || !c->connected)
        return odbc_fail(err, RTB_ODBC_E_INVALID, "the connection is closed");
    if (!SQL_SUCCEEDED(SQLSetConnectAttr(c->dbc, SQL_ATTR_AUTOCOMMIT,
                                         (SQLPOINTER)SQL_AUTOCOMMIT_OFF, 0)))
        return odbc_fail_diag(err, SQL_HANDLE_DBC, c->dbc, c, 0, 0, "cannot start a transaction");
    return 0;
}

int rtb_odbc_end(rtb_odbc_conn *c, int commit, rtb_odbc_error *err)
{
    if (!c || !c->connected)
        return odbc_fail(err, RTB_ODBC_E_INVALID, "the connection is closed");
    int rc = 0;
    if (!SQL_SUCCEEDED(SQLEndTran(SQL_HANDLE_DBC, c->dbc, commit ? SQL_COMMIT : SQL_ROLLBACK)))
        rc = odbc_fail_diag(err, SQL_HANDLE_DBC, c->dbc, c, 0, 0,
                            commit ? "cannot commit the transaction" : "cannot roll back the transaction");
    /* Back to autocommit either way, so one failed commit does not leave the
     * connection inside a transaction nobody will end. */
    SQLSetConnectAttr(c->dbc, SQL_ATTR_AUTOCOMMIT, (SQLPOINTER)SQL_AUTOCOMMIT_ON, 0);
    return rc;
}
