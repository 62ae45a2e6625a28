/* core/odbc without Lua: the connection string, and SQLite through its ODBC driver
 * (no server needed). The Lua API is covered by tests/spec/odbc_spec.lua. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "odbc/odbc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[256];
static rtb_odbc_error err;

#define OK(call) do { if ((call) != 0) fail_msg("%s: %s", #call, err.message); } while (0)

static const char *connection_string(const rtb_odbc_connect_params *p)
{
    static char buf[512];
    int n = rtb_odbc_connection_string(p, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(buf));
    return buf;
}

/* Braces where a value needs them, and always around the password; '}' doubled. */
static void connection_string_quotes_what_needs_it(void **state)
{
    rtb_odbc_connect_params p = {.driver = "ODBC Driver 18 for SQL Server", .server = "10.0.0.5,1433",
                                 .database = "MOSAIQ", .username = "ro", .password = "p;w}d{"};
    assert_string_equal(connection_string(&p), "DRIVER={ODBC Driver 18 for SQL Server};"
                        "SERVER=10.0.0.5,1433;DATABASE=MOSAIQ;UID=ro;PWD={p;w}}d{};");
    rtb_odbc_attribute attrs[] = {{"Port", "5432"}, {"Options", "a=b"}};
    rtb_odbc_connect_params q = {.dsn = "mosaiq", .username = " padded", .password = "",
                                 .attributes = attrs, .n_attributes = 2};
    assert_string_equal(connection_string(&q),
                        "DSN=mosaiq;UID={ padded};Port=5432;Options={a=b};PWD={};");
}

/* The length is returned even when the buffer is too small, like snprintf. */
static void connection_string_reports_the_length_it_needs(void **state)
{
    rtb_odbc_connect_params p = {.driver = "SQLite3", .database = "/tmp/x.db"};
    char small[8];
    int n = rtb_odbc_connection_string(&p, small, sizeof small);
    assert_int_equal(n, (int)strlen("DRIVER={SQLite3};DATABASE=/tmp/x.db;"));
    assert_int_equal(strlen(small), sizeof small - 1);
}

static void refuses_an_attribute_name_that_would_inject_a_key(void **state)
{
    rtb_odbc_attribute attrs[] = {{"Port;PWD", "x"}};
    rtb_odbc_connect_params p = {.driver = "SQLite3", .database = path, .attributes = attrs,
                                 .n_attributes = 1};
    rtb_odbc_conn *c;
    assert_int_equal(rtb_odbc_connect(&p, &c, &err), -1);
    assert_int_equal(err.kind, RTB_ODBC_E_INVALID);
    assert_non_null(strstr(err.message, "Port;PWD"));
}

static rtb_odbc_conn *open_sqlite(const char *password)
{
    rtb_odbc_connect_params p = {.driver = "SQLite3", .database = path, .password = password};
    rtb_odbc_conn *c;
    OK(rtb_odbc_connect(&p, &c, &err));
    return c;
}

static void exec(rtb_odbc_conn *c, const char *sql, const rtb_odbc_value *params, size_t n)
{
    rtb_odbc_stmt *s;
    OK(rtb_odbc_execute(c, sql, params, n, &s, &err));
    rtb_odbc_stmt_free(s);
}

/* Typed values, empty text vs NULL, and rows that outlive the statement's next fetch. */
static void fetches_typed_rows_and_copies_them_out(void **state)
{
    rtb_odbc_conn *c = open_sqlite(NULL);
    exec(c, "CREATE TABLE t (i INTEGER, s TEXT, ts TIMESTAMP, b BLOB)", NULL, 0);
    rtb_odbc_value row[] = {{.type = RTB_ODBC_INTEGER, .integer = 7},
                            {.type = RTB_ODBC_STRING, .data = "", .len = 0},
                            {.type = RTB_ODBC_STRING, .data = "2025-06-12 09:30:00", .len = 19},
                            {.type = RTB_ODBC_BINARY, .data = "\0\1", .len = 2}};
    exec(c, "INSERT INTO t VALUES (?, ?, ?, ?)", row, 4);
    rtb_odbc_value nulls[] = {{.type = RTB_ODBC_INTEGER, .integer = 8}, {.type = RTB_ODBC_NULL},
                              {.type = RTB_ODBC_NULL}, {.type = RTB_ODBC_NULL}};
    exec(c, "INSERT INTO t VALUES (?, ?, ?, ?)", nulls, 4);

    rtb_odbc_stmt *s;
    OK(rtb_odbc_execute(c, "SELECT i, s, ts, b FROM t ORDER BY i", NULL, 0, &s, &err));
    assert_int_equal(rtb_odbc_column_count(s), 4);
    assert_string_equal(rtb_odbc_column_name(s, 2), "ts");
    rtb_odbc_rows rows = {0};
    assert_int_equal(rtb_odbc_fetch_rows(s, 1, &rows, &err), 1);
    rtb_odbc_rows more = {0};
    assert_int_equal(rtb_odbc_fetch_rows(s, 0, &more, &err), 1);
    assert_int_equal(rtb_odbc_fetch_rows(s, 0, &more, &err), 0);
    rtb_odbc_stmt_free(s);

    assert_int_equal(rtb_odbc_rows_at(&rows, 0, 0)->integer, 7);
    assert_int_equal(rtb_odbc_rows_at(&rows, 0, 1)->type, RTB_ODBC_STRING);
    assert_int_equal(rtb_odbc_rows_at(&rows, 0, 1)->len, 0);
    const rtb_odbc_value *ts = rtb_odbc_rows_at(&rows, 0, 2);
    assert_int_equal(ts->type, RTB_ODBC_TIMESTAMP);
    assert_memory_equal(ts->data, "2025-06-12T09:30:00", ts->len);
    assert_memory_equal(rtb_odbc_rows_at(&rows, 0, 3)->data, "\0\1", 2);
    rtb_odbc_rows_free(&rows);
    rtb_odbc_rows_free(&more);
    rtb_odbc_disconnect(c);
}

static void counts_affected_rows_and_checks_the_parameter_count(void **state)
{
    rtb_odbc_conn *c = open_sqlite(NULL);
    exec(c, "CREATE TABLE t (i INTEGER)", NULL, 0);
    rtb_odbc_value one = {.type = RTB_ODBC_INTEGER, .integer = 1};
    exec(c, "INSERT INTO t VALUES (?)", &one, 1);
    exec(c, "INSERT INTO t VALUES (?)", &one, 1);
    rtb_odbc_stmt *s;
    OK(rtb_odbc_execute(c, "UPDATE t SET i = 2 WHERE i = ?", &one, 1, &s, &err));
    assert_int_equal(rtb_odbc_affected_rows(s), 2);
    rtb_odbc_stmt_free(s);
    assert_int_equal(rtb_odbc_execute(c, "SELECT * FROM t WHERE i = ?", NULL, 0, &s, &err), -1);
    assert_int_equal(err.kind, RTB_ODBC_E_INVALID);
    assert_non_null(strstr(err.message, "1 '?' parameter but 0 values were given"));
    rtb_odbc_disconnect(c);
}

/* A driver's message that repeats the password comes back masked. */
static void masks_the_password_in_driver_messages(void **state)
{
    rtb_odbc_conn *c = open_sqlite("Sw0rd;fi}sh");
    rtb_odbc_stmt *s;
    assert_int_equal(rtb_odbc_execute(c, "SELECT * FROM \"Sw0rd;fi}sh\"", NULL, 0, &s, &err), -1);
    assert_int_equal(err.kind, RTB_ODBC_E_SQL);
    assert_string_equal(err.sqlstate, "HY000");
    assert_null(strstr(err.message, "Sw0rd"));
    assert_non_null(strstr(err.message, "no such table: ***"));
    rtb_odbc_disconnect(c);
}

static int setup(void **state)
{
    snprintf(path, sizeof path, "/tmp/rtb-odbc-core-%ld.db", (long)getpid());
    unlink(path);
    return 0;
}

static int teardown(void **state)
{
    unlink(path);
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connection_string_quotes_what_needs_it),
        cmocka_unit_test(connection_string_reports_the_length_it_needs),
        cmocka_unit_test_setup_teardown(refuses_an_attribute_name_that_would_inject_a_key, setup, teardown),
        cmocka_unit_test_setup_teardown(fetches_typed_rows_and_copies_them_out, setup, teardown),
        cmocka_unit_test_setup_teardown(counts_affected_rows_and_checks_the_parameter_count, setup, teardown),
        cmocka_unit_test_setup_teardown(masks_the_password_in_driver_messages, setup, teardown),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
