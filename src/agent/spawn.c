/* Process-start helpers shared by the launcher and `run --shards` (see spawn.h). */
#define _GNU_SOURCE /* strndup */
#include "spawn.h"

#include "shardserve/core.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int ss_mpirun_args(const char **argv, int cap, char **extra)
{
    static const char *const base[] = {"mpirun", "--allow-run-as-root", "--oversubscribe",
                                       "--mca",  "mpi_yield_when_idle", "1"};
    int a = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0] && a < cap; i++)
        argv[a++] = base[i];
    const char *env = getenv("SHARDSERVE_MPIRUN_ARGS");
    *extra = env ? strdup(env) : NULL;
    char *save = NULL;
    for (char *tok = *extra ? strtok_r(*extra, " \t", &save) : NULL; tok && a < cap;
         tok = strtok_r(NULL, " \t", &save))
        argv[a++] = tok;
    return a;
}

void ss_child_prepare(const char *secret_file)
{
    /* the path of the secret, never the secret: the environment is readable by too many */
    if (secret_file)
        setenv("SHARDSERVE_LINK_SECRET_FILE", secret_file, 1);
    else
        unsetenv("SHARDSERVE_LINK_SECRET_FILE");
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

void ss_child_omp_wait(int local_ranks, int threads)
{
    const char *policy = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    if ((policy && *policy) || (spin && *spin)) return; /* the user's choice */
    long cores = ss_usable_cpus();
    if (threads > 1 && local_ranks > 0 && (long)local_ranks * threads <= cores)
        setenv("GOMP_SPINCOUNT", SS_AGENT_GOMP_SPINCOUNT, 1);
    else
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
}

bool ss_agents_sched_batch(int local_ranks, long cpus, bool *bad)
{
    const char *e = getenv("SHARDSERVE_AGENT_SCHED");
    *bad = false;
    if (e && !strcmp(e, "batch")) return true;
    if (e && !strcmp(e, "normal")) return false;
    *bad = e && *e && strcmp(e, "auto");
    return local_ranks > cpus;
}

void ss_child_sched_batch(void)
{
    struct sched_param p = {.sched_priority = 0};
    /* The launcher's log line says SCHED_BATCH, so a refusal must show up next to it. */
    if (sched_setscheduler(0, SCHED_BATCH, &p) != 0)
        fprintf(stderr, "agent (pid %d): SCHED_BATCH refused (%s), keeping the inherited policy\n",
                (int)getpid(), strerror(errno));
}

const char *ss_spawn_describe_exit(int status, char *buf, size_t cap)
{
    if (WIFSIGNALED(status))
        snprintf(buf, cap, "was killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, cap, "exited with status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return buf;
}
