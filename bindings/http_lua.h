/* rtbackup.http.core, shared between its files: the server (http_server.c, on
 * libmicrohttpd), the client (http_client.c, on libcurl) and password hashing (http.c,
 * on OpenSSL's libcrypto). scripts/lib/rtbackup/http.lua wraps it. */
#ifndef RTB_HTTP_LUA_H
#define RTB_HTTP_LUA_H

#include <lua.h>

/* Each adds its functions to the module table at the top of the stack. */
void rtb_http_open_server(lua_State *L);
void rtb_http_open_client(lua_State *L);

int luaopen_rtbackup_http_core(lua_State *L);

#endif
