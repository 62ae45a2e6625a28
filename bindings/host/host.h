/* What the executable tells its Lua side: where scripts live, the version. */
#ifndef RTB_HOST_H
#define RTB_HOST_H

#include <lua.h>
#include <stdio.h>

typedef struct {
    const char *scripts_dir;
    const char *command;     /* the subcommand being run */
    const char *config_path; /* what --config resolved to */
    const char *state_dir;   /* the installed layout's state dir; "" in a build tree */
} rtb_host_info;

void rtb_host_install(lua_State *L, const rtb_host_info *info);
int luaopen_rtbackup_host(lua_State *L);

/* Writes the list of commands ("  name  summary" lines) found in scripts/cli. */
void rtb_host_print_commands(const char *scripts_dir, FILE *out);

#endif
