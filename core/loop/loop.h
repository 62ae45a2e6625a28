/* The process event loop (libuv): thread-pool jobs, timers and termination signals.
 *
 * Blocking work (network, SQL, disk) runs on libuv's thread pool; its completion
 * callback runs on the loop thread. Nothing here knows about Lua: the task
 * scheduler in bindings/ builds coroutines on top of these primitives. */
#ifndef RTB_LOOP_H
#define RTB_LOOP_H

#ifdef __cplusplus
extern "C" {
#endif

/* Runs on a pool thread. Must not touch Lua or the loop. */
typedef void (*rtb_work_fn)(void *arg);
/* Runs on the loop thread once the work (or the timer) is done. */
typedef void (*rtb_done_fn)(void *arg);
/* Runs on the loop thread when SIGINT or SIGTERM arrives. */
typedef void (*rtb_signal_fn)(int signum, void *arg);

/* Sizes the thread pool (before any work is queued) so that many associations can
 * block at once; honours an explicit UV_THREADPOOL_SIZE. */
void rtb_loop_init(void);

/* Queues `work` on the pool, then `done` on the loop thread. 0 or a negative libuv code. */
int rtb_loop_queue_work(rtb_work_fn work, rtb_done_fn done, void *arg);

/* Calls `done` on the loop thread after `ms` milliseconds. */
int rtb_loop_after_ms(unsigned long ms, rtb_done_fn done, void *arg);

/* A wake-up another thread sends to the loop thread (a server's thread handing over a
 * request): after one or more rtb_loop_wake_send() calls, which coalesce, `done(arg)`
 * runs once on the loop thread. It does not keep the loop alive, so a server waiting
 * for requests never keeps a finished run from exiting. */
typedef struct rtb_loop_wake rtb_loop_wake;
int rtb_loop_wake_open(rtb_loop_wake **out, rtb_done_fn done, void *arg);
/* Any thread; never blocks. */
void rtb_loop_wake_send(rtb_loop_wake *w);
/* Loop thread. No callback runs afterwards; the memory is released by the loop. */
void rtb_loop_wake_close(rtb_loop_wake *w);

/* Watches SIGINT and SIGTERM without keeping the loop alive. */
int rtb_loop_watch_signals(rtb_signal_fn on_signal, void *arg);

/* Runs the loop until at least one callback ran or nothing is left to wait for.
 * Returns non-zero while there is still pending work. */
int rtb_loop_run_once(void);

/* Releases the loop's handles at exit. */
void rtb_loop_close(void);

const char *rtb_loop_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif
