/* core/config: loading environment files, validating them, resolving secrets.
 *
 * Each test writes its TOML into a fresh temporary directory, so the text and the line
 * numbers it asserts are side by side. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

/* ---- fixture: a temporary directory, the loaded config and the problems ------------ */

typedef struct {
    char dir[64];
    char file[256]; /* the file load_text() wrote */
    rtb_config *cfg;
    rtb_cfg_problems problems;
    rtb_cfg_node *resolved;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/rtb_config_test.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rtb_cfg_node_free(f->resolved);
    rtb_config_free(f->cfg);
    rtb_cfg_problems_free(&f->problems);
    DIR *d = opendir(f->dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void path_in(const fixture *f, const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", f->dir, name);
}

static void write_file(const fixture *f, const char *name, const char *text)
{
    char path[256];
    path_in(f, name, path, sizeof path);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* Writes `text` to env.toml and loads it. */
static int load_text(fixture *f, const char *text)
{
    write_file(f, "env.toml", text);
    path_in(f, "env.toml", f->file, sizeof f->file);
    return rtb_config_load(f->file, &f->cfg, &f->problems);
}

/* Settings a peer may carry: their values are the settings schema's business (in
 * Lua, tests/spec/config_spec.lua); the structural check only must not call them
 * unknown. */
static const char *const PEER_SETTINGS[] = {"window", "max_associations", "max_retries",
                                            "dicom_query_keys", NULL};
static const rtb_cfg_setting_names SETTING_NAMES = {PEER_SETTINGS, PEER_SETTINGS, PEER_SETTINGS};

/* Loads `text`, which must parse, and validates every environment in it. */
static size_t validate_text(fixture *f, const char *text)
{
    assert_int_equal(load_text(f, text), 0);
    assert_int_equal(f->problems.count, 0);
    return rtb_config_validate(f->cfg, NULL, &SETTING_NAMES, &f->problems);
}

#define assert_problem(p, severity, line, env, key, message)                                      \
    check_problem(p, severity, line, env, key, message, __FILE__, __LINE__)

static void check_problem(const rtb_cfg_problem *p, rtb_cfg_severity severity, int line,
                          const char *env, const char *key, const char *message, const char *file,
                          int at)
{
    _assert_string_equal(p->message, message, file, at);
    _assert_int_equal(p->severity, severity, file, at);
    _assert_int_equal(p->line, line, file, at);
    _assert_string_equal(p->env ? p->env : "(none)", env ? env : "(none)", file, at);
    _assert_string_equal(p->key ? p->key : "(none)", key ? key : "(none)", file, at);
}

static const char *formatted(const rtb_cfg_problem *p)
{
    static char buf[1024];
    rtb_cfg_problem_format(p, buf, sizeof buf);
    return buf;
}

/* The process environment, as the tests want it to be. */
typedef struct {
    const char *name, *value;
} variable;

static const char *fake_getenv(const char *name, void *ud)
{
    for (const variable *v = ud; v->name; v++)
        if (strcmp(v->name, name) == 0)
            return v->value;
    return NULL;
}

static const rtb_cfg_node *at_path(const rtb_cfg_node *table, const char *a, const char *b,
                                   const char *c)
{
    const rtb_cfg_node *n = rtb_cfg_get(rtb_cfg_get(table, a), b);
    return c ? rtb_cfg_get(n, c) : n;
}

/* ---- loading ------------------------------------------------------------------------- */

static void shipped_environments_load_validate_and_resolve_cleanly(void **state)
{
    fixture *f = *state;
    assert_int_equal(rtb_config_load(RTB_ENVIRONMENTS_DIR, &f->cfg, &f->problems), 0);
    assert_int_equal(rtb_config_env_count(f->cfg), 3);
    assert_string_equal(rtb_config_env_name(f->cfg, 0), "DEMO");
    assert_string_equal(rtb_config_env_name(f->cfg, 1), "TJU");
    assert_string_equal(rtb_config_env_name(f->cfg, 2), "UCLA");

    assert_int_equal(rtb_config_validate(f->cfg, NULL, &SETTING_NAMES, &f->problems), 0);
    for (size_t i = 0; i < f->problems.count; i++)
        print_error("unexpected: %s\n", formatted(&f->problems.items[i]));
    assert_int_equal(f->problems.count, 0);

    variable vars[] = {{"UCLA_MOSAIQ_DB_PASSWORD", "u"},
                       {"TJU_MOSAIQ_DB_PASSWORD", "t"},
                       {NULL, NULL}};
    /* DEMO's Mosaiq is SQLite, which has no login: its password is a plain "". */
    const char *envs[] = {"DEMO", "TJU", "UCLA"};
    for (size_t i = 0; i < 3; i++) {
        rtb_cfg_node *env = NULL;
        assert_int_equal(rtb_config_resolve(f->cfg, envs[i], fake_getenv, vars, &env, &f->problems), 0);
        const rtb_cfg_node *mosaiq = NULL;
        const rtb_cfg_node *sources = rtb_cfg_get(env, "sources");
        for (size_t s = 0; s < sources->n_children; s++)
            if (strcmp(rtb_cfg_get(&sources->children[s], "type")->string, "mosaiq") == 0)
                mosaiq = &sources->children[s];
        assert_non_null(mosaiq);
        assert_int_equal(rtb_cfg_get(mosaiq, "db_password")->secret, i != 0);
        rtb_cfg_node_free(env);
    }
    assert_int_equal(f->problems.count, 0);
}

static void valid_environment_has_no_problems_and_keeps_file_order(void **state)
{
    fixture *f = *state;
    size_t errors = validate_text(f,
        "[E]\n"                                                  /* 1 */
        "description = \"test site\"\n"                          /* 2 */
        "default_source = \"ARIA\"\n"                            /* 3 */
        "default_backup = \"MAIN\"\n"                            /* 4 */
        "script_ae = { aet = \"E_SCU\", port = 11113 }\n"        /* 5 */
        "\n"
        "[E.sources.ARIA]\n"                                     /* 7 */
        "type = \"aria\"\n"
        "aet = \"ARIA_E\"\n"
        "ip = \"10.0.0.1\"\n"
        "port = 104\n"                                           /* 11 */
        "window = \"19:00-06:30\"\n"
        "\n"
        "[E.backup_targets.MAIN]\n"                              /* 14 */
        "type = \"orthanc\"\n"
        "aet = \"MAIN_E\"\n"
        "host = \"orthanc.example\"\n"
        "port = 4242\n"
        "\n"
        "[E.settings]\n"                                         /* 20 */
        "max_pdu = 0\n"
        "dicom_query_keys = { PatientID = \"*\", Modality = \"\" }\n"
        "complete_references = true\n");
    assert_int_equal(errors, 0);
    assert_int_equal(f->problems.count, 0);

    /* toml++ sorts keys; the tree must show them as written. */
    const rtb_cfg_node *env = rtb_config_env(f->cfg, "E");
    const char *env_keys[] = {"description", "default_source", "default_backup", "script_ae",
                              "sources",     "backup_targets", "settings"};
    assert_int_equal(env->n_children, 7);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(env->children[i].key, env_keys[i]);

    const rtb_cfg_node *aria = at_path(env, "sources", "ARIA", NULL);
    const char *aria_keys[] = {"type", "aet", "ip", "port", "window"};
    assert_int_equal(aria->n_children, 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(aria->children[i].key, aria_keys[i]);

    assert_int_equal(aria->line, 7);
    assert_string_equal(aria->file, f->file);
    const rtb_cfg_node *port = rtb_cfg_get(aria, "port");
    assert_int_equal(port->kind, RTB_CFG_INTEGER);
    assert_int_equal(port->integer, 104);
    assert_int_equal(port->line, 11);
    assert_int_equal(port->secret, 0);
    assert_string_equal(rtb_config_env_file(f->cfg, "E"), f->file);
}

static void values_of_every_toml_type_are_kept(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f,
        "[E]\n"
        "ratio = 0.5\n"
        "on = true\n"
        "since = 2024-05-27T07:30:00Z\n"
        "list = [1, \"two\", { three = 3 }]\n"), 0);
    const rtb_cfg_node *env = rtb_config_env(f->cfg, "E");
    assert_int_equal(rtb_cfg_get(env, "ratio")->kind, RTB_CFG_FLOAT);
    assert_true(rtb_cfg_get(env, "ratio")->number == 0.5);
    assert_int_equal(rtb_cfg_get(env, "on")->kind, RTB_CFG_BOOLEAN);
    assert_int_equal(rtb_cfg_get(env, "on")->boolean, 1);
    assert_int_equal(rtb_cfg_get(env, "since")->kind, RTB_CFG_DATETIME);
    assert_string_equal(rtb_cfg_get(env, "since")->string, "2024-05-27T07:30:00Z");

    const rtb_cfg_node *list = rtb_cfg_get(env, "list");
    assert_int_equal(list->kind, RTB_CFG_ARRAY);
    assert_int_equal(list->n_children, 3);
    assert_null(list->children[0].key);
    assert_int_equal(list->children[0].integer, 1);
    assert_string_equal(list->children[1].string, "two");
    assert_int_equal(rtb_cfg_get(&list->children[2], "three")->integer, 3);
}

static void directory_loads_every_toml_file_in_name_order(void **state)
{
    fixture *f = *state;
    write_file(f, "b.toml", "[BETA]\ndescription = \"b\"\n");
    write_file(f, "a.toml", "[ALPHA]\ndescription = \"a\"\n");
    write_file(f, "notes.txt", "not toml at all [[[\n");
    write_file(f, ".#a.toml", "editor lock file [[[\n");

    assert_int_equal(rtb_config_load(f->dir, &f->cfg, &f->problems), 0);
    assert_int_equal(f->problems.count, 0);
    assert_int_equal(rtb_config_env_count(f->cfg), 2);
    assert_string_equal(rtb_config_env_name(f->cfg, 0), "ALPHA");
    assert_string_equal(rtb_config_env_name(f->cfg, 1), "BETA");
    char a[256], b[256];
    path_in(f, "a.toml", a, sizeof a);
    path_in(f, "b.toml", b, sizeof b);
    assert_string_equal(rtb_config_env_file(f->cfg, "ALPHA"), a);
    assert_string_equal(rtb_config_env_file(f->cfg, "BETA"), b);
    assert_null(rtb_config_env(f->cfg, "GAMMA"));
}

static void environment_in_two_files_is_an_error_naming_both(void **state)
{
    fixture *f = *state;
    write_file(f, "a.toml", "[UCLA]\ndescription = \"first\"\n");
    write_file(f, "b.toml", "# second definition\n[UCLA]\ndescription = \"second\"\n");
    char a[256], b[256], expected[600];
    path_in(f, "a.toml", a, sizeof a);
    path_in(f, "b.toml", b, sizeof b);

    assert_int_equal(rtb_config_load(f->dir, &f->cfg, &f->problems), -1);
    assert_int_equal(f->problems.count, 1);
    snprintf(expected, sizeof expected, "environment \"UCLA\" is defined in both %s and %s", a, b);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 2, "UCLA", NULL, expected);
    assert_string_equal(f->problems.items[0].file, b);
    /* The first definition stays, so the other problems can still be found. */
    assert_string_equal(rtb_config_env_file(f->cfg, "UCLA"), a);
    assert_string_equal(rtb_cfg_get(rtb_config_env(f->cfg, "UCLA"), "description")->string, "first");
}

static void toml_syntax_error_names_file_and_line(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f,
        "[E]\n"
        "description = \"x\"\n"
        "port = 11112a\n"), -1);
    assert_int_equal(f->problems.count, 1);
    const rtb_cfg_problem *p = &f->problems.items[0];
    assert_int_equal(p->severity, RTB_CFG_ERROR);
    assert_string_equal(p->file, f->file);
    assert_int_equal(p->line, 3);
    assert_null(p->env);
    assert_non_null(strstr(p->message, "expected digit")); /* toml++'s own description */
    assert_int_equal(rtb_config_env_count(f->cfg), 0);
}

static void missing_path_is_an_error_naming_it(void **state)
{
    fixture *f = *state;
    char path[256];
    path_in(f, "nowhere.toml", path, sizeof path);
    assert_int_equal(rtb_config_load(path, &f->cfg, &f->problems), -1);
    assert_non_null(f->cfg); /* always set, possibly empty */
    assert_int_equal(rtb_config_env_count(f->cfg), 0);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 0, NULL, NULL,
                   "cannot read the configuration: No such file or directory");
    char expected[512];
    snprintf(expected, sizeof expected, "%s: cannot read the configuration: No such file or directory",
             path);
    assert_string_equal(formatted(&f->problems.items[0]), expected);
}

static void top_level_value_that_is_not_a_table_is_an_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f,
        "title = \"clinics\"\n"
        "[E]\n"
        "description = \"x\"\n"), -1);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 1, NULL, NULL,
                   "top-level key \"title\" is a string; only environments (tables such as [UCLA]) "
                   "may be defined at the top level");
    assert_int_equal(rtb_config_env_count(f->cfg), 1);
}

/* ---- validation: sources, targets, AE titles ------------------------------------------- */

static void unknown_source_type_lists_the_allowed_types(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.ORACLE]\n"
        "type = \"oracle\"\n"                  /* 4 */
        "aet = \"ORACLE_E\"\n"), 1);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 4, "E", "sources.ORACLE.type",
                   "unknown source type \"oracle\"; expected one of aria, mim, mosaiq");
}

/* A wrong type hides none of the entry's other problems. */
static void unknown_source_type_still_checks_the_values(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.PACS]\n"
        "type = \"dicom\"\n"                   /* 4 */
        "aet = \"BAD\\\\AE\"\n"                 /* 5 */
        "ip = \"10.0.0.1\"\n"
        "port = \"abc\"\n"), 3);               /* 7 */
    assert_int_equal(f->problems.count, 3);
    assert_int_equal(f->problems.items[0].line, 4);
    assert_int_equal(f->problems.items[1].line, 5);
    assert_int_equal(f->problems.items[2].line, 7);
}

static void dicom_source_without_aet_ip_port_reports_each_missing_key(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.ARIA]\n"                   /* 3 */
        "type = \"aria\"\n"), 3);
    assert_int_equal(f->problems.count, 3);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 3, "E", "sources.ARIA.aet",
                   "missing required key \"aet\"");
    assert_problem(&f->problems.items[1], RTB_CFG_ERROR, 3, "E", "sources.ARIA.ip",
                   "missing required key \"ip\" (or \"host\")");
    assert_problem(&f->problems.items[2], RTB_CFG_ERROR, 3, "E", "sources.ARIA.port",
                   "missing required key \"port\"");
}

static void source_without_type_is_an_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.ARIA]\n"                   /* 3 */
        "aet = \"ARIA_E\"\n"), 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 3, "E", "sources.ARIA.type",
                   "missing required key \"type\" (one of aria, mim, mosaiq)");
}

static void port_70000_is_out_of_range(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.ARIA]\n"
        "type = \"aria\"\n"
        "aet = \"ARIA_E\"\n"
        "ip = \"10.0.0.1\"\n"
        "port = 70000\n"), 1);                 /* 7 */
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 7, "E", "sources.ARIA.port",
                   "must be between 1 and 65535, got 70000");
}

static void port_given_as_a_string_is_a_type_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.ARIA]\n"
        "type = \"aria\"\n"
        "aet = \"ARIA_E\"\n"
        "ip = \"10.0.0.1\"\n"
        "port = \"11112\"\n"), 1);             /* 7 */
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 7, "E", "sources.ARIA.port",
                   "expected an integer, got a string (\"11112\")");
}

static void ae_title_of_17_characters_is_too_long_and_16_is_fine(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"ARIA_UCLA_BACKUP\" }\n"   /* 16 characters */
        "[E.sources.ARIA]\n"
        "type = \"aria\"\n"
        "aet = \"ARIA_UCLA_BACKUP1\"\n"                  /* 5: 17 characters */
        "ip = \"10.0.0.1\"\n"
        "port = 104\n"), 1);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 5, "E", "sources.ARIA.aet",
                   "AE title \"ARIA_UCLA_BACKUP1\" is 17 characters; DICOM allows at most 16");
}

static void ae_title_empty_or_all_spaces_is_an_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"\" }\n"                   /* 2 */
        "[E.backup_targets.MAIN]\n"
        "type = \"orthanc\"\n"
        "aet = \"    \"\n"                               /* 5 */
        "ip = \"10.0.0.1\"\n"
        "port = 4242\n"), 2);
    assert_int_equal(f->problems.count, 2);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 2, "E", "script_ae.aet",
                   "AE title is empty; DICOM requires 1 to 16 characters");
    assert_problem(&f->problems.items[1], RTB_CFG_ERROR, 5, "E", "backup_targets.MAIN.aet",
                   "AE title is all spaces; DICOM requires at least one other character");
}

static void ae_title_with_backslash_or_control_character_is_an_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E\\tSCU\" }\n"             /* 2: a TAB */
        "[E.sources.ARIA]\n"
        "type = \"aria\"\n"
        "aet = \"ARIA\\\\E\"\n"                           /* 5: ARIA\E */
        "ip = \"10.0.0.1\"\n"
        "port = 104\n"), 2);
    assert_int_equal(f->problems.count, 2);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 2, "E", "script_ae.aet",
                   "AE title contains a control or non-ASCII character (byte 0x09 at position 2); "
                   "only printable ASCII is allowed");
    assert_problem(&f->problems.items[1], RTB_CFG_ERROR, 5, "E", "sources.ARIA.aet",
                   "AE title \"ARIA\\E\" contains a backslash, which DICOM does not allow");
}

static void dicom_peer_with_both_ip_and_host_is_an_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.backup_targets.MAIN]\n"            /* 3 */
        "type = \"orthanc\"\n"
        "aet = \"MAIN_E\"\n"
        "ip = \"10.0.0.1\"\n"
        "host = \"orthanc.example\"\n"
        "port = 4242\n"), 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 3, "E", "backup_targets.MAIN.ip",
                   "both \"ip\" and \"host\" are set; keep one");
}

static void default_source_naming_an_undefined_alias_lists_the_defined_ones(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "default_source = \"ARIA2\"\n"         /* 2 */
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.ARIA]\n"
        "type = \"aria\"\n"
        "aet = \"ARIA_E\"\n"
        "ip = \"10.0.0.1\"\n"
        "port = 104\n"
        "[E.sources.MIM]\n"
        "type = \"mim\"\n"
        "aet = \"MIM_E\"\n"
        "ip = \"10.0.0.2\"\n"
        "port = 105\n"), 1);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 2, "E", "default_source",
                   "\"ARIA2\" is not defined in sources (defined: ARIA, MIM)");
}

static void staging_target_alias_naming_an_undefined_target_is_an_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.Mosaiq]\n"
        "type = \"mosaiq\"\n"
        "dsn = \"MOSAIQ\"\n"
        "staging_target_alias = \"STAGING\"\n"  /* 6 */
        "[E.backup_targets.MAIN]\n"
        "type = \"orthanc\"\n"
        "aet = \"MAIN_E\"\n"
        "ip = \"10.0.0.2\"\n"
        "port = 4242\n"), 1);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 6, "E", "sources.Mosaiq.staging_target_alias",
                   "\"STAGING\" is not defined in backup_targets (defined: MAIN)");
}

static void mosaiq_source_needs_database_and_credentials_unless_dsn(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.Mosaiq]\n"                 /* 3 */
        "type = \"mosaiq\"\n"
        "db_server = \"10.0.0.5\"\n"
        "[E.sources.ViaDsn]\n"
        "type = \"mosaiq\"\n"
        "dsn = \"MOSAIQ_PROD\"\n"), 3);
    assert_int_equal(f->problems.count, 3);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 3, "E", "sources.Mosaiq.db_database",
                   "missing required key \"db_database\"");
    assert_problem(&f->problems.items[1], RTB_CFG_ERROR, 3, "E", "sources.Mosaiq.db_username",
                   "missing required key \"db_username\"");
    assert_problem(&f->problems.items[2], RTB_CFG_ERROR, 3, "E", "sources.Mosaiq.db_password",
                   "missing required key \"db_password\" (or \"db_password_env_var\")");
}

static void unknown_keys_are_warnings_not_errors(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "colour = \"blue\"\n"                  /* 2 */
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.ARIA]\n"
        "type = \"aria\"\n"
        "aet = \"ARIA_E\"\n"
        "ip = \"10.0.0.1\"\n"
        "port = 104\n"
        "vendor = \"Varian\"\n"                /* 9 */
        "window = \"19:00-06:00\"\n"            /* a setting: the schema's, not unknown */
        "[E.settings]\n"
        "future_feature = 3\n"), 0);           /* the settings schema reports this one */
    assert_int_equal(f->problems.count, 2);
    assert_problem(&f->problems.items[0], RTB_CFG_WARNING, 2, "E", "colour", "unknown key (ignored)");
    assert_problem(&f->problems.items[1], RTB_CFG_WARNING, 9, "E", "sources.ARIA.vendor",
                   "unknown key (ignored)");
}

static void every_problem_is_reported_at_once(void **state)
{
    fixture *f = *state;
    size_t errors = validate_text(f,
        "[E]\n"                                               /* 1 */
        "default_source = \"ARIA2\"\n"                        /* 2 */
        "default_backup = \"MAIN\"\n"
        "script_ae = { aet = \"E_BACKUP_SCU_TOO_LONG\" }\n"   /* 4 */
        "colour = \"blue\"\n"                                 /* 5 */
        "[E.sources.ARIA]\n"                                  /* 6 */
        "type = \"aria\"\n"
        "aet = \"ARIA_E\"\n"
        "ip = \"10.0.0.1\"\n"
        "[E.sources.MIM]\n"
        "type = \"mim\"\n"
        "aet = \"MIM_E\"\n"
        "ip = \"10.0.0.2\"\n"
        "port = \"105\"\n"                                    /* 14 */
        "[E.sources.Mosaiq]\n"
        "type = \"mosaiq\"\n"
        "dsn = \"MOSAIQ\"\n"
        "staging_target_alias = \"STAGING\"\n"                /* 18 */
        "[E.backup_targets.MAIN]\n"
        "type = \"pacs\"\n"                                   /* 20 */
        "[E.settings]\n"
        "max_associations = 0\n"                              /* 22 */
        "dicom_query_level = \"SERIE\"\n"                     /* 23 */
        "window = \"7pm-6am\"\n"                              /* 24 */
        "[F]\n"
        "script_ae = { aet = \"\" }\n"                        /* 26 */
        "[G]\n"                                              /* 27 */
        "description = \"no calling AE title\"\n");
    assert_int_equal(errors, 8); /* the three in [E.settings] are the settings schema's */
    assert_int_equal(f->problems.count, 9);
    const rtb_cfg_problem *p = f->problems.items;
    assert_problem(&p[0], RTB_CFG_WARNING, 5, "E", "colour", "unknown key (ignored)");
    assert_problem(&p[1], RTB_CFG_ERROR, 4, "E", "script_ae.aet",
                   "AE title \"E_BACKUP_SCU_TOO_LONG\" is 21 characters; DICOM allows at most 16");
    assert_problem(&p[2], RTB_CFG_ERROR, 2, "E", "default_source",
                   "\"ARIA2\" is not defined in sources (defined: ARIA, MIM, Mosaiq)");
    assert_problem(&p[3], RTB_CFG_ERROR, 6, "E", "sources.ARIA.port", "missing required key \"port\"");
    assert_problem(&p[4], RTB_CFG_ERROR, 14, "E", "sources.MIM.port",
                   "expected an integer, got a string (\"105\")");
    assert_problem(&p[5], RTB_CFG_ERROR, 18, "E", "sources.Mosaiq.staging_target_alias",
                   "\"STAGING\" is not defined in backup_targets (defined: MAIN)");
    assert_problem(&p[6], RTB_CFG_ERROR, 20, "E", "backup_targets.MAIN.type",
                   "unknown backup target type \"pacs\"; expected one of orthanc, dicom_scp");
    assert_problem(&p[7], RTB_CFG_ERROR, 26, "F", "script_ae.aet",
                   "AE title is empty; DICOM requires 1 to 16 characters");
    assert_problem(&p[8], RTB_CFG_ERROR, 27, "G", "script_ae",
                   "missing required key \"script_ae\" (the calling AE title)");
    for (size_t i = 0; i < f->problems.count; i++)
        assert_string_equal(p[i].file, f->file);
}

static void validating_an_undefined_environment_lists_the_defined_ones(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f, "[UCLA]\nscript_ae = { aet = \"U\" }\n[TJU]\nscript_ae = { aet = \"T\" }\n"), 0);
    assert_int_equal(rtb_config_validate(f->cfg, "MAYO", &SETTING_NAMES, &f->problems), 1);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 0, "MAYO", NULL,
                   "environment \"MAYO\" is not defined (defined: UCLA, TJU)");
    assert_int_equal(rtb_config_validate(f->cfg, "TJU", &SETTING_NAMES, &f->problems), 0);
}

/* ---- secrets in the configuration ---------------------------------------------------- */

static void literal_password_is_a_warning_that_does_not_repeat_it(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.Mosaiq]\n"
        "type = \"mosaiq\"\n"
        "db_server = \"10.0.0.5\"\n"
        "db_database = \"MOSAIQ\"\n"
        "db_username = \"ro\"\n"
        "db_password = \"hunter2-literal\"\n"), 0);   /* 8 */
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_WARNING, 8, "E", "sources.Mosaiq.db_password",
                   "literal secret in the configuration; use a placeholder or *_env_var");
    assert_null(strstr(formatted(&f->problems.items[0]), "hunter2"));
}

static void secret_of_the_wrong_type_is_not_echoed(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.Mosaiq]\n"
        "type = \"mosaiq\"\n"
        "dsn = \"MOSAIQ\"\n"
        "db_password = 987654321\n"), 1);           /* 6 */
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 6, "E", "sources.Mosaiq.db_password",
                   "expected a string, got an integer");
}

static void env_var_must_name_a_variable_and_not_sit_beside_its_key(void **state)
{
    fixture *f = *state;
    assert_int_equal(validate_text(f,
        "[E]\n"
        "script_ae = { aet = \"E_SCU\" }\n"
        "[E.sources.Mosaiq]\n"
        "type = \"mosaiq\"\n"
        "dsn = \"MOSAIQ\"\n"
        "db_password = \"__E_PW__\"\n"
        "db_password_env_var = \"E_PW\"\n"          /* 7 */
        "[E.sources.Other]\n"
        "type = \"mosaiq\"\n"
        "dsn = \"OTHER\"\n"
        "db_password_env_var = \"pa$$word!\"\n"),   /* 11 */
        2);
    assert_int_equal(f->problems.count, 2);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 7, "E", "sources.Mosaiq.db_password_env_var",
                   "both \"db_password\" and \"db_password_env_var\" are set; keep one");
    assert_problem(&f->problems.items[1], RTB_CFG_ERROR, 11, "E", "sources.Other.db_password_env_var",
                   "the value is not an environment variable name (letters, digits and \"_\", not "
                   "starting with a digit)");
}

/* ---- resolving secrets ------------------------------------------------------------------ */

static const char MOSAIQ_WITH_PLACEHOLDER[] =
    "[UCLA]\n"
    "script_ae = { aet = \"UCLA_SCU\" }\n"
    "[UCLA.sources.Mosaiq]\n"
    "type = \"mosaiq\"\n"
    "db_server = \"10.0.0.5\"\n"
    "db_database = \"MOSAIQ\"\n"
    "db_username = \"__UCLA_MOSAIQ_DB_USER__\"\n"          /* 7 */
    "db_password = \"__UCLA_MOSAIQ_DB_PASSWORD__\"\n"      /* 8 */
    "[UCLA.settings]\n"
    "extra = [\"__UCLA_EXTRA__\", \"plain\"]\n"
    "[TJU]\n"
    "script_ae = { aet = \"TJU_SCU\" }\n"
    "[TJU.sources.Mosaiq]\n"
    "type = \"mosaiq\"\n"
    "dsn = \"MOSAIQ\"\n"
    "db_password_env_var = \"TJU_MOSAIQ_DB_PASSWORD\"\n";  /* 16 */

static void placeholder_is_replaced_by_the_variable_and_marked_secret(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f, MOSAIQ_WITH_PLACEHOLDER), 0);
    variable vars[] = {{"UCLA_MOSAIQ_DB_USER", "backup_ro"},
                       {"UCLA_MOSAIQ_DB_PASSWORD", "pa55-word"},
                       {"UCLA_EXTRA", "x"},
                       {NULL, NULL}};
    assert_int_equal(rtb_config_resolve(f->cfg, "UCLA", fake_getenv, vars, &f->resolved, &f->problems), 0);
    assert_int_equal(f->problems.count, 0);

    const rtb_cfg_node *pw = at_path(f->resolved, "sources", "Mosaiq", "db_password");
    assert_int_equal(pw->kind, RTB_CFG_STRING);
    assert_string_equal(pw->string, "pa55-word");
    assert_int_equal(pw->secret, 1);
    assert_int_equal(pw->line, 8);
    assert_string_equal(pw->file, f->file);
    assert_string_equal(at_path(f->resolved, "sources", "Mosaiq", "db_username")->string, "backup_ro");

    const rtb_cfg_node *server = at_path(f->resolved, "sources", "Mosaiq", "db_server");
    assert_string_equal(server->string, "10.0.0.5");
    assert_int_equal(server->secret, 0);

    const rtb_cfg_node *extra = at_path(f->resolved, "settings", "extra", NULL);
    assert_string_equal(extra->children[0].string, "x");
    assert_int_equal(extra->children[0].secret, 1);
    assert_string_equal(extra->children[1].string, "plain");

    /* The loaded configuration itself is untouched. */
    const rtb_cfg_node *raw = at_path(rtb_config_env(f->cfg, "UCLA"), "sources", "Mosaiq", "db_password");
    assert_string_equal(raw->string, "__UCLA_MOSAIQ_DB_PASSWORD__");
}

static void env_var_key_is_renamed_and_marked_secret(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f, MOSAIQ_WITH_PLACEHOLDER), 0);
    variable vars[] = {{"TJU_MOSAIQ_DB_PASSWORD", "tju-pw"}, {NULL, NULL}};
    assert_int_equal(rtb_config_resolve(f->cfg, "TJU", fake_getenv, vars, &f->resolved, &f->problems), 0);
    assert_int_equal(f->problems.count, 0);

    const rtb_cfg_node *mosaiq = at_path(f->resolved, "sources", "Mosaiq", NULL);
    assert_int_equal(mosaiq->n_children, 3);
    assert_string_equal(mosaiq->children[2].key, "db_password"); /* same place as written */
    assert_null(rtb_cfg_get(mosaiq, "db_password_env_var"));
    const rtb_cfg_node *pw = rtb_cfg_get(mosaiq, "db_password");
    assert_string_equal(pw->string, "tju-pw");
    assert_int_equal(pw->secret, 1);
    assert_int_equal(pw->line, 16);
}

static void missing_variable_error_names_key_and_variable_only(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f, MOSAIQ_WITH_PLACEHOLDER), 0);
    variable vars[] = {{"UCLA_MOSAIQ_DB_USER", "user-VALUE-xyz"}, {"UCLA_EXTRA", "extra-VALUE"}, {NULL, NULL}};
    rtb_cfg_node *out = (rtb_cfg_node *)vars; /* must be reset to NULL on failure */
    assert_int_equal(rtb_config_resolve(f->cfg, "UCLA", fake_getenv, vars, &out, &f->problems), -1);
    assert_null(out);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 8, "UCLA", "sources.Mosaiq.db_password",
                   "environment variable UCLA_MOSAIQ_DB_PASSWORD is not set (needed for sources.Mosaiq.db_password)");
    assert_null(strstr(formatted(&f->problems.items[0]), "VALUE"));
}

static void every_missing_variable_is_reported(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f, MOSAIQ_WITH_PLACEHOLDER), 0);
    variable none[] = {{NULL, NULL}};
    assert_int_equal(rtb_config_resolve(f->cfg, "UCLA", fake_getenv, none, &f->resolved, &f->problems), -1);
    assert_int_equal(f->problems.count, 3);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 7, "UCLA", "sources.Mosaiq.db_username",
                   "environment variable UCLA_MOSAIQ_DB_USER is not set (needed for sources.Mosaiq.db_username)");
    assert_problem(&f->problems.items[1], RTB_CFG_ERROR, 8, "UCLA", "sources.Mosaiq.db_password",
                   "environment variable UCLA_MOSAIQ_DB_PASSWORD is not set (needed for sources.Mosaiq.db_password)");
    assert_problem(&f->problems.items[2], RTB_CFG_ERROR, 10, "UCLA", "settings.extra[0]",
                   "environment variable UCLA_EXTRA is not set (needed for settings.extra[0])");
}

static void missing_tju_secret_does_not_stop_resolving_ucla(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f, MOSAIQ_WITH_PLACEHOLDER), 0);
    variable ucla_only[] = {{"UCLA_MOSAIQ_DB_USER", "u"},
                            {"UCLA_MOSAIQ_DB_PASSWORD", "p"},
                            {"UCLA_EXTRA", "x"},
                            {NULL, NULL}};
    assert_int_equal(rtb_config_resolve(f->cfg, "UCLA", fake_getenv, ucla_only, &f->resolved, &f->problems), 0);
    assert_int_equal(f->problems.count, 0);

    rtb_cfg_node *tju = NULL;
    assert_int_equal(rtb_config_resolve(f->cfg, "TJU", fake_getenv, ucla_only, &tju, &f->problems), -1);
    assert_null(tju);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 16, "TJU", "sources.Mosaiq.db_password",
                   "environment variable TJU_MOSAIQ_DB_PASSWORD is not set (needed for sources.Mosaiq.db_password)");
}

static void resolving_an_undefined_environment_is_an_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f, MOSAIQ_WITH_PLACEHOLDER), 0);
    variable none[] = {{NULL, NULL}};
    assert_int_equal(rtb_config_resolve(f->cfg, "MAYO", fake_getenv, none, &f->resolved, &f->problems), -1);
    assert_int_equal(f->problems.count, 1);
    assert_problem(&f->problems.items[0], RTB_CFG_ERROR, 0, "MAYO", NULL,
                   "environment \"MAYO\" is not defined (defined: UCLA, TJU)");
}

/* Whatever goes wrong, and wherever the secret sits, no message carries it. */
static void secret_values_never_appear_in_any_problem_message(void **state)
{
    fixture *f = *state;
    assert_int_equal(load_text(f,
        "[E]\n"
        "script_ae = { aet = \"__E_AET_SECRET__\" }\n"
        "bogus_token = \"__E_TOKEN__\"\n"
        "[E.sources.Mosaiq]\n"
        "type = \"mosaiq\"\n"
        "db_server = \"10.0.0.5\"\n"
        "db_database = \"MOSAIQ\"\n"
        "db_username = \"ro\"\n"
        "db_password = \"__E_PW__\"\n"
        "db_password_env_var = \"E_PW\"\n"
        "api_secret = \"literal-SECRET-3\"\n"
        "api_token = 123456789\n"
        "staging_target_alias = \"__E_MISSING__\"\n"), 0);
    variable vars[] = {{"E_AET_SECRET", "SECRET-1-aet"},
                       {"E_TOKEN", "SECRET-2-token"},
                       {"E_PW", "SECRET-4-password"},
                       {NULL, NULL}};
    assert_true(rtb_config_validate(f->cfg, "E", &SETTING_NAMES, &f->problems) > 0);
    assert_int_equal(rtb_config_resolve(f->cfg, "E", fake_getenv, vars, &f->resolved, &f->problems), -1);
    assert_true(f->problems.count >= 6);
    for (size_t i = 0; i < f->problems.count; i++) {
        const char *text = formatted(&f->problems.items[i]);
        assert_null(strstr(text, "SECRET-"));
        assert_null(strstr(text, "123456789"));
    }
}

/* ---- formatting ----------------------------------------------------------------------- */

static void problem_format_leaves_out_unknown_parts_and_counts_like_snprintf(void **state)
{
    (void)state;
    rtb_cfg_problem full = {RTB_CFG_ERROR, "ucla.toml", 12, "UCLA", "sources.ARIA.port", "bad port"};
    rtb_cfg_problem no_line = {RTB_CFG_ERROR, "ucla.toml", 0, "UCLA", NULL, "bad"};
    rtb_cfg_problem bare = {RTB_CFG_WARNING, NULL, 7, NULL, NULL, "only a message"};
    const char *expected = "ucla.toml:12: UCLA: sources.ARIA.port: bad port";
    char buf[64];
    assert_int_equal(rtb_cfg_problem_format(&full, buf, sizeof buf), strlen(expected));
    assert_string_equal(buf, expected);
    rtb_cfg_problem_format(&no_line, buf, sizeof buf);
    assert_string_equal(buf, "ucla.toml: UCLA: bad");
    rtb_cfg_problem_format(&bare, buf, sizeof buf);
    assert_string_equal(buf, "only a message");

    char small[10];
    assert_int_equal(rtb_cfg_problem_format(&full, small, sizeof small), strlen(expected));
    assert_string_equal(small, "ucla.toml");
}

int main(int argc, char **argv)
{
    /* ctest runs one test per process: `test_config <name>` (see CMakeLists.txt). */
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(shipped_environments_load_validate_and_resolve_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(valid_environment_has_no_problems_and_keeps_file_order, setup, teardown),
        cmocka_unit_test_setup_teardown(values_of_every_toml_type_are_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(directory_loads_every_toml_file_in_name_order, setup, teardown),
        cmocka_unit_test_setup_teardown(environment_in_two_files_is_an_error_naming_both, setup, teardown),
        cmocka_unit_test_setup_teardown(toml_syntax_error_names_file_and_line, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_path_is_an_error_naming_it, setup, teardown),
        cmocka_unit_test_setup_teardown(top_level_value_that_is_not_a_table_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_source_type_lists_the_allowed_types, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_source_type_still_checks_the_values, setup, teardown),
        cmocka_unit_test_setup_teardown(dicom_source_without_aet_ip_port_reports_each_missing_key, setup, teardown),
        cmocka_unit_test_setup_teardown(source_without_type_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(port_70000_is_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(port_given_as_a_string_is_a_type_error, setup, teardown),
        cmocka_unit_test_setup_teardown(ae_title_of_17_characters_is_too_long_and_16_is_fine, setup, teardown),
        cmocka_unit_test_setup_teardown(ae_title_empty_or_all_spaces_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(ae_title_with_backslash_or_control_character_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(dicom_peer_with_both_ip_and_host_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(default_source_naming_an_undefined_alias_lists_the_defined_ones, setup, teardown),
        cmocka_unit_test_setup_teardown(staging_target_alias_naming_an_undefined_target_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(mosaiq_source_needs_database_and_credentials_unless_dsn, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_keys_are_warnings_not_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(every_problem_is_reported_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(validating_an_undefined_environment_lists_the_defined_ones, setup, teardown),
        cmocka_unit_test_setup_teardown(literal_password_is_a_warning_that_does_not_repeat_it, setup, teardown),
        cmocka_unit_test_setup_teardown(secret_of_the_wrong_type_is_not_echoed, setup, teardown),
        cmocka_unit_test_setup_teardown(env_var_must_name_a_variable_and_not_sit_beside_its_key, setup, teardown),
        cmocka_unit_test_setup_teardown(placeholder_is_replaced_by_the_variable_and_marked_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(env_var_key_is_renamed_and_marked_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_variable_error_names_key_and_variable_only, setup, teardown),
        cmocka_unit_test_setup_teardown(every_missing_variable_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_tju_secret_does_not_stop_resolving_ucla, setup, teardown),
        cmocka_unit_test_setup_teardown(resolving_an_undefined_environment_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(secret_values_never_appear_in_any_problem_message, setup, teardown),
        cmocka_unit_test_setup_teardown(problem_format_leaves_out_unknown_parts_and_counts_like_snprintf, setup, teardown),
    };
    return cmocka_run_group_tests_name("unit.config", tests, NULL, NULL);
}
