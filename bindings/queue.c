#include "queue.h"

#include <stdlib.h>

void rtb_queue_init(rtb_queue *q, size_t capacity, rtb_queue_free_fn free_item)
{
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->changed, NULL);
    q->items = calloc(capacity, sizeof *q->items);
    q->head = q->count = 0;
    q->capacity = q->items ? capacity : 0;
    q->closed = q->cancelled = 0;
    q->free_item = free_item;
}

void rtb_queue_destroy(rtb_queue *q)
{
    while (q->count) {
        if (q->free_item)
            q->free_item(q->items[q->head]);
        q->head = (q->head + 1) % q->capacity;
        q->count--;
    }
    free(q->items);
    pthread_cond_destroy(&q->changed);
    pthread_mutex_destroy(&q->lock);
}

int rtb_queue_push(rtb_queue *q, void *item)
{
    pthread_mutex_lock(&q->lock);
    if (q->capacity == 0) {
        /* rtb_queue_init could not allocate the ring: refuse rather than wait
         * forever for room that never comes (and divide by a zero capacity). */
        pthread_mutex_unlock(&q->lock);
        if (q->free_item)
            q->free_item(item);
        return -1;
    }
    while (q->count == q->capacity && !q->cancelled)
        pthread_cond_wait(&q->changed, &q->lock);
    if (q->cancelled) {
        pthread_mutex_unlock(&q->lock);
        if (q->free_item)
            q->free_item(item);
        return -1;
    }
    q->items[(q->head + q->count) % q->capacity] = item;
    q->count++;
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

void rtb_queue_close(rtb_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->lock);
}

void rtb_queue_cancel(rtb_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->cancelled = 1;
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->lock);
}

size_t rtb_queue_pop_batch(rtb_queue *q, void **out, size_t max)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == 0 && !q->closed && !q->cancelled)
        pthread_cond_wait(&q->changed, &q->lock);
    size_t n = 0;
    while (q->count && n < max) {
        out[n++] = q->items[q->head];
        q->head = (q->head + 1) % q->capacity;
        q->count--;
    }
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->lock);
    return n;
}
