/* rtbackup.dicom datasets: dicom.read, dicom.dataset{...}, ds.Keyword get/set,
 * ds:save, ds:totable, tostring(ds), ds:digest, ds:free, dicom.uid.
 *
 * Values cross into Lua typed by VR: integer VRs (IS, US, UL, SS, SL, SV, UV) as
 * integers, decimal ones (DS, FL, FD) as floats, everything else as strings; a
 * multi-valued element is a list; a sequence is a list of (item) datasets. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom_lua.h"
#include "util.h"

/* Sequences nest a handful of levels in real objects (beams > control points >
 * leaf positions). The limit stops a Lua table that contains itself, or a crafted
 * file, from recursing until the C stack runs out. */
#define MAX_DEPTH 64

/* A sequence item's handle is borrowed from the dataset that owns the whole tree
 * (its root): replacing or removing a sequence frees its items in the core, so each
 * handle remembers the root's generation when it was handed out, and the root's
 * generation moves on whenever items may have been freed. A handle from an older
 * generation is refused instead of being used after free. */
typedef struct dataset_ud dataset_ud;
struct dataset_ud {
    rtb_ds *ds;
    int owned;
    dataset_ud *root;    /* items: the root's userdata (kept alive as our uservalue) */
    unsigned generation; /* roots: current; items: the root's when handed out */
    int lent;            /* roots: a job on another thread is using the tree */
};

/* A lent tree is another thread's until it is given back: Lua may neither read it
 * (DCMTK's element lists keep a cursor that a read moves) nor change or free it. */
static int is_lent(const dataset_ud *u)
{
    return u->lent || (u->root && u->root->lent);
}

static rtb_ds *live_dataset(const dataset_ud *u)
{
    if (!u->ds || is_lent(u))
        return NULL;
    if (u->root && (!u->root->ds || u->root->generation != u->generation))
        return NULL;
    return u->ds;
}

static void forget_items(dataset_ud *root)
{
    if (root)
        root->generation++;
}

void rtb_dicom_ensure_init(lua_State *L)
{
    rtb_dicom_error err;
    if (rtb_dicom_init(&err) != 0)
        rtb_dicom_raise(L, &err);
}

void rtb_dicom_push_error(lua_State *L, const rtb_dicom_error *err)
{
    rtb_lua_error_push(L, rtb_dicom_error_kind_name(err->kind), err->message);
    if (err->peer[0])
        rtb_lua_set_string(L, "peer", err->peer);
    if (err->status)
        rtb_lua_set_integer(L, "status", err->status);
    if (err->kind == RTB_DICOM_E_REJECTED) {
        rtb_lua_set_integer(L, "result", err->reject.result);
        rtb_lua_set_integer(L, "source", err->reject.source);
        rtb_lua_set_integer(L, "reason", err->reject.reason);
    }
}

int rtb_dicom_raise(lua_State *L, const rtb_dicom_error *err)
{
    rtb_dicom_push_error(L, err);
    return lua_error(L);
}

void rtb_dicom_push_dataset(lua_State *L, rtb_ds *ds, int owner_idx)
{
    owner_idx = owner_idx ? lua_absindex(L, owner_idx) : 0;
    dataset_ud *owner = owner_idx ? luaL_testudata(L, owner_idx, RTB_DATASET_MT) : NULL;
    dataset_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->ds = ds;
    u->owned = owner_idx == 0;
    u->root = owner ? (owner->root ? owner->root : owner) : NULL;
    u->generation = u->root ? u->root->generation : 0;
    u->lent = 0;
    luaL_setmetatable(L, RTB_DATASET_MT);
    if (owner_idx) {
        lua_pushvalue(L, owner_idx);
        lua_setiuservalue(L, -2, 1);
    }
}

rtb_ds *rtb_dicom_test_dataset(lua_State *L, int idx)
{
    dataset_ud *u = luaL_testudata(L, idx, RTB_DATASET_MT);
    return u ? live_dataset(u) : NULL;
}

rtb_ds *rtb_dicom_check_dataset(lua_State *L, int idx)
{
    dataset_ud *u = luaL_checkudata(L, idx, RTB_DATASET_MT);
    rtb_ds *ds = live_dataset(u);
    if (!ds)
        luaL_argerror(L, idx, is_lent(u) ? "the dataset is being sent (a C-STORE of it is in progress)"
                              : u->ds && u->root ? "sequence item no longer exists (its sequence "
                                                   "was replaced or removed)"
                                                 : "dataset was freed");
    return ds;
}

rtb_ds *rtb_dicom_lent_dataset(lua_State *L, int idx)
{
    dataset_ud *u = luaL_testudata(L, idx, RTB_DATASET_MT);
    return u && u->ds && is_lent(u) ? u->ds : NULL;
}

rtb_ds *rtb_dicom_lend_dataset(lua_State *L, int idx, int *ref)
{
    dataset_ud *u = luaL_testudata(L, idx, RTB_DATASET_MT);
    if (!u || u->root || !u->owned || !live_dataset(u))
        return NULL;
    u->lent = 1;
    lua_pushvalue(L, idx);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return u->ds;
}

void rtb_dicom_give_back_dataset(lua_State *L, int ref)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    dataset_ud *u = luaL_testudata(L, -1, RTB_DATASET_MT);
    if (u)
        u->lent = 0;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* The root whose items an assignment through the userdata at idx may free. */
static dataset_ud *root_of(lua_State *L, int idx)
{
    dataset_ud *u = luaL_checkudata(L, idx, RTB_DATASET_MT);
    return u->root ? u->root : u;
}

/* ---- values: DICOM -> Lua ------------------------------------------------------- */

static int is_integer_vr(const char *vr)
{
    static const char *const vrs[] = {"IS", "US", "UL", "SS", "SL", "SV", "UV", NULL};
    for (int i = 0; vrs[i]; i++)
        if (strcmp(vr, vrs[i]) == 0)
            return 1;
    return 0;
}

static int is_binary_vr(const char *vr)
{
    static const char *const vrs[] = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", NULL};
    for (int i = 0; vrs[i]; i++)
        if (strcmp(vr, vrs[i]) == 0)
            return 1;
    return 0;
}

static int is_decimal_vr(const char *vr)
{
    return strcmp(vr, "DS") == 0 || strcmp(vr, "FL") == 0 || strcmp(vr, "FD") == 0;
}

static void push_scalar(lua_State *L, const char *vr, const char *text)
{
    if (is_integer_vr(vr) || is_decimal_vr(vr)) {
        /* DICOM pads numbers with spaces; Lua's conversion accepts them. */
        if (lua_stringtonumber(L, text) != 0) {
            if (is_decimal_vr(vr) && lua_isinteger(L, -1)) {
                lua_Number n = (lua_Number)lua_tointeger(L, -1);
                lua_pop(L, 1);
                lua_pushnumber(L, n);
            }
            return;
        }
    }
    lua_pushstring(L, text);
}

/* Pushes the value of an element (not a sequence); an empty value is "". Binary
 * values (OB, OW, ..., Pixel Data) are Lua strings of their bytes. */
static void push_values(lua_State *L, const rtb_ds *ds, const rtb_ds_element *e)
{
    if (e->is_binary) {
        char tag[16];
        void *data = NULL;
        size_t len = 0;
        rtb_dicom_error err;
        snprintf(tag, sizeof tag, "%04X,%04X", e->group & 0xFFFF, e->element & 0xFFFF);
        if (rtb_ds_get_bytes(ds, tag, &data, &len, &err) != 0)
            rtb_dicom_raise(L, &err);
        lua_pushlstring(L, data ? data : "", len);
        free(data);
        return;
    }
    if (e->count == 0) {
        lua_pushliteral(L, "");
        return;
    }
    if (e->count == 1) {
        push_scalar(L, e->vr, e->values[0]);
        return;
    }
    lua_createtable(L, (int)e->count, 0);
    for (size_t i = 0; i < e->count; i++) {
        push_scalar(L, e->vr, e->values[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static void push_element_key(lua_State *L, const rtb_ds_element *e)
{
    if (e->keyword[0]) {
        lua_pushstring(L, e->keyword);
    } else {
        /* lua_pushfstring knows no widths or %X: it would raise for every private
         * element. */
        char tag[16];
        snprintf(tag, sizeof tag, "%04X,%04X", e->group & 0xFFFF, e->element & 0xFFFF);
        lua_pushstring(L, tag);
    }
}

static void push_table_at(lua_State *L, rtb_ds *ds, int depth)
{
    if (depth > MAX_DEPTH)
        rtb_lua_error_raise(L, "invalid", "dataset: sequences nested deeper than %d levels",
                            MAX_DEPTH);
    luaL_checkstack(L, 8, "dataset nested too deeply");
    size_t n = rtb_ds_count(ds);
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        rtb_ds_element e = {0};
        rtb_dicom_error err;
        if (rtb_ds_element_at(ds, i, &e, &err) != 0)
            continue;
        push_element_key(L, &e);
        if (e.is_sequence) {
            lua_createtable(L, (int)e.count, 0);
            for (size_t k = 0; k < e.count; k++) {
                rtb_ds *item;
                if (rtb_ds_item_at(ds, i, k, &item, &err) != 0)
                    continue;
                push_table_at(L, item, depth + 1);
                lua_rawseti(L, -2, (lua_Integer)k + 1);
            }
        } else {
            push_values(L, ds, &e);
        }
        rtb_ds_element_clear(&e);
        lua_rawset(L, -3);
    }
}

void rtb_dicom_push_table(lua_State *L, rtb_ds *ds)
{
    push_table_at(L, ds, 0);
}

/* ---- values: Lua -> DICOM -------------------------------------------------------- */

static void fill_dataset_at(lua_State *L, rtb_ds *ds, int idx, dataset_ud *root, int depth);

static void set_sequence(lua_State *L, rtb_ds *ds, const char *keyword, int list,
                         dataset_ud *root, int depth)
{
    rtb_dicom_error err;
    /* Raw length, as the items are read raw: a __len metamethod cannot make it
     * disagree with what is there. */
    size_t n = lua_rawlen(L, list);
    /* Items given as datasets are copied to tables first: they may be items of the
     * very sequence being replaced (ds.Seq = {ds.Seq[2]}), which the removal below
     * frees. */
    luaL_checkstack(L, 4, "dataset nested too deeply");
    lua_createtable(L, (int)(n < INT32_MAX ? n : 0), 0);
    int items = lua_gettop(L);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, list, (lua_Integer)i);
        rtb_ds *given = rtb_dicom_test_dataset(L, -1);
        if (given) {
            push_table_at(L, given, depth + 1);
            lua_remove(L, -2);
        } else if (!lua_istable(L, -1)) {
            rtb_lua_error_raise(L, "invalid", "%s: item %zu must be a table or a live dataset",
                                keyword, i);
        }
        lua_rawseti(L, items, (lua_Integer)i);
    }
    forget_items(root);
    if (rtb_ds_remove(ds, keyword, &err) != 0)
        rtb_dicom_raise(L, &err);
    if (n == 0) {
        /* An empty sequence (a Type 2 sequence present but empty). */
        if (rtb_ds_set(ds, keyword, NULL, 0, &err) != 0)
            rtb_dicom_raise(L, &err);
        lua_pop(L, 1);
        return;
    }
    for (size_t i = 1; i <= n; i++) {
        rtb_ds *item;
        if (rtb_ds_item_append(ds, keyword, &item, &err) != 0)
            rtb_dicom_raise(L, &err);
        lua_rawgeti(L, items, (lua_Integer)i);
        fill_dataset_at(L, item, lua_gettop(L), NULL, depth + 1); /* new items: no handles yet */
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static const char *value_text(lua_State *L, int idx, const char *keyword)
{
    size_t len;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        /* The core takes C strings: a NUL inside would silently cut the value. */
        const char *s = lua_tolstring(L, idx, &len);
        if (strlen(s) != len)
            rtb_lua_error_raise(L, "invalid", "%s: a text value must not contain a NUL byte",
                                keyword);
        return s;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
        else {
            char buf[32];
            /* DS allows 16 characters; %.10g keeps well inside and round-trips mm. */
            snprintf(buf, sizeof buf, "%.10g", lua_tonumber(L, idx));
            lua_pushstring(L, buf);
        }
        lua_replace(L, idx);
        return lua_tostring(L, idx);
    default:
        rtb_lua_error_raise(L, "invalid", "%s: a value must be a string or a number, got %s",
                            keyword, luaL_typename(L, idx));
        return NULL;
    }
}

/* Whether keyword is a sequence present in ds: replacing or removing it frees the
 * items handed out for it. */
static int is_present_sequence(lua_State *L, rtb_ds *ds, const char *keyword)
{
    rtb_ds_element probe = {0};
    rtb_dicom_error err;
    if (rtb_ds_get(ds, keyword, &probe, &err) != 0)
        rtb_dicom_raise(L, &err);
    int yes = probe.present && probe.is_sequence;
    rtb_ds_element_clear(&probe);
    return yes;
}

/* Sets one element from the Lua value at idx; nil removes it. root: the tree whose
 * item handles a removal invalidates (NULL for a dataset nobody holds items of). */
static void set_value(lua_State *L, rtb_ds *ds, const char *keyword, int idx, dataset_ud *root,
                      int depth)
{
    idx = lua_absindex(L, idx);
    rtb_dicom_error err;
    if (depth > MAX_DEPTH)
        rtb_lua_error_raise(L, "invalid", "%s: sequences nested deeper than %d levels (a table "
                                          "that contains itself?)", keyword, MAX_DEPTH);
    luaL_checkstack(L, 6, "dataset nested too deeply");
    if (lua_isnil(L, idx)) {
        if (is_present_sequence(L, ds, keyword))
            forget_items(root);
        if (rtb_ds_remove(ds, keyword, &err) != 0)
            rtb_dicom_raise(L, &err);
        return;
    }
    if (lua_istable(L, idx)) {
        lua_rawgeti(L, idx, 1);
        int items = lua_istable(L, -1) || luaL_testudata(L, -1, RTB_DATASET_MT) != NULL;
        lua_pop(L, 1);
        rtb_ds_element probe = {0};
        if (rtb_ds_get(ds, keyword, &probe, &err) != 0)
            rtb_dicom_raise(L, &err);
        int is_sq = strcmp(probe.vr, "SQ") == 0;
        int present_sq = probe.present && probe.is_sequence;
        rtb_ds_element_clear(&probe);
        if (items || is_sq) {
            set_sequence(L, ds, keyword, idx, root, depth);
            return;
        }
        /* A multi-valued element. Each value converted to text is kept alive in a
         * side table, not on the stack, which has room for a few values only. */
        size_t n = lua_rawlen(L, idx);
        if (n > SIZE_MAX / sizeof(char *))
            rtb_lua_error_raise(L, "invalid", "%s: too many values", keyword);
        const char **values = lua_newuserdatauv(L, sizeof(char *) * (n ? n : 1), 0);
        lua_createtable(L, (int)(n < INT32_MAX ? n : 0), 0);
        int texts = lua_gettop(L);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (lua_Integer)i);
            values[i - 1] = value_text(L, lua_gettop(L), keyword);
            lua_rawseti(L, texts, (lua_Integer)i); /* the table keeps the text alive */
        }
        if (present_sq)
            forget_items(root);
        int rc = rtb_ds_set(ds, keyword, values, n, &err);
        lua_pop(L, 2);
        if (rc != 0)
            rtb_dicom_raise(L, &err);
        return;
    }
    if (is_present_sequence(L, ds, keyword))
        forget_items(root);
    if (lua_type(L, idx) == LUA_TSTRING) {
        rtb_ds_element probe = {0};
        if (rtb_ds_get(ds, keyword, &probe, &err) != 0)
            rtb_dicom_raise(L, &err);
        /* Present elements know (Pixel Data's own VR name is not OB/OW); absent ones
         * go by the dictionary. */
        int binary = probe.is_binary || is_binary_vr(probe.vr);
        rtb_ds_element_clear(&probe);
        if (binary) {
            size_t len;
            const char *bytes = lua_tolstring(L, idx, &len);
            if (rtb_ds_set_bytes(ds, keyword, bytes, len, &err) != 0)
                rtb_dicom_raise(L, &err);
            return;
        }
    }
    lua_pushvalue(L, idx);
    const char *text = value_text(L, lua_gettop(L), keyword);
    int rc = rtb_ds_set(ds, keyword, &text, 1, &err);
    lua_pop(L, 1);
    if (rc != 0)
        rtb_dicom_raise(L, &err);
}

static void fill_dataset_at(lua_State *L, rtb_ds *ds, int idx, dataset_ud *root, int depth)
{
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 4, "dataset nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            rtb_lua_error_raise(L, "invalid", "dataset keys must be DICOM keywords, got a %s",
                                luaL_typename(L, -2));
        set_value(L, ds, lua_tostring(L, -2), -1, root, depth);
        lua_pop(L, 1);
    }
}

void rtb_dicom_fill_dataset(lua_State *L, rtb_ds *ds, int idx)
{
    fill_dataset_at(L, ds, idx, NULL, 0);
}

rtb_ds *rtb_dicom_dataset_from_table(lua_State *L, int idx)
{
    rtb_dicom_error err;
    rtb_ds *ds;
    rtb_dicom_ensure_init(L);
    if (rtb_ds_new(&ds, &err) != 0)
        rtb_dicom_raise(L, &err);
    /* Owned by a userdata while filling, so an error midway frees it. */
    rtb_dicom_push_dataset(L, ds, 0);
    rtb_dicom_fill_dataset(L, ds, idx);
    ((dataset_ud *)lua_touserdata(L, -1))->owned = 0; /* ownership passes to the caller */
    lua_pop(L, 1);
    return ds;
}

/* ---- the module functions --------------------------------------------------------- */

/* dicom.dataset{Keyword = value, ...} */
static int l_dataset(lua_State *L)
{
    rtb_dicom_ensure_init(L);
    rtb_dicom_error err;
    rtb_ds *ds;
    if (rtb_ds_new(&ds, &err) != 0)
        return rtb_dicom_raise(L, &err);
    rtb_dicom_push_dataset(L, ds, 0);
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        rtb_dicom_fill_dataset(L, ds, 1);
    }
    return 1;
}

/* dicom.read(path) */
static int l_read(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    rtb_dicom_ensure_init(L);
    rtb_dicom_error err;
    rtb_ds *ds;
    if (rtb_ds_read(path, &ds, &err) != 0)
        return rtb_dicom_raise(L, &err);
    rtb_dicom_push_dataset(L, ds, 0);
    return 1;
}

/* dicom.parse(bytes [, name]): the dataset of a DICOM file's bytes (an Orthanc's
 * /instances/{id}/file, say); name says whose in an error. */
static int l_parse(lua_State *L)
{
    size_t len;
    const char *bytes = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, NULL);
    rtb_dicom_ensure_init(L);
    rtb_dicom_error err;
    rtb_ds *ds;
    if (rtb_ds_parse(bytes, len, name, &ds, &err) != 0)
        return rtb_dicom_raise(L, &err);
    rtb_dicom_push_dataset(L, ds, 0);
    return 1;
}

/* dicom.uid() random; dicom.uid(name, ...) deterministic from the names. */
static int l_uid(lua_State *L)
{
    rtb_dicom_error err;
    char uid[RTB_DICOM_UID_MAX];
    int n = lua_gettop(L);
    int rc;
    if (n == 0) {
        rc = rtb_dicom_uid_random(uid, &err);
    } else {
        const char *names[64];
        size_t lengths[64];
        if (n > 64)
            return luaL_error(L, "dicom.uid: at most 64 names");
        luaL_checkstack(L, n, "dicom.uid: too many names"); /* one text per name */
        for (int i = 0; i < n; i++) /* numbers become text too; bytes are hashed whole */
            names[i] = luaL_tolstring(L, i + 1, &lengths[i]);
        rc = rtb_dicom_uid_from_bytes(names, lengths, (size_t)n, uid, &err);
    }
    if (rc != 0)
        return rtb_dicom_raise(L, &err);
    lua_pushstring(L, uid);
    return 1;
}

static int l_uid_valid(lua_State *L)
{
    lua_pushboolean(L, rtb_dicom_uid_valid(luaL_checkstring(L, 1)));
    return 1;
}

/* ---- dataset methods ------------------------------------------------------------ */

static int ds_save(lua_State *L)
{
    rtb_ds *ds = rtb_dicom_check_dataset(L, 1);
    const char *path = luaL_checkstring(L, 2);
    rtb_ds_save_options opts = {RTB_DS_XFER_AUTO};
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "transfer_syntax");
        const char *ts = luaL_optstring(L, -1, "auto");
        if (strcmp(ts, "implicit") == 0)
            opts.transfer_syntax = RTB_DS_XFER_IMPLICIT_LE;
        else if (strcmp(ts, "explicit") == 0)
            opts.transfer_syntax = RTB_DS_XFER_EXPLICIT_LE;
        else if (strcmp(ts, "auto") != 0)
            return luaL_error(L, "transfer_syntax must be 'implicit', 'explicit' or 'auto'");
        lua_pop(L, 1);
    }
    rtb_dicom_error err;
    if (rtb_ds_save(ds, path, &opts, &err) != 0)
        return rtb_dicom_raise(L, &err);
    lua_settop(L, 1);
    return 1;
}

static int ds_totable(lua_State *L)
{
    rtb_dicom_push_table(L, rtb_dicom_check_dataset(L, 1));
    return 1;
}

static int ds_digest(lua_State *L)
{
    char hex[65];
    rtb_dicom_error err;
    if (rtb_ds_digest(rtb_dicom_check_dataset(L, 1), hex, &err) != 0)
        return rtb_dicom_raise(L, &err);
    lua_pushstring(L, hex);
    return 1;
}

static int ds_clone(lua_State *L)
{
    rtb_ds *copy;
    rtb_dicom_error err;
    if (rtb_ds_clone(rtb_dicom_check_dataset(L, 1), &copy, &err) != 0)
        return rtb_dicom_raise(L, &err);
    rtb_dicom_push_dataset(L, copy, 0);
    return 1;
}

/* ds:dump([max_lines]) — dcmdump-like text. */
static int ds_dump(lua_State *L)
{
    char *text;
    rtb_dicom_error err;
    if (rtb_ds_dump(rtb_dicom_check_dataset(L, 1), (size_t)luaL_optinteger(L, 2, 0), &text, &err))
        return rtb_dicom_raise(L, &err);
    lua_pushstring(L, text);
    free(text);
    return 1;
}

static int ds_tostring(lua_State *L)
{
    rtb_ds *ds = rtb_dicom_check_dataset(L, 1);
    char *text;
    rtb_dicom_error err;
    if (rtb_ds_dump(ds, 12, &text, &err) != 0) {
        lua_pushfstring(L, "dataset (%d elements)", (int)rtb_ds_count(ds));
        return 1;
    }
    lua_pushfstring(L, "dataset (%d elements)\n%s", (int)rtb_ds_count(ds), text);
    free(text);
    return 1;
}

static int ds_index(lua_State *L)
{
    rtb_ds *ds = rtb_dicom_check_dataset(L, 1);
    const char *key = luaL_checkstring(L, 2);
    /* Methods first: they are lower-case, keywords are CamelCase. */
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    if (lua_getfield(L, -1, key) != LUA_TNIL)
        return 1;
    lua_pop(L, 3);
    rtb_ds_element e = {0};
    rtb_dicom_error err;
    if (rtb_ds_get(ds, key, &e, &err) != 0)
        return rtb_dicom_raise(L, &err);
    if (!e.present) {
        lua_pushnil(L);
    } else if (e.is_sequence) {
        size_t n = e.count;
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            rtb_ds *item;
            if (rtb_ds_item(ds, key, i, &item, &err) != 0) {
                rtb_ds_element_clear(&e);
                return rtb_dicom_raise(L, &err);
            }
            rtb_dicom_push_dataset(L, item, 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    } else {
        push_values(L, ds, &e);
    }
    rtb_ds_element_clear(&e);
    return 1;
}

static int ds_newindex(lua_State *L)
{
    rtb_ds *ds = rtb_dicom_check_dataset(L, 1);
    set_value(L, ds, luaL_checkstring(L, 2), 3, root_of(L, 1), 0);
    return 0;
}

/* ds:free(): the dataset's memory now, not when the collector gets to it (which
 * does not see DCMTK's memory: a run building thousands of records would grow). Its
 * items and any later use are refused ("dataset was freed"). */
static int ds_free(lua_State *L)
{
    dataset_ud *u = luaL_checkudata(L, 1, RTB_DATASET_MT);
    if (u->root)
        return luaL_argerror(L, 1, "free the dataset, not one of its sequence items");
    if (u->lent)
        return luaL_argerror(L, 1, "the dataset is being sent (a C-STORE of it is in progress)");
    if (u->owned && u->ds)
        rtb_ds_free(u->ds);
    u->ds = NULL;
    forget_items(u);
    return 0;
}

static int ds_gc(lua_State *L)
{
    dataset_ud *u = luaL_checkudata(L, 1, RTB_DATASET_MT);
    /* Lent, a tree is collected only when the state closes: its job may still run. */
    if (u->owned && !u->lent)
        rtb_ds_free(u->ds);
    u->ds = NULL;
    return 0;
}

void rtb_dicom_open_dataset(lua_State *L)
{
    static const luaL_Reg methods[] = {{"save", ds_save},   {"totable", ds_totable},
                                       {"digest", ds_digest}, {"clone", ds_clone},
                                       {"dump", ds_dump},   {"free", ds_free},
                                       {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"dataset", l_dataset},
                                     {"read", l_read},
                                     {"parse", l_parse},
                                     {"uid", l_uid},
                                     {"uid_valid", l_uid_valid},
                                     {NULL, NULL}};
    if (luaL_newmetatable(L, RTB_DATASET_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "methods");
        lua_pushcfunction(L, ds_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, ds_newindex);
        lua_setfield(L, -2, "__newindex");
        lua_pushcfunction(L, ds_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, ds_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "dataset");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
}
