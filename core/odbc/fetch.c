/* Fetching: one row at a time, every column read with SQLGetData into the column's own
 * reusable buffer, so a result of any size streams in constant memory here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int grow(odbc_column *c, size_t need, rtb_odbc_error *err)
{
    if (need <= c->cap)
        return 0;
    size_t cap = c->cap ? c->cap : 256;
    while (cap < need)
        cap *= 2;
    void *b = realloc(c->buf, cap);
    if (!b)
        return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory reading column %s", c->name);
    c->buf = b;
    c->cap = cap;
    return 0;
}

static int column_fail(rtb_odbc_stmt *s, size_t col, rtb_odbc_error *err)
{
    char what[320];
    snprintf(what, sizeof what, "cannot read column %s", s->cols[col].name);
    return odbc_fail_diag(err, SQL_HANDLE_STMT, s->h, s->conn, 0, s->timeout_set, what);
}

/* Reads a variable-length value in pieces (SQLGetData reports 01004 while data remain).
 * `terminator` is the size of the NUL the driver appends to each text piece.
 * Returns the bytes read, or -1; *is_null is set for SQL NULL. */
static long long read_long(rtb_odbc_stmt *s, size_t col, SQLSMALLINT ctype, size_t terminator,
                           int *is_null, rtb_odbc_error *err)
{
    odbc_column *c = &s->cols[col];
    size_t used = 0;
    *is_null = 0;
    if (grow(c, 256, err) != 0)
        return -1;
    for (;;) {
        SQLLEN ind = 0;
        SQLRETURN rc = SQLGetData(s->h, (SQLUSMALLINT)(col + 1), ctype, (char *)c->buf + used,
                                  (SQLLEN)(c->cap - used), &ind);
        if (rc == SQL_NO_DATA)
            return (long long)used; /* the previous piece was the last */
        if (!SQL_SUCCEEDED(rc))
            return column_fail(s, col, err);
        if (ind == SQL_NULL_DATA) {
            *is_null = 1;
            return 0;
        }
        /* Done, unless 01004 says the piece was cut short (a warning with the whole
         * value in the buffer, which some drivers give, is not a truncation). */
        if (rc == SQL_SUCCESS ||
            (ind != SQL_NO_TOTAL && (size_t)ind + terminator <= c->cap - used)) {
            used += (size_t)ind;
            return (long long)used;
        }
        /* Truncated: the buffer is full but for the terminator. */
        size_t got = c->cap - used - terminator;
        used += got;
        size_t need = c->cap * 2;
        if (ind != SQL_NO_TOTAL && (size_t)ind > got)
            need = used + ((size_t)ind - got) + terminator + 16;
        if (grow(c, need, err) != 0)
            return -1;
    }
}

/* "YYYY-MM-DDTHH:MM:SS", with ".ffffff" when there is a fraction (ODBC gives
 * nanoseconds; microseconds are what SQL Server's datetime2 and PostgreSQL keep). */
static int read_timestamp(rtb_odbc_stmt *s, size_t col, rtb_odbc_value *v, rtb_odbc_error *err)
{
    odbc_column *c = &s->cols[col];
    SQLLEN ind = 0;
    SQLRETURN rc;
    if (grow(c, 40, err) != 0)
        return -1;
    char *out = c->buf;
    int n;
    switch (c->sql_type) {
    case SQL_TYPE_DATE: case SQL_DATE: {
        SQL_DATE_STRUCT d;
        rc = SQLGetData(s->h, (SQLUSMALLINT)(col + 1), SQL_C_TYPE_DATE, &d, sizeof d, &ind);
        if (!SQL_SUCCEEDED(rc))
            return column_fail(s, col, err);
        n = snprintf(out, c->cap, "%04d-%02u-%02u", d.year, d.month, d.day);
        break;
    }
    case SQL_TYPE_TIME: case SQL_TIME: {
        SQL_TIME_STRUCT t;
        rc = SQLGetData(s->h, (SQLUSMALLINT)(col + 1), SQL_C_TYPE_TIME, &t, sizeof t, &ind);
        if (!SQL_SUCCEEDED(rc))
            return column_fail(s, col, err);
        n = snprintf(out, c->cap, "%02u:%02u:%02u", t.hour, t.minute, t.second);
        break;
    }
    default: {
        SQL_TIMESTAMP_STRUCT t;
        rc = SQLGetData(s->h, (SQLUSMALLINT)(col + 1), SQL_C_TYPE_TIMESTAMP, &t, sizeof t, &ind);
        if (!SQL_SUCCEEDED(rc))
            return column_fail(s, col, err);
        n = snprintf(out, c->cap, "%04d-%02u-%02uT%02u:%02u:%02u", t.year, t.month, t.day, t.hour,
                     t.minute, t.second);
        unsigned micro = t.fraction / 1000;
        if (micro)
            n += snprintf(out + n, c->cap - (size_t)n, ".%06u", micro);
        break;
    }
    }
    if (ind == SQL_NULL_DATA) {
        v->type = RTB_ODBC_NULL;
        return 0;
    }
    v->data = out;
    v->len = (size_t)n;
    return 0;
}

static int read_value(rtb_odbc_stmt *s, size_t col, rtb_odbc_error *err)
{
    odbc_column *c = &s->cols[col];
    rtb_odbc_value *v = &s->values[col];
    memset(v, 0, sizeof *v);
    v->type = c->type;
    SQLUSMALLINT num = (SQLUSMALLINT)(col + 1);
    SQLLEN ind = 0;
    SQLRETURN rc = SQL_SUCCESS;
    switch (c->type) {
    case RTB_ODBC_BOOLEAN: {
        unsigned char bit = 0;
        rc = SQLGetData(s->h, num, SQL_C_BIT, &bit, sizeof bit, &ind);
        v->boolean = bit != 0;
        break;
    }
    /* DECIMAL/NUMERIC too: the driver converts, so no text is parsed here (and no
     * locale can turn "1.5" into 1). */
    case RTB_ODBC_INTEGER:
        rc = SQLGetData(s->h, num, SQL_C_SBIGINT, &v->integer, sizeof v->integer, &ind);
        break;
    case RTB_ODBC_FLOAT:
        rc = SQLGetData(s->h, num, SQL_C_DOUBLE, &v->number, sizeof v->number, &ind);
        break;
    case RTB_ODBC_TIMESTAMP:
        return read_timestamp(s, col, v, err);
    case RTB_ODBC_BINARY: {
        int is_null;
        long long n = read_long(s, col, SQL_C_BINARY, 0, &is_null, err);
        if (n < 0)
            return -1;
        if (is_null)
            v->type = RTB_ODBC_NULL;
        v->data = c->buf;
        v->len = (size_t)n;
        return 0;
    }
    default: {
        int is_null;
        long long n = read_long(s, col, SQL_C_WCHAR, sizeof(SQLWCHAR), &is_null, err);
        if (n < 0)
            return -1;
        if (is_null) {
            v->type = RTB_ODBC_NULL;
            return 0;
        }
        /* Into the column's text buffer, kept from row to row: no allocation per value. */
        size_t units = (size_t)n / sizeof(SQLWCHAR);
        if (units * 3 + 1 > c->text_cap) {
            char *t = realloc(c->text, units * 3 + 1);
            if (!t)
                return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory reading column %s", c->name);
            c->text = t;
            c->text_cap = units * 3 + 1;
        }
        v->type = RTB_ODBC_STRING;
        v->len = odbc_utf8_into(c->buf, units, c->text);
        v->data = c->text;
        return 0;
    }
    }
    if (!SQL_SUCCEEDED(rc))
        return column_fail(s, col, err);
    if (ind == SQL_NULL_DATA)
        v->type = RTB_ODBC_NULL;
    return 0;
}

int rtb_odbc_fetch(rtb_odbc_stmt *s, rtb_odbc_error *err)
{
    if (s->ncols == 0)
        return 0;
    SQLRETURN rc = SQLFetch(s->h);
    if (rc == SQL_NO_DATA)
        return 0;
    if (!SQL_SUCCEEDED(rc))
        return odbc_fail_diag(err, SQL_HANDLE_STMT, s->h, s->conn, 0, s->timeout_set,
                              "cannot fetch the next row");
    /* SQLGetData must go left to right: many drivers cannot go back to a column. */
    for (size_t i = 0; i < s->ncols; i++)
        if (read_value(s, i, err) != 0)
            return -1;
    return 1;
}

const rtb_odbc_value *rtb_odbc_value_at(const rtb_odbc_stmt *s, size_t col)
{
    return col < s->ncols ? &s->values[col] : NULL;
}
