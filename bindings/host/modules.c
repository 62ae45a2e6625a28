#include "modules.h"

#include "config_lua.h"
#include "host.h"
#include "task.h"
#include "util.h"

int luaopen_rtbackup_log(lua_State *L);
int luaopen_rtbackup_dicom_core(lua_State *L);
int luaopen_rtbackup_odbc_core(lua_State *L);
int luaopen_rtbackup_rtrecord_core(lua_State *L);
int luaopen_rtbackup_journal_core(lua_State *L);
int luaopen_rtbackup_sys(lua_State *L);
int luaopen_rtbackup_http_core(lua_State *L);

/* C cores of modules; where a Lua file of the same family exists in scripts/lib
 * (rtbackup/task.lua), it wraps the core and is what scripts require. */
void rtb_preload_modules(lua_State *L)
{
    rtb_lua_preload(L, "rtbackup.error", luaopen_rtbackup_error);
    rtb_lua_preload(L, "rtbackup.log", luaopen_rtbackup_log);
    rtb_lua_preload(L, "rtbackup.config.core", luaopen_rtbackup_config);
    rtb_lua_preload(L, "rtbackup.task.core", luaopen_rtbackup_task_core);
    rtb_lua_preload(L, "rtbackup.host", luaopen_rtbackup_host);
    rtb_lua_preload(L, "rtbackup.dicom.core", luaopen_rtbackup_dicom_core);
    rtb_lua_preload(L, "rtbackup.odbc.core", luaopen_rtbackup_odbc_core);
    rtb_lua_preload(L, "rtbackup.rtrecord.core", luaopen_rtbackup_rtrecord_core);
    rtb_lua_preload(L, "rtbackup.journal.core", luaopen_rtbackup_journal_core);
    rtb_lua_preload(L, "rtbackup.sys", luaopen_rtbackup_sys);
    rtb_lua_preload(L, "rtbackup.http.core", luaopen_rtbackup_http_core);
}
