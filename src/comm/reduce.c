/*
 * Sum kernels for allreduce. Elements are processed in blocks: each block of the result is
 * accumulated in a local buffer from every source in source order, then stored, so the result is
 * the same on every rank that sums the same sources (bitwise, for floats too), and the
 * destination may be one of the sources. Integers wrap (summed as unsigned); float16 is
 * accumulated in float32 and rounded once at the end.
 */
#include "comm_internal.h"

#include <string.h>

#define BLOCK 512

static void sum_f32(float *dst, float *dst2, const void *const *srcs, int nsrc, size_t count)
{
    float acc[BLOCK];
    for (size_t base = 0; base < count; base += BLOCK) {
        size_t n = count - base < BLOCK ? count - base : BLOCK;
        memcpy(acc, (const float *)srcs[0] + base, n * sizeof(float));
        for (int k = 1; k < nsrc; k++) {
            const float *s = (const float *)srcs[k] + base;
            if (n == BLOCK)
                for (size_t i = 0; i < BLOCK; i++)
                    acc[i] += s[i]; /* fixed trip count: vectorized */
            else
                for (size_t i = 0; i < n; i++)
                    acc[i] += s[i];
        }
        memcpy(dst + base, acc, n * sizeof(float));
        if (dst2) memcpy(dst2 + base, acc, n * sizeof(float));
    }
}

static void sum_u32(uint32_t *dst, uint32_t *dst2, const void *const *srcs, int nsrc, size_t count)
{
    uint32_t acc[BLOCK];
    for (size_t base = 0; base < count; base += BLOCK) {
        size_t n = count - base < BLOCK ? count - base : BLOCK;
        memcpy(acc, (const uint32_t *)srcs[0] + base, n * sizeof(uint32_t));
        for (int k = 1; k < nsrc; k++) {
            const uint32_t *s = (const uint32_t *)srcs[k] + base;
            if (n == BLOCK)
                for (size_t i = 0; i < BLOCK; i++)
                    acc[i] += s[i]; /* fixed trip count: vectorized */
            else
                for (size_t i = 0; i < n; i++)
                    acc[i] += s[i];
        }
        memcpy(dst + base, acc, n * sizeof(uint32_t));
        if (dst2) memcpy(dst2 + base, acc, n * sizeof(uint32_t));
    }
}

static void sum_u64(uint64_t *dst, uint64_t *dst2, const void *const *srcs, int nsrc, size_t count)
{
    uint64_t acc[BLOCK];
    for (size_t base = 0; base < count; base += BLOCK) {
        size_t n = count - base < BLOCK ? count - base : BLOCK;
        memcpy(acc, (const uint64_t *)srcs[0] + base, n * sizeof(uint64_t));
        for (int k = 1; k < nsrc; k++) {
            const uint64_t *s = (const uint64_t *)srcs[k] + base;
            if (n == BLOCK)
                for (size_t i = 0; i < BLOCK; i++)
                    acc[i] += s[i]; /* fixed trip count: vectorized */
            else
                for (size_t i = 0; i < n; i++)
                    acc[i] += s[i];
        }
        memcpy(dst + base, acc, n * sizeof(uint64_t));
        if (dst2) memcpy(dst2 + base, acc, n * sizeof(uint64_t));
    }
}

static void sum_f16(uint16_t *dst, uint16_t *dst2, const void *const *srcs, int nsrc, size_t count)
{
    float acc[BLOCK];
    for (size_t base = 0; base < count; base += BLOCK) {
        size_t n = count - base < BLOCK ? count - base : BLOCK;
        const uint16_t *s0 = (const uint16_t *)srcs[0] + base;
        for (size_t i = 0; i < n; i++)
            acc[i] = ss_f16_to_f32(s0[i]);
        for (int k = 1; k < nsrc; k++) {
            const uint16_t *s = (const uint16_t *)srcs[k] + base;
            for (size_t i = 0; i < n; i++)
                acc[i] += ss_f16_to_f32(s[i]);
        }
        for (size_t i = 0; i < n; i++) {
            uint16_t h = ss_f32_to_f16(acc[i]);
            dst[base + i] = h;
            if (dst2) dst2[base + i] = h;
        }
    }
}

void ss_comm_reduce_sum(ss_dtype dt, void *dst, void *dst2, const void *const *srcs, int nsrc,
                        size_t count)
{
    switch (dt) {
    case SS_DT_FLOAT32:
        sum_f32(dst, dst2, srcs, nsrc, count);
        break;
    case SS_DT_INT32:
        sum_u32(dst, dst2, srcs, nsrc, count);
        break;
    case SS_DT_INT64:
        sum_u64(dst, dst2, srcs, nsrc, count);
        break;
    case SS_DT_FLOAT16:
        sum_f16(dst, dst2, srcs, nsrc, count);
        break;
    default:
        break; /* the front end only lets reducible dtypes through */
    }
}
