/*
 * mpi backend end to end: started by mpirun (tests/test_comm_mpi.sh), every rank creates an mpi
 * communicator (MPI started by the comm layer, rank and size taken from MPI) and runs the same
 * checks as the shm test. Exit status non-zero on any failed check.
 */
#include "test_comm_common.h"

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

/* --kill-rank K: rank K SIGKILLs itself mid-run; every other rank must either get an error naming
 * rank K within the 1 s timeout (exit 0) or be terminated by mpirun; nobody may hang. */
static int kill_mode(int victim)
{
    ss_comm_config cfg = {.backend = SS_COMM_MPI, .rank = -1, .size = -1, .timeout_ms = 1000};
    ss_comm *c = NULL;
    CHECK_OK(ss_comm_create(&cfg, &c));
    if (!c) return 1;
    int me = ss_comm_rank(c);
    float buf[256];
    for (long it = 0;; it++) {
        if (me == victim && it == 200) raise(SIGKILL);
        for (int i = 0; i < 256; i++)
            buf[i] = 1;
        ss_status *st = ss_comm_allreduce(c, NULL, buf, SS_DT_FLOAT32, 256);
        if (!st) continue;
        char want[32];
        snprintf(want, sizeof want, "rank %d", victim);
        printf("rank %d got: [%s] %s\n", me, ss_code_name(st->code), st->msg);
        fflush(stdout);
        int bad = strstr(st->msg, want) == NULL;
        ss_status_free(st);
        ss_comm_destroy(c);
        _exit(bad); /* MPI cannot be finalized with a dead peer */
    }
}

int main(int argc, char **argv)
{
    comm_test_args(argc, argv);
    if (argc == 3 && !strcmp(argv[1], "--kill-rank")) return kill_mode(atoi(argv[2]));
    ss_comm_config probe = {.backend = SS_COMM_MPI, .rank = -1, .size = -1, .timeout_ms = 60000};
    /* Groups depend on the world size, which only MPI knows: create once to learn it. */
    ss_comm *c = NULL;
    CHECK_OK(ss_comm_create(&probe, &c));
    if (!c) return 1;
    int n = ss_comm_size(c), rank = ss_comm_rank(c);
    ss_comm_destroy(c);
    if (n < 2 || n > COMM_MAX_RANKS || n % 2) {
        fprintf(stderr, "test_comm_mpi needs an even number of ranks (2..%d), got %d\n",
                COMM_MAX_RANKS, n);
        return 1;
    }
    comm_test_groups tg;
    comm_test_groups_init(&tg, n);
    ss_comm_config cfg = {.backend = SS_COMM_MPI,
                          .rank = rank,
                          .size = n,
                          .timeout_ms = 60000,
                          .groups = tg.defs,
                          .ngroups = 4};
    c = NULL;
    CHECK_OK(ss_comm_create(&cfg, &c));
    if (!c) return 1;
    comm_checks_run(c, false);
    ss_comm_destroy(c);
    printf("rank %d of %d: %s (%d failed checks)\n", rank, n, check_failures ? "FAIL" : "ok",
           check_failures);
    return check_failures ? 1 : 0;
}
