/* STUB: replaced by the rtbackup.rtrecord binding. */
#include <lauxlib.h>
#include <lua.h>

int luaopen_rtbackup_rtrecord_core(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
