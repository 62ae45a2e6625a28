/* libuv adapter: one process-wide loop (the default loop). */
#include "loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

/* DICOM associations block a pool thread each for the whole operation; libuv's default
 * of 4 threads would cap a run at 4 associations (and queue everything else behind
 * them), so a larger pool is the default. */
#define RTB_DEFAULT_POOL_SIZE "32"

typedef struct {
    uv_work_t req;
    rtb_work_fn work;
    rtb_done_fn done;
    void *arg;
} work_req;

typedef struct {
    uv_timer_t timer;
    rtb_done_fn done;
    void *arg;
} timer_req;

static uv_signal_t sigint_handle, sigterm_handle;
static int signals_watched;
static rtb_signal_fn signal_cb;
static void *signal_arg;

void rtb_loop_init(void)
{
    setenv("UV_THREADPOOL_SIZE", RTB_DEFAULT_POOL_SIZE, 0 /* keep the user's value */);
}

static void work_run(uv_work_t *req)
{
    work_req *w = req->data;
    w->work(w->arg);
}

static void work_after(uv_work_t *req, int status)
{
    work_req *w = req->data;
    (void)status; /* work is never cancelled: a job always reports back */
    rtb_done_fn done = w->done;
    void *arg = w->arg;
    free(w);
    done(arg);
}

int rtb_loop_queue_work(rtb_work_fn work, rtb_done_fn done, void *arg)
{
    work_req *w = malloc(sizeof *w);
    if (!w)
        return UV_ENOMEM;
    w->req.data = w;
    w->work = work;
    w->done = done;
    w->arg = arg;
    int rc = uv_queue_work(uv_default_loop(), &w->req, work_run, work_after);
    if (rc < 0)
        free(w);
    return rc;
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void timer_fired(uv_timer_t *handle)
{
    timer_req *t = handle->data;
    rtb_done_fn done = t->done;
    void *arg = t->arg;
    uv_close((uv_handle_t *)&t->timer, timer_closed);
    done(arg);
}

int rtb_loop_after_ms(unsigned long ms, rtb_done_fn done, void *arg)
{
    timer_req *t = malloc(sizeof *t);
    if (!t)
        return UV_ENOMEM;
    int rc = uv_timer_init(uv_default_loop(), &t->timer);
    if (rc < 0) {
        free(t);
        return rc;
    }
    t->timer.data = t;
    t->done = done;
    t->arg = arg;
    return uv_timer_start(&t->timer, timer_fired, ms, 0);
}

struct rtb_loop_wake {
    uv_async_t async;
    rtb_done_fn done;
    void *arg;
};

static void wake_fired(uv_async_t *handle)
{
    rtb_loop_wake *w = handle->data;
    w->done(w->arg);
}

int rtb_loop_wake_open(rtb_loop_wake **out, rtb_done_fn done, void *arg)
{
    rtb_loop_wake *w = malloc(sizeof *w);
    if (!w)
        return UV_ENOMEM;
    int rc = uv_async_init(uv_default_loop(), &w->async, wake_fired);
    if (rc < 0) {
        free(w);
        return rc;
    }
    w->async.data = w;
    w->done = done;
    w->arg = arg;
    uv_unref((uv_handle_t *)&w->async);
    *out = w;
    return 0;
}

void rtb_loop_wake_send(rtb_loop_wake *w)
{
    uv_async_send(&w->async);
}

static void wake_closed(uv_handle_t *h)
{
    free(h->data);
}

void rtb_loop_wake_close(rtb_loop_wake *w)
{
    if (!uv_is_closing((uv_handle_t *)&w->async))
        uv_close((uv_handle_t *)&w->async, wake_closed);
}

static void signal_fired(uv_signal_t *handle, int signum)
{
    if (signal_cb)
        signal_cb(signum, signal_arg);
}

int rtb_loop_watch_signals(rtb_signal_fn on_signal, void *arg)
{
    signal_cb = on_signal;
    signal_arg = arg;
    if (signals_watched)
        return 0;
    uv_loop_t *loop = uv_default_loop();
    int rc = uv_signal_init(loop, &sigint_handle);
    if (rc == 0)
        rc = uv_signal_start(&sigint_handle, signal_fired, SIGINT);
    if (rc == 0)
        rc = uv_signal_init(loop, &sigterm_handle);
    if (rc == 0)
        rc = uv_signal_start(&sigterm_handle, signal_fired, SIGTERM);
    if (rc < 0)
        return rc;
    /* Watching for signals must not keep an otherwise finished run alive. */
    uv_unref((uv_handle_t *)&sigint_handle);
    uv_unref((uv_handle_t *)&sigterm_handle);
    signals_watched = 1;
    return 0;
}

int rtb_loop_run_once(void)
{
    return uv_run(uv_default_loop(), UV_RUN_ONCE);
}

static void close_any(uv_handle_t *h, void *arg)
{
    /* Timers not fired yet (a sleep, a grace period the run did not need) are ours
     * alone (rtb_loop_after_ms) and own their memory. */
    if (!uv_is_closing(h))
        uv_close(h, h->type == UV_TIMER ? timer_closed : NULL);
}

void rtb_loop_close(void)
{
    uv_loop_t *loop = uv_default_loop();
    uv_walk(loop, close_any, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

const char *rtb_loop_strerror(int code)
{
    return uv_strerror(code);
}
