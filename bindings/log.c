/* rtbackup.log: log.debug/info/warn/error(message [, fields]) over core/log.
 *
 * Field values go through tostring(), so secrets (whose __tostring masks them) and
 * error tables print safely. Fields are written in key order for stable output. */
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "util.h"

#define MAX_FIELDS 32

static int compare_fields(const void *a, const void *b)
{
    return strcmp(((const rtb_log_field *)a)->key, ((const rtb_log_field *)b)->key);
}

static int log_at(lua_State *L, rtb_log_level level)
{
    const char *message = luaL_tolstring(L, 1, NULL);
    if (!rtb_log_enabled(level))
        return 0;
    rtb_log_field fields[MAX_FIELDS];
    size_t n = 0;
    if (lua_type(L, 2) == LUA_TTABLE) {
        /* Convert every value to text in a side table that lives on the stack until we
         * return, so the C strings stay valid; remember which were numbers/booleans. */
        lua_newtable(L);
        int text = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                int raw = lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TBOOLEAN;
                lua_pushvalue(L, -2);
                luaL_tolstring(L, -2, NULL);
                lua_pushfstring(L, "%c%s", raw ? 'r' : 's', lua_tostring(L, -1));
                lua_remove(L, -2);
                lua_settable(L, text);
            }
            lua_pop(L, 1);
        }
        lua_pushnil(L);
        while (n < MAX_FIELDS && lua_next(L, text)) {
            const char *v = lua_tostring(L, -1);
            fields[n].key = lua_tostring(L, -2);
            fields[n].raw = v[0] == 'r';
            fields[n].value = v + 1;
            n++;
            lua_pop(L, 1);
        }
        qsort(fields, n, sizeof fields[0], compare_fields);
    }
    rtb_log_write(level, message, fields, n);
    return 0;
}

static int log_debug(lua_State *L) { return log_at(L, RTB_LOG_DEBUG); }
static int log_info(lua_State *L) { return log_at(L, RTB_LOG_INFO); }
static int log_warn(lua_State *L) { return log_at(L, RTB_LOG_WARN); }
static int log_error(lua_State *L) { return log_at(L, RTB_LOG_ERROR); }

static int log_level(lua_State *L)
{
    lua_pushstring(L, rtb_log_level_name(rtb_log_get_level()));
    return 1;
}

/* log.set_level(name) — "debug", "info", "warn" or "error", from now on. */
static int log_set_level(lua_State *L)
{
    rtb_log_level level;
    if (rtb_log_level_parse(luaL_checkstring(L, 1), &level) < 0)
        return luaL_argerror(L, 1, "expected debug, info, warn or error");
    rtb_log_set_level(level);
    return 0;
}

/* log.enabled(level) — lets scripts skip building expensive debug output. */
static int log_enabled(lua_State *L)
{
    rtb_log_level level;
    if (rtb_log_level_parse(luaL_checkstring(L, 1), &level) < 0)
        return luaL_argerror(L, 1, "expected debug, info, warn or error");
    lua_pushboolean(L, rtb_log_enabled(level));
    return 1;
}

int luaopen_rtbackup_log(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"debug", log_debug}, {"info", log_info},
                                     {"warn", log_warn},   {"error", log_error},
                                     {"level", log_level}, {"enabled", log_enabled},
                                     {"set_level", log_set_level},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
