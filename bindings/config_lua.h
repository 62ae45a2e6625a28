/* rtbackup.config: the loaded environments, as the host found them. */
#ifndef RTB_CONFIG_LUA_H
#define RTB_CONFIG_LUA_H

#include <lua.h>
#include <stddef.h>

#include "config/config.h"

/* Hands the loaded configuration (and the problems met while loading it) to the Lua
 * state, which owns both from then on. `path` is what was loaded, for messages. */
void rtb_lua_config_install(lua_State *L, rtb_config *cfg, rtb_cfg_problems *load_problems,
                            const char *path);

/* The value of a secret (userdata made by this module) at idx, or NULL if idx is not a
 * secret. For bindings that must hand the value to a library (ODBC's password). */
const char *rtb_lua_secret_value(lua_State *L, int idx, size_t *len);

int luaopen_rtbackup_config(lua_State *L);

#endif
