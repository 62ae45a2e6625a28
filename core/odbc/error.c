/* Diagnostics -> rtb_odbc_error: the SQLSTATE, the driver's words, a kind callers can
 * branch on, and never the password. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

const char *rtb_odbc_error_kind_name(rtb_odbc_error_kind kind)
{
    switch (kind) {
    case RTB_ODBC_OK: return "ok";
    case RTB_ODBC_E_CONNECT_FAILED: return "connect_failed";
    case RTB_ODBC_E_LOGIN_FAILED: return "login_failed";
    case RTB_ODBC_E_TIMEOUT: return "timeout";
    case RTB_ODBC_E_SQL: return "sql";
    case RTB_ODBC_E_INVALID: return "invalid";
    case RTB_ODBC_E_INTERNAL: return "internal";
    }
    return "internal";
}

int odbc_fail(rtb_odbc_error *err, rtb_odbc_error_kind kind, const char *fmt, ...)
{
    err->kind = kind;
    err->sqlstate[0] = '\0';
    err->native = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

void odbc_scrub(const rtb_odbc_conn *conn, char *text)
{
    if (!conn)
        return;
    for (size_t i = 0; i < conn->n_scrub; i++) {
        const char *secret = conn->scrub[i];
        size_t n = strlen(secret);
        if (n == 0)
            continue;
        char *hit;
        while ((hit = strstr(text, secret)) != NULL) {
            /* Replace in place: "***" is never longer than what it hides unless the
             * secret is shorter than 3 bytes, then it is masked byte for byte. */
            size_t mask = n < 3 ? n : 3;
            memset(hit, '*', mask);
            memmove(hit + mask, hit + n, strlen(hit + n) + 1);
        }
        /* A message cut to fit its buffer may end in the first bytes of the secret
         * (fragments under 3 bytes reveal little and would garble ordinary words). */
        size_t len = strlen(text);
        for (size_t k = n - 1; k >= 3; k--) {
            if (k <= len && memcmp(text + len - k, secret, k) == 0) {
                memset(text + len - k, '*', k);
                break;
            }
        }
    }
}

static int contains_ci(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; *p; p++)
        if (strncasecmp(p, word, n) == 0)
            return 1;
    return 0;
}

/* psqlODBC reports every failed connection as 08001 (libpq exposes no SQLSTATE for
 * it; the server's 28P01 only reaches its log), so a refused login is recognised by
 * the server's words as well as by the standard class 28. */
static int looks_like_login_refusal(const char *sqlstate, const char *message)
{
    return strncmp(sqlstate, "28", 2) == 0 || contains_ci(message, "password authentication failed") ||
           contains_ci(message, "login failed") || contains_ci(message, "authentication failed");
}

static rtb_odbc_error_kind classify(const char *sqlstate, const char *message, int connecting,
                                    int timeout_set)
{
    if (strcmp(sqlstate, "HYT00") == 0 || strcmp(sqlstate, "HYT01") == 0)
        return RTB_ODBC_E_TIMEOUT;
    /* 57014 is also a cancel by an administrator; it is a timeout only when we set one */
    if (timeout_set && strcmp(sqlstate, "57014") == 0)
        return RTB_ODBC_E_TIMEOUT;
    if (connecting)
        return looks_like_login_refusal(sqlstate, message) ? RTB_ODBC_E_LOGIN_FAILED
                                                           : RTB_ODBC_E_CONNECT_FAILED;
    if (strncmp(sqlstate, "28", 2) == 0)
        return RTB_ODBC_E_LOGIN_FAILED;
    /* class 08: the connection broke under the statement */
    if (strncmp(sqlstate, "08", 2) == 0)
        return RTB_ODBC_E_CONNECT_FAILED;
    return RTB_ODBC_E_SQL;
}

/* Drivers end messages with newlines and tabs; one line reads better in a log. */
static void squeeze(char *s)
{
    char *o = s;
    int space = 0;
    for (char *p = s; *p; p++) {
        if (isspace((unsigned char)*p)) {
            space = 1;
            continue;
        }
        if (space && o != s)
            *o++ = ' ';
        space = 0;
        *o++ = *p;
    }
    *o = '\0';
}

int odbc_fail_diag(rtb_odbc_error *err, SQLSMALLINT handle_type, SQLHANDLE handle,
                   const rtb_odbc_conn *conn, int connecting, int timeout_set, const char *what)
{
    char text[RTB_ODBC_MESSAGE_MAX * 2];
    size_t used = (size_t)snprintf(text, sizeof text, "%s", what);
    char chosen[6] = "";
    long chosen_native = 0;
    int records = 0;
    for (SQLSMALLINT i = 1; i <= 8 && used < sizeof text - 1; i++) {
        SQLWCHAR state_w[6], msg_w[1024];
        SQLINTEGER native = 0;
        SQLSMALLINT msg_len = 0;
        SQLRETURN rc = SQLGetDiagRecW(handle_type, handle, i, state_w, &native, msg_w,
                                      (SQLSMALLINT)(sizeof msg_w / sizeof msg_w[0]), &msg_len);
        if (!SQL_SUCCEEDED(rc))
            break;
        size_t units = (size_t)msg_len;
        if (units >= sizeof msg_w / sizeof msg_w[0])
            units = sizeof msg_w / sizeof msg_w[0] - 1;
        size_t state_len, msg_bytes;
        char *state = odbc_utf8_from_utf16(state_w, 5, &state_len);
        char *msg = odbc_utf8_from_utf16(msg_w, units, &msg_bytes);
        if (state && msg) {
            squeeze(msg);
            used += (size_t)snprintf(text + used, sizeof text - used, "%s[%s] %s",
                                     records ? "; " : ": ", state, msg);
            if (used > sizeof text - 1)
                used = sizeof text - 1;
            /* The first error, not a warning (01xxx) the driver manager put before it. */
            if (!chosen[0] || (strncmp(chosen, "01", 2) == 0 && strncmp(state, "01", 2) != 0)) {
                snprintf(chosen, sizeof chosen, "%s", state);
                chosen_native = native;
            }
            records++;
        }
        free(state);
        free(msg);
    }
    if (records == 0)
        snprintf(text + used, sizeof text - used, ": the driver gave no diagnostics");
    odbc_scrub(conn, text);
    err->kind = classify(chosen, text, connecting, timeout_set);
    snprintf(err->sqlstate, sizeof err->sqlstate, "%s", chosen);
    err->native = chosen_native;
    size_t keep = strlen(text);
    if (keep >= sizeof err->message)
        keep = sizeof err->message - 1;
    memcpy(err->message, text, keep);
    err->message[keep] = '\0';
    odbc_scrub(conn, err->message); /* the copy may have cut the text inside a secret */
    return -1;
}
