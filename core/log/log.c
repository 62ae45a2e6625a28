#include "log.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static rtb_log_level current_level = RTB_LOG_INFO;
static rtb_log_format current_format = RTB_LOG_TEXT;
static FILE *current_sink;
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int rtb_log_level_parse(const char *name, rtb_log_level *out)
{
    if (!name)
        return -1;
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (rtb_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = RTB_LOG_WARN;
        return 0;
    }
    if (strcasecmp(name, "critical") == 0) { /* the old system's name for its top level */
        *out = RTB_LOG_ERROR;
        return 0;
    }
    return -1;
}

const char *rtb_log_level_name(rtb_log_level level)
{
    return level_names[level];
}

int rtb_log_format_parse(const char *name, rtb_log_format *out)
{
    if (name && strcasecmp(name, "text") == 0)
        *out = RTB_LOG_TEXT;
    else if (name && strcasecmp(name, "json") == 0)
        *out = RTB_LOG_JSON;
    else
        return -1;
    return 0;
}

void rtb_log_configure(rtb_log_level level, rtb_log_format format, FILE *sink)
{
    current_level = level;
    current_format = format;
    current_sink = sink;
}

void rtb_log_set_level(rtb_log_level level)
{
    current_level = level;
}

rtb_log_level rtb_log_get_level(void)
{
    return current_level;
}

int rtb_log_enabled(rtb_log_level level)
{
    return level >= current_level;
}

size_t rtb_json_quote(char *buf, size_t size, size_t used, const char *s)
{
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (used + 1 < size)                                                                       \
            buf[used] = (c);                                                                       \
        used++;                                                                                    \
    } while (0)
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': PUT('\\'); PUT('"'); break;
        case '\\': PUT('\\'); PUT('\\'); break;
        case '\n': PUT('\\'); PUT('n'); break;
        case '\r': PUT('\\'); PUT('r'); break;
        case '\t': PUT('\\'); PUT('t'); break;
        default:
            if (*p < 0x20) {
                char esc[7];
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                for (int i = 0; esc[i]; i++)
                    PUT(esc[i]);
            } else {
                PUT((char)*p); /* UTF-8 passes through unchanged */
            }
        }
    }
    PUT('"');
    if (size)
        buf[used < size ? used : size - 1] = '\0';
    return used;
#undef PUT
}

/* Text values are quoted only when they would otherwise be ambiguous. */
static int needs_quotes(const char *s)
{
    if (!*s)
        return 1;
    for (; *s; s++)
        if (isspace((unsigned char)*s) || *s == '"' || *s == '=')
            return 1;
    return 0;
}

static void utc_timestamp(char *out, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static char *format_json(const char *ts, rtb_log_level level, const char *message,
                         const rtb_log_field *fields, size_t n, size_t *len)
{
    size_t size = 256, used;
    char *buf = NULL;
    for (;;) {
        char *grown = realloc(buf, size);
        if (!grown) {
            free(buf);
            return NULL;
        }
        buf = grown;
        used = (size_t)snprintf(buf, size, "{\"time\":\"%s\",\"level\":\"%s\",\"message\":", ts,
                                level_names[level]);
        used = rtb_json_quote(buf, size, used, message);
        for (size_t i = 0; i < n; i++) {
            used += (size_t)snprintf(used < size ? buf + used : NULL, used < size ? size - used : 0,
                                     ",");
            used = rtb_json_quote(buf, size, used, fields[i].key);
            used += (size_t)snprintf(used < size ? buf + used : NULL, used < size ? size - used : 0,
                                     ":");
            if (fields[i].raw)
                used += (size_t)snprintf(used < size ? buf + used : NULL,
                                         used < size ? size - used : 0, "%s", fields[i].value);
            else
                used = rtb_json_quote(buf, size, used, fields[i].value);
        }
        used += (size_t)snprintf(used < size ? buf + used : NULL, used < size ? size - used : 0,
                                 "}\n");
        if (used < size)
            break;
        size = used + 1;
    }
    *len = used;
    return buf;
}

static void write_text(FILE *out, const char *ts, rtb_log_level level, const char *message,
                       const rtb_log_field *fields, size_t n)
{
    char upper[8];
    size_t i;
    for (i = 0; level_names[level][i]; i++)
        upper[i] = (char)toupper((unsigned char)level_names[level][i]);
    upper[i] = '\0';
    fprintf(out, "%s %-5s %s", ts, upper, message);
    for (i = 0; i < n; i++) {
        if (fields[i].raw || !needs_quotes(fields[i].value)) {
            fprintf(out, " %s=%s", fields[i].key, fields[i].value);
        } else {
            char quoted[1024];
            size_t need = rtb_json_quote(quoted, sizeof quoted, 0, fields[i].value);
            if (need < sizeof quoted) {
                fprintf(out, " %s=%s", fields[i].key, quoted);
            } else {
                char *big = malloc(need + 1);
                if (big) {
                    rtb_json_quote(big, need + 1, 0, fields[i].value);
                    fprintf(out, " %s=%s", fields[i].key, big);
                    free(big);
                }
            }
        }
    }
    fputc('\n', out);
}

void rtb_log_write(rtb_log_level level, const char *message, const rtb_log_field *fields,
                   size_t n_fields)
{
    if (!rtb_log_enabled(level))
        return;
    char ts[40];
    utc_timestamp(ts, sizeof ts);
    FILE *out = current_sink ? current_sink : stderr;
    if (current_format == RTB_LOG_JSON) {
        size_t len;
        char *line = format_json(ts, level, message, fields, n_fields, &len);
        if (!line)
            return;
        pthread_mutex_lock(&sink_lock);
        fwrite(line, 1, len, out);
        fflush(out);
        pthread_mutex_unlock(&sink_lock);
        free(line);
        return;
    }
    /* The line is composed in memory and written at once: stderr is unbuffered, and
     * writing it piece by piece cost one write() per field (the storage SCP logs a
     * line per instance). */
    char *line = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&line, &len);
    pthread_mutex_lock(&sink_lock);
    if (mem) {
        write_text(mem, ts, level, message, fields, n_fields);
        if (fclose(mem) == 0)
            fwrite(line, 1, len, out);
    } else {
        write_text(out, ts, level, message, fields, n_fields);
    }
    fflush(out);
    pthread_mutex_unlock(&sink_lock);
    free(line);
}

void rtb_log(rtb_log_level level, const char *fmt, ...)
{
    if (!rtb_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rtb_log_write(level, msg, NULL, 0);
}
