/*
 * shm backend: the ranks of one host share one segment, /dev/shm/shardserve-<session>.
 *
 * Joining (race-free): the first rank builds the whole segment under a private temporary name,
 * registers itself and publishes it with link(), which fails if the name already exists; a
 * published segment is therefore always complete. Others open it, check it was made for the same
 * configuration (fingerprint), and register (pid + process start time) in their rank's record.
 * Everyone waits, bounded, until all ranks have registered; the last one unlinks the name, so a
 * running group owns nothing in /dev/shm and a SIGKILL leaves nothing behind. A segment found
 * with a dead registered rank or with none registered is stale (a group killed while joining):
 * it is unlinked (only if the name still points at that very file) and the join starts over.
 * Sessions are named after their launcher's pid, so nobody joins such a name again: launchers
 * remove those of launchers that are gone when they start (ss_comm_shm_remove_abandoned).
 *
 * Layout (offsets computed identically by every rank from the configuration):
 *   header + one record per rank | per group: barrier words, per-member records (arrival count,
 *   posted and done op numbers, two op descriptors), per-member data slots | per ordered rank
 *   pair: a two-chunk channel.
 * A member's slot = two small halves (used alternately by consecutive ops that fit in one half,
 * so those need a single barrier) + one large area (chunks of large ops).
 *
 * Waiting: spin on sched_yield for at most ~200 us (SHARDSERVE_COMM_SPIN_US), then FUTEX_WAIT
 * (shared, not private) in slices of 20 ms; between slices the ranks being waited for are checked
 * for liveness (kill(pid,0) and /proc/<pid>/stat: gone, zombie or a different start time = dead).
 * Every wait ends by the communicator's timeout. The first rank that sees a dead or late peer
 * records the reason in the segment's abort record and wakes everyone, so all ranks fail fast with
 * the same cause.
 *
 * Ordering between ops: each op writes its descriptor in desc[seq & 1] and small data in small
 * half seq & 1 before its first barrier, and reads others' only after it. Each member records in
 * `done` the last op it is through with; an op writes its half only once every other member is
 * through with op seq - 2, the half's last user. Two ops skip the wait for everyone, so a rank
 * runs on instead of sleeping until the slowest peer arrives:
 *   - a small broadcast: the root posts its data (`posted` = seq) and goes on; members wait for
 *     the root alone;
 *   - a small allgather whose caller wants no output: the member leaves its piece and arrives at
 *     the barrier without waiting; its next barrier first waits for that one to complete (the
 *     arrival count serves one barrier at a time).
 * Large allreduce chunks give
 * each member a fixed byte range of every slot, so chunk k+1's writes never touch what chunk k's
 * readers still read; it ends with one more barrier so the next op may reuse the large areas.
 */
#include "comm_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SEG_MAGIC UINT64_C(0x314d4d4f43535353) /* "SSSCOMM1" */
#define SEG_VERSION 2
#define SMALL_HALF (64u * 1024u)   /* one half of a member's small area */
#define AR_SMALL_MAX (64u * 1024u) /* allreduce up to this size: one barrier, all sum all */
#define DEFAULT_SLOT (1024u * 1024u)
#define DEFAULT_CHAN (512u * 1024u)
#define SPIN_MAX 2000
#define SPIN_NS_DEFAULT 200000

/* How long a wait spins before sleeping: SHARDSERVE_COMM_SPIN_US (0..100000), default 200 us. */
static uint64_t spin_ns(void)
{
    static _Atomic int64_t ns = -1;
    int64_t v = atomic_load(&ns);
    if (v < 0) {
        const char *e = getenv("SHARDSERVE_COMM_SPIN_US");
        char *end = NULL;
        long us = e ? strtol(e, &end, 10) : -1;
        v = e && end && !*end && us >= 0 && us <= 100000 ? (int64_t)us * 1000 : SPIN_NS_DEFAULT;
        atomic_store(&ns, v);
    }
    return (uint64_t)v;
}
#define SLICE_NS 20000000
#define PAGE 4096

enum { OP_ALLREDUCE = 1, OP_ALLGATHER, OP_BROADCAST, OP_BARRIER };
enum { REC_EMPTY = 0, REC_CLAIMED = 1, REC_JOINED = 2 };

typedef struct {
    _Atomic uint32_t state;
    int32_t pid;
    uint64_t start; /* /proc/<pid>/stat starttime, 0 = unknown */
} rank_rec;

typedef struct {
    uint64_t magic;
    uint32_t version, size;
    uint64_t fingerprint, total_bytes;
    _Atomic uint32_t joined; /* futex word */
    _Atomic uint32_t join_waiters;
    _Atomic uint32_t abort_lock;
    _Atomic uint32_t aborted; /* 1 once abort_* below are written */
    int32_t abort_code;
    int32_t abort_rank;
    char abort_msg[384];
    rank_rec ranks[];
} seg_hdr;

typedef struct {
    _Atomic uint32_t count; /* arrivals at the current barrier */
    char pad0[60];
    _Atomic uint32_t gen; /* futex word: completed barriers */
    _Atomic uint32_t waiters;
    char pad1[56];
} grp_hdr;

typedef struct {
    uint32_t op, dtype;
    uint64_t a, b, c;
} op_desc;

typedef struct {
    _Atomic uint32_t arrived; /* number of the last barrier this member arrived at */
    _Atomic uint32_t posted;  /* futex word: the last op this member posted as a broadcast root */
    _Atomic uint32_t posted_waiters;
    _Atomic uint32_t
        done; /* futex word: the last op whose shared data this member is through with */
    _Atomic uint32_t done_waiters;
    uint32_t pad0;
    op_desc desc[2];
    char pad1[128 - 24 - 2 * sizeof(op_desc)];
} member_rec;
_Static_assert(sizeof(member_rec) == 128, "member records are two cache lines");

typedef struct {
    uint64_t total, off, len;
} chunk_hdr;

typedef struct {
    _Atomic uint32_t sent; /* futex word: chunks posted by the sender */
    _Atomic uint32_t sent_waiters;
    char pad0[56];
    _Atomic uint32_t acked; /* futex word: chunks consumed by the receiver */
    _Atomic uint32_t acked_waiters;
    char pad1[56];
    _Atomic uint32_t error; /* 1: a size mismatch poisoned this channel */
    uint32_t pad2;
    uint64_t err_sent, err_expected;
    chunk_hdr chunk[2];
    char pad3[128 - 24 - 2 * sizeof(chunk_hdr)];
} chan_hdr;

typedef struct {
    grp_hdr *h;
    member_rec *m;
    uint8_t *data;
    uint32_t nbar; /* barriers done by this rank in this group */
    uint32_t seq;  /* ops done by this rank in this group */
    /* This rank arrived at barrier nbar without waiting for it (arrive_only); the group's gen
     * was pending_gen then. Its next barrier first waits for that one to complete. */
    bool pending;
    uint32_t pending_gen;
    const char *pending_what;
} grp_local;

typedef struct {
    char session[128];
    char name[160];
    char path[192];
    int fd;
    uint8_t *base;
    size_t total;
    seg_hdr *hdr;
    size_t slot_bytes, stride, chan_bytes, chan_stride;
    size_t hdr_bytes;
    size_t *grp_off;
    uint8_t *chans;
    grp_local *g;
    bool registered;
} shm_impl;

typedef struct {
    const char *what;
    const ss_comm_group *g; /* collective: who must arrive */
    uint32_t bar;
    int peer; /* p2p: world rank waited for, else -1 */
    size_t nbytes;
    _Atomic uint32_t *errword;
    bool long_wait;  /* peers are busy copying: sleep at once instead of spinning */
    bool peer_reads; /* p2p-style: the peer has yet to finish reading op `bar` of group g */
} wait_ctx;

/* ---------------------------------------------------------------- processes and futexes */

static uint64_t proc_start_time(int pid, char *state)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
    if (!p || p[1] != ' ') return 0;
    p += 2;
    if (state) *state = *p;
    /* fields after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime(22) */
    for (int field = 3; field < 22 && *p; field++) {
        p = strchr(p, ' ');
        if (!p) return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

/* false only when we are sure: no such process, a zombie, or a different process with its pid. */
static bool pid_alive(int32_t pid, uint64_t start)
{
    if (pid <= 0) return true;
    if (kill(pid, 0) != 0 && errno == ESRCH) return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    if (access(path, F_OK) != 0) return errno != ENOENT;
    char state = 0;
    uint64_t st = proc_start_time(pid, &state);
    if (state == 'Z' || state == 'X' || state == 'x') return false;
    if (start && st && st != start) return false;
    return true;
}

static long futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (void *)w, op, val, ts, NULL, 0);
}

static void wake_all(_Atomic uint32_t *w)
{
    futex(w, FUTEX_WAKE, INT_MAX, NULL);
}

/* After the store to *w: the fence keeps the load of *waiters from passing that store (x86 lets
 * a load overtake an earlier store to another address: a sleeper could have counted itself in
 * and seen the old value, and sleep a whole slice). */
static void wake_if_waiting(_Atomic uint32_t *w, _Atomic uint32_t *waiters)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(waiters)) wake_all(w);
}

static void sleep_on(_Atomic uint32_t *w, _Atomic uint32_t *waiters, uint32_t old, int64_t ns)
{
    if (ns <= 0) return;
    if (ns > SLICE_NS) ns = SLICE_NS;
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    atomic_fetch_add(waiters, 1);
    futex(w, FUTEX_WAIT, old, &ts);
    atomic_fetch_sub(waiters, 1);
}

/* ---------------------------------------------------------------- layout */

static shm_impl *impl(ss_comm *c)
{
    return c->impl;
}

static size_t align_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

static uint8_t *small_half(shm_impl *s, grp_local *gl, int member, uint32_t seq)
{
    return gl->data + (size_t)member * s->stride + (seq & 1u) * SMALL_HALF;
}

static uint8_t *large_area(shm_impl *s, grp_local *gl, int member)
{
    return gl->data + (size_t)member * s->stride + 2 * SMALL_HALF;
}

static chan_hdr *chan(ss_comm *c, int src, int dst)
{
    shm_impl *s = impl(c);
    return (chan_hdr *)(s->chans + ((size_t)src * (size_t)c->size + (size_t)dst) * s->chan_stride);
}

static uint8_t *chan_data(ss_comm *c, chan_hdr *ch, uint32_t k)
{
    return (uint8_t *)ch + sizeof(chan_hdr) + (k & 1u) * (impl(c)->chan_bytes / 2);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * UINT64_C(1099511628211);
    return h;
}

static void compute_layout(ss_comm *c, shm_impl *s, uint64_t *fingerprint)
{
    s->stride = 2 * SMALL_HALF + s->slot_bytes;
    s->chan_stride = sizeof(chan_hdr) + s->chan_bytes;
    s->hdr_bytes = align_up(sizeof(seg_hdr) + (size_t)c->size * sizeof(rank_rec), PAGE);
    size_t off = s->hdr_bytes;
    uint64_t h = UINT64_C(1469598103934665603);
    uint32_t v[4] = {SEG_VERSION, (uint32_t)c->size, (uint32_t)s->slot_bytes,
                     (uint32_t)s->chan_bytes};
    h = fnv(h, v, sizeof v);
    for (int i = 0; i < c->ngroups; i++) {
        const ss_comm_group *g = &c->groups[i];
        s->grp_off[i] = off;
        off += align_up(sizeof(grp_hdr) + (size_t)g->n * sizeof(member_rec), PAGE);
        off += (size_t)g->n * s->stride;
        h = fnv(h, g->name, strlen(g->name) + 1);
        h = fnv(h, g->members, (size_t)g->n * sizeof(int));
    }
    s->grp_off[c->ngroups] = off; /* channels */
    off += (size_t)c->size * (size_t)c->size * s->chan_stride;
    s->total = align_up(off, PAGE);
    *fingerprint = h;
}

static void bind_layout(ss_comm *c, shm_impl *s)
{
    s->hdr = (seg_hdr *)s->base;
    for (int i = 0; i < c->ngroups; i++) {
        grp_local *gl = &s->g[i];
        gl->h = (grp_hdr *)(s->base + s->grp_off[i]);
        gl->m = (member_rec *)(gl->h + 1);
        gl->data = s->base + s->grp_off[i] +
                   align_up(sizeof(grp_hdr) + (size_t)c->groups[i].n * sizeof(member_rec), PAGE);
    }
    s->chans = s->base + s->grp_off[c->ngroups];
}

/* ---------------------------------------------------------------- abort and waiting */

static void wake_everyone(ss_comm *c)
{
    shm_impl *s = impl(c);
    wake_all(&s->hdr->joined);
    for (int i = 0; i < c->ngroups; i++) {
        wake_all(&s->g[i].h->gen);
        for (int j = 0; j < c->groups[i].n; j++) {
            wake_all(&s->g[i].m[j].posted);
            wake_all(&s->g[i].m[j].done);
        }
    }
    for (int a = 0; a < c->size; a++)
        for (int b = 0; b < c->size; b++) {
            chan_hdr *ch = chan(c, a, b);
            wake_all(&ch->sent);
            wake_all(&ch->acked);
        }
}

/* Record the first fatal error in the segment (so peers report the same cause) and return it. */
static ss_status *fail(ss_comm *c, int culprit, ss_status *st)
{
    seg_hdr *h = impl(c)->hdr;
    uint32_t zero = 0;
    if (atomic_compare_exchange_strong(&h->abort_lock, &zero, 1)) {
        h->abort_code = (int32_t)st->code;
        h->abort_rank = culprit;
        snprintf(h->abort_msg, sizeof h->abort_msg, "%s", st->msg);
        atomic_store(&h->aborted, 1);
        wake_everyone(c);
    }
    return st;
}

static ss_status *aborted_status(ss_comm *c, const wait_ctx *w)
{
    (void)w;
    seg_hdr *h = impl(c)->hdr;
    return ss_errf((ss_code)h->abort_code, "%s", h->abort_msg);
}

/* Members of the waited-for group that have not arrived at barrier number w->bar. */
static int missing_members(ss_comm *c, const wait_ctx *w, int *out)
{
    grp_local *gl = &impl(c)->g[w->g->index];
    int n = 0;
    for (int j = 0; j < w->g->n; j++)
        if ((int32_t)(atomic_load(&gl->m[j].arrived) - w->bar) < 0) out[n++] = w->g->members[j];
    return n;
}

/* Called while *word is still `old`. A peer found dead may have done its part and exited between
 * the scan and the liveness check (it arrived, the barrier completed, it went on and exited): then
 * *word has moved on, and the wait is over, not failed. */
static ss_status *check_peers(ss_comm *c, const wait_ctx *w, _Atomic uint32_t *word, uint32_t old,
                              bool timed_out)
{
    shm_impl *s = impl(c);
    int buf[1024], *who = buf, n;
    if (w->g && !w->peer_reads) {
        if (w->g->n > 1024) return NULL;
        n = missing_members(c, w, who);
    } else {
        who[0] = w->peer;
        n = 1;
    }
    for (int i = 0; i < n; i++) {
        rank_rec *r = &s->hdr->ranks[who[i]];
        if (pid_alive(r->pid, r->start)) continue;
        if (atomic_load(word) != old || (w->errword && atomic_load(w->errword))) return NULL;
        return fail(c, who[i],
                    ss_errf(SS_ERR_UNAVAILABLE, "rank %d (pid %d) died during %s%s%s", who[i],
                            (int)r->pid, w->what, w->g ? " in group " : "",
                            w->g ? w->g->name : ""));
    }
    if (!timed_out) return NULL;
    char list[256];
    if (w->g && w->peer_reads)
        return fail(c, w->peer,
                    ss_errf(SS_ERR_TIMEOUT,
                            "rank %d was not through with op %u of group %s, whose place this "
                            "rank's %s needs, within %d ms",
                            w->peer, w->bar, w->g->name, w->what, c->timeout_ms));
    if (w->g) {
        if (n == 0) return NULL; /* everyone arrived just now */
        return fail(c, who[0],
                    ss_errf(SS_ERR_TIMEOUT,
                            "rank%s %s did not arrive at %s in group %s within %d ms",
                            n > 1 ? "s" : "", ss_comm_rank_list(who, n, list, sizeof list), w->what,
                            w->g->name, c->timeout_ms));
    }
    bool sending = !strcmp(w->what, "send");
    return fail(c, w->peer,
                ss_errf(SS_ERR_TIMEOUT, "rank %d did not %s rank %d within %d ms (%s of %zu bytes)",
                        w->peer, sending ? "receive from" : "send to", c->rank, c->timeout_ms,
                        w->what, w->nbytes));
}

/* Wait until *word != old. NULL, an error, or (errword set) NULL with *errword non-zero. */
static ss_status *wait_ne(ss_comm *c, _Atomic uint32_t *word, _Atomic uint32_t *waiters,
                          uint32_t old, const wait_ctx *w)
{
    seg_hdr *h = impl(c)->hdr;
    uint64_t t0 = ss_now_ns(), spin = spin_ns();
    for (int i = 0; i < (w->long_wait || !spin ? 0 : SPIN_MAX); i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != old) return NULL;
        if ((i & 15) == 15 && ss_now_ns() - t0 > spin) break;
        sched_yield();
    }
    uint64_t deadline = t0 + (uint64_t)c->timeout_ms * 1000000u;
    for (;;) {
        if (atomic_load_explicit(word, memory_order_acquire) != old) return NULL;
        if (w->errword && atomic_load(w->errword)) return NULL;
        if (atomic_load(&h->aborted)) return aborted_status(c, w);
        uint64_t now = ss_now_ns();
        ss_status *st = check_peers(c, w, word, old, now >= deadline);
        if (st) return st;
        if (now >= deadline) { /* everyone we waited for has arrived meanwhile */
            deadline = now + SLICE_NS;
            continue;
        }
        sleep_on(word, waiters, old, (int64_t)(deadline - now));
    }
}

/* Wait until *word has reached target (op numbers, compared as a difference: wrap-around is
 * fine); an aborted group fails at once. */
static ss_status *wait_reach(ss_comm *c, _Atomic uint32_t *word, _Atomic uint32_t *waiters,
                             uint32_t target, const wait_ctx *w)
{
    uint32_t v;
    while ((int32_t)((v = atomic_load_explicit(word, memory_order_acquire)) - target) < 0) {
        if (atomic_load(&impl(c)->hdr->aborted)) return aborted_status(c, w);
        ss_status *st = wait_ne(c, word, waiters, v, w);
        if (st) return st;
    }
    return NULL;
}

static int online_cpus(void)
{
    static int n;
    if (!n) {
        n = ss_usable_cpus();
    }
    return n;
}

/* Barriers between the chunks of large ops: when the group has more ranks than the machine has
 * cores, spinning waiters would steal the cores from the peers still copying, so they sleep. */
static bool long_wait(const ss_comm_group *g, size_t chunk_bytes)
{
    return chunk_bytes >= SMALL_HALF && g->n > online_cpus();
}

/* A member that arrived at a barrier without waiting (arrive_only) sees it complete before it
 * arrives at its next one: the arrival count is the group's, one barrier at a time. */
static ss_status *settle(ss_comm *c, const ss_comm_group *g)
{
    grp_local *gl = &impl(c)->g[g->index];
    if (!gl->pending) return NULL;
    gl->pending = false;
    wait_ctx w = {gl->pending_what, g, gl->nbar, -1, 0, NULL, false, false};
    return wait_ne(c, &gl->h->gen, &gl->h->waiters, gl->pending_gen, &w);
}

/* Arrive at the group's next barrier; wait for the others unless arrive_only (then the next
 * barrier waits for this one first). */
static ss_status *arrive(ss_comm *c, const ss_comm_group *g, const char *what, bool lw,
                         bool arrive_only)
{
    grp_local *gl = &impl(c)->g[g->index];
    ss_status *st = settle(c, g);
    if (st) return st;
    uint32_t b = ++gl->nbar;
    if (atomic_load(&impl(c)->hdr->aborted)) {
        wait_ctx w = {what, g, b, -1, 0, NULL, lw, false};
        return aborted_status(c, &w);
    }
    uint32_t gen = atomic_load(&gl->h->gen);
    atomic_store(&gl->m[g->me].arrived, b);
    if (atomic_fetch_add(&gl->h->count, 1) + 1 == (uint32_t)g->n) {
        atomic_store(&gl->h->count, 0);
        atomic_fetch_add(&gl->h->gen, 1);
        wake_if_waiting(&gl->h->gen, &gl->h->waiters);
        return NULL;
    }
    if (arrive_only) {
        gl->pending = true;
        gl->pending_gen = gen;
        gl->pending_what = what;
        return NULL;
    }
    wait_ctx w = {what, g, b, -1, 0, NULL, lw, false};
    return wait_ne(c, &gl->h->gen, &gl->h->waiters, gen, &w);
}

static ss_status *barrier_ex(ss_comm *c, const ss_comm_group *g, const char *what, bool lw)
{
    return arrive(c, g, what, lw, false);
}

static ss_status *barrier(ss_comm *c, const ss_comm_group *g, const char *what)
{
    return barrier_ex(c, g, what, false);
}

/* ---------------------------------------------------------------- op descriptors */

static const char *op_name(uint32_t op)
{
    switch (op) {
    case OP_ALLREDUCE:
        return "allreduce";
    case OP_ALLGATHER:
        return "allgather";
    case OP_BROADCAST:
        return "broadcast";
    case OP_BARRIER:
        return "barrier";
    }
    return "unknown op";
}

static const char *desc_str(const ss_comm_group *g, const op_desc *d, char *buf, size_t cap)
{
    switch (d->op) {
    case OP_ALLREDUCE:
        snprintf(buf, cap, "allreduce(%s, %llu elements)", ss_dtype_name((ss_dtype)d->dtype),
                 (unsigned long long)d->a);
        break;
    case OP_ALLGATHER:
        snprintf(buf, cap, "allgather(%llu rows of %llu bytes)", (unsigned long long)d->c,
                 (unsigned long long)d->b);
        break;
    case OP_BROADCAST:
        snprintf(buf, cap, "broadcast(%llu bytes from rank %d)", (unsigned long long)d->a,
                 d->b < (uint64_t)g->n ? g->members[d->b] : -1);
        break;
    default:
        snprintf(buf, cap, "%s", op_name(d->op));
    }
    return buf;
}

/* Before op seq writes its descriptor and small data: every other member is through with op
 * seq - 2, the last one that used them. After a barrier everyone waited at that is already so; a
 * member that only arrived (arrive_only), or a broadcast root, can get here before a slow reader.
 */
static ss_status *halves_free(ss_comm *c, const ss_comm_group *g, uint32_t seq, const char *what)
{
    grp_local *gl = &impl(c)->g[g->index];
    ss_status *st = NULL;
    for (int j = 0; j < g->n && !st; j++) {
        wait_ctx w = {what, g, seq - 2, g->members[j], 0, NULL, false, true};
        if (j != g->me) st = wait_reach(c, &gl->m[j].done, &gl->m[j].done_waiters, seq - 2, &w);
    }
    return st;
}

static ss_status *begin_op(ss_comm *c, const ss_comm_group *g, op_desc d, uint32_t *seq)
{
    grp_local *gl = &impl(c)->g[g->index];
    *seq = ++gl->seq;
    ss_status *st = halves_free(c, g, *seq, op_name(d.op));
    if (st) return st;
    gl->m[g->me].desc[*seq & 1u] = d;
    return NULL;
}

/* This member reads nothing more of op seq (its own part or the others'): they may reuse their
 * halves for op seq + 2. Called on failure too, so a failed op does not hold the group up. */
static ss_status *end_op(ss_comm *c, const ss_comm_group *g, uint32_t seq, ss_status *st)
{
    member_rec *m = &impl(c)->g[g->index].m[g->me];
    atomic_store_explicit(&m->done, seq, memory_order_release);
    wake_if_waiting(&m->done, &m->done_waiters);
    return st;
}

static bool barrierless(const op_desc *d)
{
    return d->op == OP_BROADCAST && d->a <= SMALL_HALF;
}

/* After the op's barrier (or the root's post): member j called the same op as member i. When
 * either called a small broadcast, which has no barrier, the members' barrier counts are no
 * longer in step: the mismatch then breaks the communicator (every member fails with it), where
 * others leave it working. */
static ss_status *check_desc(ss_comm *c, const ss_comm_group *g, uint32_t seq, int i, int j)
{
    grp_local *gl = &impl(c)->g[g->index];
    const op_desc *di = &gl->m[i].desc[seq & 1u], *dj = &gl->m[j].desc[seq & 1u];
    if (!memcmp(di, dj, sizeof *di)) return NULL;
    char a[128], b[128];
    ss_status *st = ss_errf(SS_ERR_INVALID, "group %s: rank %d called %s but rank %d called %s",
                            g->name, g->members[i], desc_str(g, di, a, sizeof a), g->members[j],
                            desc_str(g, dj, b, sizeof b));
    return barrierless(di) || barrierless(dj) ? fail(c, g->members[j], st) : st;
}

/* After the op's first barrier: every member must have called the same op. Same verdict on all. */
static ss_status *check_descs(ss_comm *c, const ss_comm_group *g, uint32_t seq)
{
    ss_status *st = NULL;
    for (int j = 1; j < g->n && !st; j++)
        st = check_desc(c, g, seq, 0, j);
    return st;
}

/* ---------------------------------------------------------------- collectives */

static ss_status *shm_barrier(ss_comm *c, const ss_comm_group *g)
{
    uint32_t seq;
    ss_status *st = begin_op(c, g, (op_desc){.op = OP_BARRIER}, &seq);
    if (st) return st;
    st = barrier(c, g, "barrier");
    return end_op(c, g, seq, st ? st : check_descs(c, g, seq));
}

static ss_status *allreduce_small(ss_comm *c, const ss_comm_group *g, void *buf, ss_dtype dt,
                                  size_t count, uint32_t seq)
{
    shm_impl *s = impl(c);
    grp_local *gl = &s->g[g->index];
    size_t nbytes = count * ss_dtype_size(dt);
    memcpy(small_half(s, gl, g->me, seq), buf, nbytes);
    ss_status *st = barrier(c, g, "allreduce");
    if (!st) st = check_descs(c, g, seq);
    if (st) return st;
    const void *srcs[g->n];
    for (int j = 0; j < g->n; j++)
        srcs[j] = small_half(s, gl, j, seq);
    ss_comm_reduce_sum(dt, buf, NULL, srcs, g->n, count);
    return NULL;
}

/* Each member owns the byte range [me*Q, (me+1)*Q) of every large area: it sums that range of one
 * chunk across all members (its own part straight from its buffer) and publishes the sum there. */
static ss_status *allreduce_large(ss_comm *c, const ss_comm_group *g, uint8_t *buf, ss_dtype dt,
                                  size_t count, uint32_t seq)
{
    shm_impl *s = impl(c);
    grp_local *gl = &s->g[g->index];
    size_t es = ss_dtype_size(dt);
    size_t Q = s->slot_bytes / (size_t)g->n / 64 * 64; /* bytes per member per chunk */
    size_t chunk = Q * (size_t)g->n;                   /* bytes per chunk */
    size_t nbytes = count * es, me = (size_t)g->me;
    uint8_t *mine = large_area(s, gl, g->me);
    const void *srcs[g->n];
    ss_status *st = NULL;
    bool lw = long_wait(g, chunk);
    for (size_t off = 0; off < nbytes; off += chunk) {
        size_t len = nbytes - off < chunk ? nbytes - off : chunk;
        size_t p0 = me * Q < len ? me * Q : len, p1 = (me + 1) * Q < len ? (me + 1) * Q : len;
        memcpy(mine, buf + off, p0);
        memcpy(mine + p1, buf + off + p1, len - p1);
        if ((st = barrier_ex(c, g, "allreduce", lw && off > 0))) return st;
        if (off == 0 && (st = check_descs(c, g, seq))) return st;
        if (p1 > p0) {
            for (int j = 0; j < g->n; j++)
                srcs[j] = j == g->me ? (const void *)(buf + off + p0) : large_area(s, gl, j) + p0;
            ss_comm_reduce_sum(dt, buf + off + p0, mine + p0, srcs, g->n, (p1 - p0) / es);
        }
        if ((st = barrier_ex(c, g, "allreduce", lw))) return st;
        for (int j = 0; j < g->n; j++) {
            size_t a = (size_t)j * Q, b = (size_t)(j + 1) * Q < len ? (size_t)(j + 1) * Q : len;
            if (j != g->me && a < b) memcpy(buf + off + a, large_area(s, gl, j) + a, b - a);
        }
    }
    return barrier_ex(c, g, "allreduce", lw); /* the next op may overwrite the large areas */
}

static ss_status *shm_allreduce(ss_comm *c, const ss_comm_group *g, void *buf, ss_dtype dt,
                                size_t count)
{
    uint32_t seq;
    ss_status *st =
        begin_op(c, g, (op_desc){.op = OP_ALLREDUCE, .dtype = (uint32_t)dt, .a = count}, &seq);
    if (st) return st;
    size_t nbytes = count * ss_dtype_size(dt);
    if (g->n == 1 && nbytes > AR_SMALL_MAX) { /* nothing to sum; still a matched op */
        st = barrier(c, g, "allreduce");
        st = st ? st : check_descs(c, g, seq);
    } else if (nbytes <= AR_SMALL_MAX) {
        st = allreduce_small(c, g, buf, dt, count, seq);
    } else {
        st = allreduce_large(c, g, buf, dt, count, seq);
    }
    return end_op(c, g, seq, st);
}

/* Copy bytes [off, off+len) of member j's piece (rows of `row` bytes) to their places in out. */
static void place(uint8_t *out, const uint8_t *src, int j, int n, size_t off, size_t len,
                  size_t row)
{
    while (len) {
        size_t r = off / row, col = off % row;
        size_t take = row - col < len ? row - col : len;
        memcpy(out + (r * (size_t)n + (size_t)j) * row + col, src, take);
        src += take;
        off += take;
        len -= take;
    }
}

/* out NULL: this member only contributes its piece. A small piece is then left in its half and
 * the member goes on without waiting for the others (it reads nothing of theirs). */
static ss_status *allgather(ss_comm *c, const ss_comm_group *g, const void *in, void *out,
                            size_t outer, size_t row, uint32_t seq)
{
    shm_impl *s = impl(c);
    grp_local *gl = &s->g[g->index];
    size_t piece = outer * row;
    ss_status *st;
    if (piece <= SMALL_HALF) {
        memcpy(small_half(s, gl, g->me, seq), in, piece);
        if (!out) return arrive(c, g, "allgather", false, true);
        if ((st = barrier(c, g, "allgather")) || (st = check_descs(c, g, seq))) return st;
        for (int j = 0; j < g->n; j++)
            place(out, j == g->me ? in : small_half(s, gl, j, seq), j, g->n, 0, piece, row);
        return NULL;
    }
    bool lw = long_wait(g, s->slot_bytes);
    for (size_t off = 0; off < piece; off += s->slot_bytes) {
        size_t len = piece - off < s->slot_bytes ? piece - off : s->slot_bytes;
        memcpy(large_area(s, gl, g->me), (const uint8_t *)in + off, len);
        if ((st = barrier_ex(c, g, "allgather", lw && off > 0))) return st;
        if (off == 0 && (st = check_descs(c, g, seq))) return st;
        for (int j = 0; out && j < g->n; j++)
            place(out, j == g->me ? (const uint8_t *)in + off : large_area(s, gl, j), j, g->n, off,
                  len, row);
        if ((st = barrier_ex(c, g, "allgather", lw))) return st;
    }
    return NULL;
}

static ss_status *shm_allgather(ss_comm *c, const ss_comm_group *g, const void *in, void *out,
                                size_t outer, size_t row)
{
    uint32_t seq;
    ss_status *st =
        begin_op(c, g, (op_desc){.op = OP_ALLGATHER, .a = outer * row, .b = row, .c = outer}, &seq);
    return st ? st : end_op(c, g, seq, allgather(c, g, in, out, outer, row, seq));
}

/* A small broadcast needs no barrier: the root posts its data and goes on; a member waits for
 * the root alone. (Each member's end_op tells the root when it may reuse the half.) */
static ss_status *broadcast_small(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes,
                                  int root, uint32_t seq)
{
    shm_impl *s = impl(c);
    grp_local *gl = &s->g[g->index];
    member_rec *r = &gl->m[root];
    if (g->me == root) {
        memcpy(small_half(s, gl, root, seq), buf, nbytes);
        atomic_store_explicit(&r->posted, seq, memory_order_release);
        wake_if_waiting(&r->posted, &r->posted_waiters);
        return NULL;
    }
    wait_ctx w = {"broadcast", NULL, 0, g->members[root], nbytes, NULL, false, false};
    ss_status *st = wait_reach(c, &r->posted, &r->posted_waiters, seq, &w);
    if (!st) st = check_desc(c, g, seq, root, g->me);
    if (st) return st;
    memcpy(buf, small_half(s, gl, root, seq), nbytes);
    return NULL;
}

static ss_status *broadcast(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes, int root,
                            uint32_t seq)
{
    shm_impl *s = impl(c);
    grp_local *gl = &s->g[g->index];
    bool is_root = g->me == root;
    ss_status *st;
    if (nbytes <= SMALL_HALF) return broadcast_small(c, g, buf, nbytes, root, seq);
    /* Large: the root fills every member's large area per round (n chunks per two barriers). */
    size_t round = s->slot_bytes * (size_t)g->n;
    bool lw = long_wait(g, s->slot_bytes);
    for (size_t off = 0; off < nbytes; off += round) {
        size_t len = nbytes - off < round ? nbytes - off : round;
        for (size_t k = 0; is_root && k * s->slot_bytes < len; k++) {
            size_t a = k * s->slot_bytes, b = a + s->slot_bytes < len ? a + s->slot_bytes : len;
            memcpy(large_area(s, gl, (int)k), (uint8_t *)buf + off + a, b - a);
        }
        if ((st = barrier_ex(c, g, "broadcast", lw && off > 0))) return st;
        if (off == 0 && (st = check_descs(c, g, seq))) return st;
        for (size_t k = 0; !is_root && k * s->slot_bytes < len; k++) {
            size_t a = k * s->slot_bytes, b = a + s->slot_bytes < len ? a + s->slot_bytes : len;
            memcpy((uint8_t *)buf + off + a, large_area(s, gl, (int)k), b - a);
        }
        if ((st = barrier_ex(c, g, "broadcast", lw))) return st;
    }
    return NULL;
}

static ss_status *shm_broadcast(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes,
                                int root)
{
    uint32_t seq;
    ss_status *st =
        begin_op(c, g, (op_desc){.op = OP_BROADCAST, .a = nbytes, .b = (uint64_t)root}, &seq);
    return st ? st : end_op(c, g, seq, broadcast(c, g, buf, nbytes, root, seq));
}

/* ---------------------------------------------------------------- send / recv */

static ss_status *poisoned(ss_comm *c, chan_hdr *ch, int src, int dst)
{
    return ss_errf(SS_ERR_INVALID,
                   "send/recv size mismatch: rank %d sent %llu bytes but rank %d "
                   "expected %llu; the channel from rank %d to rank %d is unusable",
                   src, (unsigned long long)ch->err_sent, dst, (unsigned long long)ch->err_expected,
                   src, dst);
}

static ss_status *shm_send(ss_comm *c, const ss_comm_group *g, const void *buf, size_t nbytes,
                           int peer)
{
    chan_hdr *ch = chan(c, c->rank, peer);
    size_t half = impl(c)->chan_bytes / 2, off = 0;
    wait_ctx w = {"send", NULL, 0, peer, nbytes, &ch->error, false, false};
    do {
        if (atomic_load(&ch->error)) return poisoned(c, ch, c->rank, peer);
        uint32_t k = atomic_load_explicit(&ch->sent, memory_order_relaxed);
        for (;;) {
            uint32_t a = atomic_load_explicit(&ch->acked, memory_order_acquire);
            if (k - a < 2) break;
            ss_status *st = wait_ne(c, &ch->acked, &ch->acked_waiters, a, &w);
            if (st) return st;
            if (atomic_load(&ch->error)) return poisoned(c, ch, c->rank, peer);
        }
        size_t len = nbytes - off < half ? nbytes - off : half;
        memcpy(chan_data(c, ch, k), (const uint8_t *)buf + off, len);
        ch->chunk[k & 1u] = (chunk_hdr){nbytes, off, len};
        atomic_store_explicit(&ch->sent, k + 1, memory_order_release);
        wake_if_waiting(&ch->sent, &ch->sent_waiters);
        off += len;
    } while (off < nbytes);
    return NULL;
}

static ss_status *shm_recv(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes, int peer)
{
    chan_hdr *ch = chan(c, peer, c->rank);
    size_t got = 0;
    bool first = true;
    wait_ctx w = {"recv", NULL, 0, peer, nbytes, NULL, false, false};
    do {
        if (atomic_load(&ch->error)) return poisoned(c, ch, peer, c->rank);
        uint32_t k = atomic_load_explicit(&ch->acked, memory_order_relaxed);
        while (atomic_load_explicit(&ch->sent, memory_order_acquire) == k) {
            ss_status *st = wait_ne(c, &ch->sent, &ch->sent_waiters, k, &w);
            if (st) return st;
        }
        chunk_hdr h = ch->chunk[k & 1u];
        if ((first && h.total != nbytes) || h.off != got || h.len > nbytes - got) {
            ch->err_sent = h.total;
            ch->err_expected = nbytes;
            atomic_store(&ch->error, 1);
            wake_all(&ch->acked);
            return poisoned(c, ch, peer, c->rank);
        }
        first = false;
        memcpy((uint8_t *)buf + got, chan_data(c, ch, k), h.len);
        got += h.len;
        atomic_store_explicit(&ch->acked, k + 1, memory_order_release);
        wake_if_waiting(&ch->acked, &ch->acked_waiters);
    } while (got < nbytes);
    return NULL;
}

/* ---------------------------------------------------------------- joining and leaving */

static bool valid_session(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > 100) return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

/* Unlink `path` only if it still names the file open as fd (never someone's newer segment). */
static void unlink_if_same(const char *path, int fd)
{
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        unlink(path);
}

static bool still_published(const char *path, int fd)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

static void unmap(shm_impl *s)
{
    if (s->base) munmap(s->base, s->total);
    if (s->fd >= 0) close(s->fd);
    s->base = NULL;
    s->hdr = NULL;
    s->fd = -1;
}

/* A segment nobody can finish joining: a registered rank is dead, or nobody is registered. */
static bool segment_stale(ss_comm *c, seg_hdr *h)
{
    int live = 0;
    for (int r = 0; r < c->size; r++) {
        uint32_t state = atomic_load(&h->ranks[r].state);
        if (state == REC_EMPTY) continue;
        if (state == REC_JOINED && !pid_alive(h->ranks[r].pid, h->ranks[r].start)) return true;
        live++;
    }
    return live == 0;
}

static void set_self(rank_rec *r)
{
    r->pid = (int32_t)getpid();
    r->start = proc_start_time((int)getpid(), NULL);
}

/* Remove temporary files of `name` left by creators that died before publishing
 * ("/dev/shm/.<name>.<pid>.<rank>.tmp" whose pid is gone). */
static void sweep_tmp(const char *name)
{
    DIR *d = opendir("/dev/shm");
    if (!d) return;
    size_t len = strlen(name);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *f = e->d_name;
        if (f[0] != '.' || strncmp(f + 1, name, len) || f[len + 1] != '.') continue;
        char *end;
        long pid = strtol(f + len + 2, &end, 10);
        if (*end != '.' || !strstr(end, ".tmp") || pid_alive((int32_t)pid, 0)) continue;
        char path[400];
        snprintf(path, sizeof path, "/dev/shm/%s", f);
        unlink(path);
    }
    closedir(d);
}

/* Every page of the segment is allocated now (tmpfs pages are otherwise taken on first touch, and
 * a full /dev/shm then kills a rank with SIGBUS in the middle of a collective): a full /dev/shm
 * becomes an error at join, naming it and the size needed. */
static ss_status *reserve_segment(int fd, const char *path, size_t total)
{
    int e = posix_fallocate(fd, 0, (off_t)total);
    if (e == 0) return NULL;
    if (e != ENOSPC)
        return ss_errf(SS_ERR_IO, "cannot size %s to %zu bytes: %s", path, total, strerror(e));
    struct statvfs vfs;
    unsigned long long avail =
        statvfs("/dev/shm", &vfs) == 0 ? (unsigned long long)vfs.f_bavail * vfs.f_frsize : 0;
    return ss_errf(SS_ERR_LIMIT,
                   "/dev/shm is full: the shared-memory segment needs %zu bytes, %llu are free "
                   "(free space there or enlarge it, e.g. docker --shm-size)",
                   total, avail);
}

/* Build a complete segment under a temporary name and publish it. 1 = published, 0 = someone
 * else published first (retry), or an error. */
static ss_status *create_segment(ss_comm *c, shm_impl *s, uint64_t fp, int *published)
{
    char tmp[224];
    snprintf(tmp, sizeof tmp, "/dev/shm/.%s.%d.%d.tmp", s->name, (int)getpid(), c->rank);
    *published = 0;
    sweep_tmp(s->name);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return ss_errf(SS_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    ss_status *st = reserve_segment(fd, tmp, s->total);
    if (st) {
        close(fd);
        unlink(tmp);
        return st;
    }
    void *base = mmap(NULL, s->total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return ss_errf(SS_ERR_IO, "cannot map %s (%zu bytes): %s", tmp, s->total, strerror(e));
    }
    seg_hdr *h = base;
    h->magic = SEG_MAGIC;
    h->version = SEG_VERSION;
    h->size = (uint32_t)c->size;
    h->fingerprint = fp;
    h->total_bytes = s->total;
    set_self(&h->ranks[c->rank]);
    atomic_store(&h->ranks[c->rank].state, REC_JOINED);
    if (link(tmp, s->path) == 0) {
        unlink(tmp);
        s->fd = fd;
        s->base = base;
        *published = 1;
        return NULL;
    }
    int e = errno;
    munmap(base, s->total);
    close(fd);
    unlink(tmp);
    if (e == EEXIST) return NULL;
    return ss_errf(SS_ERR_IO, "cannot publish %s: %s", s->path, strerror(e));
}

/* Open the published segment and register. *retry = 1 when it was stale (and removed) or vanished.
 */
static ss_status *open_segment(ss_comm *c, shm_impl *s, uint64_t fp, int *retry)
{
    *retry = 0;
    int fd = open(s->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return *retry = 1, NULL;
        return ss_errf(SS_ERR_IO, "cannot open %s: %s", s->path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (size_t)sb.st_size < sizeof(seg_hdr)) {
        close(fd);
        return ss_errf(SS_ERR_IO, "%s is not a shardserve segment (too small); remove it", s->path);
    }
    size_t len = (size_t)sb.st_size;
    void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        close(fd);
        return ss_errf(SS_ERR_IO, "cannot map %s: %s", s->path, strerror(e));
    }
    seg_hdr *h = base;
    ss_status *st = NULL;
    if (h->magic != SEG_MAGIC || h->version != SEG_VERSION) {
        st = ss_errf(SS_ERR_IO,
                     "%s is not a shardserve segment of version %d; remove it "
                     "(ss_comm_shm_cleanup)",
                     s->path, SEG_VERSION);
    } else if (h->size != (uint32_t)c->size || h->fingerprint != fp || len != s->total) {
        if (len >= s->hdr_bytes && h->size == (uint32_t)c->size && segment_stale(c, h)) {
            unlink_if_same(s->path, fd);
            *retry = 1;
        } else {
            st = ss_errf(SS_ERR_INVALID,
                         "session %s is in use by a group with a different "
                         "configuration (%u ranks; groups or sizes differ)",
                         s->session, h->size);
        }
    } else if (segment_stale(c, h)) {
        SS_INFO("comm: removing stale segment %s (its ranks are dead)", s->path);
        unlink_if_same(s->path, fd);
        *retry = 1;
    } else {
        rank_rec *r = &h->ranks[c->rank];
        uint32_t empty = REC_EMPTY;
        if (atomic_compare_exchange_strong(&r->state, &empty, REC_CLAIMED)) {
            set_self(r);
            atomic_store(&r->state, REC_JOINED);
            s->fd = fd;
            s->base = base;
            return NULL;
        }
        st = ss_errf(SS_ERR_INVALID, "rank %d of session %s is already taken by pid %d", c->rank,
                     s->session, (int)r->pid);
    }
    munmap(base, len);
    close(fd);
    return st;
}

/* Deregister (join failed); remove the name if no live rank remains registered. */
static void leave_segment(ss_comm *c, shm_impl *s)
{
    if (!s->base) return;
    seg_hdr *h = s->hdr;
    atomic_store(&h->ranks[c->rank].state, REC_EMPTY);
    atomic_fetch_sub(&h->joined, 1);
    wake_all(&h->joined);
    if (segment_stale(c, h)) unlink_if_same(s->path, s->fd);
    unmap(s);
}

/* 0 = everyone joined, 1 = our segment was unpublished under us (join again), or an error. */
static ss_status *wait_for_all(ss_comm *c, shm_impl *s, uint64_t deadline, int *rejoin)
{
    seg_hdr *h = s->hdr;
    *rejoin = 0;
    uint32_t n = atomic_fetch_add(&h->joined, 1) + 1;
    wake_all(&h->joined);
    if (n == (uint32_t)c->size) {
        unlink_if_same(s->path, s->fd); /* the name is no longer needed */
        return NULL;
    }
    for (;;) {
        uint32_t cur = atomic_load(&h->joined);
        if (cur >= (uint32_t)c->size) return NULL;
        int missing[1024], nm = 0;
        for (int r = 0; r < c->size; r++) {
            rank_rec *rr = &h->ranks[r];
            uint32_t state = atomic_load(&rr->state);
            if (state == REC_JOINED && !pid_alive(rr->pid, rr->start))
                return ss_errf(SS_ERR_UNAVAILABLE,
                               "rank %d (pid %d) died while session %s was "
                               "joining",
                               r, (int)rr->pid, s->session);
            if (state == REC_EMPTY && nm < 1024) missing[nm++] = r;
        }
        if (!still_published(s->path, s->fd)) {
            /* The last rank to join counts itself before it unlinks the name, so a complete
             * group is visible here; anything else means our segment was replaced. */
            if (atomic_load(&h->joined) >= (uint32_t)c->size) return NULL;
            return *rejoin = 1, NULL;
        }
        uint64_t now = ss_now_ns();
        if (now >= deadline) {
            char list[256];
            return ss_errf(SS_ERR_TIMEOUT, "rank%s %s did not join session %s within %d ms",
                           nm > 1 ? "s" : "", ss_comm_rank_list(missing, nm, list, sizeof list),
                           s->session, c->join_timeout_ms);
        }
        sleep_on(&h->joined, &h->join_waiters, cur, (int64_t)(deadline - now));
    }
}

static void shm_destroy(ss_comm *c)
{
    shm_impl *s = impl(c);
    if (!s) return;
    if (s->base && !s->registered) leave_segment(c, s);
    unmap(s);
    free(s->grp_off);
    free(s->g);
    free(s);
    c->impl = NULL;
}

static const ss_comm_ops shm_ops = {shm_allreduce, shm_allgather, shm_broadcast, shm_send,
                                    shm_recv,      shm_barrier,   shm_destroy};

ss_status *ss_comm_shm_open(ss_comm *c, const ss_comm_config *cfg)
{
    if (!valid_session(cfg->session))
        return ss_errf(SS_ERR_INVALID,
                       "shm session name \"%s\" is not 1..100 characters of "
                       "[A-Za-z0-9._-]",
                       cfg->session ? cfg->session : "(null)");
    if (c->size > 1024) return ss_errf(SS_ERR_LIMIT, "shm backend: %d ranks (max 1024)", c->size);
    size_t slot = cfg->slot_bytes ? cfg->slot_bytes : DEFAULT_SLOT;
    size_t chanb = cfg->chan_bytes ? cfg->chan_bytes : DEFAULT_CHAN;
    if (slot < 65536 || slot > (1u << 30) || slot % 4096 || chanb < 8192 || chanb > (1u << 30) ||
        chanb % 4096)
        return ss_errf(SS_ERR_INVALID,
                       "shm slot_bytes %zu / chan_bytes %zu must be multiples of "
                       "4096 in 64 KiB..1 GiB / 8 KiB..1 GiB",
                       slot, chanb);
    shm_impl *s = calloc(1, sizeof *s);
    if (!s) return ss_errf(SS_ERR_NOMEM, "out of memory for the shm communicator");
    c->impl = s;
    c->ops = &shm_ops;
    s->fd = -1;
    s->slot_bytes = slot;
    s->chan_bytes = chanb;
    s->grp_off = calloc((size_t)c->ngroups + 1, sizeof(size_t));
    s->g = calloc((size_t)c->ngroups, sizeof(grp_local));
    if (!s->grp_off || !s->g)
        return ss_errf(SS_ERR_NOMEM, "out of memory for the shm communicator");
    snprintf(s->session, sizeof s->session, "%s", cfg->session);
    snprintf(s->name, sizeof s->name, "shardserve-%s", cfg->session);
    snprintf(s->path, sizeof s->path, "/dev/shm/%s", s->name);
    uint64_t fp;
    compute_layout(c, s, &fp);

    uint64_t deadline = ss_now_ns() + (uint64_t)c->join_timeout_ms * 1000000u;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0 && ss_now_ns() >= deadline)
            return ss_errf(SS_ERR_TIMEOUT,
                           "could not join session %s within %d ms (segment kept "
                           "changing)",
                           cfg->session, c->join_timeout_ms);
        if (attempt > 0) usleep(1000);
        int retry = 0, published = 0, rejoin = 0;
        ss_status *st = open_segment(c, s, fp, &retry);
        if (st) return st;
        if (retry) {
            st = create_segment(c, s, fp, &published);
            if (st) return st;
            if (!published) continue;
        }
        bind_layout(c, s);
        st = wait_for_all(c, s, deadline, &rejoin);
        if (st) {
            leave_segment(c, s);
            return st;
        }
        if (rejoin) {
            leave_segment(c, s);
            continue;
        }
        s->registered = true;
        return NULL;
    }
}

/* true when the published segment at `path` is of this layout and none of its ranks is alive; its
 * size in *bytes. */
static bool abandoned(const char *path, int fd, size_t *bytes)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (size_t)sb.st_size < sizeof(seg_hdr)) return false;
    *bytes = (size_t)sb.st_size;
    size_t len = sizeof(seg_hdr) + 1024 * sizeof(rank_rec); /* the most ranks a segment has */
    if (len > *bytes) len = *bytes;
    seg_hdr *h = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED) return false;
    bool dead = h->magic == SEG_MAGIC && h->version == SEG_VERSION &&
                sizeof(seg_hdr) + h->size * sizeof(rank_rec) <= len && still_published(path, fd);
    for (uint32_t r = 0; dead && r < h->size; r++)
        if (atomic_load(&h->ranks[r].state) != REC_EMPTY &&
            pid_alive(h->ranks[r].pid, h->ranks[r].start))
            dead = false;
    munmap(h, len);
    return dead;
}

int ss_comm_shm_remove_abandoned(const char *prefix)
{
    DIR *d = opendir("/dev/shm");
    if (!d) return 0;
    size_t len = strlen(prefix);
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *session = e->d_name + strlen("shardserve-");
        if (strncmp(e->d_name, "shardserve-", strlen("shardserve-")) ||
            strncmp(session, prefix, len) || !valid_session(session))
            continue;
        char *end;
        long owner = strtol(session + len, &end, 10);
        if (end == session + len || (*end && *end != '-') || owner <= 0 || owner > INT32_MAX ||
            pid_alive((int32_t)owner, 0))
            continue;
        char path[400];
        snprintf(path, sizeof path, "/dev/shm/%s", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue;
        size_t bytes;
        if (abandoned(path, fd, &bytes)) {
            unlink_if_same(path, fd);
            sweep_tmp(e->d_name);
            SS_INFO("comm: removed %s (%.1f MB), left by ranks that are all gone", path,
                    (double)bytes / 1e6);
            removed++;
        }
        close(fd);
    }
    closedir(d);
    return removed;
}

ss_status *ss_comm_shm_cleanup(const char *session)
{
    if (!valid_session(session))
        return ss_errf(SS_ERR_INVALID, "shm session name \"%s\" is not valid",
                       session ? session : "(null)");
    char path[192];
    snprintf(path, sizeof path, "/dev/shm/shardserve-%s", session);
    sweep_tmp(path + strlen("/dev/shm/"));
    if (unlink(path) != 0 && errno != ENOENT)
        return ss_errf(SS_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    return NULL;
}
