/* The list of problems found while loading, validating and resolving. */
#define _POSIX_C_SOURCE 200809L /* strdup */

#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_or_null(const char *s, int *failed)
{
    if (s == NULL)
        return NULL;
    char *copy = strdup(s);
    if (copy == NULL)
        *failed = 1;
    return copy;
}

static char *vformat(const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *s = n < 0 ? NULL : malloc((size_t)n + 1);
    if (s != NULL)
        vsnprintf(s, (size_t)n + 1, fmt, again);
    va_end(again);
    return s;
}

static int reserve_one(rtb_cfg_problems *ps)
{
    if (ps->count < ps->capacity)
        return 0;
    size_t capacity = ps->capacity ? ps->capacity * 2 : 16;
    rtb_cfg_problem *items = realloc(ps->items, capacity * sizeof *items);
    if (items == NULL)
        return -1;
    ps->items = items;
    ps->capacity = capacity;
    return 0;
}

static void problem_clear(rtb_cfg_problem *p)
{
    free(p->file);
    free(p->env);
    free(p->key);
    free(p->message);
}

int rtb_cfg_problem_vadd(rtb_cfg_problems *ps, rtb_cfg_severity severity, const char *file,
                         int line, const char *env, const char *key, const char *fmt, va_list ap)
{
    if (ps == NULL)
        return 0;
    if (reserve_one(ps) != 0)
        return -1;

    int failed = 0;
    rtb_cfg_problem p = {.severity = severity, .line = line};
    p.file = dup_or_null(file, &failed);
    p.env = dup_or_null(env, &failed);
    p.key = dup_or_null(key, &failed);
    p.message = vformat(fmt, ap);
    if (failed || p.message == NULL) {
        problem_clear(&p);
        return -1;
    }
    ps->items[ps->count++] = p;
    return 0;
}

int rtb_cfg_problem_add(rtb_cfg_problems *ps, rtb_cfg_severity severity, const char *file,
                        int line, const char *env, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = rtb_cfg_problem_vadd(ps, severity, file, line, env, key, fmt, ap);
    va_end(ap);
    return rc;
}

const rtb_cfg_node *rtb_cfg_env_or_problem(const rtb_config *cfg, const char *env,
                                           rtb_cfg_problems *problems)
{
    const rtb_cfg_node *table = rtb_config_env(cfg, env);
    if (table != NULL)
        return table;
    char names[256] = "";
    for (size_t i = 0; i < rtb_config_env_count(cfg); i++)
        rtb_cfg_list_append(names, sizeof names, rtb_config_env_name(cfg, i));
    rtb_cfg_problem_add(problems, RTB_CFG_ERROR, NULL, 0, env, NULL,
                        "environment \"%s\" is not defined (defined: %s)", env ? env : "",
                        names[0] ? names : "none");
    return NULL;
}

const char *rtb_cfg_kind_phrase(rtb_cfg_kind kind)
{
    switch (kind) {
    case RTB_CFG_TABLE: return "a table";
    case RTB_CFG_ARRAY: return "an array";
    case RTB_CFG_STRING: return "a string";
    case RTB_CFG_INTEGER: return "an integer";
    case RTB_CFG_FLOAT: return "a float";
    case RTB_CFG_BOOLEAN: return "a boolean";
    case RTB_CFG_DATETIME: return "a date/time";
    }
    return "a value";
}

static int is_bare_key(const char *key)
{
    if (*key == '\0')
        return 0;
    for (const char *p = key; *p; p++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

void rtb_cfg_path(char *buf, size_t size, const char *parent, const char *key)
{
    const char *dot = parent && parent[0] ? "." : "";
    if (parent == NULL)
        parent = "";
    if (is_bare_key(key))
        snprintf(buf, size, "%s%s%s", parent, dot, key);
    else
        snprintf(buf, size, "%s%s\"%s\"", parent, dot, key);
}

void rtb_cfg_path_index(char *buf, size_t size, const char *parent, size_t i)
{
    snprintf(buf, size, "%s[%zu]", parent ? parent : "", i);
}

void rtb_cfg_list_append(char *buf, size_t size, const char *name)
{
    static const char more[] = "...";
    size_t used = strlen(buf);
    const char *sep = used ? ", " : "";
    if (used >= sizeof more && strcmp(buf + used - (sizeof more - 1), more) == 0)
        return; /* already truncated */
    /* Keep room for ", ..." so a truncated list says so. */
    if (used + strlen(sep) + strlen(name) + 2 + sizeof more > size) {
        if (used + strlen(sep) + sizeof more <= size)
            snprintf(buf + used, size - used, "%s%s", sep, more);
        return;
    }
    snprintf(buf + used, size - used, "%s%s", sep, name);
}

/* snprintf that keeps counting after the buffer is full, so the caller learns the
 * size it needs. */
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...)
    RTB_CFG_PRINTF(4, 5);
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *dst = *used < size ? buf + *used : NULL;
    int n = vsnprintf(dst, dst ? size - *used : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        *used += (size_t)n;
}

int rtb_cfg_problem_format(const rtb_cfg_problem *p, char *buf, size_t size)
{
    size_t used = 0;
    if (size > 0)
        buf[0] = '\0';
    if (p->file != NULL) {
        append(buf, size, &used, "%s", p->file);
        if (p->line > 0)
            append(buf, size, &used, ":%d", p->line);
        append(buf, size, &used, ": ");
    }
    if (p->env != NULL)
        append(buf, size, &used, "%s: ", p->env);
    if (p->key != NULL)
        append(buf, size, &used, "%s: ", p->key);
    append(buf, size, &used, "%s", p->message ? p->message : "");
    return (int)used;
}

void rtb_cfg_problems_free(rtb_cfg_problems *ps)
{
    if (ps == NULL)
        return;
    for (size_t i = 0; i < ps->count; i++)
        problem_clear(&ps->items[i]);
    free(ps->items);
    ps->items = NULL;
    ps->count = ps->capacity = 0;
}
