/* Shared inside core/odbc only: the handle structs, UTF-8/UTF-16 conversion and
 * the diagnostics -> rtb_odbc_error mapping. */
#ifndef RTB_ODBC_INTERNAL_H
#define RTB_ODBC_INTERNAL_H

#include <sql.h>
#include <sqlext.h>
#include <sqlucode.h>

#include "odbc.h"

struct rtb_odbc_conn {
    SQLHENV env;
    SQLHDBC dbc;
    int connected;
    int query_timeout;
    /* Every form in which the password could show up in a driver's message: the
     * value, its braced form and its percent-encoded forms (psqlODBC echoes
     * "PWD=p%3bw" in its output connection string). Wiped when freed. */
    char *scrub[5];
    size_t n_scrub;
};

typedef struct {
    char *name;
    SQLSMALLINT sql_type;
    SQLULEN size;
    SQLSMALLINT digits;
    rtb_odbc_type type; /* what fetched values become */
    void *buf;          /* this column's buffer, grown as needed, reused row to row */
    size_t cap;
    char *text;         /* text columns: the UTF-8 of buf's UTF-16, likewise reused */
    size_t text_cap;
} odbc_column;

struct rtb_odbc_stmt {
    rtb_odbc_conn *conn;
    SQLHSTMT h;
    int timeout_set;
    size_t ncols;
    odbc_column *cols;
    rtb_odbc_value *values;
};

/* UTF-8 -> UTF-16 (NUL-terminated, *units without the NUL). NULL if `s` is not
 * valid UTF-8 or memory ran out (*invalid tells which). Free with free(). */
SQLWCHAR *odbc_utf16_from_utf8(const char *s, size_t len, size_t *units, int *invalid);
/* UTF-16 -> UTF-8 into a malloc'd NUL-terminated buffer; unpaired surrogates become
 * U+FFFD. NULL only when memory ran out. */
char *odbc_utf8_from_utf16(const SQLWCHAR *w, size_t units, size_t *len);
/* The same into `out`, which must hold units * 3 + 1 bytes; returns the length. */
size_t odbc_utf8_into(const SQLWCHAR *w, size_t units, char *out);

/* Fills err with kind and a formatted message (no diagnostics). Returns -1. */
int odbc_fail(rtb_odbc_error *err, rtb_odbc_error_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fills err from the handle's diagnostic records: "<what>: [SQLSTATE] text; ...",
 * kind classified from the SQLSTATEs (see odbc.h), the password scrubbed out (conn
 * may be NULL before it exists). `connecting` makes refusals login_failed / other
 * failures connect_failed; `timeout_set` lets 57014 count as a timeout. Returns -1. */
int odbc_fail_diag(rtb_odbc_error *err, SQLSMALLINT handle_type, SQLHANDLE handle,
                   const rtb_odbc_conn *conn, int connecting, int timeout_set,
                   const char *what);

/* Overwrites every scrub string of conn found in text with "***". */
void odbc_scrub(const rtb_odbc_conn *conn, char *text);

#endif
