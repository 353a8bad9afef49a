/* Small helpers shared by every module: whole-file reads, a monotonic clock, the descriptor limit.
 */
#include "shardserve/core.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

ss_status *ss_read_file(const char *path, void **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ss_errf(SS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
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
