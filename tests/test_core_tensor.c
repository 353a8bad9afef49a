/*
 * Tensors: shape arithmetic (numel with overflow and negative dims, shape_str, shape_equal) and
 * the storage kinds: owned (alloc, copy), borrowed (never freed by us) and mapped (munmapped on
 * free). String tensors are deep-copied and freed element by element. Run under ASan, any free of
 * memory we do not own or any leak fails the test.
 */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#define P62 (INT64_C(1) << 62)

static void numel(void)
{
    CHECK(ss_shape_numel(0, NULL) == 1);
    CHECK(ss_shape_numel(2, (int64_t[]){128, 96}) == 128 * 96);
    CHECK(ss_shape_numel(3, (int64_t[]){4, 0, 5}) == 0);
    CHECK(ss_shape_numel(1, (int64_t[]){P62}) == P62);
    CHECK(ss_shape_numel(2, (int64_t[]){P62, 2}) == -1);
    CHECK(ss_shape_numel(2, (int64_t[]){INT64_MAX, INT64_MAX}) == -1);
    CHECK(ss_shape_numel(3, (int64_t[]){INT64_C(1) << 31, INT64_C(1) << 31, 4}) == -1); /* 2^64 */
    CHECK(ss_shape_numel(2, (int64_t[]){3, -1}) == -1);
    CHECK(ss_shape_numel(2, (int64_t[]){0, -1}) == -1);
    CHECK(ss_shape_numel(1, (int64_t[]){INT64_MIN}) == -1);
    /* The answer does not depend on where the zero is (numpy also rejects both). */
    CHECK(ss_shape_numel(3, (int64_t[]){INT64_C(1) << 40, INT64_C(1) << 40, 0}) == -1);
    int64_t huge = INT64_C(1) << 40;
    CHECK(ss_shape_numel(3, (int64_t[]){huge, huge, 0}) ==
          ss_shape_numel(3, (int64_t[]){0, huge, huge}));
    CHECK(ss_shape_numel(3, (int64_t[]){huge, 0, huge}) ==
          ss_shape_numel(3, (int64_t[]){0, huge, huge}));
    /* An empty shape's other dims multiply to at most 2^32: kernels walk them (an op fuzzer's
     * [2^40, 0] input looped 2^40 times over nothing). */
    CHECK(ss_shape_numel(2, (int64_t[]){huge, 0}) == -1);
    CHECK(ss_shape_numel(3, (int64_t[]){INT64_C(1) << 16, 0, INT64_C(1) << 16}) == 0); /* 2^32 */
    CHECK(ss_shape_numel(3, (int64_t[]){(INT64_C(1) << 16) + 1, 0, INT64_C(1) << 16}) == -1);
    CHECK(ss_shape_numel(2, (int64_t[]){huge, 2}) == 2 * huge); /* real elements: 2^62 */
    ss_tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = 2;
    t.dims[0] = 6;
    t.dims[1] = 7;
    CHECK(ss_tensor_numel(&t) == 42);
}

static void shape_str_and_equal(void)
{
    char buf[64];
    CHECK(strcmp(ss_shape_str(2, (int64_t[]){128, 96}, buf, sizeof buf), "[128,96]") == 0);
    CHECK(strcmp(ss_shape_str(0, NULL, buf, sizeof buf), "[]") == 0);
    CHECK(strcmp(ss_shape_str(1, (int64_t[]){-3}, buf, sizeof buf), "[-3]") == 0);
    int64_t big[SS_MAX_DIMS];
    for (int i = 0; i < SS_MAX_DIMS; i++)
        big[i] = INT64_MIN;
    char full[8 * 21 + 3];
    ss_shape_str(SS_MAX_DIMS, big, full, sizeof full);
    CHECK(full[0] == '[' && full[strlen(full) - 1] == ']' && strlen(full) == 8 * 20 + 7 + 2);
    /* Too small a buffer: truncated, always terminated, nothing written past cap. */
    for (size_t cap = 1; cap < 12; cap++) {
        char small[16];
        memset(small, '#', sizeof small);
        ss_shape_str(3, (int64_t[]){1000, 2000, 3000}, small, cap);
        CHECK_MSG(strlen(small) < cap && small[cap] == '#', "cap %zu: \"%s\"", cap, small);
    }
    char untouched = '#';
    ss_shape_str(1, (int64_t[]){1}, &untouched, 0);
    CHECK(untouched == '#');

    CHECK(ss_shape_equal(2, (int64_t[]){2, 3}, 2, (int64_t[]){2, 3}));
    CHECK(!ss_shape_equal(2, (int64_t[]){2, 3}, 2, (int64_t[]){3, 2}));
    CHECK(!ss_shape_equal(1, (int64_t[]){6}, 2, (int64_t[]){2, 3}));
    CHECK(ss_shape_equal(0, NULL, 0, NULL));
}

static void alloc_owned(void)
{
    static const ss_dtype all[] = {SS_DT_FLOAT32, SS_DT_UINT8,   SS_DT_INT8,    SS_DT_UINT16,
                                   SS_DT_INT16,   SS_DT_INT32,   SS_DT_INT64,   SS_DT_STRING,
                                   SS_DT_BOOL,    SS_DT_FLOAT16, SS_DT_FLOAT64, SS_DT_UINT32,
                                   SS_DT_UINT64,  SS_DT_BFLOAT16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        ss_tensor t;
        CHECK_OK(ss_tensor_alloc(&t, all[i], 3, (int64_t[]){2, 3, 4}));
        CHECK(t.storage == SS_STORE_OWNED && t.dtype == all[i] && t.ndim == 3);
        CHECK(t.dims[0] == 2 && t.dims[1] == 3 && t.dims[2] == 4);
        CHECK_MSG(t.nbytes == 24 * ss_dtype_size(all[i]), "%s: %zu bytes", ss_dtype_name(all[i]),
                  t.nbytes);
        const unsigned char *b = t.data;
        size_t nonzero = 0;
        for (size_t k = 0; k < t.nbytes; k++)
            nonzero += b[k] != 0;
        CHECK_MSG(nonzero == 0, "%s: not zero-filled", ss_dtype_name(all[i]));
        ss_tensor_free(&t);
        CHECK(t.data == NULL && t.storage == SS_STORE_NONE && t.ndim == 0 && t.nbytes == 0);
        ss_tensor_free(&t); /* freeing an empty tensor is harmless */
    }
    ss_tensor t;
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_FLOAT32, 0, NULL)); /* scalar */
    CHECK(t.ndim == 0 && t.nbytes == 4 && ss_tensor_numel(&t) == 1);
    ss_tensor_free(&t);
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_FLOAT32, 2, (int64_t[]){0, 5})); /* empty */
    CHECK(t.nbytes == 0 && t.data != NULL && ss_tensor_numel(&t) == 0);
    ss_tensor_free(&t);
    ss_tensor_free(NULL);

    /* Re-allocating a freed tensor from its own shape fields (dims alias t->dims). */
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_INT16, 2, (int64_t[]){3, 5}));
    ss_tensor_free(&t);
    t.dtype = SS_DT_INT16;
    t.ndim = 2;
    t.dims[0] = 3;
    t.dims[1] = 5;
    CHECK_OK(ss_tensor_alloc(&t, t.dtype, t.ndim, t.dims));
    CHECK_MSG(t.dims[0] == 3 && t.dims[1] == 5 && t.nbytes == 30, "dims [%lld,%lld], %zu bytes",
              (long long)t.dims[0], (long long)t.dims[1], t.nbytes);
    ss_tensor_free(&t);
}

/* Every rejected shape leaves the tensor empty, so freeing it afterwards is safe. */
#define CHECK_ALLOC_FAILS(dt, ndim, dims, code_, needle)                                           \
    do {                                                                                           \
        ss_tensor t_;                                                                              \
        memset(&t_, 0xab, sizeof t_);                                                              \
        ss_status *s_ = ss_tensor_alloc(&t_, dt, ndim, dims);                                      \
        CHECK_MSG(s_ && s_->code == (code_) && strstr(s_->msg, needle), "got \"%s\"",              \
                  s_ ? s_->msg : "success");                                                       \
        CHECK(t_.data == NULL && t_.storage == SS_STORE_NONE);                                     \
        ss_status_free(s_);                                                                        \
        ss_tensor_free(&t_);                                                                       \
    } while (0)

static void alloc_rejects(void)
{
    int64_t d9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_ALLOC_FAILS(SS_DT_FLOAT32, 9, d9, SS_ERR_LIMIT, "rank 9");
    CHECK_ALLOC_FAILS(SS_DT_FLOAT32, -1, d9, SS_ERR_LIMIT, "rank -1");
    int64_t neg[] = {4, -2, 3};
    CHECK_ALLOC_FAILS(SS_DT_FLOAT32, 3, neg, SS_ERR_INVALID, "negative dim (-2 at axis 1)");
    CHECK_ALLOC_FAILS(SS_DT_FLOAT32, 3, neg, SS_ERR_INVALID, "[4,-2,3]");
    int64_t wrap64[] = {INT64_C(1) << 31, INT64_C(1) << 31, 4};
    CHECK_ALLOC_FAILS(SS_DT_UINT8, 3, wrap64, SS_ERR_LIMIT, "too many elements");
    int64_t max2[] = {INT64_MAX, 2};
    CHECK_ALLOC_FAILS(SS_DT_UINT8, 2, max2, SS_ERR_LIMIT, "[9223372036854775807,2]");
    int64_t p62[] = {P62}; /* fine as a count, but 2^64 bytes of float32 */
    CHECK_ALLOC_FAILS(SS_DT_FLOAT32, 1, p62, SS_ERR_LIMIT, "too many elements");
    int64_t zero_last[] = {INT64_C(1) << 40, INT64_C(1) << 40, 0};
    CHECK_ALLOC_FAILS(SS_DT_UINT8, 3, zero_last, SS_ERR_LIMIT, "too many elements");
    int64_t two[] = {2};
    CHECK_ALLOC_FAILS(SS_DT_UNDEFINED, 1, two, SS_ERR_INVALID, "unknown dtype 0");
    CHECK_ALLOC_FAILS((ss_dtype)14, 1, two, SS_ERR_INVALID, "unknown dtype 14");
    int64_t peta[] = {INT64_C(1) << 50}; /* representable, but no machine has it */
    CHECK_ALLOC_FAILS(SS_DT_UINT8, 1, peta, SS_ERR_NOMEM, "cannot allocate");
}

static void borrow_is_never_freed(void)
{
    float data[6] = {1, 2, 3, 4, 5, 6}; /* on the stack: ASan fails the test if we free it */
    ss_tensor t;
    CHECK_OK(ss_tensor_borrow(&t, SS_DT_FLOAT32, 2, (int64_t[]){2, 3}, data, sizeof data));
    CHECK(t.storage == SS_STORE_BORROWED && t.data == data && t.nbytes == sizeof data);
    ss_tensor copy;
    CHECK_OK(ss_tensor_copy(&copy, &t));
    CHECK(copy.storage == SS_STORE_OWNED && copy.data != data);
    CHECK(copy.nbytes == sizeof data && memcmp(copy.data, data, sizeof data) == 0);
    CHECK(ss_shape_equal(copy.ndim, copy.dims, t.ndim, t.dims) && copy.dtype == t.dtype);
    data[0] = 42; /* the copy is independent */
    CHECK(((float *)copy.data)[0] == 1);
    ss_tensor_free(&copy);
    ss_tensor_free(&t);
    CHECK(data[0] == 42 && t.data == NULL);

    ss_status *st = ss_tensor_borrow(&t, SS_DT_FLOAT32, 2, (int64_t[]){2, 3}, data, 20);
    CHECK(st && strstr(st->msg, "20 bytes") && strstr(st->msg, "needs 24"));
    CHECK(t.data == NULL && t.storage == SS_STORE_NONE);
    ss_status_free(st);
    CHECK_OK(ss_tensor_borrow(&t, SS_DT_INT64, 1, (int64_t[]){0}, NULL, 0));
    ss_tensor_free(&t);
}

static bool is_mapped(void *addr, size_t len)
{
    return msync(addr, len, MS_ASYNC) == 0 || errno != ENOMEM;
}

static void mapped_is_unmapped(void)
{
    char path[] = "/tmp/ss_core_tensor_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    unlink(path);
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)page * 2;
    CHECK(ftruncate(fd, (off_t)len) == 0);
    int32_t vals[4] = {7, -8, 9, -10};
    CHECK(pwrite(fd, vals, sizeof vals, page + 16) == (ssize_t)sizeof vals);
    void *base = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    CHECK(base != MAP_FAILED);
    if (base == MAP_FAILED) return;
    ss_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = SS_DT_INT32;
    t.ndim = 2;
    t.dims[0] = 2;
    t.dims[1] = 2;
    t.data = (char *)base + page + 16;
    t.nbytes = sizeof vals;
    t.storage = SS_STORE_MAPPED;
    t.map_base = base;
    t.map_len = len;
    ss_tensor copy;
    CHECK_OK(ss_tensor_copy(&copy, &t));
    CHECK(copy.storage == SS_STORE_OWNED && memcmp(copy.data, vals, sizeof vals) == 0);
    CHECK(is_mapped(base, len));
    ss_tensor_free(&t);
    CHECK_MSG(!is_mapped(base, len), "mapping still present after ss_tensor_free");
    CHECK(t.storage == SS_STORE_NONE && t.map_base == NULL);
    CHECK(((int32_t *)copy.data)[3] == -10);
    ss_tensor_free(&copy);
}

static void strings(void)
{
    ss_tensor t;
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_STRING, 2, (int64_t[]){2, 2}));
    CHECK(t.nbytes == 4 * sizeof(ss_string));
    ss_string *s = t.data;
    for (int i = 0; i < 4; i++)
        CHECK(s[i].len == 0); /* empty strings */
    CHECK_OK(ss_tensor_set_string(&t, 0, "hello", 5));
    CHECK_OK(ss_tensor_set_string(&t, 1, "a\0b", 3)); /* embedded NUL */
    CHECK_OK(ss_tensor_set_string(&t, 3, "", 0));
    CHECK_OK(ss_tensor_set_string(&t, 0, "replaced", 8)); /* old bytes are freed (ASan) */
    CHECK(s[0].len == 8 && strcmp(s[0].data, "replaced") == 0);
    CHECK(s[1].len == 3 && memcmp(s[1].data, "a\0b", 4) == 0); /* NUL-terminated too */
    CHECK(s[3].len == 0 && s[3].data && s[3].data[0] == 0);

    CHECK_ERR(ss_tensor_set_string(&t, 4, "x", 1), "out of range");
    CHECK_ERR(ss_tensor_set_string(&t, -1, "x", 1), "out of range");

    ss_tensor copy;
    CHECK_OK(ss_tensor_copy(&copy, &t));
    ss_string *c = copy.data;
    CHECK(copy.dtype == SS_DT_STRING && copy.ndim == 2 && copy.storage == SS_STORE_OWNED);
    for (int i = 0; i < 4; i++) {
        CHECK(c[i].len == s[i].len);
        CHECK(c[i].data != NULL && (s[i].data == NULL || c[i].data != s[i].data));
        CHECK(s[i].len == 0 || memcmp(c[i].data, s[i].data, s[i].len) == 0);
    }
    ss_tensor_free(&t);
    CHECK(memcmp(c[0].data, "replaced", 8) == 0); /* deep: survives the original */
    ss_tensor_free(&copy);

    /* Borrowed string tensors do not free their elements. */
    char word[] = "stack";
    ss_string borrowed[1] = {{5, word}};
    CHECK_OK(ss_tensor_borrow(&t, SS_DT_STRING, 1, (int64_t[]){1}, borrowed, sizeof borrowed));
    CHECK_OK(ss_tensor_copy(&copy, &t));
    CHECK(strcmp(((ss_string *)copy.data)[0].data, "stack") == 0);
    ss_tensor_free(&t);
    ss_tensor_free(&copy);

    ss_tensor f;
    CHECK_OK(ss_tensor_alloc(&f, SS_DT_FLOAT32, 1, (int64_t[]){2}));
    CHECK_ERR(ss_tensor_set_string(&f, 0, "x", 1), "in a float32 tensor");
    ss_tensor_free(&f);
}

TEST_MAIN(TEST(numel), TEST(shape_str_and_equal), TEST(alloc_owned), TEST(alloc_rejects),
          TEST(borrow_is_never_freed), TEST(mapped_is_unmapped), TEST(strings))
