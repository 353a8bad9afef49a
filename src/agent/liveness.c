/*
 * The launcher/agent liveness page (liveness.h): a memfd of one cache line per rank, mapped
 * MAP_SHARED by the launcher and by each agent. A local agent gets the fd across exec (the child
 * clears its close-on-exec flag just before exec) and finds it through SHARDSERVE_AGENT_LIVENESS
 * ("FD:SLOT"). A rank under mpirun is not the launcher's child and inherits no fd: it opens the
 * launcher's through /proc (SHARDSERVE_AGENT_LIVENESS_MPI, "PID:FD:NONCE", passed by mpirun -x),
 * as slot OMPI_COMM_WORLD_RANK, and only when that fd is the launcher's page by name (the nonce is
 * in the memfd's name): on another host, or in another pid namespace, /proc/PID is another
 * process or none, and the rank goes without. Either way the agent maps its own slot, writes its
 * pid there and closes the fd. Stamps are CLOCK_MONOTONIC, shared by all processes of the host.
 */
#define _GNU_SOURCE
#include "liveness.h"

#include "shardserve/core.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LIVENESS_ENV "SHARDSERVE_AGENT_LIVENESS"
#define LIVENESS_MPI_ENV "SHARDSERVE_AGENT_LIVENESS_MPI"
#define MEMFD_NAME "shardserve-agent-liveness"

struct ss_liveness_slot {
    _Atomic uint64_t seen_ns; /* 0: not registered yet */
    _Atomic int32_t pid;      /* the agent's, as it sees itself (0: none attached) */
    char pad[64 - sizeof(uint64_t) - sizeof(int32_t)];
};

struct ss_liveness {
    int fd, n;
    pid_t owner;    /* the launcher, whose /proc/PID/fd holds fd (not mpirun, which exports it) */
    uint64_t nonce; /* in the memfd's name: what a rank under mpirun checks it opened */
    ss_liveness_slot *slots;
};

ss_liveness *ss_liveness_create(int n)
{
    ss_liveness *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->n = n;
    l->owner = getpid();
    l->nonce = ss_now_ns() ^ ((uint64_t)getpid() << 40);
    char name[64];
    snprintf(name, sizeof name, MEMFD_NAME "-%016llx", (unsigned long long)l->nonce);
    l->fd = memfd_create(name, MFD_CLOEXEC);
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
    for (int i = 0; l && i < l->n; i++) {
        atomic_store(&l->slots[i].seen_ns, 0);
        atomic_store(&l->slots[i].pid, 0);
    }
}

void ss_liveness_pass(const ss_liveness *l, int i)
{
    if (!l || i < 0 || i >= l->n) return;
    char v[32];
    snprintf(v, sizeof v, "%d:%d", l->fd, i);
    if (fcntl(l->fd, F_SETFD, 0) == 0) setenv(LIVENESS_ENV, v, 1);
}

void ss_liveness_export(const ss_liveness *l)
{
    if (!l) return;
    char v[64];
    snprintf(v, sizeof v, "%d:%d:%016llx", (int)l->owner, l->fd, (unsigned long long)l->nonce);
    setenv(LIVENESS_MPI_ENV, v, 1);
}

pid_t ss_liveness_pid(const ss_liveness *l, int i)
{
    if (!l || i < 0 || i >= l->n) return 0;
    return (pid_t)atomic_load(&l->slots[i].pid);
}

int64_t ss_liveness_silent_ms(const ss_liveness *l, int i, uint64_t now_ns)
{
    if (!l || i < 0 || i >= l->n) return -1;
    uint64_t seen = atomic_load(&l->slots[i].seen_ns);
    if (!seen) return -1;
    return seen < now_ns ? (int64_t)((now_ns - seen) / 1000000u) : 0;
}

/* Under mpirun: the launcher's page through /proc, as slot OMPI_COMM_WORLD_RANK; -1 without. */
static int open_mpi_page(int *slot)
{
    const char *v = getenv(LIVENESS_MPI_ENV), *r = getenv("OMPI_COMM_WORLD_RANK");
    int pid, fd;
    unsigned long long nonce;
    if (!v || !r || sscanf(v, "%d:%d:%llx", &pid, &fd, &nonce) != 3 || sscanf(r, "%d", slot) != 1)
        return -1;
    unsetenv(LIVENESS_MPI_ENV);
    char path[64], want[96], got[96];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
    snprintf(want, sizeof want, "/memfd:" MEMFD_NAME "-%016llx (deleted)", nonce);
    ssize_t len = readlink(path, got, sizeof got - 1);
    if (len < 0 || (size_t)len != strlen(want) || memcmp(got, want, (size_t)len)) {
        SS_DEBUG("no launcher liveness page at %s (another host or pid namespace)", path);
        return -1;
    }
    return open(path, O_RDWR | O_CLOEXEC);
}

ss_liveness_slot *ss_liveness_attach(void)
{
    const char *v = getenv(LIVENESS_ENV);
    int fd = -1, slot = -1;
    if (v && sscanf(v, "%d:%d", &fd, &slot) == 2)
        unsetenv(LIVENESS_ENV); /* not for whatever this process may start */
    else
        fd = open_mpi_page(&slot);
    if (fd < 0 || slot < 0 || slot > 4096) return NULL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t off = (size_t)slot * sizeof(ss_liveness_slot);
    struct stat sb;
    void *map =
        fstat(fd, &sb) == 0 && (size_t)sb.st_size >= off + sizeof(ss_liveness_slot)
            ? mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)(off / page * page))
            : MAP_FAILED;
    close(fd);
    if (map == MAP_FAILED) {
        SS_WARN("the launcher's liveness page cannot be mapped; it will not see this rank hang");
        return NULL;
    }
    ss_liveness_slot *s = (ss_liveness_slot *)((char *)map + off % page);
    atomic_store(&s->pid, (int32_t)getpid());
    return s;
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
