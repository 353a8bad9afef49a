/*
 * The launcher/agent liveness page (liveness.h): a memfd of one cache line per local rank, mapped
 * MAP_SHARED by the launcher and by each agent. The fd crosses exec because the child clears its
 * close-on-exec flag just before exec; the agent finds it through SHARDSERVE_AGENT_LIVENESS
 * ("FD:SLOT"), maps its own slot and closes the fd. Stamps are CLOCK_MONOTONIC, shared by all
 * processes of the host.
 */
#define _GNU_SOURCE
#include "liveness.h"

#include "shardserve/core.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define LIVENESS_ENV "SHARDSERVE_AGENT_LIVENESS"

struct ss_liveness_slot {
    _Atomic uint64_t seen_ns; /* 0: not registered yet */
    char pad[64 - sizeof(uint64_t)];
};

struct ss_liveness {
    int fd, n;
    ss_liveness_slot *slots;
};

ss_liveness *ss_liveness_create(int n)
{
    ss_liveness *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->n = n;
    l->fd = memfd_create("shardserve-agent-liveness", MFD_CLOEXEC);
    size_t bytes = (size_t)n * sizeof(ss_liveness_slot);
    if (l->fd >= 0 && ftruncate(l->fd, (off_t)bytes) == 0)
        l->slots = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
    if (l->fd < 0 || !l->slots || l->slots == MAP_FAILED) {
        if (l->fd >= 0) close(l->fd);
        free(l);
        return NULL;
    }
    return l;
}

void ss_liveness_free(ss_liveness *l)
{
    if (!l) return;
    munmap(l->slots, (size_t)l->n * sizeof(ss_liveness_slot));
    close(l->fd);
    free(l);
}

void ss_liveness_reset(ss_liveness *l)
{
    for (int i = 0; l && i < l->n; i++)
        atomic_store(&l->slots[i].seen_ns, 0);
}

void ss_liveness_pass(const ss_liveness *l, int i)
{
    if (!l || i < 0 || i >= l->n) return;
    char v[32];
    snprintf(v, sizeof v, "%d:%d", l->fd, i);
    if (fcntl(l->fd, F_SETFD, 0) == 0) setenv(LIVENESS_ENV, v, 1);
}

int64_t ss_liveness_silent_ms(const ss_liveness *l, int i, uint64_t now_ns)
{
    if (!l || i < 0 || i >= l->n) return -1;
    uint64_t seen = atomic_load(&l->slots[i].seen_ns);
    if (!seen) return -1;
    return seen < now_ns ? (int64_t)((now_ns - seen) / 1000000u) : 0;
}

ss_liveness_slot *ss_liveness_attach(void)
{
    const char *v = getenv(LIVENESS_ENV);
    int fd, slot;
    if (!v || sscanf(v, "%d:%d", &fd, &slot) != 2 || fd < 0 || slot < 0 || slot > 4096) return NULL;
    unsetenv(LIVENESS_ENV); /* not for whatever this process may start */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t off = (size_t)slot * sizeof(ss_liveness_slot);
    void *map =
        mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)(off / page * page));
    close(fd);
    if (map == MAP_FAILED) {
        SS_WARN("the launcher's liveness page cannot be mapped; it will not see this rank hang");
        return NULL;
    }
    return (ss_liveness_slot *)((char *)map + off % page);
}

void ss_liveness_detach(ss_liveness_slot *s)
{
    if (!s) return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap((void *)((uintptr_t)s / page * page), page);
}

void ss_liveness_beat(ss_liveness_slot *s)
{
    if (s) atomic_store_explicit(&s->seen_ns, ss_now_ns(), memory_order_relaxed);
}
