/* The task scheduler: Lua coroutines driven by the libuv loop.
 *
 * A binding that must block (network, SQL, disk) ends its lua_CFunction with
 *     return rtb_task_await(L, work, done, data);
 * `work(data)` runs on a pool thread (no Lua there); then `done(L, data)` runs on the
 * loop thread in the calling coroutine, pushes the results (or raises) and frees data.
 * Inside a task the coroutine yields meanwhile, so other tasks go on; elsewhere (a
 * plain coroutine, a metamethod) the call waits for the work while still driving the
 * other tasks. */
#ifndef RTB_TASK_H
#define RTB_TASK_H

#include <lua.h>

typedef void (*rtb_task_work_fn)(void *data);
typedef int (*rtb_task_done_fn)(lua_State *L, void *data);

int rtb_task_await(lua_State *L, rtb_task_work_fn work, rtb_task_done_fn done, void *data);

/* Runs the function on top of the stack (below its nargs arguments) as the main task
 * and drives every task to completion. Returns LUA_OK with the main task's results
 * left on the stack (the count in *nresults), or an error status with the error value
 * (traceback attached) on the stack. */
int rtb_task_run_main(lua_State *L, int nargs, int *nresults);

/* 0, or the signal (SIGINT/SIGTERM) that asked the run to stop. */
int rtb_task_stop_signal(void);

/* After rtb_task_run_main: the tasks that had not stopped when the grace period
 * after the main script's failure was over (0 otherwise). They may still be inside
 * the Lua state or the thread pool. */
int rtb_task_abandoned(void);

int luaopen_rtbackup_task_core(lua_State *L);

#endif
