/* ODBC over unixODBC: connections, prepared statements with '?' parameters, typed rows.
 *
 * Every function that can fail returns 0 (or a count) on success and -1 on failure,
 * filling a caller-provided rtb_odbc_error; nothing here prints. Handles are
 * caller-owned: rtb_odbc_connect() and rtb_odbc_execute() create them,
 * rtb_odbc_disconnect() and rtb_odbc_stmt_free() release them. Free every statement
 * of a connection before disconnecting it.
 *
 * Threads. One connection and its statements must be used by one thread at a time;
 * distinct connections may be used on different threads at once (each connection has
 * its own ODBC environment, so they share no state here).
 *
 * Text. Strings travel as UTF-8 on this side; they are exchanged with the driver as
 * UTF-16 (SQL_C_WCHAR), so non-ASCII names survive whatever locale the process runs in.
 *
 * Secrets. The password reaches the driver only inside the connection string. Error
 * messages are scrubbed of the connection string and of the password before they are
 * handed back, so an error can be logged as it is. */
#ifndef RTB_ODBC_H
#define RTB_ODBC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------------------- */

typedef enum {
    RTB_ODBC_OK = 0,
    RTB_ODBC_E_CONNECT_FAILED, /* server unreachable, database missing, driver not installed */
    RTB_ODBC_E_LOGIN_FAILED,   /* the server refused the credentials (SQLSTATE class 28, or
                                  the driver's text says authentication failed) */
    RTB_ODBC_E_TIMEOUT,        /* login or query timeout expired (HYT00, HYT01; 57014 when a
                                  query timeout was set: PostgreSQL's statement_timeout) */
    RTB_ODBC_E_SQL,            /* any other error the driver or the server reported */
    RTB_ODBC_E_INVALID,        /* caller mistake: parameter count, bad value, closed handle */
    RTB_ODBC_E_INTERNAL        /* out of memory, handle allocation failed */
} rtb_odbc_error_kind;

#define RTB_ODBC_MESSAGE_MAX 1024

typedef struct {
    rtb_odbc_error_kind kind;
    char sqlstate[6]; /* first diagnostic record's SQLSTATE, "" when not from the driver */
    long native;      /* the driver's native error code of that record */
    char message[RTB_ODBC_MESSAGE_MAX]; /* what failed, then the driver's diagnostics;
                                           never contains the password */
} rtb_odbc_error;

/* "connect_failed", "login_failed", "timeout", "sql", "invalid", "internal" ("ok"). */
const char *rtb_odbc_error_kind_name(rtb_odbc_error_kind kind);

/* ---- connections ----------------------------------------------------------------- */

typedef struct rtb_odbc_conn rtb_odbc_conn;

typedef struct {
    const char *key, *value;
} rtb_odbc_attribute;

typedef struct {
    const char *dsn;      /* a DSN from odbc.ini; when set, driver/server/database are optional */
    const char *driver;   /* e.g. "ODBC Driver 18 for SQL Server", "SQLite3", "PostgreSQL Unicode" */
    const char *server;   /* host[,port] for SQL Server; host for PostgreSQL; ignored by SQLite */
    const char *database; /* database name; for SQLite the file path */
    const char *username;
    const char *password; /* may contain ';', '{', '}' */
    const rtb_odbc_attribute *attributes; /* extra connection-string keys (Port, Encrypt, ...) */
    size_t n_attributes;
    int login_timeout; /* seconds; 0 = the driver's default */
    int query_timeout; /* seconds, for every statement of the connection; 0 = none */
} rtb_odbc_connect_params;

/* Writes the connection string the parameters describe ("DRIVER=...;SERVER=...;...;
 * PWD=...") into buf and returns its length (like snprintf: may exceed size).
 *
 * Quoting. A value is enclosed in braces, with '}' doubled, when it contains ';', '{',
 * '}', '=' or leading/trailing blanks; the password always is. Not every value is
 * braced because psqlODBC and the SQLite driver read braces literally in every key
 * but PWD (tested: SERVER={host} and Database={path} fail there), while every driver
 * (SQL Server, psqlODBC) understands a braced PWD. PWD comes last, so a driver that
 * ignores it (SQLite) cannot misread the keys after it. */
int rtb_odbc_connection_string(const rtb_odbc_connect_params *p, char *buf, size_t size);

/* Connects (SQLDriverConnect, no prompt, autocommit on). */
int rtb_odbc_connect(const rtb_odbc_connect_params *p, rtb_odbc_conn **out, rtb_odbc_error *err);
/* Disconnects and frees. NULL is fine. */
void rtb_odbc_disconnect(rtb_odbc_conn *conn);

typedef struct {
    char dbms_name[64];    /* "SQLite", "PostgreSQL", "Microsoft SQL Server" */
    char dbms_version[64];
    char driver_name[128];
} rtb_odbc_info;

int rtb_odbc_get_info(rtb_odbc_conn *conn, rtb_odbc_info *info, rtb_odbc_error *err);

/* Transactions. Connections start in autocommit mode; rtb_odbc_begin() turns it off
 * until rtb_odbc_end() commits (commit != 0) or rolls back and turns it on again. */
int rtb_odbc_begin(rtb_odbc_conn *conn, rtb_odbc_error *err);
int rtb_odbc_end(rtb_odbc_conn *conn, int commit, rtb_odbc_error *err);

/* ---- values ------------------------------------------------------------------------ */

typedef enum {
    RTB_ODBC_NULL = 0,
    RTB_ODBC_INTEGER,   /* .integer */
    RTB_ODBC_FLOAT,     /* .number */
    RTB_ODBC_BOOLEAN,   /* .boolean (0/1) */
    RTB_ODBC_STRING,    /* .data/.len, UTF-8 */
    RTB_ODBC_TIMESTAMP, /* .data/.len, ISO-8601 text, see below */
    RTB_ODBC_BINARY     /* .data/.len, raw bytes */
} rtb_odbc_type;

/* A parameter or a fetched column value.
 *
 * How columns are typed (by the SQL type the driver describes):
 *   BIT -> BOOLEAN; TINYINT, SMALLINT, INTEGER, BIGINT -> INTEGER;
 *   DECIMAL, NUMERIC -> INTEGER when the scale is 0 and the precision at most 18,
 *     else FLOAT (converted by the driver);
 *   REAL, FLOAT, DOUBLE -> FLOAT;
 *   TIMESTAMP -> "YYYY-MM-DDTHH:MM:SS" plus ".ffffff" (microseconds) when the fraction
 *     is not zero; DATE -> "YYYY-MM-DD"; TIME -> "HH:MM:SS" (all as TIMESTAMP values);
 *   BINARY, VARBINARY, LONGVARBINARY -> BINARY;
 *   everything else (CHAR, VARCHAR, WCHAR, GUID, XML, untyped expressions) -> STRING.
 * Text keeps its trailing blanks (CHAR(n) columns are blank-padded by the server).
 *
 * Parameters: INTEGER binds as BIGINT, FLOAT as DOUBLE, BOOLEAN as BIT, STRING as
 * WVARCHAR, BINARY as VARBINARY, NULL with the type the driver describes for that
 * parameter (VARCHAR if it cannot). A date/time parameter is passed as STRING in ISO
 * form ("2025-06-12" or "2025-06-12 09:30:00"): SQL Server and PostgreSQL convert it,
 * and SQLite compares it as text with the stored "YYYY-MM-DD HH:MM:SS" values.
 * TIMESTAMP is not accepted as a parameter type. */
typedef struct {
    rtb_odbc_type type;
    long long integer;
    double number;
    int boolean;
    const char *data;
    size_t len;
} rtb_odbc_value;

/* ---- statements -------------------------------------------------------------------- */

typedef struct rtb_odbc_stmt rtb_odbc_stmt;

/* Prepares `sql`; parameters are '?' markers only. */
int rtb_odbc_prepare(rtb_odbc_conn *conn, const char *sql, rtb_odbc_stmt **out, rtb_odbc_error *err);

/* Binds params[0..n) and executes a prepared statement (again: an unread result of the
 * previous run is discarded). A parameter count that differs from the markers is an
 * INVALID error naming both. Then read its columns and fetch its rows. */
int rtb_odbc_run(rtb_odbc_stmt *stmt, const rtb_odbc_value *params, size_t n_params,
                 rtb_odbc_error *err);

/* rtb_odbc_prepare + rtb_odbc_run; on failure nothing is left to free. */
int rtb_odbc_execute(rtb_odbc_conn *conn, const char *sql, const rtb_odbc_value *params,
                     size_t n_params, rtb_odbc_stmt **out, rtb_odbc_error *err);

/* Columns of the result (0 for statements without one, e.g. INSERT). */
size_t rtb_odbc_column_count(const rtb_odbc_stmt *stmt);
/* Column name as the driver reports it (the alias when there is one), UTF-8. */
const char *rtb_odbc_column_name(const rtb_odbc_stmt *stmt, size_t col);

/* Rows an INSERT/UPDATE/DELETE affected; -1 when the driver cannot tell. */
long long rtb_odbc_affected_rows(rtb_odbc_stmt *stmt);

/* Moves to the next row and reads all its columns. Returns 1 (a row), 0 (no more
 * rows) or -1 (error). Values stay valid until the next fetch or the free. */
int rtb_odbc_fetch(rtb_odbc_stmt *stmt, rtb_odbc_error *err);
const rtb_odbc_value *rtb_odbc_value_at(const rtb_odbc_stmt *stmt, size_t col);

void rtb_odbc_stmt_free(rtb_odbc_stmt *stmt); /* NULL is fine */

/* Rows copied out of a statement, so they outlive the next fetch: what a pool thread
 * hands to the thread that consumes them. Zero-initialise; the caller owns it. */
typedef struct {
    size_t count, ncols;
    rtb_odbc_value *cells; /* count * ncols, row after row; text and bytes point into storage */
    char *storage;
    size_t used, cap, cap_rows;
} rtb_odbc_rows;

/* Replaces the content of rows with up to max rows (0 = all that remain). Returns how
 * many (0 at the end of the result) or -1. */
long rtb_odbc_fetch_rows(rtb_odbc_stmt *stmt, size_t max, rtb_odbc_rows *rows, rtb_odbc_error *err);
const rtb_odbc_value *rtb_odbc_rows_at(const rtb_odbc_rows *rows, size_t row, size_t col);
void rtb_odbc_rows_free(rtb_odbc_rows *rows);

#ifdef __cplusplus
}
#endif

#endif
