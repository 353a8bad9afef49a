/*
 * Allocation-failure injection for C tests, in SQLite's manner: make the Nth allocation fail, for
 * N = 1, 2, 3, ... until a run completes without any injected failure, and require every run to
 * end in success or a clean error (SS_ERR_NOMEM, or a message naming the input) with nothing
 * leaked and no crash.
 *
 * How it works. allocfail.c defines malloc, calloc, realloc, free, posix_memalign, aligned_alloc,
 * memalign, strdup and strndup in the test executable; they forward to the next definition
 * (dlsym(RTLD_NEXT): glibc's, or ASan's in the -DSS_SANITIZE=ON build). Because the executable's
 * symbols come first, every caller in the process goes through them: our static libraries and
 * the shared ones (cJSON's default hooks, protobuf-c's default allocator, glibc's own strdup...).
 * Build a test with ss_add_allocfail_test() from tests/alloc.cmake, which compiles allocfail.c
 * into it; nothing else is needed.
 *
 * Low-level API (any thread may allocate; counters are atomic):
 *   allocfail_arm(n, flags)  from now on the nth allocation call (1 = the next one) returns NULL;
 *                            with ALLOCFAIL_PERSISTENT every call from the nth on does. n = 0
 *                            counts calls without failing any. ALLOCFAIL_CALLER_ONLY counts and
 *                            fails only the arming thread's allocations (other threads, e.g. a
 *                            logger or a server thread, allocate normally).
 *   allocfail_disarm()       stop injecting; returns the allocation calls counted since arm.
 *   allocfail_failed()       allocation calls made to fail since the last arm.
 *   allocfail_live()         blocks allocated and not yet freed, process-wide; compare before and
 *                            after an operation to find a leak (only meaningful while no other
 *                            thread allocates or frees; otherwise rely on LeakSanitizer).
 *   realloc(p, 0) and free are never failed; a failed realloc leaves p untouched.
 *
 * The loop (what a test normally calls):
 *   allocfail_case c = {.name = "load servable.json", .ctx = &files, .run = load,
 *                       .verify = same_as_clean_load, .error_needle = "cannot open"};
 *   long allocs;
 *   CHECK(allocfail_loop(&c, &allocs) == 0);
 * For each mode (transient: only the nth call fails; persistent: the nth and all later ones) and
 * n = 1, 2, ...:
 *   1. run(ctx) is called armed. It performs the operation once and returns its status (NULL on
 *      success), keeping any result in ctx. On error the operation must have released
 *      everything itself.
 *   2. Disarmed: on success verify(ctx) checks that the result is exactly what a clean run gives
 *      (a success must never be silently wrong) and frees it, returning false if it is wrong.
 *      On error a failure must have been injected in that run, and the status must have code
 *      SS_ERR_NOMEM or a message containing one of the '|'-separated texts in error_needle.
 *   3. allocfail_live() must be back where it was before run (skipped with .skip_live_check).
 * With .expect_error (bad input) the clean run must fail with that text, no run may succeed
 * (verify is never called), and an injected failure may also surface as that same error: this
 * exercises the cleanup on error paths under memory pressure.
 * The loop stops after the first run in which no allocation was failed, or after .max_runs runs
 * per mode (default 100000). It prints one line per problem, naming the case, n and mode, and
 * returns the number of bad runs; *clean_allocs gets the allocation calls of the clean run (a
 * test should require it to be > 0, or it exercised nothing). A crash (SIGSEGV, SIGABRT, or an
 * ASan report) prints the case, n and mode before the process dies. SS_ALLOCFAIL_VERBOSE=1 in
 * the environment prints every run; SS_ALLOCFAIL_FIRST=N starts each mode at run N (to debug
 * one run, say under gdb).
 *
 * A path through several threads (e.g. a request through the worker's event loop): set up
 * everything (worker, fake agents, connections) before the loop; run() submits one request and
 * waits for its reply or error, so the whole path is inside the armed window; keep the default
 * all-threads counting (ALLOCFAIL_CALLER_ONLY would only see the submitting thread). If timers or
 * other threads may allocate at the same time, n no longer names the same call from one run to
 * the next (the loop still ends: it stops at the first untouched run) and the block count can
 * move for reasons of their own: set .skip_live_check and rely on LeakSanitizer, which checks
 * the whole process at exit in the -DSS_SANITIZE=ON build, where these tests run too.
 *
 * A deterministic path that spends most of its allocations inside a library's one call (e.g.
 * protobuf-c unpacking a large model): set .sample_library (below) to fail only a sample of those.
 */
#ifndef SS_TEST_ALLOCFAIL_H
#define SS_TEST_ALLOCFAIL_H

#include "shardserve/core.h"

#include <stdbool.h>

enum {
    ALLOCFAIL_PERSISTENT = 1,  /* fail the nth allocation and every later one */
    ALLOCFAIL_CALLER_ONLY = 2, /* count and fail only the arming thread's allocations */
};

void allocfail_arm(long n, int flags);
long allocfail_disarm(void);
long allocfail_failed(void);
long allocfail_live(void);

typedef struct {
    const char *name; /* printed with every problem */
    void *ctx;        /* passed to run and verify */
    ss_status *(*run)(void *ctx);
    bool (*verify)(void *ctx);
    /* optional: after a run that failed (disarmed), whether what it left behind is right, e.g. an
     * output folder still holding the previous run's complete output; false: a bad run */
    bool (*verify_failed)(void *ctx);
    /* texts ('|' between alternatives) that an injected failure may surface as, besides
     * SS_ERR_NOMEM, e.g. "cannot open" for fopen failing; NULL: SS_ERR_NOMEM only */
    const char *error_needle;
    const char *expect_error; /* bad input: a clean run must fail with this in its message */
    int flags;                /* extra arm flags for every run, e.g. ALLOCFAIL_CALLER_ONLY */
    bool skip_live_check;
    /* only the transient mode: for paths where a persistent failure leaves a server unable to
     * recover within a run (every later allocation fails), so each run would only time out */
    bool transient_only;
    long max_runs; /* per mode; 0 = 100000 */
    /* optional: a shared library (a part of its file name, e.g. "libprotobuf-c") whose own
     * allocation calls are sampled: of each stretch of consecutive calls made from its code only
     * the first, the last and every 32nd (SS_ALLOCFAIL_STRIDE=N; 1 = all) are failed. Each
     * failure inside such a library surfaces as the same error return of its entry point, so
     * failing every one tests the library, not the caller; a case that fails them all keeps that
     * covered. Needs a deterministic run on one thread: a clean recording run first maps call n to
     * its caller. */
    const char *sample_library;
} allocfail_case;

/* Returns the number of bad runs (0 = every run clean) and how many allocation calls the clean
 * run made, in *clean_allocs when given (a test can require that it exercised something). */
int allocfail_loop(const allocfail_case *c, long *clean_allocs);

#endif
