/*
 * The allocator interposition and the fail-the-Nth loop behind allocfail.h (read that first).
 *
 * The real functions are found with dlsym(RTLD_NEXT) on first use. dlsym may itself allocate, so
 * while a thread is resolving, its allocations come from a small static arena that is never
 * freed or counted. Compile this file with -fno-builtin (tests/alloc.cmake does), or gcc may turn
 * the forwarding code back into calls of the functions being defined.
 */
#define _GNU_SOURCE
#include "allocfail.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the real allocator */

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

static _Alignas(64) unsigned char arena[1 << 16];
static atomic_size_t arena_used;
static _Thread_local bool resolving;

/* Blocks carry their size in front, so realloc can move one out of the arena. */
static void *arena_alloc(size_t n)
{
    size_t need = (n + 16 + 15) & ~(size_t)15;
    size_t off = atomic_fetch_add(&arena_used, need);
    if (off + need > sizeof arena) return NULL;
    memcpy(arena + off, &n, sizeof n);
    return arena + off + 16;
}

static bool in_arena(const void *p)
{
    return (const unsigned char *)p >= arena && (const unsigned char *)p < arena + sizeof arena;
}

static void resolve(void)
{
    if (real_free) return;
    resolving = true;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    void (*f)(void *) = dlsym(RTLD_NEXT, "free");
    resolving = false;
    if (!real_malloc || !real_calloc || !real_realloc || !f || !real_posix_memalign ||
        !real_aligned_alloc || !real_memalign) {
        static const char msg[] = "allocfail: dlsym(RTLD_NEXT) found no allocator\n";
        write(2, msg, sizeof msg - 1);
        abort();
    }
    real_free = f; /* last: it marks resolution complete for other threads */
}

/* ---------------------------------------------------------------- counters */

static atomic_long seen, fail_at, n_failed, live;
static atomic_int armed_flags;
static atomic_bool armed;
static pthread_t arming_thread;

/* Sampling (allocfail_case.sample_library): while `recording`, which of the calls 1..rec_cap were
 * made from code in [lib_lo, lib_hi), the sampled library's mapped text. */
static uintptr_t lib_lo, lib_hi;
static unsigned char *rec_in_lib;
static long rec_cap;
static atomic_bool recording;

/* Count one allocation call made from `caller`; true if it must fail. */
static bool inject(const void *caller)
{
    if (!atomic_load(&armed)) return false;
    int flags = atomic_load(&armed_flags);
    if ((flags & ALLOCFAIL_CALLER_ONLY) && !pthread_equal(pthread_self(), arming_thread))
        return false;
    long k = atomic_fetch_add(&seen, 1) + 1;
    if (atomic_load(&recording) && k <= rec_cap)
        rec_in_lib[k - 1] = (uintptr_t)caller >= lib_lo && (uintptr_t)caller < lib_hi;
    long n = atomic_load(&fail_at);
    if (n <= 0 || k < n || (k > n && !(flags & ALLOCFAIL_PERSISTENT))) return false;
    atomic_fetch_add(&n_failed, 1);
    return true;
}

static void *counted(void *p)
{
    if (p) atomic_fetch_add(&live, 1);
    return p;
}

void allocfail_arm(long n, int flags)
{
    resolve();
    arming_thread = pthread_self();
    atomic_store(&seen, 0);
    atomic_store(&n_failed, 0);
    atomic_store(&fail_at, n);
    atomic_store(&armed_flags, flags);
    atomic_store(&armed, true);
}

long allocfail_disarm(void)
{
    atomic_store(&armed, false);
    return atomic_load(&seen);
}

long allocfail_failed(void)
{
    return atomic_load(&n_failed);
}

long allocfail_live(void)
{
    return atomic_load(&live);
}

/* ---------------------------------------------------------------- the interposed functions */

#define CALLER __builtin_return_address(0)

static void *malloc_from(size_t n, const void *caller)
{
    if (resolving) return arena_alloc(n);
    resolve();
    if (inject(caller)) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(real_malloc(n));
}

void *malloc(size_t n)
{
    return malloc_from(n, CALLER);
}

void *calloc(size_t count, size_t size)
{
    if (resolving) {
        if (size && count > SIZE_MAX / size) return NULL;
        return arena_alloc(count * size); /* static memory starts zeroed and is never reused */
    }
    resolve();
    if (inject(CALLER)) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(real_calloc(count, size));
}

void free(void *p)
{
    if (!p || in_arena(p)) return;
    resolve();
    atomic_fetch_sub(&live, 1);
    real_free(p);
}

void *realloc(void *p, size_t n)
{
    if (resolving || in_arena(p)) {
        void *q = resolving ? arena_alloc(n) : malloc_from(n, CALLER);
        if (q && p) {
            size_t old;
            memcpy(&old, (unsigned char *)p - 16, sizeof old);
            memcpy(q, p, old < n ? old : n);
        }
        return q;
    }
    resolve();
    if (!p) return malloc_from(n, CALLER);
    if (n == 0) { /* frees p (glibc and ASan both), so it is never failed */
        atomic_fetch_sub(&live, 1);
        return real_realloc(p, 0);
    }
    if (inject(CALLER)) {
        errno = ENOMEM;
        return NULL;
    }
    return real_realloc(p, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    resolve();
    if (inject(CALLER)) return ENOMEM;
    int rc = real_posix_memalign(out, align, n);
    if (rc == 0) counted(*out);
    return rc;
}

void *aligned_alloc(size_t align, size_t n)
{
    resolve();
    if (inject(CALLER)) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(real_aligned_alloc(align, n));
}

void *memalign(size_t align, size_t n)
{
    resolve();
    if (inject(CALLER)) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(real_memalign(align, n));
}

/* Defined here because ASan's own strdup would allocate past malloc. */
static char *strndup_from(const char *s, size_t max, const void *caller)
{
    size_t n = strnlen(s, max);
    char *d = malloc_from(n + 1, caller);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *strndup(const char *s, size_t max)
{
    return strndup_from(s, max, CALLER);
}

char *strdup(const char *s)
{
    return strndup_from(s, SIZE_MAX, CALLER);
}

/* ---------------------------------------------------------------- crash report */

static char current_run[256];

static void say_current_run(void)
{
    static const char head[] = "allocfail: died during ";
    write(2, head, sizeof head - 1);
    write(2, current_run, strnlen(current_run, sizeof current_run));
    write(2, "\n", 1);
}

static void on_crash(int sig)
{
    say_current_run();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Present when ASan's runtime is linked in (this file itself is built without ASan). */
extern void __asan_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void install_crash_report(void)
{
    if (__asan_set_death_callback) { /* keep ASan's handlers, which print the stack */
        __asan_set_death_callback(say_current_run);
        return;
    }
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], on_crash);
}

/* ---------------------------------------------------------------- the loop */

/* Does msg contain one of the '|'-separated texts in needles? */
static bool mentions(const char *msg, const char *needles)
{
    while (needles && *needles) {
        const char *bar = strchr(needles, '|');
        size_t n = bar ? (size_t)(bar - needles) : strlen(needles);
        for (const char *p = msg; n && *p; p++)
            if (!strncmp(p, needles, n)) return true;
        needles = bar ? bar + 1 : NULL;
    }
    return false;
}

/* One armed run; returns 1 if it was bad, and whether it injected anything in *injected. */
static int one_run(const allocfail_case *c, long n, int flags, bool *injected, long *calls)
{
    const char *mode = (flags & ALLOCFAIL_PERSISTENT) ? "persistent" : "transient";
    if (n > 0)
        snprintf(current_run, sizeof current_run, "'%s', allocation %ld failing (%s)", c->name, n,
                 mode);
    else
        snprintf(current_run, sizeof current_run, "'%s', no allocation failing (%s)", c->name,
                 mode);
    if (getenv("SS_ALLOCFAIL_VERBOSE")) fprintf(stderr, "allocfail: %s\n", current_run);
    long live0 = allocfail_live();
    allocfail_arm(n, flags | c->flags);
    ss_status *st = c->run(c->ctx);
    *calls = allocfail_disarm();
    *injected = allocfail_failed() > 0;
    int bad = 0;
    bool expected = st && c->expect_error && strstr(st->msg, c->expect_error);
    if (!st && c->expect_error) {
        fprintf(stderr, "allocfail: %s: succeeded, expected an error with '%s'\n", current_run,
                c->expect_error);
        bad = 1;
    } else if (!st && !c->verify(c->ctx)) {
        fprintf(stderr, "allocfail: %s: succeeded with a wrong result\n", current_run);
        bad = 1;
    } else if (st && !*injected && !expected) {
        fprintf(stderr, "allocfail: %s: failed with no failure injected: %s\n", current_run,
                st->msg);
        bad = 1;
    } else if (st && !expected && st->code != SS_ERR_NOMEM && !mentions(st->msg, c->error_needle)) {
        fprintf(stderr, "allocfail: %s: error is neither out-of-memory nor names '%s': %s (%s)\n",
                current_run, c->error_needle ? c->error_needle : "(nothing)", st->msg,
                ss_code_name(st->code));
        bad = 1;
    } else if (st && c->verify_failed && !c->verify_failed(c->ctx)) {
        fprintf(stderr, "allocfail: %s: failed (%s) and left a wrong state behind\n", current_run,
                st->msg);
        bad = 1;
    }
    ss_status_free(st);
    long leaked = allocfail_live() - live0;
    if (!c->skip_live_check && leaked) {
        fprintf(stderr, "allocfail: %s: %ld block(s) %s\n", current_run,
                leaked < 0 ? -leaked : leaked,
                leaked > 0 ? "leaked" : "freed that it did not allocate");
        bad = 1;
    }
    return bad;
}

/* ---------------------------------------------------------------- sampling a library's calls */

typedef struct {
    const char *name;
    uintptr_t lo, hi;
} lib_text;

/* dl_iterate_phdr callback: the executable segment of the first object whose name contains
 * f->name. */
static int find_lib_text(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    lib_text *f = data;
    if (!info->dlpi_name || !strstr(info->dlpi_name, f->name)) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            f->lo = info->dlpi_addr + ph->p_vaddr;
            f->hi = f->lo + ph->p_memsz;
            return 1;
        }
    }
    return 0;
}

/* A clean run that records which calls c->sample_library makes; returns 1 if it was bad. *skip
 * (malloc'd, *n_calls entries) then marks the calls not to fail: all of the library's but the
 * first, the last and every stride-th of each stretch of consecutive ones. */
static int plan_sampling(const allocfail_case *c, int flags, long stride, unsigned char **skip,
                         long *n_calls, long *n_lib)
{
    lib_text f = {.name = c->sample_library};
    if (!dl_iterate_phdr(find_lib_text, &f)) {
        fprintf(stderr, "allocfail: '%s': no loaded object's name contains '%s'\n", c->name,
                c->sample_library);
        return 1;
    }
    lib_lo = f.lo;
    lib_hi = f.hi;
    rec_cap = 1L << 22;
    rec_in_lib = calloc((size_t)rec_cap, 1);
    if (!rec_in_lib) return 1;
    bool injected;
    atomic_store(&recording, true);
    int bad = one_run(c, 0, flags, &injected, n_calls);
    atomic_store(&recording, false);
    long n = *n_calls < rec_cap ? *n_calls : rec_cap, start = 0;
    *n_lib = 0;
    for (long k = 0; k < n; k++) {
        if (!rec_in_lib[k]) continue;
        (*n_lib)++;
        if (k == 0 || !rec_in_lib[k - 1]) start = k;
        bool last = k + 1 == n || !rec_in_lib[k + 1];
        bool keep = k == start || last || (k - start) % stride == 0;
        rec_in_lib[k] = keep ? 2 : 1; /* 2: in the library, failed anyway */
    }
    for (long k = 0; k < n; k++)
        rec_in_lib[k] = rec_in_lib[k] == 1;
    *skip = rec_in_lib;
    *n_calls = n;
    rec_in_lib = NULL;
    return bad;
}

int allocfail_loop(const allocfail_case *c, long *clean_allocs)
{
    install_crash_report();
    long max = c->max_runs > 0 ? c->max_runs : 100000;
    const char *stride_env = getenv("SS_ALLOCFAIL_STRIDE");
    long stride = stride_env ? atol(stride_env) : 32;
    bool sample = c->sample_library && stride > 1;
    int bad = 0;
    for (int persistent = 0; persistent < (c->transient_only ? 1 : 2); persistent++) {
        int flags = persistent ? ALLOCFAIL_PERSISTENT : 0;
        bool injected = true;
        const char *first = getenv("SS_ALLOCFAIL_FIRST"); /* debugging: start at run N */
        long n = first ? atol(first) : 1, calls = 0, n_planned = 0, n_lib = 0, n_skipped = 0;
        unsigned char *skip = NULL;
        if (sample) bad += plan_sampling(c, flags, stride, &skip, &n_planned, &n_lib);
        if (n < 1) n = 1;
        for (; injected && n <= max; n++) {
            if (skip && n <= n_planned && skip[n - 1]) {
                n_skipped++;
                continue;
            }
            bad += one_run(c, n, flags, &injected, &calls);
        }
        if (injected) {
            fprintf(stderr, "allocfail: '%s': still failing allocations after %ld runs\n", c->name,
                    max);
            bad++;
        }
        if (sample)
            printf(
                "allocfail: '%s' (%s): %ld of %ld allocation calls are %s's own; %ld of them "
                "failed (the first and the last of each stretch, 1 in %ld of the rest), %ld not\n",
                c->name, persistent ? "persistent" : "transient", n_lib, calls, c->sample_library,
                n_lib - n_skipped, stride, n_skipped);
        free(skip);
        if (clean_allocs) *clean_allocs = calls;
    }
    snprintf(current_run, sizeof current_run, "'%s', after the loop", c->name);
    return bad;
}
