#define _GNU_SOURCE
#include "testbed_env.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_VARS 64

static struct {
    char key[64];
    char value[512];
} vars[MAX_VARS];
static int n_vars;

int testbed_load(void)
{
    const char *path = getenv("RTB_TESTBED_ENV");
    if (!path) {
        fprintf(stderr, "RTB_TESTBED_ENV is not set (run through ctest, or testbed.sh start DIR)\n");
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    char line[640];
    while (n_vars < MAX_VARS && fgets(line, sizeof line, f)) {
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = '\0';
        line[strcspn(line, "\r\n")] = '\0';
        char *value = eq + 1;
        value[strcspn(value, "\r\n")] = '\0';
        snprintf(vars[n_vars].key, sizeof vars[n_vars].key, "%.63s", line);
        snprintf(vars[n_vars].value, sizeof vars[n_vars].value, "%.511s", value);
        n_vars++;
    }
    fclose(f);
    return 0;
}

const char *testbed_get(const char *key)
{
    for (int i = 0; i < n_vars; i++)
        if (strcmp(vars[i].key, key) == 0) return vars[i].value;
    return NULL;
}

int testbed_int(const char *key)
{
    const char *v = testbed_get(key);
    return v ? atoi(v) : 0;
}

rtb_dicom_peer testbed_peer(const char *prefix)
{
    char k1[64], k2[64];
    snprintf(k1, sizeof k1, "%s_AET", prefix);
    snprintf(k2, sizeof k2, "%s_PORT", prefix);
    rtb_dicom_peer p;
    memset(&p, 0, sizeof p);
    p.called_ae = testbed_get(k1);
    p.host = testbed_get("HOST");
    p.port = testbed_int(k2);
    p.calling_ae = testbed_get("SCU_AET");
    p.connect_timeout = 5;
    p.acse_timeout = 10;
    p.dimse_timeout = 30;
    return p;
}

const char *testbed_tmpdir(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/tmp-%s-XXXXXX", testbed_get("RTB_TESTBED_DIR"), name);
    if (!mkdtemp(b)) return NULL;
    return b;
}

int count_dcm_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] != '.' && len > 4 && strcmp(e->d_name + len - 4, ".dcm") == 0) n++;
    }
    closedir(d);
    return n;
}
