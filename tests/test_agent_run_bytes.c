/*
 * ss_rank_run_bytes: what one run of a rank may take for its values. SHARDSERVE_RANK_RUN_MB wins
 * when it is a whole number of MiB in 1..2^30; anything else (text, a suffix, 0, negative, too
 * big) falls back to the default, half of ss_usable_memory() shared by the host's ranks, and
 * *source says which one was used (the agent logs it).
 */
#include "check.h"

#include "shardserve/agent.h"

static size_t run_bytes(const char *env, int local, const char **source)
{
    if (env)
        setenv("SHARDSERVE_RANK_RUN_MB", env, 1);
    else
        unsetenv("SHARDSERVE_RANK_RUN_MB");
    *source = NULL;
    return ss_rank_run_bytes(local, source);
}

static void from_the_environment(void)
{
    const char *source;
    CHECK(run_bytes("64", 2, &source) == (size_t)64 << 20);
    CHECK(source && !strcmp(source, "SHARDSERVE_RANK_RUN_MB"));
    CHECK(run_bytes("1", 1, &source) == (size_t)1 << 20);
    CHECK(run_bytes("1073741824", 1, &source) == (size_t)1 << 50);
    CHECK(ss_rank_run_bytes(3, NULL) == (size_t)1 << 50); /* source is optional */
}

static void the_default(void)
{
    size_t half = (size_t)(ss_usable_memory() / 2);
    const char *source;
    CHECK(half > 0);
    CHECK(run_bytes(NULL, 1, &source) == half);
    CHECK(source && !strcmp(source, "half the usable memory"));
    CHECK(run_bytes(NULL, 4, &source) == half / 4);
    CHECK(source && strstr(source, "shared by this host's ranks"));
    CHECK(run_bytes(NULL, 0, &source) == half); /* no rank count: one */
}

static void bad_values_fall_back(void)
{
    size_t half = (size_t)(ss_usable_memory() / 2);
    const char *bad[] = {"", "abc", "64MB", "64 ", "0", "-5", "1073741825", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *source;
        size_t got = run_bytes(bad[i], 2, &source);
        CHECK_MSG(got == half / 2, "SHARDSERVE_RANK_RUN_MB='%s' gave %zu, want the default %zu",
                  bad[i], got, half / 2);
        CHECK_MSG(source && strstr(source, "usable memory"), "'%s': source %s", bad[i],
                  source ? source : "(unset)");
    }
}

TEST_MAIN(TEST(from_the_environment), TEST(the_default), TEST(bad_values_fall_back))
