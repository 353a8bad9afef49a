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
#define MAX_SLOTS 4096

/* One rank's line of the shared page. gen is the launcher's generation of the group that owns the
 * slot, set at each reset: an agent writes only while it matches the generation it was started
 * in, so a rank of an earlier generation that outlived it (an orphan of a killed mpirun) cannot
 * stamp for, or give its pid as, the rank that replaced it. */
typedef struct {
    _Atomic uint64_t seen_ns; /* 0: not registered yet */
    _Atomic int32_t pid;      /* the agent's, as the launcher's /proc shows it (0: none yet) */
    _Atomic uint32_t gen;
    char pad[64 - sizeof(uint64_t) - 2 * sizeof(uint32_t)];
} shared_slot;

/* The agent's handle: its line and the generation it belongs to. */
struct ss_liveness_slot {
    shared_slot *line;
    void *map;
    uint32_t gen;
};

struct ss_liveness {
    int fd, n;
    pid_t owner;    /* the launcher, whose /proc/PID/fd holds fd (not mpirun, which exports it) */
    uint64_t nonce; /* in the memfd's name: what a rank under mpirun checks it opened */
    uint32_t gen;   /* bumped by every reset */
    shared_slot *slots;
};

ss_liveness *ss_liveness_create(int n)
{
    if (n < 1 || n > MAX_SLOTS) return NULL;
    ss_liveness *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->n = n;
    l->owner = getpid();
    l->nonce = ss_now_ns() ^ ((uint64_t)getpid() << 40);
    char name[64];
    snprintf(name, sizeof name, MEMFD_NAME "-%016llx", (unsigned long long)l->nonce);
    l->fd = memfd_create(name, MFD_CLOEXEC);
    size_t bytes = (size_t)n * sizeof(shared_slot);
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
    munmap(l->slots, (size_t)l->n * sizeof(shared_slot));
    close(l->fd);
    free(l);
}

void ss_liveness_reset(ss_liveness *l)
{
    if (!l) return;
    l->gen++;
    for (int i = 0; i < l->n; i++) {
        atomic_store(&l->slots[i].gen, l->gen); /* first: an older agent stops writing */
        atomic_store(&l->slots[i].seen_ns, 0);
        atomic_store(&l->slots[i].pid, 0);
    }
}

void ss_liveness_pass(const ss_liveness *l, int i)
{
    if (!l || i < 0 || i >= l->n) return;
    char v[48];
    snprintf(v, sizeof v, "%d:%d:%u", l->fd, i, l->gen);
    if (fcntl(l->fd, F_SETFD, 0) == 0) setenv(LIVENESS_ENV, v, 1);
}

void ss_liveness_export(const ss_liveness *l)
{
    if (!l) return;
    char v[80];
    snprintf(v, sizeof v, "%d:%d:%016llx:%u", (int)l->owner, l->fd, (unsigned long long)l->nonce,
             l->gen);
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

/* Whether the link at path reads exactly want. */
static bool link_is(const char *path, const char *want)
{
    char got[128];
    ssize_t len = readlink(path, got, sizeof got - 1);
    return len >= 0 && (size_t)len == strlen(want) && !memcmp(got, want, (size_t)len);
}

/* Under mpirun: the launcher's page through /proc, as slot OMPI_COMM_WORLD_RANK; -1 without. */
static int open_mpi_page(int *slot, unsigned *gen)
{
    const char *v = getenv(LIVENESS_MPI_ENV), *r = getenv("OMPI_COMM_WORLD_RANK");
    int pid, fd;
    unsigned long long nonce;
    if (!v || !r || sscanf(v, "%d:%d:%llx:%u", &pid, &fd, &nonce, gen) != 4 ||
        sscanf(r, "%d", slot) != 1)
        return -1;
    unsetenv(LIVENESS_MPI_ENV);
    char path[64], want[96];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
    snprintf(want, sizeof want, "/memfd:" MEMFD_NAME "-%016llx (deleted)", nonce);
    if (!link_is(path, want)) {
        SS_DEBUG("no launcher liveness page at %s (another host or pid namespace)", path);
        return -1;
    }
    int own = open(path, O_RDWR | O_CLOEXEC);
    snprintf(path, sizeof path, "/proc/self/fd/%d", own);
    if (own >= 0 && !link_is(path, want)) { /* the launcher's fd changed meanwhile */
        close(own);
        return -1;
    }
    return own;
}

/* This process's pid as the /proc it opened the page through shows it (the launcher's, unless
 * this process sits in a pid namespace of its own): the pid the launcher may kill. */
static int32_t pid_in_proc(void)
{
    char buf[32];
    ssize_t len = readlink("/proc/self", buf, sizeof buf - 1);
    if (len <= 0) return 0;
    buf[len] = 0;
    return (int32_t)atoi(buf);
}

ss_liveness_slot *ss_liveness_attach(void)
{
    const char *v = getenv(LIVENESS_ENV);
    int fd = -1, slot = -1;
    unsigned gen = 0;
    if (v && sscanf(v, "%d:%d:%u", &fd, &slot, &gen) == 3)
        unsetenv(LIVENESS_ENV); /* not for whatever this process may start */
    else
        fd = open_mpi_page(&slot, &gen);
    if (fd < 0) return NULL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t off = (size_t)slot * sizeof(shared_slot);
    struct stat sb;
    void *map =
        slot >= 0 && slot < MAX_SLOTS && fstat(fd, &sb) == 0 &&
                (size_t)sb.st_size >= off + sizeof(shared_slot)
            ? mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)(off / page * page))
            : MAP_FAILED;
    close(fd);
    ss_liveness_slot *s = map == MAP_FAILED ? NULL : malloc(sizeof *s);
    if (!s) {
        if (map != MAP_FAILED) munmap(map, page);
        SS_WARN("the launcher's liveness page cannot be mapped; it will not see this rank hang");
        return NULL;
    }
    *s = (ss_liveness_slot){(shared_slot *)((char *)map + off % page), map, gen};
    if (atomic_load(&s->line->gen) != gen) { /* started for a generation that is over */
        ss_liveness_detach(s);
        return NULL;
    }
    atomic_store(&s->line->pid, pid_in_proc());
    return s;
}

void ss_liveness_detach(ss_liveness_slot *s)
{
    if (!s) return;
    munmap(s->map, (size_t)sysconf(_SC_PAGESIZE));
    free(s);
}

void ss_liveness_beat(ss_liveness_slot *s)
{
    if (!s) return;
    /* read the stamp before the generation, and replace only that stamp: a reset (generation,
     * then stamp 0) between the two makes the exchange fail, so a rank of an earlier generation
     * never stamps the slot of the rank that replaced it once it had stamped its own */
    uint64_t seen = atomic_load(&s->line->seen_ns);
    if (atomic_load(&s->line->gen) == s->gen)
        atomic_compare_exchange_strong(&s->line->seen_ns, &seen, ss_now_ns());
}
