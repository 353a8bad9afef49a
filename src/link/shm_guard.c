/*
 * shm_guard: a client may shrink (ftruncate) its shared-memory object at any moment, and a touch
 * of a mapped page past the object's new end is SIGBUS — in an agent's kernels, in serve's copy of
 * an output, in any thread. Mappings of memory someone else controls are therefore "guarded"
 * here: a SIGBUS whose address lies in one is answered, inside the handler, by mapping anonymous
 * zero pages over the whole guarded range (MAP_FIXED) and marking it lost, so the faulting access
 * completes, the computation runs to its end on zeros, and whoever used the range asks
 * ss_link_shm_lost afterwards and fails the request naming the object (libwayland-server guards
 * client pools the same way). A SIGBUS anywhere else is not ours: the previous disposition is put
 * back and the access faults again, as it would have without this file.
 *
 * The handler reads a fixed table of slots through atomics only (no lock, no allocation); slots
 * are claimed and released under a mutex by ordinary code. Nothing costs anything until a fault.
 */
#include "link_internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_SLOTS 1024

typedef struct {
    _Atomic uintptr_t base; /* 0 = free */
    _Atomic size_t len;
    atomic_bool lost;
    char key[LINK_SHM_KEY_MAX];
} guard_slot;

static guard_slot slots[GUARD_SLOTS];
static _Atomic int slots_top; /* slots at or past this index are free: scans stop there */
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static struct sigaction previous;

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    uintptr_t a = (uintptr_t)info->si_addr;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    int top = atomic_load(&slots_top);
    for (int i = 0; i < top; i++) {
        uintptr_t base = atomic_load(&slots[i].base);
        size_t len = atomic_load(&slots[i].len);
        if (!base || a < base || a - base >= len) continue;
        uintptr_t start = base / page * page;
        void *m = mmap((void *)start, len + (base - start), PROT_READ | PROT_WRITE,
                       MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m != MAP_FAILED) {
            atomic_store(&slots[i].lost, true);
            return; /* the access is retried on zero pages */
        }
    }
    (void)sig;
    sigaction(SIGBUS, &previous, NULL); /* not client memory: fault again, as without us */
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous);
}

ss_status *ss_link_shm_guard(const void *base, size_t len, const char *key)
{
    if (!base || !len) return NULL;
    pthread_once(&install_once, install);
    pthread_mutex_lock(&slots_mu);
    int free_slot = -1;
    for (int i = 0; i < GUARD_SLOTS && free_slot < 0; i++)
        if (!atomic_load(&slots[i].base)) free_slot = i;
    if (free_slot >= 0) {
        guard_slot *s = &slots[free_slot];
        snprintf(s->key, sizeof s->key, "%s", key ? key : "");
        atomic_store(&s->lost, false);
        atomic_store(&s->len, len);
        atomic_store(&s->base, (uintptr_t)base); /* published last: the handler sees it whole */
        if (free_slot >= atomic_load(&slots_top)) atomic_store(&slots_top, free_slot + 1);
    }
    pthread_mutex_unlock(&slots_mu);
    if (free_slot < 0)
        return ss_errf(SS_ERR_LIMIT, "more than %d shared memory mappings guarded at once",
                       GUARD_SLOTS);
    return NULL;
}

void ss_link_shm_unguard(const void *base)
{
    if (!base) return;
    pthread_mutex_lock(&slots_mu);
    int top = atomic_load(&slots_top);
    for (int i = 0; i < top; i++)
        if (atomic_load(&slots[i].base) == (uintptr_t)base) {
            atomic_store(&slots[i].base, 0);
            break;
        }
    while (top > 0 && !atomic_load(&slots[top - 1].base))
        top--;
    atomic_store(&slots_top, top);
    pthread_mutex_unlock(&slots_mu);
}

bool ss_link_shm_lost(const void *p, size_t n, char *key, size_t cap)
{
    uintptr_t a = (uintptr_t)p;
    bool lost = false;
    if (!p) return false;
    pthread_mutex_lock(&slots_mu);
    int top = atomic_load(&slots_top);
    for (int i = 0; i < top && !lost; i++) {
        uintptr_t base = atomic_load(&slots[i].base);
        size_t len = atomic_load(&slots[i].len);
        if (!base || a >= base + len || a + (n ? n : 1) <= base) continue;
        lost = atomic_load(&slots[i].lost);
        if (lost && key && cap) snprintf(key, cap, "%s", slots[i].key);
    }
    pthread_mutex_unlock(&slots_mu);
    return lost;
}
