/*
 * The checks every comm backend must pass, run inside each rank (forked by test_comm_shm, or
 * started by mpirun for test_comm_mpi). Every expected value is computed locally from a formula
 * of (rank, index), so a wrong sum, a misplaced allgather piece or a stale chunk shows up as a
 * CHECK failure with the first bad index. groups: "half0"/"half1" (first/second half of the
 * world) and "even"/"odd" (parity of the world rank) — singletons when there are 2 ranks.
 */
#ifndef SS_TEST_COMM_COMMON_H
#define SS_TEST_COMM_COMMON_H

#include "check.h"
#include "shardserve/comm.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define COMM_MAX_RANKS 64

/* In a forked rank: die with the test driver, so a driver killed by CTest's timeout leaves no
 * rank behind. */
static inline void comm_test_die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(99);
}

/* Our mains do not use TEST_MAIN; keep check.h's argument globals referenced. */
static inline void comm_test_args(int argc, char **argv)
{
    test_argc = argc;
    test_argv = argv;
}

typedef struct {
    int half0[COMM_MAX_RANKS], half1[COMM_MAX_RANKS], even[COMM_MAX_RANKS], odd[COMM_MAX_RANKS];
    ss_comm_group_def defs[4];
} comm_test_groups;

/* Group definitions for a world of n ranks (n >= 2). */
static inline void comm_test_groups_init(comm_test_groups *t, int n)
{
    int h = n / 2, ne = 0, no = 0;
    for (int r = 0; r < n; r++) {
        if (r < h)
            t->half0[r] = r;
        else
            t->half1[r - h] = r;
        if (r % 2)
            t->odd[no++] = r;
        else
            t->even[ne++] = r;
    }
    t->defs[0] = (ss_comm_group_def){"half0", t->half0, h};
    t->defs[1] = (ss_comm_group_def){"half1", t->half1, n - h};
    t->defs[2] = (ss_comm_group_def){"even", t->even, ne};
    t->defs[3] = (ss_comm_group_def){"odd", t->odd, no};
}

/* ------------------------------------------------------------------ allreduce */

static inline float ar_f32(int r, size_t k)
{
    return (float)((k % 1000) + (size_t)r * 3);
}
static inline uint16_t ar_f16(int r, size_t k)
{
    return ss_f32_to_f16((float)(k % 64) * 0.5f + (float)r);
}
static inline uint32_t ar_i32(int r, size_t k)
{
    return (uint32_t)(k * 2654435761u) ^ (uint32_t)(r * 7919);
}
static inline uint64_t ar_i64(int r, size_t k)
{
    return ((uint64_t)(r + 1) << 40) + (uint64_t)k * 12345u - 7u * (uint64_t)r;
}

static inline void fill_ar(ss_dtype dt, void *buf, int r, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        switch (dt) {
        case SS_DT_FLOAT32:
            ((float *)buf)[k] = ar_f32(r, k);
            break;
        case SS_DT_FLOAT16:
            ((uint16_t *)buf)[k] = ar_f16(r, k);
            break;
        case SS_DT_INT32:
            ((uint32_t *)buf)[k] = ar_i32(r, k);
            break;
        default:
            ((uint64_t *)buf)[k] = ar_i64(r, k);
            break;
        }
    }
}

/* First index where buf differs from the group sum, or count if none. */
static inline size_t verify_ar(ss_dtype dt, const void *buf, const ss_comm_group *g, size_t count)
{
    int n = ss_comm_group_size(g);
    for (size_t k = 0; k < count; k++) {
        float fs = 0;
        uint32_t s32 = 0;
        uint64_t s64 = 0;
        for (int j = 0; j < n; j++) {
            int r = ss_comm_group_member(g, j);
            fs += dt == SS_DT_FLOAT32 ? ar_f32(r, k) : ss_f16_to_f32(ar_f16(r, k));
            s32 += ar_i32(r, k);
            s64 += ar_i64(r, k);
        }
        bool ok = dt == SS_DT_FLOAT32   ? ((const float *)buf)[k] == fs
                  : dt == SS_DT_FLOAT16 ? ((const uint16_t *)buf)[k] == ss_f32_to_f16(fs)
                  : dt == SS_DT_INT32   ? ((const uint32_t *)buf)[k] == s32
                                        : ((const uint64_t *)buf)[k] == s64;
        if (!ok) return k;
    }
    return count;
}

static inline void check_allreduce(ss_comm *c, const ss_comm_group *g, ss_dtype dt, size_t count)
{
    void *buf = malloc(count * ss_dtype_size(dt) + 1);
    fill_ar(dt, buf, ss_comm_rank(c), count);
    CHECK_OK(ss_comm_allreduce(c, g, buf, dt, count));
    size_t bad = verify_ar(dt, buf, g, count);
    CHECK_MSG(bad == count, "rank %d: allreduce %s x%zu in %s wrong at index %zu", ss_comm_rank(c),
              ss_dtype_name(dt), count, ss_comm_group_name(g), bad);
    free(buf);
}

static inline void check_allreduce_all(ss_comm *c)
{
    const ss_comm_group *w = ss_comm_group_find(c, "world");
    static const ss_dtype dts[] = {SS_DT_FLOAT32, SS_DT_FLOAT16, SS_DT_INT32, SS_DT_INT64};
    static const size_t counts[] = {0, 1, 7, 256, 4099, 16384, 300001, 1 << 20};
    for (size_t d = 0; d < 4; d++)
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
            check_allreduce(c, w, dts[d], counts[i]);
}

/* 64 MiB of float32: 4 rounds of the (default) 1 MiB slot... times 16. */
static inline void check_allreduce_64m(ss_comm *c)
{
    size_t count = (64u << 20) / 4;
    float *buf = malloc(count * 4);
    int r = ss_comm_rank(c), n = ss_comm_size(c);
    for (size_t k = 0; k < count; k++)
        buf[k] = (float)(k % 1024) + (float)r;
    CHECK_OK(ss_comm_allreduce(c, NULL, buf, SS_DT_FLOAT32, count));
    size_t bad = count;
    for (size_t k = 0; k < count && bad == count; k++)
        if (buf[k] != (float)(n * (int)(k % 1024) + n * (n - 1) / 2)) bad = k;
    CHECK_MSG(bad == count, "rank %d: 64 MiB allreduce wrong at %zu", r, bad);
    free(buf);
}

/* Random floats: every rank must end with bitwise identical sums (compared via allgather). */
static inline void check_allreduce_identical(ss_comm *c)
{
    size_t count = 50000;
    float *buf = malloc(count * 4);
    uint64_t x = 88172645463325252ull + (uint64_t)ss_comm_rank(c);
    for (size_t k = 0; k < count; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[k] = (float)(x % 100000) / 777.0f - 50.0f;
    }
    CHECK_OK(ss_comm_allreduce(c, NULL, buf, SS_DT_FLOAT32, count));
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < count * 4; k++)
        h = (h ^ ((uint8_t *)buf)[k]) * 1099511628211ull;
    ss_tensor in, out;
    int64_t d1[1] = {1}, dn[1] = {ss_comm_size(c)};
    CHECK_OK(ss_tensor_borrow(&in, SS_DT_INT64, 1, d1, &h, 8));
    CHECK_OK(ss_tensor_alloc(&out, SS_DT_INT64, 1, dn));
    CHECK_OK(ss_comm_allgather(c, NULL, &in, 0, &out));
    for (int j = 1; j < ss_comm_size(c); j++)
        CHECK_MSG(((uint64_t *)out.data)[j] == ((uint64_t *)out.data)[0],
                  "rank %d's sum differs from rank 0's", j);
    ss_tensor_free(&out);
    free(buf);
}

/* ------------------------------------------------------------------ allgather */

static inline uint64_t ag_val(int r, size_t idx)
{
    return (uint64_t)r * 1000003u + idx;
}

static inline void check_allgather(ss_comm *c, const ss_comm_group *g, ss_dtype dt, int ndim,
                                   const int64_t *dims, int axis)
{
    int n = ss_comm_group_size(g), me = ss_comm_rank(c);
    size_t es = ss_dtype_size(dt);
    ss_tensor in, out;
    CHECK_OK(ss_tensor_alloc(&in, dt, ndim, dims));
    int64_t od[SS_MAX_DIMS];
    memcpy(od, dims, (size_t)ndim * sizeof od[0]);
    int ax = axis < 0 ? axis + ndim : axis;
    od[ax] *= n;
    CHECK_OK(ss_tensor_alloc(&out, dt, ndim, od));
    size_t numel = (size_t)ss_tensor_numel(&in);
    for (size_t i = 0; i < numel; i++) {
        uint64_t v = ag_val(me, i);
        memcpy((uint8_t *)in.data + i * es, &v, es); /* low bytes (little-endian) */
    }
    CHECK_OK(ss_comm_allgather(c, g, &in, axis, &out));
    size_t inner = 1, outer = 1;
    for (int i = 0; i < ax; i++)
        outer *= (size_t)dims[i];
    for (int i = ax; i < ndim; i++)
        inner *= (size_t)dims[i];
    size_t bad = SIZE_MAX;
    for (size_t o = 0; o < outer && bad == SIZE_MAX; o++)
        for (int j = 0; j < n && bad == SIZE_MAX; j++)
            for (size_t k = 0; k < inner; k++) {
                size_t oi = (o * (size_t)n + (size_t)j) * inner + k;
                uint64_t v = ag_val(ss_comm_group_member(g, j), o * inner + k), got = 0;
                memcpy(&got, (uint8_t *)out.data + oi * es, es);
                if (memcmp(&got, &v, es)) {
                    bad = oi;
                    break;
                }
            }
    char sb[100];
    CHECK_MSG(bad == SIZE_MAX, "rank %d: allgather %s%s axis %d in %s wrong at %zu", me,
              ss_dtype_name(dt), ss_shape_str(ndim, dims, sb, sizeof sb), axis,
              ss_comm_group_name(g), bad);
    ss_tensor_free(&in);
    ss_tensor_free(&out);
}

static inline void check_allgather_all(ss_comm *c)
{
    const ss_comm_group *w = ss_comm_group_find(c, "world");
    int64_t d2[2] = {2, 3}, d3[3] = {2, 3, 5}, big[2] = {64, 8192}, tall[2] = {600, 1000};
    check_allgather(c, w, SS_DT_FLOAT32, 2, d2, 0);
    check_allgather(c, w, SS_DT_FLOAT32, 2, d2, 1);
    check_allgather(c, w, SS_DT_INT64, 3, d3, 1);
    check_allgather(c, w, SS_DT_UINT8, 3, d3, 2);
    check_allgather(c, w, SS_DT_INT32, 3, d3, -1);
    check_allgather(c, w, SS_DT_FLOAT16, 3, d3, 0);
    check_allgather(c, w, SS_DT_FLOAT32, 2, big, 1); /* 2 MiB per rank: chunked, 32 KiB rows */
    check_allgather(c, w, SS_DT_FLOAT32, 2, big, 0);
    check_allgather(c, w, SS_DT_INT32, 2, tall, 1); /* rows of 4000 bytes cross chunk edges */
    int64_t z[2] = {0, 4};
    check_allgather(c, w, SS_DT_FLOAT32, 2, z, 1);

    ss_tensor in, out;
    int64_t d[2] = {2, 3}, bad[2] = {2, 3};
    CHECK_OK(ss_tensor_alloc(&in, SS_DT_FLOAT32, 2, d));
    CHECK_OK(ss_tensor_alloc(&out, SS_DT_FLOAT32, 2, bad));
    char needle[64];
    snprintf(needle, sizeof needle, "is float32[2,3], expected float32[%d,3] (input [2,3]",
             2 * ss_comm_size(c));
    CHECK_ERR(ss_comm_allgather(c, w, &in, 0, &out), needle);
    CHECK_ERR(ss_comm_allgather(c, w, &in, 2, &out), "axis");
    ss_tensor_free(&in);
    ss_tensor_free(&out);
}

/* ------------------------------------------------------------------ broadcast */

static inline void check_broadcast(ss_comm *c, const ss_comm_group *g, size_t nbytes, int root)
{
    uint8_t *buf = malloc(nbytes + 1);
    int me = ss_comm_rank(c);
    for (size_t i = 0; i < nbytes; i++)
        buf[i] = (uint8_t)(me == root ? (i * 31 + (size_t)root) : 0xEE);
    CHECK_OK(ss_comm_broadcast(c, g, buf, nbytes, root));
    size_t bad = nbytes;
    for (size_t i = 0; i < nbytes && bad == nbytes; i++)
        if (buf[i] != (uint8_t)(i * 31 + (size_t)root)) bad = i;
    CHECK_MSG(bad == nbytes, "rank %d: broadcast of %zu bytes from %d wrong at %zu", me, nbytes,
              root, bad);
    free(buf);
}

static inline void check_broadcast_all(ss_comm *c)
{
    const ss_comm_group *w = ss_comm_group_find(c, "world");
    int n = ss_comm_size(c);
    check_broadcast(c, w, 100, 0);
    check_broadcast(c, w, 100, n - 1);
    check_broadcast(c, w, 0, 0);
    check_broadcast(c, w, (5u << 20) + 3, 1 % n);
    check_broadcast(c, w, (17u << 20) + 1, 0);
    uint8_t b[4];
    CHECK_ERR(ss_comm_broadcast(c, w, b, 4, n), "root");
}

/* ------------------------------------------------------------------ ops that need not wait */

/* Small broadcasts (the root posts and goes on), two in a row, and allgathers some members only
 * contribute to (out NULL: they go on without waiting), with allreduces between, many rounds,
 * members delayed at random: every member that reads gets the right bytes, so nobody overwrote
 * data a slower member had yet to read. The member pattern of who only contributes walks through
 * none, some and all. */
static inline void check_ops_without_wait(ss_comm *c)
{
    int me = ss_comm_rank(c), n = ss_comm_size(c);
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(me + 1);
    int64_t d[1] = {64}, od[1] = {64 * (int64_t)n};
    ss_tensor in, out;
    CHECK_OK(ss_tensor_alloc(&in, SS_DT_INT32, 1, d));
    CHECK_OK(ss_tensor_alloc(&out, SS_DT_INT32, 1, od));
    int32_t *pin = in.data, *pout = out.data;
    uint32_t bc[2][300];
    int bad = 0;
    for (int it = 0; it < 300 && !bad; it++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (x % 3 == 0) usleep((useconds_t)(x % 400));
        for (int b = 0; b < 2; b++) {
            int root = (it + b) % n;
            for (int k = 0; k < 300; k++)
                bc[b][k] = me == root ? (uint32_t)(it * 7919 + b * 131 + k) : 0xDEADu;
            CHECK_OK(ss_comm_broadcast(c, NULL, bc[b], sizeof bc[b], root));
        }
        for (int b = 0; b < 2; b++)
            for (int k = 0; k < 300 && !bad; k++)
                if (bc[b][k] != (uint32_t)(it * 7919 + b * 131 + k)) bad = 1;
        CHECK_MSG(!bad, "rank %d: round %d's broadcasts came out wrong", me, it);
        for (int k = 0; k < 64; k++)
            pin[k] = it * 1000 + me * 64 + k;
        bool quiet = (it >> (me % 6)) & 1;
        CHECK_OK(ss_comm_allgather(c, NULL, &in, 0, quiet ? NULL : &out));
        for (int k = 0; !quiet && k < 64 * n && !bad; k++)
            if (pout[k] != it * 1000 + k) bad = 2;
        CHECK_MSG(bad != 2, "rank %d: round %d's allgather came out wrong", me, it);
        if (it % 5 == 0) {
            float one = 1;
            CHECK_OK(ss_comm_allreduce(c, NULL, &one, SS_DT_FLOAT32, 1));
            CHECK_MSG(one == (float)n, "rank %d: round %d's allreduce gave %g", me, it, one);
        }
    }
    CHECK_OK(ss_comm_barrier(c, NULL));
    ss_tensor_free(&in);
    ss_tensor_free(&out);
}

/* ------------------------------------------------------------------ send / recv */

static inline void check_ring(ss_comm *c, size_t nbytes)
{
    int me = ss_comm_rank(c), n = ss_comm_size(c);
    int next = (me + 1) % n, prev = (me + n - 1) % n;
    uint8_t *out = malloc(nbytes + 1), *in = malloc(nbytes + 1);
    for (size_t i = 0; i < nbytes; i++)
        out[i] = (uint8_t)(i * 7 + (size_t)me);
    memset(in, 0xAB, nbytes);
    for (int rep = 0; rep < 3; rep++) {
        if (me % 2 == 0) {
            CHECK_OK(ss_comm_send(c, NULL, out, nbytes, next));
            CHECK_OK(ss_comm_recv(c, NULL, in, nbytes, prev));
        } else {
            CHECK_OK(ss_comm_recv(c, NULL, in, nbytes, prev));
            CHECK_OK(ss_comm_send(c, NULL, out, nbytes, next));
        }
    }
    size_t bad = nbytes;
    for (size_t i = 0; i < nbytes && bad == nbytes; i++)
        if (in[i] != (uint8_t)(i * 7 + (size_t)prev)) bad = i;
    CHECK_MSG(bad == nbytes, "rank %d: ring recv of %zu bytes from %d wrong at %zu", me, nbytes,
              prev, bad);
    free(out);
    free(in);
}

static inline void check_p2p_errors(ss_comm *c)
{
    int me = ss_comm_rank(c);
    uint8_t b[8] = {0};
    CHECK_ERR(ss_comm_send(c, NULL, b, 8, me), "itself");
    CHECK_ERR(ss_comm_send(c, NULL, b, 8, ss_comm_size(c)), "not a member");
}

/* ------------------------------------------------------------------ groups */

static inline void check_groups(ss_comm *c)
{
    int me = ss_comm_rank(c), n = ss_comm_size(c);
    CHECK(ss_comm_group_find(c, "world") != NULL);
    CHECK(ss_comm_group_find(c, "nope") == NULL);
    const ss_comm_group *half = ss_comm_group_find(c, me < n / 2 ? "half0" : "half1");
    const ss_comm_group *other = ss_comm_group_find(c, me < n / 2 ? "half1" : "half0");
    const ss_comm_group *par = ss_comm_group_find(c, me % 2 ? "odd" : "even");
    CHECK(half && other && par);
    if (!half || !other || !par) return;
    CHECK(ss_comm_group_rank(other) == -1);
    CHECK(ss_comm_group_member(half, ss_comm_group_rank(half)) == me);
    /* The two halves run their collectives at the same time, each on its own. */
    check_allreduce(c, half, SS_DT_FLOAT32, 1000);
    check_allreduce(c, half, SS_DT_INT64, 400000);
    check_allreduce(c, par, SS_DT_INT32, 5000);
    int64_t d[2] = {3, 4};
    check_allgather(c, par, SS_DT_FLOAT32, 2, d, 1);
    check_allgather(c, half, SS_DT_INT64, 2, d, 0);
    check_broadcast(c, half, 3000, ss_comm_group_member(half, ss_comm_group_size(half) - 1));
    check_broadcast(c, par, (2u << 20) + 9, ss_comm_group_member(par, 0));
    CHECK_OK(ss_comm_barrier(c, half));
    CHECK_OK(ss_comm_barrier(c, par));
    float x = 1;
    CHECK_ERR(ss_comm_allreduce(c, other, &x, SS_DT_FLOAT32, 1), "not a member");
    CHECK_ERR(ss_comm_barrier(c, other), "not a member");
    CHECK_ERR(ss_comm_allreduce(c, NULL, &x, SS_DT_FLOAT64, 1), "float64");
}

/* Ranks disagreeing about an op get an error on every rank, and the communicator still works. */
static inline void check_mismatch(ss_comm *c, bool detects_op_mismatch)
{
    int me = ss_comm_rank(c);
    if (detects_op_mismatch) {
        float buf[16] = {0};
        CHECK_ERR(ss_comm_allreduce(c, NULL, buf, SS_DT_FLOAT32, me == 0 ? 10 : 11), "called");
        CHECK_OK(ss_comm_barrier(c, NULL));
    }
    /* Size mismatch of a send/recv pair, last because it spoils the 0 -> 1 channel. */
    uint8_t b[200] = {0};
    if (me == 0) {
        ss_status *st = ss_comm_send(c, NULL, b, 100, 1);
        ss_status_free(st); /* may or may not know yet */
    } else if (me == 1) {
        CHECK_ERR(ss_comm_recv(c, NULL, b, 200, 0), "mismatch");
    }
    CHECK_OK(ss_comm_barrier(c, NULL));
    if (me == 0 && detects_op_mismatch) CHECK_ERR(ss_comm_send(c, NULL, b, 100, 1), "mismatch");
}

/* Last, because it breaks the communicator: members disagreeing about a small broadcast (which
 * has no barrier, so their barrier counts are out of step from then on) all fail at once with the
 * mismatch, the root at its next op, rather than pairing later ops wrongly. */
static inline void check_small_broadcast_mismatch_breaks(ss_comm *c)
{
    int me = ss_comm_rank(c);
    uint8_t b[64] = {0};
    ss_status *st = ss_comm_broadcast(c, NULL, b, me == 0 ? 40 : 36, 0);
    if (me != 0) CHECK_MSG(st && strstr(st->msg, "called"), "rank %d: %s", me, st ? st->msg : "ok");
    ss_status_free(st);
    uint64_t t0 = ss_now_ns();
    st = ss_comm_barrier(c, NULL);
    CHECK_MSG(st && strstr(st->msg, "but rank"), "rank %d's next op: %s", me, st ? st->msg : "ok");
    CHECK_MSG(ss_now_ns() - t0 < 2000000000u, "rank %d's next op took %.0f ms", me,
              (double)(ss_now_ns() - t0) / 1e6);
    ss_status_free(st);
}

static inline int comm_checks_run(ss_comm *c, bool shm)
{
    check_groups(c);
    check_allreduce_all(c);
    check_allreduce_identical(c);
    check_allreduce_64m(c);
    check_allgather_all(c);
    check_broadcast_all(c);
    check_ops_without_wait(c);
    check_ring(c, 1000);
    check_ring(c, 0);
    check_ring(c, (3u << 20) + 5);
    check_p2p_errors(c);
    for (int i = 0; i < 50; i++)
        CHECK_OK(ss_comm_barrier(c, NULL));
    check_mismatch(c, shm);
    if (shm) check_small_broadcast_mismatch_breaks(c);
    return check_failures;
}

#endif
