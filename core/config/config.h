/* Environments configuration: TOML files -> validated tree; secret resolution.
 *
 * A configuration is one TOML file or every *.toml in a directory. Each top-level
 * table is an environment ([UCLA], [TJU], ...). Loading never resolves secrets;
 * rtb_config_resolve() does that for one environment only, so a missing TJU secret
 * cannot stop a UCLA run. */
#ifndef RTB_CONFIG_H
#define RTB_CONFIG_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    RTB_CFG_TABLE,
    RTB_CFG_ARRAY,
    RTB_CFG_STRING,
    RTB_CFG_INTEGER,
    RTB_CFG_FLOAT,
    RTB_CFG_BOOLEAN,
    RTB_CFG_DATETIME /* TOML date/time/date-time, kept as its ISO-8601 text in `string` */
} rtb_cfg_kind;

typedef struct rtb_cfg_node rtb_cfg_node;
struct rtb_cfg_node {
    rtb_cfg_kind kind;
    char *key;              /* NULL for array elements */
    char *string;           /* STRING, DATETIME */
    long long integer;      /* INTEGER */
    double number;          /* FLOAT */
    int boolean;            /* BOOLEAN */
    int secret;             /* value came from the process environment: never print it */
    const char *file;       /* file the node was read from (owned by the config) */
    int line;               /* 1-based line in that file, 0 if unknown */
    rtb_cfg_node *children; /* TABLE members in file order, ARRAY elements */
    size_t n_children;
};

typedef enum { RTB_CFG_ERROR, RTB_CFG_WARNING } rtb_cfg_severity;

typedef struct {
    rtb_cfg_severity severity;
    char *file;    /* may be NULL */
    int line;      /* 0 if unknown */
    char *env;     /* environment name, may be NULL (file-level problems) */
    char *key;     /* dotted key inside the environment, e.g. "sources.ARIA.port"; may be NULL */
    char *message; /* what is wrong, one sentence, never contains a secret value */
} rtb_cfg_problem;

typedef struct {
    rtb_cfg_problem *items;
    size_t count, capacity;
} rtb_cfg_problems;

typedef struct rtb_config rtb_config;

/* Loads `path` (a .toml file or a directory whose *.toml files are read in name order).
 * Syntax errors, unreadable files and environments defined twice are added to
 * `problems`. Returns 0 when nothing was wrong, -1 otherwise; *out is always set
 * (possibly empty) and must be freed with rtb_config_free(). */
int rtb_config_load(const char *path, rtb_config **out, rtb_cfg_problems *problems);
void rtb_config_free(rtb_config *cfg);

/* Environments in load order. */
size_t rtb_config_env_count(const rtb_config *cfg);
const char *rtb_config_env_name(const rtb_config *cfg, size_t i);
/* Raw (unresolved) table of an environment, NULL if not defined. */
const rtb_cfg_node *rtb_config_env(const rtb_config *cfg, const char *name);
/* File an environment was defined in, NULL if not defined. */
const char *rtb_config_env_file(const rtb_config *cfg, const char *name);

/* The settings a peer table may carry besides its structural keys, by kind of peer
 * (NULL-terminated lists of names; any list may be NULL). Their values are checked by
 * the settings schema (rtbackup.settings), not here. */
typedef struct {
    const char *const *dicom;  /* sources of type aria / mim */
    const char *const *mosaiq; /* sources of type mosaiq */
    const char *const *target; /* backup targets */
} rtb_cfg_setting_names;

/* Checks the structure of one environment (or all when env == NULL) and appends every
 * problem found: shape, peers' addresses, AE titles, aliases, secrets. [ENV.settings]
 * is left to the settings schema; `settings` (may be NULL) names the settings peers
 * may carry. Returns the number of errors (warnings are not counted). */
size_t rtb_config_validate(const rtb_config *cfg, const char *env,
                           const rtb_cfg_setting_names *settings, rtb_cfg_problems *problems);

/* The file and line where the value at `key` (a dotted path inside environment env,
 * e.g. "settings.window", "sources.ARIA.port") is written. Returns 0, or -1 when
 * there is no such value. */
int rtb_config_locate(const rtb_config *cfg, const char *env, const char *key, const char **file,
                      int *line);

/* Looks a name up in the process environment; NULL when unset. Injected for tests. */
typedef const char *(*rtb_getenv_fn)(const char *name, void *ud);

/* Deep copy of one environment with secrets resolved from `getenv`:
 *   - a string value "__NAME__" (two underscores each side, NAME of [A-Z0-9_]) becomes
 *     the value of variable NAME;
 *   - a key `<k>_env_var = "NAME"` becomes key `<k>` with the value of NAME (and the
 *     `_env_var` key is dropped).
 * Resolved nodes have secret = 1. A missing variable is an error naming the key and
 * the variable (never a value). Returns 0 and sets *out, or -1 with problems added.
 * The copy's `file` pointers still belong to `cfg`: keep cfg until the copy is freed. */
int rtb_config_resolve(const rtb_config *cfg, const char *env, rtb_getenv_fn getenv_fn, void *ud,
                       rtb_cfg_node **out, rtb_cfg_problems *problems);

/* Child of a table by key, NULL if absent. */
const rtb_cfg_node *rtb_cfg_get(const rtb_cfg_node *table, const char *key);
void rtb_cfg_node_free(rtb_cfg_node *node); /* frees a tree returned by rtb_config_resolve */

/* "file:line: ENV: key: message" (parts that are unknown are left out). Returns the
 * number of characters that would have been written, like snprintf. */
int rtb_cfg_problem_format(const rtb_cfg_problem *p, char *buf, size_t size);
void rtb_cfg_problems_free(rtb_cfg_problems *problems);

#ifdef __cplusplus
}
#endif

#endif
