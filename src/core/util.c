/* Small helpers shared by every module: whole-file reads, a monotonic clock, the descriptor limit.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_ALLOC */
#include "shardserve/core.h"

#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ss_status *ss_read_file(const char *path, void **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) /* fopen's own FILE may find no memory: that is not the file's fault */
        return ss_errf(errno == ENOMEM ? SS_ERR_NOMEM : SS_ERR_IO, "cannot open %s: %s", path,
                       strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return ss_errf(SS_ERR_IO, "%s is not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        fclose(f);
        return ss_errf(SS_ERR_NOMEM, "cannot allocate %zu bytes to read %s", size, path);
    }
    size_t got = fread(buf, 1, size, f);
    fclose(f);
    if (got != size) {
        free(buf);
        return ss_errf(SS_ERR_IO, "short read on %s (%zu of %zu bytes)", path, got, size);
    }
    *data = buf;
    *len = size;
    return NULL;
}

uint64_t ss_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool file_safe(unsigned char c, bool first)
{
    if (c == '.') return !first;
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

bool ss_name_to_file(const char *name, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
        bool safe = file_safe(*c, c == (const unsigned char *)name);
        if (n + (safe ? 1 : 3) >= cap) return false;
        if (safe) {
            out[n++] = (char)*c;
        } else {
            out[n++] = '%';
            out[n++] = hex[*c >> 4];
            out[n++] = hex[*c & 15];
        }
    }
    if (n >= cap) return false;
    out[n] = 0;
    return true;
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                  : -1;
}

bool ss_name_from_file(const char *file, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *c = file; *c; c++) {
        if (n + 1 >= cap) return false;
        if (*c != '%') {
            out[n++] = *c;
            continue;
        }
        int hi = hex_value(c[1]), lo = hi < 0 ? -1 : hex_value(c[2]);
        if (lo < 0) return false;
        out[n++] = (char)(hi * 16 + lo);
        c += 2;
    }
    if (n >= cap) return false;
    out[n] = 0;
    return true;
}

void ss_tune_malloc(void)
{
    /* glibc returns the top of a thread's heap page by page (madvise) as soon as a free leaves
     * 128 KiB there, and serves blocks over a moving threshold with mmap/munmap: a server that
     * frees and reallocates the same tensor sizes every request paid a page fault per 4 KiB each
     * time (11% of serve's CPU at concurrency 16). Keep up to 8 MiB at the top of each heap for
     * reuse, no more: a thread's own heap (not the main one) gives its top back only when a free
     * leaves more than this there — malloc_trim does not touch it — so a larger value pinned up
     * to 64 MiB per thread that ever decoded a large request (robustness_hostile's
     * memory-returned check failed one run in three with 64 MiB). */
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
}

unsigned long long ss_raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            SS_WARN("cannot raise the descriptor limit to %llu: %s", (unsigned long long)want,
                    strerror(errno));
            getrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    return rl.rlim_cur == RLIM_INFINITY ? ~0ull : (unsigned long long)rl.rlim_cur;
}

/* CPUs in the affinity mask (a set sized for more CPUs when the kernel has more than 1024). */
static int affinity_cpus(void)
{
    for (int n = 1024; n <= 1 << 16; n *= 4) {
        cpu_set_t *set = CPU_ALLOC(n);
        if (!set) break;
        size_t bytes = CPU_ALLOC_SIZE(n);
        CPU_ZERO_S(bytes, set);
        int r = sched_getaffinity(0, bytes, set), count = r == 0 ? CPU_COUNT_S(bytes, set) : 0;
        CPU_FREE(set);
        if (r == 0) return count;
        if (errno != EINVAL) break;
    }
    long v = sysconf(_SC_NPROCESSORS_ONLN);
    return v > 0 ? (int)v : 1;
}

/* A whole number read from a file; false when it holds none. */
static bool read_long(const char *path, long *v)
{
    FILE *f = fopen(path, "r");
    if (!f) return false;
    bool ok = fscanf(f, "%ld", v) == 1;
    fclose(f);
    return ok;
}

/* The CPU limit a cgroup directory sets, rounded up: v2's cpu.max ("max 100000" or "150000
 * 100000"), v1's cpu.cfs_quota_us over cpu.cfs_period_us (quota -1: none). 0: no limit. */
static long cgroup_cpu_limit(const char *dir, bool v2)
{
    char path[4352];
    long quota = 0, period = 0;
    if (v2) {
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        FILE *f = fopen(path, "r");
        if (!f) return 0;
        char q[32] = "";
        int got = fscanf(f, "%31s %ld", q, &period);
        fclose(f);
        char *end;
        quota = got == 2 ? strtol(q, &end, 10) : 0;
        if (got != 2 || *end) return 0; /* "max" or malformed */
    } else {
        snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
        if (!read_long(path, &quota)) return 0;
        snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
        if (!read_long(path, &period)) return 0;
    }
    if (quota <= 0 || period <= 0) return 0;
    return (quota + period - 1) / period;
}

/* The memory limit a cgroup directory sets: v2's memory.max ("max": none), v1's
 * memory.limit_in_bytes (a page-rounded LLONG_MAX: none). 0: no limit. */
static long cgroup_memory_limit(const char *dir, bool v2)
{
    char path[4352];
    snprintf(path, sizeof path, "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
    long v = 0;
    if (!read_long(path, &v) || v <= 0 || v > (1L << 62)) return 0; /* "max" reads as nothing */
    return v;
}

typedef long (*cgroup_limit_fn)(const char *dir, bool v2);

/* The lowest limit `fn` finds on the cgroup at `rel` under `mount` or any of its ancestors (0:
 * none). */
static long cgroup_chain_limit(const char *mount, const char *rel, bool v2, cgroup_limit_fn fn)
{
    char dir[4352];
    int len = snprintf(dir, sizeof dir, "%s%s", mount, rel);
    if (len < 0 || (size_t)len >= sizeof dir) return 0;
    size_t root = strlen(mount);
    while (len > 1 && dir[len - 1] == '/' && (size_t)len > root) /* "0::/" is the root itself */
        dir[--len] = 0;
    long best = 0;
    for (;;) {
        long limit = fn(dir, v2);
        if (limit > 0 && (best == 0 || limit < best)) best = limit;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < root) return best;
        *slash = 0;
    }
}

/* Whether a v1 line's controller list ("cpu,cpuacct") holds `name`. */
static bool has_controller(const char *list, size_t n, const char *name)
{
    size_t want = strlen(name);
    for (const char *p = list, *end = list + n; p < end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t len = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (len == want && !memcmp(p, name, want)) return true;
        p += len + 1;
    }
    return false;
}

/* The lowest limit `fn` finds on the cgroups named in `proc_cgroup` (v2, or v1's hierarchy of
 * `controller`) and their ancestors, read under `cgroup_root`; 0: none. */
static long cgroup_limit(const char *proc_cgroup, const char *cgroup_root, const char *controller,
                         cgroup_limit_fn fn)
{
    FILE *f = proc_cgroup ? fopen(proc_cgroup, "r") : NULL;
    char line[4096], mount[512];
    long best = 0;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        long limit = 0;
        /* "0::/path": cgroup v2, at the root mount or under unified/ (a hybrid system) */
        if (c2 == c1 + 1) {
            snprintf(mount, sizeof mount, "%s/cgroup.controllers", cgroup_root);
            bool pure = access(mount, F_OK) == 0;
            snprintf(mount, sizeof mount, pure ? "%s" : "%s/unified", cgroup_root);
            limit = cgroup_chain_limit(mount, c2 + 1, true, fn);
        } else if (has_controller(c1 + 1, (size_t)(c2 - c1 - 1), controller)) {
            /* v1: "3:cpu,cpuacct:/p", mounted as cpu,cpuacct/ or as the controller's name */
            snprintf(mount, sizeof mount, "%s/%.*s", cgroup_root, (int)(c2 - c1 - 1), c1 + 1);
            if (access(mount, F_OK) != 0)
                snprintf(mount, sizeof mount, "%s/%s", cgroup_root, controller);
            limit = cgroup_chain_limit(mount, c2 + 1, false, fn);
        }
        if (limit > 0 && (best == 0 || limit < best)) best = limit;
    }
    if (f) fclose(f);
    return best;
}

int ss_usable_cpus_at(const char *proc_cgroup, const char *cgroup_root)
{
    int n = affinity_cpus();
    long limit = cgroup_limit(proc_cgroup, cgroup_root, "cpu", cgroup_cpu_limit);
    if (limit > 0 && limit < n) n = (int)limit;
    return n < 1 ? 1 : n;
}

uint64_t ss_usable_memory_at(const char *proc_cgroup, const char *cgroup_root)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t n = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    long limit = cgroup_limit(proc_cgroup, cgroup_root, "memory", cgroup_memory_limit);
    if (limit > 0 && (!n || (uint64_t)limit < n)) n = (uint64_t)limit;
    return n;
}

uint64_t ss_usable_memory(void)
{
    return ss_usable_memory_at("/proc/self/cgroup", "/sys/fs/cgroup");
}

int ss_usable_cpus(void)
{
    return ss_usable_cpus_at("/proc/self/cgroup", "/sys/fs/cgroup");
}

void *ss_huge_alloc(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (posix_memalign(&p, bytes >= huge ? huge : 64, bytes ? bytes : 64) != 0) return NULL;
    if (bytes >= huge) madvise(p, bytes & ~(huge - 1), MADV_HUGEPAGE);
    return p;
}
