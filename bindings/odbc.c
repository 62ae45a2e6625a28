/* STUB: replaced by the rtbackup.odbc binding. */
#include <lauxlib.h>
#include <lua.h>

int luaopen_rtbackup_odbc_core(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
