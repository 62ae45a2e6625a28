/* Helpers shared by the config sources (config.cpp, validate.c, resolve.c, problems.c).
 * Not part of the public API. */
#ifndef RTB_CONFIG_INTERNAL_H
#define RTB_CONFIG_INTERNAL_H

#include "config.h"

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define RTB_CFG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define RTB_CFG_PRINTF(f, a)
#endif

/* Appends one problem; every string is copied. `problems` may be NULL (nothing is
 * recorded). Returns 0, or -1 when memory ran out (the problem is then lost). */
int rtb_cfg_problem_add(rtb_cfg_problems *problems, rtb_cfg_severity severity, const char *file,
                        int line, const char *env, const char *key, const char *fmt, ...)
    RTB_CFG_PRINTF(7, 8);
int rtb_cfg_problem_vadd(rtb_cfg_problems *problems, rtb_cfg_severity severity, const char *file,
                         int line, const char *env, const char *key, const char *fmt, va_list ap)
    RTB_CFG_PRINTF(7, 0);

/* The table of environment `env`; when it is not defined, adds an error listing the
 * environments that are, and returns NULL. */
const rtb_cfg_node *rtb_cfg_env_or_problem(const rtb_config *cfg, const char *env,
                                           rtb_cfg_problems *problems);

/* Dotted keys for messages ("sources.ARIA.port"). Fixed buffers: keys are short, and
 * a truncated key in a message is better than a failure. */
#define RTB_CFG_PATH_MAX 512
/* parent + "." + key; a key that is not a bare TOML key is quoted, as TOML would. */
void rtb_cfg_path(char *buf, size_t size, const char *parent, const char *key);
/* parent + "[i]" */
void rtb_cfg_path_index(char *buf, size_t size, const char *parent, size_t i);

/* "an integer", "a string", ... for messages. */
const char *rtb_cfg_kind_phrase(rtb_cfg_kind kind);

/* Appends `name` to the ", "-separated list in `buf` ("..." when it no longer fits). */
void rtb_cfg_list_append(char *buf, size_t size, const char *name);

/* Frees what a node owns (key, string, children) but not the node itself, because
 * children live in their parent's array. `file` is borrowed and left alone. */
void rtb_cfg_node_clear(rtb_cfg_node *node);

/* 1 when a key name suggests a secret ("password", "secret", "token", any case). */
int rtb_cfg_key_is_secret(const char *key);

/* When `s` is a placeholder "__NAME__" (NAME of [A-Z0-9_] with at least one letter or
 * digit), returns the length of NAME and points *name at it inside `s`; else 0. */
size_t rtb_cfg_placeholder(const char *s, const char **name);

/* When `key` is `<k>_env_var` (k not empty), the length of <k>; else 0. */
size_t rtb_cfg_env_var_target_len(const char *key);

#ifdef __cplusplus
}
#endif

#endif
