/*
 * ss_usable_cpus: the CPUs a process may use, which thread counts derive from. The affinity mask
 * counts (a process under `taskset -c 0` gets 1), and a cgroup CPU quota on the process's cgroup
 * or any ancestor caps it, rounded up: v2's cpu.max (on a pure v2 mount or a hybrid's unified/),
 * v1's cpu.cfs_quota_us / cpu.cfs_period_us. ss_usable_memory likewise: physical memory, capped
 * by v2's memory.max or v1's memory.limit_in_bytes. The cgroup files are fakes in a temporary
 * folder.
 */
#define _GNU_SOURCE /* sched_setaffinity */
#include "check.h"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

static int mask_cpus(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0);
    return CPU_COUNT(&set);
}

static void put(const char *rel, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++) /* the folders on the way */
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0755);
            *p = '/';
        }
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A /proc/self/cgroup file holding `line` (its path, in a static buffer). */
static const char *proc_cgroup(const char *line)
{
    static char proc[128];
    put("proc_cgroup", line);
    snprintf(proc, sizeof proc, "%s/proc_cgroup", root);
    return proc;
}

/* The count for a /proc/self/cgroup holding `line`, with the cgroup files under `root`. */
static int cpus_for(const char *line)
{
    return ss_usable_cpus_at(proc_cgroup(line), root);
}

static void clean(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
}

static void fresh(void)
{
    clean();
    CHECK(mkdir(root, 0755) == 0);
}

static void affinity_counts(void)
{
    int all = mask_cpus();
    CHECK_MSG(ss_usable_cpus_at(NULL, "/nonexistent") == all, "%d vs the mask's %d",
              ss_usable_cpus_at(NULL, "/nonexistent"), all);
    CHECK(ss_usable_cpus() >= 1 && ss_usable_cpus() <= all);
    cpu_set_t old, one;
    CHECK(sched_getaffinity(0, sizeof old, &old) == 0);
    int first = 0;
    while (!CPU_ISSET(first, &old))
        first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    CHECK(sched_setaffinity(0, sizeof one, &one) == 0);
    CHECK_MSG(ss_usable_cpus() == 1, "under a 1-CPU mask: %d", ss_usable_cpus());
    CHECK(sched_setaffinity(0, sizeof old, &old) == 0);
}

/* A quota's limit against the mask's count: `want` when it is below, else the mask's. */
static int capped(int want)
{
    int all = mask_cpus();
    return want < all ? want : all;
}

static void cgroup_v2(void)
{
    fresh();
    put("cgroup.controllers", "cpu memory\n");
    put("a/cpu.max", "50000 100000\n"); /* half a CPU: 1 */
    put("a/b/cpu.max", "max 100000\n");
    CHECK(cpus_for("0::/a/b\n") == 1);
    put("a/cpu.max", "100000 100000\n");
    put("a/b/cpu.max", "300000 100000\n"); /* the parent's lower limit wins */
    CHECK(cpus_for("0::/a/b\n") == 1);
    put("a/cpu.max", "max 100000\n");
    put("a/b/cpu.max", "150000 100000\n"); /* 1.5 CPUs: 2 */
    CHECK(cpus_for("0::/a/b\n") == capped(2));
    put("a/b/cpu.max", "6400000 100000\n"); /* above the mask: the mask */
    CHECK(cpus_for("0::/a/b\n") == mask_cpus());
    put("a/b/cpu.max", "garbage\n");
    CHECK(cpus_for("0::/a/b\n") == mask_cpus());
    put("cpu.max", "100000 100000\n"); /* the root's own file (a container's cgroup namespace) */
    CHECK(cpus_for("0::/\n") == 1);
    CHECK(cpus_for("0::/a/b\n") == 1);
}

static void cgroup_v2_hybrid(void)
{
    fresh(); /* no cgroup.controllers at the root: v2 lives under unified/ */
    put("unified/svc/cpu.max", "100000 100000\n");
    CHECK(cpus_for("1:name=systemd:/svc\n0::/svc\n") == 1);
}

static void cgroup_v1(void)
{
    fresh();
    put("cpu,cpuacct/job/cpu.cfs_quota_us", "50000\n");
    put("cpu,cpuacct/job/cpu.cfs_period_us", "100000\n");
    CHECK(cpus_for("4:memory:/other\n3:cpu,cpuacct:/job\n0::/\n") == 1);
    put("cpu,cpuacct/job/cpu.cfs_quota_us", "-1\n"); /* no quota */
    CHECK(cpus_for("3:cpu,cpuacct:/job\n") == mask_cpus());
    CHECK(cpus_for("3:cpuacct:/job\n") == mask_cpus()); /* not the cpu controller */
    fresh();                                            /* mounted as cpu/ alone */
    put("cpu/job/cpu.cfs_quota_us", "250000\n");
    put("cpu/job/cpu.cfs_period_us", "100000\n");
    CHECK(cpus_for("2:cpu:/job\n") == capped(3));
}

/* The memory for a /proc/self/cgroup holding `line`, with the cgroup files under `root`. */
static uint64_t memory_for(const char *line)
{
    return ss_usable_memory_at(proc_cgroup(line), root);
}

static void memory_limits(void)
{
    uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    CHECK_MSG(ss_usable_memory_at(NULL, "/nonexistent") == phys, "%llu vs %llu",
              (unsigned long long)ss_usable_memory_at(NULL, "/nonexistent"),
              (unsigned long long)phys);
    CHECK(ss_usable_memory() >= 1 << 20 && ss_usable_memory() <= phys);
    fresh();
    put("cgroup.controllers", "cpu memory\n");
    put("a/memory.max", "1073741824\n");
    put("a/b/memory.max", "max\n"); /* the parent's limit holds */
    CHECK(memory_for("0::/a/b\n") == 1073741824u);
    put("a/b/memory.max", "536870912\n");
    CHECK(memory_for("0::/a/b\n") == 536870912u);
    put("a/memory.max", "max\n");
    put("a/b/memory.max", "max\n");
    CHECK(memory_for("0::/a/b\n") == phys);
    fresh(); /* v1: unlimited is a page-rounded LLONG_MAX; the cpu controller is not read */
    put("memory/job/memory.limit_in_bytes", "9223372036854771712\n");
    put("cpu,cpuacct/job/memory.limit_in_bytes", "1048576\n");
    CHECK(memory_for("4:memory:/job\n3:cpu,cpuacct:/job\n") == phys);
    put("memory/job/memory.limit_in_bytes", "2147483648\n");
    CHECK(memory_for("4:memory:/job\n3:cpu,cpuacct:/job\n") == 2147483648u);
}

static void missing_files(void)
{
    fresh();
    CHECK(cpus_for("0::/not/there\n") == mask_cpus());
    CHECK(cpus_for("") == mask_cpus());
    CHECK(ss_usable_cpus_at("/nonexistent/cgroup", root) == mask_cpus());
    clean();
}

int main(int argc, char **argv)
{
    test_argc = argc, test_argv = argv;
    snprintf(root, sizeof root, "/tmp/ss_cpus_%d", (int)getpid());
    if (mask_cpus() < 2)
        printf("note: 1 CPU in the mask, so the limits of 1 below equal the mask's count\n");
    static const test_case cases[] = {TEST(affinity_counts),  TEST(cgroup_v2),
                                      TEST(cgroup_v2_hybrid), TEST(cgroup_v1),
                                      TEST(memory_limits),    TEST(missing_files)};
    return run_tests(cases, sizeof cases / sizeof cases[0]);
}
