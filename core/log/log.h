/* Logging: levels, a text sink for people and a JSON-lines sink for machines.
 *
 * One process-wide logger writing to one stream (stderr by default). Safe to call
 * from pool threads: each record is written whole under a lock. */
#ifndef RTB_LOG_H
#define RTB_LOG_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { RTB_LOG_DEBUG, RTB_LOG_INFO, RTB_LOG_WARN, RTB_LOG_ERROR } rtb_log_level;
typedef enum { RTB_LOG_TEXT, RTB_LOG_JSON } rtb_log_format;

/* A key/value pair attached to a record. Numbers and booleans are written unquoted
 * in JSON when `raw` is set; everything else is a JSON string. */
typedef struct {
    const char *key;
    const char *value;
    int raw;
} rtb_log_field;

/* "debug", "info", "warn"/"warning", "error" (any case). 0, or -1 if unknown. */
int rtb_log_level_parse(const char *name, rtb_log_level *out);
const char *rtb_log_level_name(rtb_log_level level);
/* "text" or "json". 0, or -1 if unknown. */
int rtb_log_format_parse(const char *name, rtb_log_format *out);

void rtb_log_configure(rtb_log_level level, rtb_log_format format, FILE *sink);
rtb_log_level rtb_log_get_level(void);
/* Changes the level only (a command's own -v/-d after the global options). */
void rtb_log_set_level(rtb_log_level level);
int rtb_log_enabled(rtb_log_level level);

void rtb_log_write(rtb_log_level level, const char *message, const rtb_log_field *fields,
                   size_t n_fields);
/* printf-style convenience without fields. */
void rtb_log(rtb_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends `s` as a JSON string literal (with quotes) to buf; returns the new length or
 * the length that would be needed (like snprintf). Shared with other JSON writers. */
size_t rtb_json_quote(char *buf, size_t size, size_t used, const char *s);

#ifdef __cplusplus
}
#endif

#endif
