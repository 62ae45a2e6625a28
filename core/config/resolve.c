/* The configuration tree, and resolving one environment's secrets into a copy of it.
 *
 * Secrets are resolved per environment and on demand (not at load time, as the
 * Python system did), so a secret that only TJU needs cannot stop a UCLA run. A
 * resolved value is marked secret and never written into a message. */
#define _POSIX_C_SOURCE 200809L /* strdup */

#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const char ENV_VAR_SUFFIX[] = "_env_var";

const rtb_cfg_node *rtb_cfg_get(const rtb_cfg_node *table, const char *key)
{
    if (table == NULL || table->kind != RTB_CFG_TABLE || key == NULL)
        return NULL;
    for (size_t i = 0; i < table->n_children; i++)
        if (table->children[i].key && strcmp(table->children[i].key, key) == 0)
            return &table->children[i];
    return NULL;
}

int rtb_config_locate(const rtb_config *cfg, const char *env, const char *key, const char **file,
                      int *line)
{
    const rtb_cfg_node *n = rtb_config_env(cfg, env);
    char part[256];
    const char *p = key;
    while (n && p && *p) {
        size_t len = strcspn(p, ".[");
        if (len == 0 || len >= sizeof part)
            return -1;
        memcpy(part, p, len);
        part[len] = '\0';
        n = rtb_cfg_get(n, part);
        p += len;
        if (*p == '[') /* an array element: its array's line is close enough */
            break;
        if (*p == '.')
            p++;
    }
    if (n == NULL)
        return -1;
    *file = n->file;
    *line = n->line;
    return 0;
}

/* Overwrites a secret before its memory goes back to the allocator, so it does not
 * linger in the heap (or a core dump). volatile keeps the stores from being elided. */
static void wipe(char *s)
{
    for (volatile char *p = s; *p; p++)
        *p = 0;
}

void rtb_cfg_node_clear(rtb_cfg_node *node)
{
    if (node->secret && node->string)
        wipe(node->string);
    free(node->key);
    free(node->string);
    for (size_t i = 0; i < node->n_children; i++)
        rtb_cfg_node_clear(&node->children[i]);
    free(node->children);
    node->key = node->string = NULL;
    node->children = NULL;
    node->n_children = 0;
}

void rtb_cfg_node_free(rtb_cfg_node *node)
{
    if (node == NULL)
        return;
    rtb_cfg_node_clear(node);
    free(node);
}

static int contains_nocase(const char *s, const char *word)
{
    size_t n = strlen(word);
    for (; *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && (s[i] | 0x20) == word[i])
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

int rtb_cfg_key_is_secret(const char *key)
{
    return key && (contains_nocase(key, "password") || contains_nocase(key, "secret") ||
                   contains_nocase(key, "token"));
}

size_t rtb_cfg_env_var_target_len(const char *key)
{
    size_t n = key ? strlen(key) : 0, suffix = sizeof ENV_VAR_SUFFIX - 1;
    return n > suffix && strcmp(key + n - suffix, ENV_VAR_SUFFIX) == 0 ? n - suffix : 0;
}

size_t rtb_cfg_placeholder(const char *s, const char **name)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 5 || strncmp(s, "__", 2) != 0 || strcmp(s + n - 2, "__") != 0)
        return 0;
    int has_alnum = 0;
    for (size_t i = 2; i < n - 2; i++) {
        char c = s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            has_alnum = 1;
        else if (c != '_')
            return 0;
    }
    if (!has_alnum)
        return 0;
    *name = s + 2;
    return n - 4;
}

typedef struct {
    const char *env;
    rtb_getenv_fn getenv_fn;
    void *ud;
    rtb_cfg_problems *problems;
    int errors;
} resolver;

static void fail(resolver *r, const rtb_cfg_node *at, const char *path, const char *fmt, ...)
    RTB_CFG_PRINTF(4, 5);
static void fail(resolver *r, const rtb_cfg_node *at, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rtb_cfg_problem_vadd(r->problems, RTB_CFG_ERROR, at->file, at->line, r->env, path, fmt, ap);
    va_end(ap);
    r->errors++;
}

static char *dup_checked(resolver *r, const rtb_cfg_node *at, const char *s)
{
    if (s == NULL)
        return NULL;
    char *copy = strdup(s);
    if (copy == NULL)
        fail(r, at, NULL, "out of memory while resolving the environment");
    return copy;
}

/* Sets `dst` to the value of variable `name` (len bytes of `name`), or reports that
 * it is missing. `path` is the key the value is for. */
static void resolve_variable(resolver *r, rtb_cfg_node *dst, const rtb_cfg_node *src,
                             const char *name, size_t len, const char *path)
{
    char *var = malloc(len + 1);
    if (var == NULL) {
        fail(r, src, path, "out of memory while resolving the environment");
        return;
    }
    memcpy(var, name, len);
    var[len] = '\0';
    const char *value = r->getenv_fn(var, r->ud);
    if (value == NULL)
        fail(r, src, path, "environment variable %s is not set (needed for %s)", var, path);
    else {
        dst->kind = RTB_CFG_STRING;
        dst->secret = 1;
        dst->string = dup_checked(r, src, value);
    }
    free(var);
}

static void copy_node(resolver *r, rtb_cfg_node *dst, const rtb_cfg_node *src, const char *path);

/* `<k>_env_var = "NAME"` in `table` becomes `<k>` = value of NAME. */
static void copy_env_var_member(resolver *r, rtb_cfg_node *dst, const rtb_cfg_node *table,
                                const rtb_cfg_node *src, const char *parent)
{
    size_t klen = rtb_cfg_env_var_target_len(src->key);
    char *key = malloc(klen + 1);
    if (key == NULL) {
        fail(r, src, parent, "out of memory while resolving the environment");
        return;
    }
    memcpy(key, src->key, klen);
    key[klen] = '\0';
    dst->key = key;
    dst->file = src->file;
    dst->line = src->line;

    char path[RTB_CFG_PATH_MAX];
    rtb_cfg_path(path, sizeof path, parent, key);
    /* Both set would leave two keys of the same name; which one is meant is not ours to
     * guess (the Python system silently took the later one). */
    if (rtb_cfg_get(table, key) != NULL) {
        fail(r, src, path, "both \"%s\" and \"%s\" are set; keep one", key, src->key);
        return;
    }
    resolve_variable(r, dst, src, src->string, strlen(src->string), path);
}

static void copy_children(resolver *r, rtb_cfg_node *dst, const rtb_cfg_node *src, const char *path)
{
    if (src->n_children == 0)
        return;
    dst->children = calloc(src->n_children, sizeof *dst->children);
    if (dst->children == NULL) {
        fail(r, src, path, "out of memory while resolving the environment");
        return;
    }
    dst->n_children = src->n_children;
    for (size_t i = 0; i < src->n_children; i++) {
        const rtb_cfg_node *child = &src->children[i];
        char child_path[RTB_CFG_PATH_MAX];
        if (src->kind == RTB_CFG_ARRAY)
            rtb_cfg_path_index(child_path, sizeof child_path, path, i);
        else
            rtb_cfg_path(child_path, sizeof child_path, path, child->key);

        if (src->kind == RTB_CFG_TABLE && child->kind == RTB_CFG_STRING &&
            rtb_cfg_env_var_target_len(child->key))
            copy_env_var_member(r, &dst->children[i], src, child, path);
        else
            copy_node(r, &dst->children[i], child, child_path);
    }
}

static void copy_node(resolver *r, rtb_cfg_node *dst, const rtb_cfg_node *src, const char *path)
{
    dst->kind = src->kind;
    dst->integer = src->integer;
    dst->number = src->number;
    dst->boolean = src->boolean;
    dst->secret = src->secret;
    dst->file = src->file;
    dst->line = src->line;
    dst->key = dup_checked(r, src, src->key);

    const char *name;
    size_t len = src->kind == RTB_CFG_STRING ? rtb_cfg_placeholder(src->string, &name) : 0;
    if (len > 0)
        resolve_variable(r, dst, src, name, len, path);
    else if (src->string)
        dst->string = dup_checked(r, src, src->string);
    copy_children(r, dst, src, path);
}

static const char *process_getenv(const char *name, void *ud)
{
    (void)ud;
    return getenv(name);
}

int rtb_config_resolve(const rtb_config *cfg, const char *env, rtb_getenv_fn getenv_fn, void *ud,
                       rtb_cfg_node **out, rtb_cfg_problems *problems)
{
    *out = NULL;
    const rtb_cfg_node *table = rtb_cfg_env_or_problem(cfg, env, problems);
    if (table == NULL)
        return -1;

    resolver r = {.env = env,
                  .getenv_fn = getenv_fn ? getenv_fn : process_getenv,
                  .ud = ud,
                  .problems = problems};
    rtb_cfg_node *copy = calloc(1, sizeof *copy);
    if (copy == NULL) {
        fail(&r, table, NULL, "out of memory while resolving the environment");
        return -1;
    }
    /* Keep going after a missing variable so one run lists every one of them. */
    copy_node(&r, copy, table, "");
    if (r.errors > 0) {
        rtb_cfg_node_free(copy);
        return -1;
    }
    *out = copy;
    return 0;
}
