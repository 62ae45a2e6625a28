/* Statements: prepare, bind '?' parameters, execute, describe and fetch typed rows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- parameters ---------------------------------------------------------------- */

/* What a bound parameter points to; must live until SQLExecute returns. */
typedef struct {
    SQLLEN ind;
    SQLBIGINT integer;
    SQLDOUBLE number;
    unsigned char bit;
    SQLWCHAR *text;
} param_slot;

/* The type to declare for a NULL: what the driver says the marker is, since SQL Server
 * refuses an implicit VARCHAR -> VARBINARY conversion even for NULL. */
static SQLSMALLINT null_param_type(SQLHSTMT h, SQLUSMALLINT i, SQLULEN *size, SQLSMALLINT *digits)
{
    SQLSMALLINT type, nullable;
    if (SQL_SUCCEEDED(SQLDescribeParam(h, i, &type, size, digits, &nullable)) && type != 0) {
        if (*size == 0)
            *size = 1;
        return type;
    }
    *size = 1;
    *digits = 0;
    return SQL_VARCHAR;
}

static int bind_params(rtb_odbc_stmt *s, const rtb_odbc_value *params, size_t n,
                       param_slot *slots, rtb_odbc_error *err)
{
    for (size_t i = 0; i < n; i++) {
        const rtb_odbc_value *v = &params[i];
        param_slot *p = &slots[i];
        SQLUSMALLINT num = (SQLUSMALLINT)(i + 1);
        SQLRETURN rc;
        switch (v->type) {
        case RTB_ODBC_NULL: {
            SQLULEN size;
            SQLSMALLINT digits, type = null_param_type(s->h, num, &size, &digits);
            p->ind = SQL_NULL_DATA;
            rc = SQLBindParameter(s->h, num, SQL_PARAM_INPUT, SQL_C_CHAR, type, size, digits, NULL,
                                  0, &p->ind);
            break;
        }
        case RTB_ODBC_INTEGER:
            p->integer = v->integer;
            p->ind = 0;
            rc = SQLBindParameter(s->h, num, SQL_PARAM_INPUT, SQL_C_SBIGINT, SQL_BIGINT, 0, 0,
                                  &p->integer, 0, &p->ind);
            break;
        case RTB_ODBC_FLOAT:
            p->number = v->number;
            p->ind = 0;
            rc = SQLBindParameter(s->h, num, SQL_PARAM_INPUT, SQL_C_DOUBLE, SQL_DOUBLE, 0, 0,
                                  &p->number, 0, &p->ind);
            break;
        case RTB_ODBC_BOOLEAN:
            p->bit = v->boolean ? 1 : 0;
            p->ind = 0;
            rc = SQLBindParameter(s->h, num, SQL_PARAM_INPUT, SQL_C_BIT, SQL_BIT, 1, 0, &p->bit, 0,
                                  &p->ind);
            break;
        case RTB_ODBC_STRING: {
            size_t units;
            int invalid;
            p->text = odbc_utf16_from_utf8(v->data, v->len, &units, &invalid);
            if (!p->text)
                return invalid ? odbc_fail(err, RTB_ODBC_E_INVALID,
                                           "parameter %zu is not valid UTF-8 text (bind bytes "
                                           "as binary)", i + 1)
                               : odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
            p->ind = (SQLLEN)(units * sizeof(SQLWCHAR));
            /* SQL Server's nvarchar(n) stops at 4000; longer text is nvarchar(max). */
            SQLSMALLINT type = units > 4000 ? SQL_WLONGVARCHAR : SQL_WVARCHAR;
            rc = SQLBindParameter(s->h, num, SQL_PARAM_INPUT, SQL_C_WCHAR, type,
                                  units ? units : 1, 0, p->text, p->ind, &p->ind);
            break;
        }
        case RTB_ODBC_BINARY: {
            static unsigned char empty; /* some drivers read a NULL buffer as SQL NULL */
            p->ind = (SQLLEN)v->len;
            SQLSMALLINT type = v->len > 8000 ? SQL_LONGVARBINARY : SQL_VARBINARY;
            rc = SQLBindParameter(s->h, num, SQL_PARAM_INPUT, SQL_C_BINARY, type,
                                  v->len ? v->len : 1, 0,
                                  v->len ? (SQLPOINTER)v->data : &empty, p->ind, &p->ind);
            break;
        }
        default:
            return odbc_fail(err, RTB_ODBC_E_INVALID,
                             "parameter %zu: this type cannot be bound (pass dates as text)", i + 1);
        }
        if (!SQL_SUCCEEDED(rc)) {
            char what[64];
            snprintf(what, sizeof what, "cannot bind parameter %zu", i + 1);
            return odbc_fail_diag(err, SQL_HANDLE_STMT, s->h, s->conn, 0, 0, what);
        }
    }
    return 0;
}

/* ---- columns ------------------------------------------------------------------- */

static rtb_odbc_type type_of(SQLSMALLINT sql_type, SQLSMALLINT digits, SQLULEN size)
{
    switch (sql_type) {
    case SQL_BIT: return RTB_ODBC_BOOLEAN;
    case SQL_TINYINT: case SQL_SMALLINT: case SQL_INTEGER: case SQL_BIGINT:
        return RTB_ODBC_INTEGER;
    case SQL_DECIMAL: case SQL_NUMERIC:
        /* whole numbers of up to 18 digits always fit in 64 bits */
        return digits == 0 && size <= 18 ? RTB_ODBC_INTEGER : RTB_ODBC_FLOAT;
    case SQL_REAL: case SQL_FLOAT: case SQL_DOUBLE: return RTB_ODBC_FLOAT;
    case SQL_TYPE_TIMESTAMP: case SQL_TIMESTAMP: case SQL_TYPE_DATE: case SQL_DATE:
    case SQL_TYPE_TIME: case SQL_TIME:
        return RTB_ODBC_TIMESTAMP;
    case SQL_BINARY: case SQL_VARBINARY: case SQL_LONGVARBINARY: return RTB_ODBC_BINARY;
    default: return RTB_ODBC_STRING;
    }
}

static int describe_columns(rtb_odbc_stmt *s, rtb_odbc_error *err)
{
    SQLSMALLINT n = 0;
    if (!SQL_SUCCEEDED(SQLNumResultCols(s->h, &n)))
        return odbc_fail_diag(err, SQL_HANDLE_STMT, s->h, s->conn, 0, 0, "cannot read the result's columns");
    if (n <= 0)
        return 0;
    s->cols = calloc((size_t)n, sizeof *s->cols);
    s->values = calloc((size_t)n, sizeof *s->values);
    if (!s->cols || !s->values)
        return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
    s->ncols = (size_t)n;
    for (size_t i = 0; i < s->ncols; i++) {
        odbc_column *c = &s->cols[i];
        SQLWCHAR name[256];
        SQLSMALLINT name_len = 0, nullable;
        if (!SQL_SUCCEEDED(SQLDescribeColW(s->h, (SQLUSMALLINT)(i + 1), name,
                                           (SQLSMALLINT)(sizeof name / sizeof name[0]), &name_len,
                                           &c->sql_type, &c->size, &c->digits, &nullable)))
            return odbc_fail_diag(err, SQL_HANDLE_STMT, s->h, s->conn, 0, 0,
                                  "cannot describe a result column");
        size_t units = (size_t)name_len < sizeof name / sizeof name[0] ? (size_t)name_len
                                                                      : sizeof name / sizeof name[0] - 1;
        size_t len;
        c->name = odbc_utf8_from_utf16(name, units, &len);
        if (!c->name)
            return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
        c->type = type_of(c->sql_type, c->digits, c->size);
    }
    return 0;
}

/* ---- prepare / run ------------------------------------------------------------- */

int rtb_odbc_prepare(rtb_odbc_conn *conn, const char *sql, rtb_odbc_stmt **out, rtb_odbc_error *err)
{
    *out = NULL;
    if (!conn || !conn->connected)
        return odbc_fail(err, RTB_ODBC_E_INVALID, "the connection is closed");
    rtb_odbc_stmt *s = calloc(1, sizeof *s);
    if (!s)
        return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
    s->conn = conn;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, conn->dbc, &s->h))) {
        odbc_fail_diag(err, SQL_HANDLE_DBC, conn->dbc, conn, 0, 0, "cannot allocate a statement");
        free(s);
        return -1;
    }
    if (conn->query_timeout > 0) {
        /* Drivers that cannot time out (SQLite) refuse quietly; the query then runs. */
        s->timeout_set = SQL_SUCCEEDED(SQLSetStmtAttr(
            s->h, SQL_ATTR_QUERY_TIMEOUT, (SQLPOINTER)(SQLULEN)conn->query_timeout, 0));
    }
    size_t units;
    int invalid;
    SQLWCHAR *wsql = odbc_utf16_from_utf8(sql, strlen(sql), &units, &invalid);
    if (!wsql) {
        rtb_odbc_stmt_free(s);
        return invalid ? odbc_fail(err, RTB_ODBC_E_INVALID, "the SQL text is not valid UTF-8")
                       : odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
    }
    SQLRETURN rc = SQLPrepareW(s->h, wsql, (SQLINTEGER)units);
    free(wsql);
    if (!SQL_SUCCEEDED(rc)) {
        odbc_fail_diag(err, SQL_HANDLE_STMT, s->h, conn, 0, s->timeout_set,
                       "cannot prepare the statement");
        rtb_odbc_stmt_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

static void forget_columns(rtb_odbc_stmt *s)
{
    for (size_t i = 0; i < s->ncols; i++) {
        free(s->cols[i].name);
        free(s->cols[i].buf);
        free(s->cols[i].text);
    }
    free(s->cols);
    free(s->values);
    s->cols = NULL;
    s->values = NULL;
    s->ncols = 0;
}

int rtb_odbc_run(rtb_odbc_stmt *s, const rtb_odbc_value *params, size_t n_params,
                 rtb_odbc_error *err)
{
    SQLFreeStmt(s->h, SQL_CLOSE); /* a cursor left open by the previous run */
    forget_columns(s);
    SQLSMALLINT markers = 0;
    if (SQL_SUCCEEDED(SQLNumParams(s->h, &markers)) && (size_t)markers != n_params)
        return odbc_fail(err, RTB_ODBC_E_INVALID,
                         "the statement has %d '?' parameter%s but %zu value%s given", markers,
                         markers == 1 ? "" : "s", n_params, n_params == 1 ? " was" : "s were");
    param_slot *slots = calloc(n_params ? n_params : 1, sizeof *slots);
    if (!slots)
        return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory");
    int rc = bind_params(s, params, n_params, slots, err);
    if (rc == 0) {
        SQLRETURN x = SQLExecute(s->h);
        if (!SQL_SUCCEEDED(x) && x != SQL_NO_DATA)
            rc = odbc_fail_diag(err, SQL_HANDLE_STMT, s->h, s->conn, 0, s->timeout_set,
                                "the statement failed");
    }
    /* SQLExecute has read the values; unbind so nothing points at the freed slots. */
    SQLFreeStmt(s->h, SQL_RESET_PARAMS);
    for (size_t i = 0; i < n_params; i++)
        free(slots[i].text);
    free(slots);
    if (rc != 0)
        return -1;
    return describe_columns(s, err);
}

int rtb_odbc_execute(rtb_odbc_conn *conn, const char *sql, const rtb_odbc_value *params,
                     size_t n_params, rtb_odbc_stmt **out, rtb_odbc_error *err)
{
    if (rtb_odbc_prepare(conn, sql, out, err) != 0)
        return -1;
    if (rtb_odbc_run(*out, params, n_params, err) != 0) {
        rtb_odbc_stmt_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

size_t rtb_odbc_column_count(const rtb_odbc_stmt *s)
{
    return s->ncols;
}

const char *rtb_odbc_column_name(const rtb_odbc_stmt *s, size_t col)
{
    return col < s->ncols ? s->cols[col].name : NULL;
}

long long rtb_odbc_affected_rows(rtb_odbc_stmt *s)
{
    SQLLEN n = -1;
    if (!SQL_SUCCEEDED(SQLRowCount(s->h, &n)))
        return -1;
    return (long long)n;
}

void rtb_odbc_stmt_free(rtb_odbc_stmt *s)
{
    if (!s)
        return;
    if (s->h)
        SQLFreeHandle(SQL_HANDLE_STMT, s->h);
    forget_columns(s);
    free(s);
}
