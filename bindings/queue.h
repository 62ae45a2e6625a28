/* A blocking queue between a producer on one thread (a DICOM callback on the pool
 * or on the SCP's thread) and a consumer task on the loop. The consumer waits for
 * a batch through rtb_task_await, so neither side busy-waits and a full queue
 * slows the producer down instead of filling memory. */
#ifndef RTB_QUEUE_H
#define RTB_QUEUE_H

#include <pthread.h>
#include <stddef.h>

typedef void (*rtb_queue_free_fn)(void *item);

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    void **items;
    size_t head, count, capacity; /* ring buffer */
    int closed;                    /* producer is finished: no more items */
    int cancelled;                 /* consumer is gone: producer should stop */
    rtb_queue_free_fn free_item;
} rtb_queue;

void rtb_queue_init(rtb_queue *q, size_t capacity, rtb_queue_free_fn free_item);
/* Frees the items still queued. */
void rtb_queue_destroy(rtb_queue *q);
/* Blocks while full. Returns -1 (and frees item) once the consumer cancelled. */
int rtb_queue_push(rtb_queue *q, void *item);
void rtb_queue_close(rtb_queue *q);
void rtb_queue_cancel(rtb_queue *q);
/* Blocks until there are items or the queue is closed; moves up to max items into
 * out. Returns how many (0 = closed and empty). */
size_t rtb_queue_pop_batch(rtb_queue *q, void **out, size_t max);

#endif
