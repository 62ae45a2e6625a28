/* Fuzz target: the dataset reader, and everything that walks what it read.
 *
 * A file arrives from anywhere (a C-STORE, a restore source, a directory an operator
 * points `store` at): rtb_ds_read, then every element through the accessors (values,
 * bytes, sequence items, recursively), the digest, the dump, a clone, and the Lua view
 * of the binding (ds:totable(), tostring(ds), ds:digest()), which is what scripts see. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "dicom/dicom.h"
#include "dicom_lua.h"

int luaopen_rtbackup_dicom_core(lua_State *L);

static int fd = -1;
static char path[64];
static lua_State *L;

/* As deep as the binding goes (its MAX_DEPTH). */
enum { MAX_DEPTH = 64 };

static void walk(rtb_ds *ds, int depth)
{
    size_t n = rtb_ds_count(ds);
    for (size_t i = 0; i < n; i++) {
        rtb_ds_element e = {0};
        rtb_dicom_error err;
        if (rtb_ds_element_at(ds, i, &e, &err) != 0)
            continue;
        if (e.is_sequence) {
            for (size_t k = 0; k < e.count && depth < MAX_DEPTH; k++) {
                rtb_ds *item;
                if (rtb_ds_item_at(ds, i, k, &item, &err) == 0)
                    walk(item, depth + 1);
            }
        } else if (e.is_binary) {
            char tag[16];
            void *data = NULL;
            size_t len = 0;
            snprintf(tag, sizeof tag, "%04X,%04X", e.group & 0xFFFF, e.element & 0xFFFF);
            if (rtb_ds_get_bytes(ds, tag, &data, &len, &err) == 0)
                free(data);
        } else {
            /* By keyword too, as scripts ask. */
            rtb_ds_element again = {0};
            if (e.keyword[0] && rtb_ds_get(ds, e.keyword, &again, &err) == 0)
                rtb_ds_element_clear(&again);
        }
        rtb_ds_element_clear(&e);
    }
}

static const char *lua_view =
    "local ds = ...\n"
    "local t = ds:totable()\n"
    "local text = tostring(ds)\n"
    "return ds:digest(), t, text\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    rtb_dicom_error err;
    if (rtb_dicom_init(&err) != 0) {
        fprintf(stderr, "fuzz_dataset: %s\n", err.message);
        exit(1);
    }
    /* The reader takes a path: the input goes into an anonymous in-memory file. */
    fd = memfd_create("fuzz_dataset", 0);
    if (fd < 0) {
        perror("memfd_create");
        exit(1);
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "rtbackup.dicom.core", luaopen_rtbackup_dicom_core, 0);
    lua_pop(L, 1);
    if (luaL_loadstring(L, lua_view) != LUA_OK) {
        fprintf(stderr, "fuzz_dataset: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.view");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    rtb_ds *ds;
    rtb_dicom_error err;
    if (rtb_ds_read(path, &ds, &err) != 0)
        return 0;
    walk(ds, 0);
    char hex[65];
    rtb_ds_digest(ds, hex, &err);
    char *text = NULL;
    if (rtb_ds_dump(ds, 0, &text, &err) == 0)
        free(text);
    rtb_ds *copy = NULL;
    if (rtb_ds_clone(ds, &copy, &err) == 0)
        rtb_ds_free(copy);

    /* The binding's view; the userdata owns ds from here (freed by the collector). */
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.view");
    rtb_dicom_push_dataset(L, ds, 0);
    lua_pcall(L, 1, 0, 0); /* a raised error is an answer, not a bug */
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
