/* rtbackup.error: errors as tables {kind, message, peer, status, ...}.
 *
 * Every binding and every Lua library raises errors of this one shape, so callers can
 * branch on err.kind and people read one consistent sentence. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

#define ERROR_MT "rtbackup.error"

static int error_tostring(lua_State *L)
{
    /* The status is read before the buffer exists: between luaL_buffinit and
     * luaL_pushresult the stack must be balanced at every luaL_add* call (only
     * luaL_addvalue takes one value on top), or a buffer that grows past its first
     * 1 KiB is looked for in the wrong slot and freed while still in use. */
    char status[24] = "", hex[16] = "";
    if (lua_getfield(L, 1, "status") == LUA_TNUMBER) {
        snprintf(status, sizeof status, " (status 0x%04llX)", (long long)lua_tointeger(L, -1));
        snprintf(hex, sizeof hex, "0x%04llX", (long long)lua_tointeger(L, -1));
    }
    lua_pop(L, 1);
    /* A message that already names the status ("C-MOVE failed with status 0xA801 (...)")
     * does not get it a second time. */
    if (hex[0] && lua_getfield(L, 1, "message") == LUA_TSTRING && strstr(lua_tostring(L, -1), hex))
        status[0] = '\0';
    if (hex[0])
        lua_pop(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (lua_getfield(L, 1, "peer") == LUA_TSTRING) {
        luaL_addvalue(&b);
        luaL_addstring(&b, ": ");
    } else {
        lua_pop(L, 1);
    }
    if (lua_getfield(L, 1, "message") == LUA_TSTRING)
        luaL_addvalue(&b);
    else
        lua_pop(L, 1);
    luaL_addstring(&b, status);
    luaL_pushresult(&b);
    return 1;
}

static void push_metatable(lua_State *L)
{
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushstring(L, "rtbackup.error");
        lua_setfield(L, -2, "__name");
    }
}

void rtb_lua_error_push(lua_State *L, const char *kind, const char *message)
{
    lua_createtable(L, 0, 4);
    rtb_lua_set_string(L, "kind", kind);
    rtb_lua_set_string(L, "message", message);
    push_metatable(L);
    lua_setmetatable(L, -2);
}

int rtb_lua_error_raise(lua_State *L, const char *kind, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    rtb_lua_error_push(L, kind, message);
    return lua_error(L);
}

void rtb_lua_set_string(lua_State *L, const char *key, const char *value)
{
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

void rtb_lua_set_integer(lua_State *L, const char *key, lua_Integer value)
{
    lua_pushinteger(L, value);
    lua_setfield(L, -2, key);
}

void rtb_lua_preload(lua_State *L, const char *name, lua_CFunction open)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

/* error.new{kind=, message=, ...}: gives a plain table the error metatable. */
static int error_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "kind") != LUA_TSTRING)
        luaL_argerror(L, 1, "field 'kind' must be a string");
    lua_pop(L, 1);
    lua_settop(L, 1);
    push_metatable(L);
    lua_setmetatable(L, 1);
    return 1;
}

/* error.raise{...}: error.new, then raise it without position information (the
 * message already says what and where). */
static int error_raise(lua_State *L)
{
    error_new(L);
    return lua_error(L);
}

/* error.is(value [, kind]): true when value is an rtbackup error (of that kind). */
static int error_is(lua_State *L)
{
    int ok = lua_getmetatable(L, 1);
    if (ok) {
        push_metatable(L);
        ok = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    if (ok && !lua_isnoneornil(L, 2)) {
        lua_getfield(L, 1, "kind");
        ok = lua_compare(L, -1, 2, LUA_OPEQ);
        lua_pop(L, 1);
    }
    lua_pushboolean(L, ok);
    return 1;
}

int luaopen_rtbackup_error(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"new", error_new}, {"raise", error_raise}, {"is", error_is}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
