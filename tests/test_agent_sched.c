/*
 * ss_agents_sched_batch and ss_child_sched_batch: by default a launcher's ranks run SCHED_BATCH
 * only when they outnumber the usable CPUs; SHARDSERVE_AGENT_SCHED=batch or normal decides
 * instead, and any other value is reported (*bad) and falls back to the rule. A child that calls
 * ss_child_sched_batch before it starts threads passes the policy on to every thread it starts,
 * which is what the launcher relies on for a rank's OpenMP team.
 */
#define _GNU_SOURCE /* SCHED_BATCH */
#include "check.h"

#include "agent/spawn.h"

#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

static bool decide(const char *env, int ranks, long cpus, bool *bad)
{
    if (env)
        setenv("SHARDSERVE_AGENT_SCHED", env, 1);
    else
        unsetenv("SHARDSERVE_AGENT_SCHED");
    return ss_agents_sched_batch(ranks, cpus, bad);
}

static void the_rule_and_the_overrides(void)
{
    bool bad = true;
    CHECK(decide(NULL, 8, 2, &bad) && !bad);
    CHECK(!decide(NULL, 2, 2, &bad) && !bad); /* as many ranks as CPUs: each has one */
    CHECK(decide("auto", 3, 2, &bad) && !bad);
    CHECK(!decide("", 1, 2, &bad) && !bad); /* set but empty: the rule, without a warning */
    CHECK(decide("batch", 1, 64, &bad) && !bad);
    CHECK(!decide("normal", 8, 2, &bad) && !bad);
    CHECK(decide("BATCH", 8, 2, &bad) && bad); /* not a value: the rule, and a warning */
    CHECK(!decide("idle", 1, 2, &bad) && bad);
    unsetenv("SHARDSERVE_AGENT_SCHED");
}

static void *policy_of_thread(void *out)
{
    *(int *)out = sched_getscheduler(0);
    return NULL;
}

static void threads_started_later_inherit_it(void)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        ss_child_sched_batch();
        int policy = -1;
        pthread_t t;
        if (pthread_create(&t, NULL, policy_of_thread, &policy) != 0) _exit(2);
        pthread_join(t, NULL);
        _exit(sched_getscheduler(0) == SCHED_BATCH && policy == SCHED_BATCH ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

TEST_MAIN(TEST(the_rule_and_the_overrides), TEST(threads_started_later_inherit_it))
