/* rtbackup.task.core: coroutines as tasks on the libuv loop (see task.h).
 *
 * Resumptions never happen inside libuv callbacks: callbacks only put tasks on the
 * ready queue, and drive_until() resumes them between turns of the loop. That keeps
 * the loop re-entrant, so code that cannot yield may drive the loop itself while it
 * waits (see rtb_task_await). */
#include "task.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop/loop.h"
#include "log/log.h"
#include "util.h"

#define TASK_MT "rtbackup.task"

typedef enum { TASK_READY, TASK_RUNNING, TASK_WAITING, TASK_DONE, TASK_FAILED } task_state;

typedef struct task task;
struct task {
    lua_State *co;
    int ref_thread;   /* keeps the coroutine alive */
    int ref_self;     /* keeps the userdata alive while the task is unfinished */
    int ref_outcome;  /* table of results, or the error value */
    task_state state;
    int resume_nargs; /* arguments waiting on the coroutine's stack for the next resume */
    int observed;     /* someone waited for it, so a failure was not silently dropped */
    int finished;     /* state is DONE or FAILED; a flag drive_until() can watch */
    int suspended;    /* waiting in task.suspend() for task.wake() */
    int id;
    task *next_ready;
    task *waiters;      /* tasks blocked in wait() on this one ... */
    task *next_waiter;  /* ... linked through this field */
    task *next_failed;  /* failed before anyone waited for it */
};

static struct {
    lua_State *L; /* the main state, for the registry */
    task *ready_head, *ready_tail;
    int live;     /* tasks not yet finished */
    int next_id;
    int stop_signal;
    int main_failed; /* the main script failed while background tasks still ran */
    int abandoned;   /* those still running when their grace period was over */
    task *failed; /* failures not (yet) observed */
} sched;

/* How long background tasks get to stop once the main script has failed. */
#define MAIN_FAILED_GRACE_MS 5000

static task *current_task(lua_State *L)
{
    return *(task **)lua_getextraspace(L);
}

static void make_ready(task *t)
{
    t->state = TASK_READY;
    t->next_ready = NULL;
    if (sched.ready_tail)
        sched.ready_tail->next_ready = t;
    else
        sched.ready_head = t;
    sched.ready_tail = t;
}

/* Pushes "message + traceback" (strings) or the table with a traceback field. A
 * coroutine that died of a stack overflow has no room left for a traceback: its
 * error then stays as it is. */
static void push_error_with_traceback(lua_State *co)
{
    if (!lua_checkstack(co, LUA_MINSTACK))
        return;
    if (lua_type(co, -1) == LUA_TTABLE) {
        if (lua_getfield(co, -1, "traceback") == LUA_TNIL) {
            luaL_traceback(co, co, NULL, 0);
            lua_setfield(co, -3, "traceback");
        }
        lua_pop(co, 1);
    } else {
        const char *msg = lua_tostring(co, -1);
        luaL_traceback(co, co, msg ? msg : "(error object is not a string)", 0);
        lua_remove(co, -2);
    }
}

static void finish(task *t, int ok, int nres)
{
    lua_State *co = t->co;
    if (ok && !lua_checkstack(co, 2)) {
        /* Returned so many values that the results table does not fit: a failure. */
        lua_pop(co, nres);
        lua_pushliteral(co, "task returned too many values");
        ok = 0;
    }
    if (ok) {
        lua_createtable(co, nres, 1);
        lua_insert(co, -(nres + 1));
        for (int i = nres; i >= 1; i--)
            lua_rawseti(co, -(i + 1), i); /* pops the last value into slot i */
        lua_pushinteger(co, nres);
        lua_setfield(co, -2, "n");
        t->state = TASK_DONE;
    } else {
        push_error_with_traceback(co);
        t->state = TASK_FAILED;
    }
    t->ref_outcome = luaL_ref(co, LUA_REGISTRYINDEX);
    t->finished = 1;
    if (!ok)
        lua_resetthread(co); /* closes its to-be-closed variables */
    for (task *w = t->waiters; w;) {
        task *next = w->next_waiter;
        t->observed = 1;
        make_ready(w);
        w = next;
    }
    t->waiters = NULL;
    sched.live--;
    if (t->state == TASK_FAILED && !t->observed) {
        /* Kept alive until the end of the run, when a failure nobody waited for is
         * reported rather than lost. */
        t->next_failed = sched.failed;
        sched.failed = t;
        return;
    }
    luaL_unref(sched.L, LUA_REGISTRYINDEX, t->ref_self);
    t->ref_self = LUA_NOREF;
}

static void resume(task *t)
{
    int nres = 0;
    t->state = TASK_RUNNING;
    int nargs = t->resume_nargs;
    t->resume_nargs = 0;
    int status = lua_resume(t->co, NULL, nargs, &nres);
    if (status == LUA_YIELD) {
        if (t->state == TASK_WAITING)
            return; /* a binding or wait() will make it ready again */
        lua_pop(t->co, nres); /* a plain coroutine.yield(): let the others run, come back */
        make_ready(t);
    } else {
        finish(t, status == LUA_OK, nres);
    }
}

static int run_ready(void)
{
    int ran = 0;
    while (sched.ready_head) {
        task *t = sched.ready_head;
        sched.ready_head = t->next_ready;
        if (!sched.ready_head)
            sched.ready_tail = NULL;
        resume(t);
        ran = 1;
    }
    return ran;
}

/* Runs ready tasks and the loop until *flag is set. Returns -1 when nothing is left
 * that could ever set it (a task waiting for itself, say). */
static int drive_until(const int *flag)
{
    while (!*flag) {
        if (run_ready())
            continue;
        if (!rtb_loop_run_once() && !sched.ready_head && !*flag)
            return -1;
    }
    return 0;
}

/* ---- blocking work ------------------------------------------------------------ */

typedef struct {
    rtb_task_work_fn work;
    rtb_task_done_fn done;
    void *data;
    task *waiter; /* NULL when the caller drives the loop itself */
    int finished;
} job;

static void job_work(void *arg)
{
    job *j = arg;
    j->work(j->data);
}

static void job_done(void *arg)
{
    job *j = arg;
    j->finished = 1;
    if (j->waiter)
        make_ready(j->waiter);
}

static int await_continue(lua_State *L, int status, lua_KContext ctx)
{
    job *j = (job *)ctx;
    rtb_task_done_fn done = j->done;
    void *data = j->data;
    free(j);
    return done(L, data);
}

int rtb_task_await(lua_State *L, rtb_task_work_fn work, rtb_task_done_fn done, void *data)
{
    /* done() pushes its results where the caller left the stack (a binding may have
     * pushed a variable number of values, such as SQL parameters, before awaiting):
     * it gets the LUA_MINSTACK slots a fresh C function has. Reserved now, while a
     * failure can still be raised; the reservation survives the yield. Bindings that
     * push many values check first, so this fails only at the Lua stack's hard limit,
     * where data cannot be handed back and is lost. */
    luaL_checkstack(L, LUA_MINSTACK, "stack overflow (too many values before a pool call)");
    job *j = calloc(1, sizeof *j);
    if (!j)
        return luaL_error(L, "out of memory");
    j->work = work;
    j->done = done;
    j->data = data;
    task *t = current_task(L);
    int can_yield = t && lua_isyieldable(L) && t->co == L;
    j->waiter = can_yield ? t : NULL;
    int rc = rtb_loop_queue_work(job_work, job_done, j);
    if (rc < 0) {
        free(j);
        work(data); /* the pool refused: do it here rather than lose it */
        return done(L, data);
    }
    if (can_yield) {
        t->state = TASK_WAITING;
        return lua_yieldk(L, 0, (lua_KContext)j, await_continue);
    }
    drive_until(&j->finished);
    return await_continue(L, LUA_OK, (lua_KContext)j);
}

/* ---- task objects ----------------------------------------------------------- */

static task *check_task(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, TASK_MT);
}

/* Creates a task for the function at -(nargs+1) and its nargs arguments (popped).
 * Returns NULL, with nothing changed, when the new coroutine's stack cannot hold the
 * function and its arguments: lua_xmove does not grow the destination stack, so
 * moving more than LUA_MINSTACK values into a fresh coroutine unchecked writes past
 * its end. */
static task *spawn(lua_State *L, int nargs)
{
    if (!lua_checkstack(L, 3))
        return NULL;
    task *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    /* Before the metatable: if we give up below, __gc must find no references. */
    t->ref_thread = t->ref_outcome = t->ref_self = LUA_NOREF;
    luaL_setmetatable(L, TASK_MT);
    lua_insert(L, -(nargs + 2)); /* userdata below the function */
    t->co = lua_newthread(L);
    if (!lua_checkstack(t->co, nargs + 1)) {
        lua_pop(L, 1);      /* the thread */
        lua_remove(L, -(nargs + 2)); /* the userdata (no references yet) */
        return NULL;
    }
    *(task **)lua_getextraspace(t->co) = t;
    t->ref_thread = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, t->co, nargs + 1);
    t->resume_nargs = nargs;
    t->id = ++sched.next_id;
    t->ref_outcome = LUA_NOREF;
    lua_pushvalue(L, -1);
    t->ref_self = luaL_ref(L, LUA_REGISTRYINDEX);
    sched.live++;
    make_ready(t);
    return t; /* the userdata stays on the stack */
}

static int task_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (!spawn(L, lua_gettop(L) - 1))
        return rtb_lua_error_raise(L, "task", "task.spawn: too many arguments (%d)",
                                   lua_gettop(L) - 1);
    return 1;
}

/* Pushes the outcome of a finished task: its results, or raises its error. */
static int push_outcome(lua_State *L, task *t)
{
    t->observed = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref_outcome);
    if (t->state == TASK_FAILED)
        return lua_error(L);
    lua_getfield(L, -1, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n, "too many results");
    int tbl = lua_gettop(L);
    for (int i = 1; i <= n; i++)
        lua_rawgeti(L, tbl, i);
    return n;
}

static int wait_continue(lua_State *L, int status, lua_KContext ctx)
{
    return push_outcome(L, (task *)ctx);
}


/* task:wait() — results of the task, or its error raised again here. */
static int task_wait(lua_State *L)
{
    task *target = check_task(L, 1);
    if (target->finished)
        return push_outcome(L, target);
    task *self = current_task(L);
    if (self == target)
        return rtb_lua_error_raise(L, "task", "a task cannot wait for itself");
    if (self && lua_isyieldable(L) && self->co == L) {
        self->next_waiter = target->waiters;
        target->waiters = self;
        self->state = TASK_WAITING;
        return lua_yieldk(L, 0, (lua_KContext)target, wait_continue);
    }
    if (drive_until(&target->finished) < 0)
        return rtb_lua_error_raise(L, "task", "deadlock: waiting for task %d, which can never "
                                              "finish", target->id);
    return push_outcome(L, target);
}

static int task_status(lua_State *L)
{
    static const char *const names[] = {"ready", "running", "waiting", "done", "failed"};
    lua_pushstring(L, names[check_task(L, 1)->state]);
    return 1;
}

static int task_tostring(lua_State *L)
{
    task *t = check_task(L, 1);
    static const char *const names[] = {"ready", "running", "waiting", "done", "failed"};
    lua_pushfstring(L, "task %d (%s)", t->id, names[t->state]);
    return 1;
}

static int task_gc(lua_State *L)
{
    task *t = check_task(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref_outcome);
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref_thread);
    return 0;
}

/* ---- sleeping ------------------------------------------------------------------- */

typedef struct {
    task *waiter;
    int fired;
} sleeper;

/* Milliseconds from a script's number: NaN and negatives are 0, and anything past a
 * year is a year (converting an out-of-range double to an integer is undefined). */
static unsigned long clamp_ms(lua_Number ms)
{
    if (!(ms > 0))
        return 0;
    return ms < 31536000000.0 ? (unsigned long)ms : 31536000000UL;
}

static void sleep_done(void *arg)
{
    sleeper *s = arg;
    s->fired = 1;
    if (s->waiter)
        make_ready(s->waiter);
    else
        return; /* the caller drives the loop and frees s */
    free(s);
}

static int sleep_continue(lua_State *L, int status, lua_KContext ctx)
{
    return 0;
}

static int task_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    sleeper *s = calloc(1, sizeof *s);
    if (!s)
        return luaL_error(L, "out of memory");
    task *self = current_task(L);
    int can_yield = self && lua_isyieldable(L) && self->co == L;
    s->waiter = can_yield ? self : NULL;
    if (rtb_loop_after_ms(clamp_ms(ms), sleep_done, s) < 0) {
        free(s);
        return luaL_error(L, "cannot start a timer");
    }
    if (can_yield) {
        self->state = TASK_WAITING;
        return lua_yieldk(L, 0, 0, sleep_continue);
    }
    drive_until(&s->fired);
    free(s);
    return 0;
}

/* A pool job that only sleeps: lets tests and benchmarks see the pool's concurrency
 * without a network peer. */
static void pool_sleep_work(void *data)
{
    unsigned long ms = clamp_ms(*(lua_Number *)data);
    while (ms >= 1000) { /* usleep takes at most a second */
        sleep(1);
        ms -= 1000;
    }
    usleep((useconds_t)(ms * 1000));
}

static int pool_sleep_done(lua_State *L, void *data)
{
    free(data);
    return 0;
}

static int task_pool_sleep(lua_State *L)
{
    lua_Number *ms = malloc(sizeof *ms);
    if (!ms)
        return luaL_error(L, "out of memory");
    *ms = luaL_checknumber(L, 1);
    return rtb_task_await(L, pool_sleep_work, pool_sleep_done, ms);
}

/* ---- suspending -------------------------------------------------------------- */

/* task.suspend() — the current task waits until another calls task.wake(it). The
 * building block of semaphores and queues in Lua (rtbackup.limits): whoever frees a
 * resource wakes one waiter. Outside a task (a plain coroutine) it cannot wait. */
static int suspend_continue(lua_State *L, int status, lua_KContext ctx)
{
    return 0;
}

static int task_suspend(lua_State *L)
{
    task *self = current_task(L);
    if (!self || !lua_isyieldable(L) || self->co != L)
        return rtb_lua_error_raise(L, "task", "task.suspend() outside a task: nothing could wake it");
    self->state = TASK_WAITING;
    self->suspended = 1;
    return lua_yieldk(L, 0, 0, suspend_continue);
}

/* task.wake(t) — makes a suspended task ready; true if it was suspended. */
static int task_wake(lua_State *L)
{
    task *t = check_task(L, 1);
    int was = t->suspended && t->state == TASK_WAITING;
    if (was) {
        t->suspended = 0;
        make_ready(t);
    }
    lua_pushboolean(L, was);
    return 1;
}

/* ---- stopping ------------------------------------------------------------------- */

static void on_signal(int signum, void *arg)
{
    if (sched.stop_signal) {
        /* Second request: the operator insists. */
        rtb_log(RTB_LOG_ERROR, "second %s: stopping now", signum == SIGINT ? "SIGINT" : "SIGTERM");
        _exit(128 + signum);
    }
    sched.stop_signal = signum;
    rtb_log(RTB_LOG_WARN, "%s received: finishing work in progress, starting no new work "
                          "(send it again to stop at once)",
            signum == SIGINT ? "SIGINT" : "SIGTERM");
}

int rtb_task_stop_signal(void)
{
    return sched.stop_signal;
}

int rtb_task_abandoned(void)
{
    return sched.abandoned;
}

/* task.stopping() — the signal name when the run has been asked to stop, "error" when
 * the main script has failed (background tasks should end), else false. */
static int task_stopping(lua_State *L)
{
    if (sched.stop_signal)
        lua_pushstring(L, sched.stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
    else if (sched.main_failed)
        lua_pushstring(L, "error");
    else
        lua_pushboolean(L, 0);
    return 1;
}

static int task_current(lua_State *L)
{
    task *t = current_task(L);
    if (!t || t->ref_self == LUA_NOREF)
        lua_pushnil(L);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref_self);
    return 1;
}

/* ---- the main task ------------------------------------------------------------ */

static void set_flag(void *arg)
{
    *(int *)arg = 1;
}

/* A task that failed while nobody waited for it, and that nobody waited for later
 * either, is logged with its traceback: failures are never silently dropped. */
static void report_unobserved_failures(lua_State *L)
{
    for (task *t = sched.failed; t; t = t->next_failed) {
        /* An evaluation the operator interrupted in the REPL (Ctrl-C) and left behind
         * failed as asked: nothing to report. */
        if (!t->observed) {
            int base = lua_gettop(L);
            if (lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref_outcome) == LUA_TTABLE &&
                lua_getfield(L, base + 1, "kind") == LUA_TSTRING &&
                strcmp(lua_tostring(L, -1), "interrupted") == 0)
                t->observed = 1;
            lua_settop(L, base);
        }
        if (!t->observed) {
            int base = lua_gettop(L);
            lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref_outcome);
            const char *msg = luaL_tolstring(L, base + 1, NULL);
            const char *tb = NULL;
            if (lua_type(L, base + 1) == LUA_TTABLE &&
                lua_getfield(L, base + 1, "traceback") == LUA_TSTRING)
                tb = lua_tostring(L, -1);
            rtb_log(RTB_LOG_ERROR, "task %d failed and nobody waited for it: %s%s%s", t->id, msg,
                    tb ? "\n" : "", tb ? tb : "");
            lua_settop(L, base);
        }
        luaL_unref(L, LUA_REGISTRYINDEX, t->ref_self);
        t->ref_self = LUA_NOREF;
    }
    sched.failed = NULL;
}

int rtb_task_run_main(lua_State *L, int nargs, int *nresults)
{
    sched.L = L;
    rtb_loop_watch_signals(on_signal, NULL);
    task *main_task = spawn(L, nargs);
    if (!main_task) {
        lua_pop(L, nargs + 1);
        rtb_lua_error_push(L, "usage", "too many arguments for the script");
        return LUA_ERRRUN;
    }
    int top = lua_gettop(L); /* the main task's userdata */
    if (drive_until(&main_task->finished) < 0) {
        rtb_lua_error_push(L, "task", "deadlock: the main script waits for something that can "
                                      "never happen");
        return LUA_ERRRUN;
    }
    /* Background tasks the script spawned and did not wait for still finish. Once the
     * main script has failed, though, the run is over: they are asked to stop
     * (task.stopping() says "error") and get MAIN_FAILED_GRACE_MS for it, so that a task
     * that never ends (a listener's events, a loop) cannot hide the failure behind a
     * process that runs on and says nothing. */
    static int grace_over;
    if (main_task->state == TASK_FAILED && sched.live > 0) {
        sched.main_failed = 1;
        rtb_log(RTB_LOG_WARN, "the script failed: waiting up to %d s for %d background task(s) to stop",
                MAIN_FAILED_GRACE_MS / 1000, sched.live);
        if (rtb_loop_after_ms(MAIN_FAILED_GRACE_MS, set_flag, &grace_over) < 0)
            grace_over = 1;
    }
    while (sched.live > 0 && !grace_over) {
        if (run_ready())
            continue;
        if (!rtb_loop_run_once() && !sched.ready_head)
            break;
    }
    if (sched.live > 0 && grace_over) {
        sched.abandoned = sched.live;
        rtb_log(RTB_LOG_WARN, "%d background task(s) still running %d s after the script failed: "
                              "stopping without them", sched.live, MAIN_FAILED_GRACE_MS / 1000);
    }
    main_task->observed = 1;
    report_unobserved_failures(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, main_task->ref_outcome);
    lua_remove(L, top);
    if (main_task->state == TASK_FAILED)
        return LUA_ERRRUN;
    int tbl = lua_gettop(L);
    lua_getfield(L, tbl, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    /* Not protected here: lua_checkstack, which does not raise, rather than
     * luaL_checkstack. Only the first result decides the exit code, so a script that
     * returns more than the stack can take keeps that one. */
    if (!lua_checkstack(L, n + LUA_MINSTACK))
        n = n > 0 ? 1 : 0;
    for (int i = 1; i <= n; i++)
        lua_rawgeti(L, tbl, i);
    lua_remove(L, tbl);
    *nresults = n;
    return LUA_OK;
}

int luaopen_rtbackup_task_core(lua_State *L)
{
    static const luaL_Reg methods[] = {{"wait", task_wait}, {"status", task_status}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"spawn", task_spawn},         {"wait", task_wait},
                                     {"sleep", task_sleep},         {"pool_sleep", task_pool_sleep},
                                     {"stopping", task_stopping},   {"current", task_current},
                                     {"suspend", task_suspend},     {"wake", task_wake},
                                     {NULL, NULL}};
    if (luaL_newmetatable(L, TASK_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, task_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, task_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
