/*
 * Counts the allocations our code makes, for tests that prove a run allocates nothing: link the
 * test with -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc and read alloc_count before
 * and after. Include it once per test binary.
 */
#ifndef SS_TEST_ALLOC_COUNT_H
#define SS_TEST_ALLOC_COUNT_H

#include <stddef.h>

static volatile int alloc_count;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n)
{
    __atomic_add_fetch(&alloc_count, 1, __ATOMIC_RELAXED);
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m)
{
    __atomic_add_fetch(&alloc_count, 1, __ATOMIC_RELAXED);
    return __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n)
{
    __atomic_add_fetch(&alloc_count, 1, __ATOMIC_RELAXED);
    return __real_realloc(p, n);
}

#endif
