/* STUB: replaced by the rtbackup.journal binding. */
#include <lauxlib.h>
#include <lua.h>

int luaopen_rtbackup_journal_core(lua_State *L)
{
    lua_newtable(L);
    return 1;
}
