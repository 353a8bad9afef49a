/*
 * shm backend end to end: forks N ranks (argv[1]) that join one session at the same moment (the
 * join race) and run every check of test_comm_common.h; then a second group reuses the session
 * name. The parent bounds the whole run, kills its children if they overrun, and checks that no
 * /dev/shm/shardserve-<session> segment is left behind.
 */
#include "test_comm_common.h"

#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t kids[COMM_MAX_RANKS];
static int nkids;

enum { FULL, SHORT, JOIN_ONLY };

static int rank_main(int rank, int n, const char *session, int mode)
{
    comm_test_groups tg;
    comm_test_groups_init(&tg, n);
    ss_comm_config cfg = {.backend = SS_COMM_SHM,
                          .rank = rank,
                          .size = n,
                          .session = session,
                          .timeout_ms = 20000,
                          .groups = tg.defs,
                          .ngroups = 4};
    ss_comm *c = NULL;
    CHECK_OK(ss_comm_create(&cfg, &c));
    if (!c) return 1;
    if (mode == FULL) {
        comm_checks_run(c, true);
    } else if (mode == JOIN_ONLY) {
        CHECK_OK(ss_comm_barrier(c, NULL));
    } else {
        check_allreduce(c, ss_comm_group_find(c, "world"), SS_DT_FLOAT32, 1000);
        check_ring(c, 5000);
    }
    ss_comm_destroy(c);
    if (check_failures) fprintf(stderr, "rank %d: %d check(s) failed\n", rank, check_failures);
    return check_failures ? 1 : 0;
}

/* Fork n ranks, wait for all (bounded); returns the number of ranks that failed. */
static int run_group(int n, const char *session, int mode, int limit_s)
{
    nkids = 0;
    pid_t me = getpid();
    for (int r = 0; r < n; r++) {
        pid_t pid = fork();
        if (pid == 0) {
            comm_test_die_with_parent(me);
            _exit(rank_main(r, n, session, mode));
        }
        kids[nkids++] = pid;
    }
    int failed = 0, left = n;
    uint64_t deadline = ss_now_ns() + (uint64_t)limit_s * 1000000000ull;
    while (left > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            left--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "rank pid %d failed (status 0x%x)\n", (int)pid, status);
                failed++;
            }
            for (int i = 0; i < nkids; i++)
                if (kids[i] == pid) kids[i] = 0;
            continue;
        }
        if (ss_now_ns() > deadline) {
            fprintf(stderr, "ranks still running after %d s: killing them\n", limit_s);
            for (int i = 0; i < nkids; i++)
                if (kids[i] > 0) kill(kids[i], SIGKILL);
            while (waitpid(-1, NULL, 0) > 0) {
            }
            return failed + left;
        }
        usleep(10000);
    }
    return failed;
}

int main(int argc, char **argv)
{
    comm_test_args(argc, argv);
    int n = argc > 1 ? atoi(argv[1]) : 2;
    if (n < 2 || n > COMM_MAX_RANKS || n % 2) {
        fprintf(stderr, "usage: test_comm_shm EVEN_RANKS (2..%d)\n", COMM_MAX_RANKS);
        return 2;
    }
    char session[64], path[128];
    snprintf(session, sizeof session, "test-%d-%d", (int)getpid(), n);
    snprintf(path, sizeof path, "/dev/shm/shardserve-%s", session);
    struct stat sb;

    int failed = run_group(n, session, FULL, 300);
    CHECK_MSG(failed == 0, "%d of %d ranks failed the checks", failed, n);
    CHECK_MSG(stat(path, &sb) != 0, "%s left behind", path);
    printf("%s %d ranks: every operation\n", failed ? "FAIL" : "ok  ", n);

    failed = run_group(n, session, SHORT, 60); /* the same session name again */
    CHECK_MSG(failed == 0, "%d of %d ranks failed on a reused session", failed, n);
    CHECK_MSG(stat(path, &sb) != 0, "%s left behind", path);
    printf("%s %d ranks: session name reused\n", failed ? "FAIL" : "ok  ", n);

    /* Many fresh groups: every join races (first creator, late openers, last joiner unlinking
     * the name while others still look at it). */
    failed = 0;
    for (int round = 0; round < 25; round++) {
        char s2[80];
        snprintf(s2, sizeof s2, "%s-j%d", session, round);
        failed += run_group(n, s2, JOIN_ONLY, 60);
        snprintf(path, sizeof path, "/dev/shm/shardserve-%s", s2);
        CHECK_MSG(stat(path, &sb) != 0, "%s left behind", path);
        ss_comm_shm_cleanup(s2);
    }
    CHECK_MSG(failed == 0, "%d ranks failed to join in 25 racing rounds", failed);
    printf("%s %d ranks: 25 racing joins\n", failed ? "FAIL" : "ok  ", n);

    ss_comm_shm_cleanup(session);
    return check_failures ? 1 : 0;
}
