/*
 * workq (workq.h): a mutex-guarded FIFO of jobs and the threads that run them. A job runs on
 * exactly one thread; free() lets the threads empty the queue before they exit, so a job's owner
 * may count on every pushed job having run. The threads run at a lower priority (nice +WORKQ_NICE
 * for the thread alone): on a busy machine the network threads that answer health checks get the
 * CPU first, the bulk decoding what is left.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "workq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WORKQ_NICE 5

typedef struct job {
    struct job *next;
    ss_workq_fn fn;
    void *arg;
} job;

struct ss_workq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    bool closing;
    pthread_t *threads;
    int nthreads;
    char name[16];
};

static void *workq_main(void *arg)
{
    ss_workq *q = arg;
    pthread_setname_np(pthread_self(), q->name);
    id_t tid = (id_t)syscall(SYS_gettid);
    setpriority(PRIO_PROCESS, tid, getpriority(PRIO_PROCESS, tid) + WORKQ_NICE);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->closing)
            pthread_cond_wait(&q->cv, &q->mu);
        job *j = q->head;
        if (!j) break; /* closing and empty */
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

ss_status *ss_workq_new(int threads, const char *name, ss_workq **out)
{
    *out = NULL;
    if (threads < 1) threads = 1;
    ss_workq *q = calloc(1, sizeof *q);
    if (q) q->threads = calloc((size_t)threads, sizeof *q->threads);
    if (!q || !q->threads) {
        free(q);
        return ss_errf(SS_ERR_NOMEM, "cannot allocate the %s work queue", name);
    }
    snprintf(q->name, sizeof q->name, "%s", name);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&q->threads[i], NULL, workq_main, q) != 0) break;
        q->nthreads++;
    }
    if (!q->nthreads) {
        ss_workq_free(q);
        return ss_errf(SS_ERR_NOMEM, "cannot start the %s threads", name);
    }
    *out = q;
    return NULL;
}

bool ss_workq_push(ss_workq *q, ss_workq_fn fn, void *arg)
{
    job *j = malloc(sizeof *j);
    if (!j) return false;
    *j = (job){.fn = fn, .arg = arg};
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return true;
}

void ss_workq_free(ss_workq *q)
{
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->closing = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q->threads);
    free(q);
}
