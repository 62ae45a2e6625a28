/* Validation of environments: every problem is reported in one pass, each with the
 * file, line and dotted key a site engineer needs to fix it.
 *
 * These are the structural rules: the shape of an environment, its peers' addresses
 * and AE titles, aliases that must resolve, secrets. The settings ([ENV.settings] and
 * the settings a source or target may carry) have one schema of their own, in Lua
 * (scripts/lib/rtbackup/settings.lua), which checks their values; the caller hands
 * their names in so that they are not reported as unknown keys here. Errors are what
 * would make a run fail or misbehave; warnings are what is probably a mistake but
 * harmless (an unknown key, a literal secret). */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#define ANY_KIND ((rtb_cfg_kind)-1) /* checked by its own rule (e.g. "type") */
#define AE_TITLE_MAX 16
#define VALUE_SHOWN_MAX 40 /* longer strings are cut in messages */

typedef struct checker checker;
typedef void (*string_check)(checker *c, const rtb_cfg_node *n, const char *path);

typedef struct {
    const char *key;
    rtb_cfg_kind kind;
    long long min, max; /* integers */
    int zero_ok;        /* integers: 0 is allowed besides min..max ("no limit") */
    string_check check; /* strings that are not "__NAME__" placeholders */
} field;

struct checker {
    rtb_cfg_problems *problems;
    const rtb_cfg_setting_names *settings; /* checked elsewhere (rtbackup.settings), may be NULL */
    const char *env;
    const rtb_cfg_node *root; /* the environment's table */
    size_t errors;
};

static void report(checker *c, rtb_cfg_severity severity, const rtb_cfg_node *at, const char *path,
                   const char *fmt, ...) RTB_CFG_PRINTF(5, 6);
static void report(checker *c, rtb_cfg_severity severity, const rtb_cfg_node *at, const char *path,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rtb_cfg_problem_vadd(c->problems, severity, at->file, at->line, c->env, path, fmt, ap);
    va_end(ap);
    if (severity == RTB_CFG_ERROR)
        c->errors++;
}

#define ERROR(c, at, path, ...) report(c, RTB_CFG_ERROR, at, path, __VA_ARGS__)
#define WARNING(c, at, path, ...) report(c, RTB_CFG_WARNING, at, path, __VA_ARGS__)

/* ---- describing values in messages ---------------------------------------------- */

/* `"text"`, cut to VALUE_SHOWN_MAX characters. */
static void quote(char *buf, size_t size, const char *s)
{
    if (strlen(s) > VALUE_SHOWN_MAX)
        snprintf(buf, size, "\"%.*s...\"", VALUE_SHOWN_MAX, s);
    else
        snprintf(buf, size, "\"%s\"", s);
}

/* " (value)" for a type-mismatch message; empty for tables, arrays and anything whose
 * key suggests a secret, so a password typed in the wrong place is not echoed. */
static void shown_value(char *buf, size_t size, const rtb_cfg_node *n)
{
    char text[VALUE_SHOWN_MAX + 8];
    buf[0] = '\0';
    if (rtb_cfg_key_is_secret(n->key))
        return;
    switch (n->kind) {
    case RTB_CFG_STRING:
    case RTB_CFG_DATETIME: quote(text, sizeof text, n->string); break;
    case RTB_CFG_INTEGER: snprintf(text, sizeof text, "%lld", n->integer); break;
    case RTB_CFG_FLOAT: snprintf(text, sizeof text, "%g", n->number); break;
    case RTB_CFG_BOOLEAN: snprintf(text, sizeof text, "%s", n->boolean ? "true" : "false"); break;
    default: return;
    }
    snprintf(buf, size, " (%s)", text);
}

static int is_placeholder(const rtb_cfg_node *n)
{
    const char *name;
    return n->kind == RTB_CFG_STRING && rtb_cfg_placeholder(n->string, &name) > 0;
}

/* ---- content checks on strings ---------------------------------------------------- */

static void check_ae_title(checker *c, const rtb_cfg_node *n, const char *path)
{
    const char *s = n->string;
    size_t len = strlen(s);
    if (len == 0) {
        ERROR(c, n, path, "AE title is empty; DICOM requires 1 to %d characters", AE_TITLE_MAX);
        return;
    }
    /* Not echoed: a control character would garble the message. */
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x20 || b > 0x7E) {
            ERROR(c, n, path,
                  "AE title contains a control or non-ASCII character (byte 0x%02X at position "
                  "%zu); only printable ASCII is allowed",
                  b, i + 1);
            return;
        }
    }
    if (strchr(s, '\\'))
        ERROR(c, n, path, "AE title \"%s\" contains a backslash, which DICOM does not allow", s);
    if (len > AE_TITLE_MAX)
        ERROR(c, n, path, "AE title \"%s\" is %zu characters; DICOM allows at most %d", s, len,
              AE_TITLE_MAX);
    if (strspn(s, " ") == len)
        ERROR(c, n, path, "AE title is all spaces; DICOM requires at least one other character");
}

static int one_of(const char *s, const char *const *allowed)
{
    for (; *allowed; allowed++)
        if (strcmp(s, *allowed) == 0)
            return 1;
    return 0;
}

/* ---- fields ----------------------------------------------------------------------- */

#define STR(k) {k, RTB_CFG_STRING, 0, 0, 0, NULL}
#define STR_CHECKED(k, check) {k, RTB_CFG_STRING, 0, 0, 0, check}
#define INT(k, lo, hi) {k, RTB_CFG_INTEGER, lo, hi, 0, NULL}
#define BOOL(k) {k, RTB_CFG_BOOLEAN, 0, 0, 0, NULL}
#define TABLE(k) {k, RTB_CFG_TABLE, 0, 0, 0, NULL}
#define ANY(k) {k, ANY_KIND, 0, 0, 0, NULL}
#define END {NULL, ANY_KIND, 0, 0, 0, NULL}
#define UNLIMITED LLONG_MAX

static const field ENV_FIELDS[] = {
    STR("description"), STR("default_source"), STR("default_backup"), TABLE("script_ae"),
    TABLE("sources"),   TABLE("backup_targets"), TABLE("settings"),   STR("scripts"),
    END};

static const field SCRIPT_AE_FIELDS[] = {
    STR_CHECKED("aet", check_ae_title), INT("port", 1, 65535), END};

static const field DICOM_SOURCE_FIELDS[] = {
    ANY("type"),
    STR_CHECKED("aet", check_ae_title),
    STR("ip"),
    STR("host"),
    INT("port", 1, 65535),
    TABLE("tls"),
    END};

static const field MOSAIQ_SOURCE_FIELDS[] = {
    ANY("type"),
    STR("db_server"),
    STR("db_database"),
    STR("db_username"),
    STR("db_password"),
    STR("odbc_driver"),
    STR("dsn"),
    STR("staging_target_alias"),
    TABLE("db_column_to_dicom_tag"),
    TABLE("dicom_defaults"),
    TABLE("odbc_attributes"),
    END};

static const field TARGET_FIELDS[] = {
    ANY("type"),
    STR_CHECKED("aet", check_ae_title),
    STR("ip"),
    STR("host"),
    INT("port", 1, 65535),
    STR("http_url"),
    TABLE("tls"),
    END};


static const field *find_field(const field *fields, const char *key, size_t key_len)
{
    for (; fields->key; fields++)
        if (strlen(fields->key) == key_len && strncmp(fields->key, key, key_len) == 0)
            return fields;
    return NULL;
}

/* A key `<k>_env_var` stands for `<k>` once resolved, so it is known when <k> is. */
static const field *field_for_key(const field *fields, const char *key)
{
    const field *f = find_field(fields, key, strlen(key));
    size_t target_len = rtb_cfg_env_var_target_len(key);
    return f == NULL && target_len > 0 ? find_field(fields, key, target_len) : f;
}

static void check_integer_range(checker *c, const field *f, const rtb_cfg_node *n, const char *path)
{
    long long v = n->integer;
    if ((v >= f->min && v <= f->max) || (f->zero_ok && v == 0))
        return;
    if (f->zero_ok)
        ERROR(c, n, path, "must be 0 (no limit) or between %lld and %lld, got %lld", f->min, f->max, v);
    else if (f->max == UNLIMITED)
        ERROR(c, n, path, "must be at least %lld, got %lld", f->min, v);
    else
        ERROR(c, n, path, "must be between %lld and %lld, got %lld", f->min, f->max, v);
}

static void check_value(checker *c, const field *f, const rtb_cfg_node *n, const char *path)
{
    /* A field found through `<k>_env_var` names a variable: check_secrets checks that. */
    if (f->kind == ANY_KIND || strcmp(f->key, n->key) != 0)
        return;
    if (n->kind != f->kind) {
        char shown[VALUE_SHOWN_MAX + 16];
        shown_value(shown, sizeof shown, n);
        ERROR(c, n, path, "expected %s, got %s%s", rtb_cfg_kind_phrase(f->kind),
              rtb_cfg_kind_phrase(n->kind), shown);
    } else if (n->kind == RTB_CFG_INTEGER) {
        check_integer_range(c, f, n, path);
    } else if (n->kind == RTB_CFG_STRING && f->check && !is_placeholder(n)) {
        f->check(c, n, path);
    }
}

static int is_listed(const char *const *names, const char *key)
{
    for (; names && *names; names++)
        if (strcmp(*names, key) == 0)
            return 1;
    return 0;
}

/* Type and content of every member; unknown keys are warnings because site scripts
 * and later features may read keys this version does not know. Settings a peer may
 * carry (`allowed`) are checked by the settings schema, not here. */
static void check_fields(checker *c, const rtb_cfg_node *table, const char *path, const field *fields,
                         const char *const *allowed)
{
    for (size_t i = 0; i < table->n_children; i++) {
        const rtb_cfg_node *n = &table->children[i];
        char child[RTB_CFG_PATH_MAX];
        rtb_cfg_path(child, sizeof child, path, n->key);
        const field *f = field_for_key(fields, n->key);
        if (f == NULL && !is_listed(allowed, n->key))
            WARNING(c, n, child, "unknown key (ignored)");
        else if (f != NULL)
            check_value(c, f, n, child);
    }
}

/* ---- required keys and references ------------------------------------------------ */

static int has(const rtb_cfg_node *table, const char *key)
{
    char env_var[128];
    snprintf(env_var, sizeof env_var, "%s_env_var", key);
    return rtb_cfg_get(table, key) != NULL || rtb_cfg_get(table, env_var) != NULL;
}

static void require(checker *c, const rtb_cfg_node *table, const char *path, const char *key)
{
    if (has(table, key))
        return;
    char child[RTB_CFG_PATH_MAX];
    rtb_cfg_path(child, sizeof child, path, key);
    ERROR(c, table, child, "missing required key \"%s\"", key);
}

/* Exactly one of two spellings, e.g. "ip" or "host". */
static void require_one(checker *c, const rtb_cfg_node *table, const char *path, const char *key,
                        const char *alternative)
{
    char child[RTB_CFG_PATH_MAX];
    rtb_cfg_path(child, sizeof child, path, key);
    int a = has(table, key), b = has(table, alternative);
    if (!a && !b)
        ERROR(c, table, child, "missing required key \"%s\" (or \"%s\")", key, alternative);
    else if (a && b)
        ERROR(c, table, child, "both \"%s\" and \"%s\" are set; keep one", key, alternative);
}

/* `node` (a string) must name a member of the environment's `section` table. */
static void check_alias(checker *c, const rtb_cfg_node *node, const char *path, const char *section)
{
    if (node == NULL || node->kind != RTB_CFG_STRING)
        return;
    const rtb_cfg_node *table = rtb_cfg_get(c->root, section);
    if (table != NULL && table->kind == RTB_CFG_TABLE && rtb_cfg_get(table, node->string))
        return;
    char names[256] = "";
    for (size_t i = 0; table && table->kind == RTB_CFG_TABLE && i < table->n_children; i++)
        rtb_cfg_list_append(names, sizeof names, table->children[i].key);
    char shown[VALUE_SHOWN_MAX + 8];
    quote(shown, sizeof shown, node->string);
    ERROR(c, node, path, "%s is not defined in %s (defined: %s)", shown, section,
          names[0] ? names : "none");
}

static void check_peer_address(checker *c, const rtb_cfg_node *peer, const char *path)
{
    require(c, peer, path, "aet");
    require_one(c, peer, path, "ip", "host");
    require(c, peer, path, "port");
}

/* ---- sections --------------------------------------------------------------------- */

static const char *const SOURCE_TYPES[] = {"aria", "mim", "mosaiq", NULL};
static const char *const TARGET_TYPES[] = {"orthanc", "dicom_scp", NULL};

/* The entry's "type" when it is present and one of `allowed`; otherwise reports why
 * and returns NULL, because the other rules depend on the type. */
static const char *entry_type(checker *c, const rtb_cfg_node *entry, const char *path,
                              const char *what, const char *const *allowed, const char *listed)
{
    const rtb_cfg_node *type = rtb_cfg_get(entry, "type");
    char child[RTB_CFG_PATH_MAX];
    rtb_cfg_path(child, sizeof child, path, "type");
    if (type == NULL) {
        ERROR(c, entry, child, "missing required key \"type\" (one of %s)", listed);
        return NULL;
    }
    if (type->kind != RTB_CFG_STRING) {
        char shown[VALUE_SHOWN_MAX + 16];
        shown_value(shown, sizeof shown, type);
        ERROR(c, type, child, "expected a string, got %s%s", rtb_cfg_kind_phrase(type->kind), shown);
        return NULL;
    }
    if (!one_of(type->string, allowed)) {
        char shown[VALUE_SHOWN_MAX + 8];
        quote(shown, sizeof shown, type->string);
        ERROR(c, type, child, "unknown %s type %s; expected one of %s", what, shown, listed);
        return NULL;
    }
    return type->string;
}

static void check_mosaiq_source(checker *c, const rtb_cfg_node *src, const char *path)
{
    check_fields(c, src, path, MOSAIQ_SOURCE_FIELDS, c->settings ? c->settings->mosaiq : NULL);
    /* A DSN carries server, database and user itself. */
    if (!has(src, "dsn")) {
        require(c, src, path, "db_server");
        require(c, src, path, "db_database");
        require(c, src, path, "db_username");
        if (!has(src, "db_password")) {
            char child[RTB_CFG_PATH_MAX];
            rtb_cfg_path(child, sizeof child, path, "db_password");
            ERROR(c, src, child, "missing required key \"db_password\" (or \"db_password_env_var\")");
        }
    }
    char child[RTB_CFG_PATH_MAX];
    rtb_cfg_path(child, sizeof child, path, "staging_target_alias");
    check_alias(c, rtb_cfg_get(src, "staging_target_alias"), child, "backup_targets");
}

static void check_source(checker *c, const rtb_cfg_node *src, const char *path)
{
    const char *type = entry_type(c, src, path, "source", SOURCE_TYPES, "aria, mim, mosaiq");
    if (type == NULL) {
        /* Every problem at once: the values of a source of no known type are still
         * checked as the kind its keys say (a DICOM peer's aet, a database's db_*),
         * without asking for what may be missing. */
        if (has(src, "aet"))
            check_fields(c, src, path, DICOM_SOURCE_FIELDS, c->settings ? c->settings->dicom : NULL);
        else if (has(src, "db_server") || has(src, "dsn"))
            check_fields(c, src, path, MOSAIQ_SOURCE_FIELDS, c->settings ? c->settings->mosaiq : NULL);
        return;
    }
    if (strcmp(type, "mosaiq") == 0) {
        check_mosaiq_source(c, src, path);
    } else {
        check_fields(c, src, path, DICOM_SOURCE_FIELDS, c->settings ? c->settings->dicom : NULL);
        check_peer_address(c, src, path);
    }
}

static void check_target(checker *c, const rtb_cfg_node *target, const char *path)
{
    if (entry_type(c, target, path, "backup target", TARGET_TYPES, "orthanc, dicom_scp") == NULL) {
        if (has(target, "aet")) /* its values all the same, as for a source above */
            check_fields(c, target, path, TARGET_FIELDS, c->settings ? c->settings->target : NULL);
        return;
    }
    check_fields(c, target, path, TARGET_FIELDS, c->settings ? c->settings->target : NULL);
    check_peer_address(c, target, path);
}

/* sources and backup_targets: a table of tables, one per alias. */
static void check_entries(checker *c, const char *section,
                          void (*check_entry)(checker *, const rtb_cfg_node *, const char *))
{
    const rtb_cfg_node *table = rtb_cfg_get(c->root, section);
    if (table == NULL || table->kind != RTB_CFG_TABLE)
        return; /* absent is fine; a wrong type was reported with the environment's keys */
    for (size_t i = 0; i < table->n_children; i++) {
        const rtb_cfg_node *entry = &table->children[i];
        char path[RTB_CFG_PATH_MAX];
        rtb_cfg_path(path, sizeof path, section, entry->key);
        if (entry->kind != RTB_CFG_TABLE) {
            char shown[VALUE_SHOWN_MAX + 16];
            shown_value(shown, sizeof shown, entry);
            ERROR(c, entry, path, "expected a table, got %s%s", rtb_cfg_kind_phrase(entry->kind), shown);
            continue;
        }
        check_entry(c, entry, path);
    }
}

static void check_script_ae(checker *c)
{
    const rtb_cfg_node *ae = rtb_cfg_get(c->root, "script_ae");
    if (ae == NULL) {
        ERROR(c, c->root, "script_ae", "missing required key \"script_ae\" (the calling AE title)");
        return;
    }
    if (ae->kind != RTB_CFG_TABLE)
        return;
    check_fields(c, ae, "script_ae", SCRIPT_AE_FIELDS, NULL);
    require(c, ae, "script_ae", "aet");
}

/* ---- rules that apply anywhere ---------------------------------------------------- */

static int is_env_var_name(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return 0;
    for (s++; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return 1;
}

/* `<k>_env_var` must name a variable, and must not sit beside `<k>`. The value is
 * not echoed when it is not a valid name: it may be the secret itself. */
static void check_env_var_member(checker *c, const rtb_cfg_node *table, const rtb_cfg_node *n,
                                 const char *path)
{
    if (n->kind != RTB_CFG_STRING) {
        ERROR(c, n, path, "expected a string naming an environment variable, got %s",
              rtb_cfg_kind_phrase(n->kind));
        return;
    }
    if (!is_env_var_name(n->string))
        ERROR(c, n, path,
              "the value is not an environment variable name (letters, digits and \"_\", not "
              "starting with a digit)");
    char target[128];
    snprintf(target, sizeof target, "%.*s", (int)rtb_cfg_env_var_target_len(n->key), n->key);
    if (rtb_cfg_get(table, target))
        ERROR(c, n, path, "both \"%s\" and \"%s\" are set; keep one", target, n->key);
}

static void check_secrets(checker *c, const rtb_cfg_node *node, const char *path)
{
    for (size_t i = 0; i < node->n_children; i++) {
        const rtb_cfg_node *n = &node->children[i];
        char child[RTB_CFG_PATH_MAX];
        if (node->kind == RTB_CFG_ARRAY)
            rtb_cfg_path_index(child, sizeof child, path, i);
        else
            rtb_cfg_path(child, sizeof child, path, n->key);

        if (node->kind == RTB_CFG_TABLE && rtb_cfg_env_var_target_len(n->key))
            check_env_var_member(c, node, n, child);
        else if (rtb_cfg_key_is_secret(n->key) && n->kind == RTB_CFG_STRING && n->string[0] &&
                 !is_placeholder(n))
            WARNING(c, n, child, "literal secret in the configuration; use a placeholder or *_env_var");
        check_secrets(c, n, child);
    }
}

/* ---- environments ----------------------------------------------------------------- */

static void check_environment(checker *c)
{
    check_fields(c, c->root, "", ENV_FIELDS, NULL);
    check_script_ae(c);
    check_alias(c, rtb_cfg_get(c->root, "default_source"), "default_source", "sources");
    check_alias(c, rtb_cfg_get(c->root, "default_backup"), "default_backup", "backup_targets");
    check_entries(c, "sources", check_source);
    check_entries(c, "backup_targets", check_target);
    check_secrets(c, c->root, "");
}

size_t rtb_config_validate(const rtb_config *cfg, const char *env,
                           const rtb_cfg_setting_names *settings, rtb_cfg_problems *problems)
{
    checker c = {.problems = problems, .settings = settings};
    if (env != NULL) {
        c.root = rtb_cfg_env_or_problem(cfg, env, problems);
        if (c.root == NULL)
            return 1;
        c.env = env;
        check_environment(&c);
        return c.errors;
    }
    for (size_t i = 0; i < rtb_config_env_count(cfg); i++) {
        c.env = rtb_config_env_name(cfg, i);
        c.root = rtb_config_env(cfg, c.env);
        check_environment(&c);
    }
    return c.errors;
}
