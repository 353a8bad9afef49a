/*
 * core: the vocabulary every other module speaks.
 *
 * - ss_status: errors travel as values. A function that can fail returns `ss_status *`;
 *   NULL means success, anything else is a heap-allocated code + message that the caller
 *   either handles (logs once, frees with ss_status_free) or passes up.
 * - ss_dtype: element types, numbered as ONNX's TensorProto.DataType so that conversion from
 *   the model format is the identity.
 * - ss_tensor: dtype + shape + contiguous row-major data that is owned (freed with the tensor),
 *   borrowed (someone else's memory, valid as long as they say) or mapped (a read-only mmap of a
 *   file region, unmapped with the tensor). String tensors hold an array of ss_string.
 * - .npy read/write, leveled logging.
 *
 * core knows no graphs and no network.
 */
#ifndef SHARDSERVE_CORE_H
#define SHARDSERVE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

typedef enum {
    SS_OK = 0,
    SS_ERR_INVALID = 1,     /* bad input from a user: file, request, argument */
    SS_ERR_UNSUPPORTED = 2, /* valid, but not something we implement (op, dtype, attribute) */
    SS_ERR_IO = 3,          /* open/read/write/mmap failed */
    SS_ERR_NOMEM = 4,
    SS_ERR_TIMEOUT = 5,     /* a bounded wait ran out */
    SS_ERR_UNAVAILABLE = 6, /* a peer (rank, agent, worker) is gone */
    SS_ERR_LIMIT = 7,       /* a configured limit was exceeded */
    SS_ERR_INTERNAL = 8,    /* a bug of ours */
} ss_code;

typedef struct ss_status {
    ss_code code;
    char msg[];
} ss_status;

/* printf-style constructor. Never returns NULL (falls back to a static out-of-memory status). */
ss_status *ss_errf(ss_code code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix an existing status's message ("context: old message"); consumes `st`. */
ss_status *ss_status_wrap(ss_status *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ss_status_free(ss_status *st);
const char *ss_code_name(ss_code code);

/* ---------------------------------------------------------------- logging */

typedef enum { SS_LOG_DEBUG = 0, SS_LOG_INFO, SS_LOG_WARN, SS_LOG_ERROR, SS_LOG_OFF } ss_log_level;

void ss_log_set_level(ss_log_level level);
/* Reads SHARDSERVE_LOG (debug|info|warn|error|off); leaves the level alone if unset. */
void ss_log_init_from_env(void);
/* Prefix added to every line of this process, e.g. "agent r3". */
void ss_log_set_tag(const char *tag);
bool ss_log_enabled(ss_log_level level);
void ss_log(ss_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SS_DEBUG(...) (ss_log_enabled(SS_LOG_DEBUG) ? ss_log(SS_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define SS_INFO(...) ss_log(SS_LOG_INFO, __VA_ARGS__)
#define SS_WARN(...) ss_log(SS_LOG_WARN, __VA_ARGS__)
#define SS_ERROR(...) ss_log(SS_LOG_ERROR, __VA_ARGS__)

/* ---------------------------------------------------------------- dtypes */

typedef enum {
    SS_DT_UNDEFINED = 0,
    SS_DT_FLOAT32 = 1,
    SS_DT_UINT8 = 2,
    SS_DT_INT8 = 3,
    SS_DT_UINT16 = 4,
    SS_DT_INT16 = 5,
    SS_DT_INT32 = 6,
    SS_DT_INT64 = 7,
    SS_DT_STRING = 8,
    SS_DT_BOOL = 9,
    SS_DT_FLOAT16 = 10,
    SS_DT_FLOAT64 = 11,
    SS_DT_UINT32 = 12,
    SS_DT_UINT64 = 13,
    SS_DT_BFLOAT16 = 16,
    /* Not an ONNX element type: a runtime value that is a sequence of tensors (runtime.h,
     * ss_sequence). Its one element refers to the sequence; never valid on the wire. */
    SS_DT_SEQUENCE = 64,
} ss_dtype;

/* Bytes per element; sizeof(ss_string) for strings, 0 for unknown values. */
size_t ss_dtype_size(ss_dtype dt);
/* "float32", "int64", ... or "unknown(N)" (static storage for known names). */
const char *ss_dtype_name(ss_dtype dt);
bool ss_dtype_valid(int value);
bool ss_dtype_is_float(ss_dtype dt);
bool ss_dtype_is_int(ss_dtype dt);

float ss_f16_to_f32(uint16_t h);
uint16_t ss_f32_to_f16(float f);

/* bf16 <-> float32 (bf16 is float32's top half; rounded to nearest even, a NaN stays a quiet
 * NaN). Inline: kernels convert element by element in their inner loops. */
static inline float ss_bf16_to_f32(uint16_t h)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}

static inline uint16_t ss_f32_to_bf16(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

/* ---------------------------------------------------------------- tensors */

#define SS_MAX_DIMS 8

typedef struct {
    size_t len;
    char *data; /* owned by the tensor; NUL-terminated for convenience, may contain NULs;
                 * NULL (with len 0) for an element ss_tensor_alloc created and nobody set */
} ss_string;

typedef enum { SS_STORE_NONE = 0, SS_STORE_OWNED, SS_STORE_BORROWED, SS_STORE_MAPPED } ss_storage;

typedef struct {
    ss_dtype dtype;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    void *data;
    size_t nbytes;
    ss_storage storage;
    void *map_base; /* SS_STORE_MAPPED: the page-aligned mapping to munmap */
    size_t map_len;
} ss_tensor;

/* Element count of a shape; returns -1 on a negative dim or overflow past 2^62 (a zero dim does
 * not excuse the others overflowing, whatever its position), and for an empty shape whose other
 * dims multiply past 2^32 (kernels walk them: [2^40, 0] would be 2^40 steps of nothing). */
int64_t ss_shape_numel(int ndim, const int64_t *dims);
int64_t ss_tensor_numel(const ss_tensor *t);
/* "[128,96]" into buf (always NUL-terminated). */
const char *ss_shape_str(int ndim, const int64_t *dims, char *buf, size_t cap);
bool ss_shape_equal(int an, const int64_t *a, int bn, const int64_t *b);

/* Allocate owned, zero-filled storage for the given shape (strings: empty strings). On error (and
 * for ss_tensor_borrow too) *t is left empty, so ss_tensor_free(t) is always safe. */
ss_status *ss_tensor_alloc(ss_tensor *t, ss_dtype dt, int ndim, const int64_t *dims);
/* Describe memory owned by someone else. */
ss_status *ss_tensor_borrow(ss_tensor *t, ss_dtype dt, int ndim, const int64_t *dims, void *data,
                            size_t nbytes);
/* Deep copy (strings included) into owned storage. */
ss_status *ss_tensor_copy(ss_tensor *dst, const ss_tensor *src);
/* Release storage according to its kind and reset to an empty tensor. */
void ss_tensor_free(ss_tensor *t);
/* Set a string element (copies bytes). */
ss_status *ss_tensor_set_string(ss_tensor *t, int64_t index, const char *bytes, size_t len);
/* Element i of a numeric tensor as a double (float16/bfloat16 widened, integers converted; 0 for
 * strings and unknown dtypes): for printing and comparing outputs, not for kernels. */
double ss_tensor_elem_f64(const ss_tensor *t, int64_t i);

/* ---------------------------------------------------------------- .npy */

/* Read format 1.0/2.0/3.0, little-endian (or byte-order-free) C-order arrays of numeric and bool
 * dtypes. Clear errors for Fortran order, big-endian, object arrays and truncated files. */
ss_status *ss_npy_read(const char *path, ss_tensor *out);
ss_status *ss_npy_parse(const void *buf, size_t len, const char *what, ss_tensor *out);
ss_status *ss_npy_write(const char *path, const ss_tensor *t);

/* ---------------------------------------------------------------- small utilities */

/* Read a whole file into malloc'd memory. */
ss_status *ss_read_file(const char *path, void **data, size_t *len);
/* Monotonic clock in nanoseconds. */
uint64_t ss_now_ns(void);
/* A tensor name as one file name: bytes outside [A-Za-z0-9._-] (and a leading '.', so "." and
 * ".." stay files) become %XX, so "a/b:0" is "a%2Fb%3A0" and distinct names never collide.
 * Returns false when the escaped name (plus NUL) does not fit in cap. */
bool ss_name_to_file(const char *name, char *out, size_t cap);
/* The inverse (in place is fine); false for a malformed %XX. */
bool ss_name_from_file(const char *file, char *out, size_t cap);
/* Raise the soft RLIMIT_NOFILE to the hard limit (servers holding many connections and agents
 * holding many segments would otherwise run out at 1024). Returns the soft limit now in force;
 * a failure is logged once, never fatal. */
unsigned long long ss_raise_nofile_limit(void);
/* The CPUs this process may use: its affinity mask (taskset, a container's cpuset), capped by a
 * cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us; rounded up) on its cgroup
 * or any ancestor; at least 1. Thread
 * counts derive from it, so a servable started under `taskset -c 2-3` or in a container limited to
 * 2 CPUs sizes its threads for 2, not for the machine. */
int ss_usable_cpus(void);

/* bytes (free()able), 2 MiB-aligned with MADV_HUGEPAGE over its whole 2 MiB pages when it spans
 * one (the tail keeps 4 KiB pages, so the resident size stays `bytes`): for memory streamed in
 * long runs (weights, packed weights, the KV cache), where 4 KiB pages cost a TLB miss every 4 KiB
 * of each stream. Where the kernel's THP setting is "never" the advice does nothing. NULL when
 * out of memory. */
void *ss_huge_alloc(size_t bytes);
/* The same with the cgroups named in `proc_cgroup` (a /proc/self/cgroup file) read under
 * `cgroup_root` (where the cgroup file systems are mounted, /sys/fs/cgroup): for tests. */
int ss_usable_cpus_at(const char *proc_cgroup, const char *cgroup_root);
/* The memory this process may use: physical memory, capped by a cgroup memory limit (v2
 * memory.max, v1 memory.limit_in_bytes) on its cgroup or any ancestor. 0 when unknown. Servers
 * size their per-request bounds from it, so a container limited to 8 GiB refuses a request
 * that would take 12 instead of being killed by the OOM killer. */
uint64_t ss_usable_memory(void);
/* The same under other cgroup files, as ss_usable_cpus_at: for tests. */
uint64_t ss_usable_memory_at(const char *proc_cgroup, const char *cgroup_root);
/* Keep freed memory in the process for reuse (up to 64 MiB above the heap's top, blocks up to 32
 * MiB from the heap) instead of returning and re-faulting it page by page every request. */
void ss_tune_malloc(void);

#ifdef __cplusplus
}
#endif
#endif
