/* Helpers shared by every binding: one way to raise errors. */
#ifndef RTB_LUA_UTIL_H
#define RTB_LUA_UTIL_H

#include <lauxlib.h>
#include <lua.h>

/* Pushes an error table {kind=, message=} carrying the shared error metatable
 * (readable __tostring). Callers may add fields (peer, status, ...) before raising. */
void rtb_lua_error_push(lua_State *L, const char *kind, const char *message);

/* Pushes an error table built from a format string and raises it. */
int rtb_lua_error_raise(lua_State *L, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets t[key] = value on the table at the top of the stack. */
void rtb_lua_set_string(lua_State *L, const char *key, const char *value);
void rtb_lua_set_integer(lua_State *L, const char *key, lua_Integer value);

/* Registers a C module in package.preload so `require(name)` finds it. */
void rtb_lua_preload(lua_State *L, const char *name, lua_CFunction open);

int luaopen_rtbackup_error(lua_State *L);

#endif
