/* Every C module the host offers to Lua, registered in package.preload. */
#ifndef RTB_MODULES_H
#define RTB_MODULES_H

#include <lua.h>

void rtb_preload_modules(lua_State *L);

#endif
