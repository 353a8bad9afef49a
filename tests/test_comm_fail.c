/*
 * shm failure handling with real processes:
 * - kill -9 of one rank mid-run: every other rank's call fails within the timeout (1 s) with an
 *   error naming that rank (found dead by pid, while it is still an unreaped zombie), later calls
 *   fail fast, every process exits, no /dev/shm/shardserve-<session> is left;
 * - SIGSTOP of one rank: the others time out naming it ("did not arrive");
 * - both again with the ranks in a loop of ops that do not wait for everyone (a small broadcast
 *   from the victim, then an allgather only rank 0 reads): the ones waiting for the victim's
 *   broadcast see it dead or late, the others fail fast by the recorded cause;
 * - a group killed while joining leaves a stale segment; the next group with that session removes
 *   it and works; ss_comm_shm_cleanup removes one too;
 * - a rank whose peers never come fails its join in time, naming them, and removes the segment.
 * The parent bounds every scenario and kills (only) its own children if anything overruns.
 */
#include "test_comm_common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NR 4
#define TIMEOUT_MS 1000

static pid_t kids[NR];
static int report[2];

static bool seg_exists(const char *session)
{
    char path[160];
    struct stat sb;
    snprintf(path, sizeof path, "/dev/shm/shardserve-%s", session);
    return stat(path, &sb) == 0;
}

static void kill_all(void)
{
    for (int i = 0; i < NR; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            kill(kids[i], SIGCONT);
            waitpid(kids[i], NULL, 0);
            kids[i] = 0;
        }
}

/* Wait for one child, at most limit_ms; -1 on timeout, else its wait status. */
static int wait_kid(pid_t pid, int limit_ms)
{
    uint64_t end = ss_now_ns() + (uint64_t)limit_ms * 1000000u;
    for (;;) {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) return status;
        if (got < 0 || ss_now_ns() > end) return -1;
        usleep(2000);
    }
}

/* One round of the ops that need not wait: a small broadcast from `root`, then an allgather of
 * which only rank 0 wants the result. */
static ss_status *posting_round(ss_comm *c, int rank, int root, long it)
{
    int32_t b[64];
    for (int i = 0; i < 64; i++)
        b[i] = rank == root ? (int32_t)(it + i) : -1;
    ss_status *st = ss_comm_broadcast(c, NULL, b, sizeof b, root);
    if (st) return st;
    if (b[63] != (int32_t)(it + 63)) return ss_errf(SS_ERR_INTERNAL, "broadcast wrong");
    ss_tensor in, out;
    int64_t d[1] = {64}, od[1] = {64 * NR};
    int32_t all[64 * NR];
    if ((st = ss_tensor_borrow(&in, SS_DT_INT32, 1, d, b, sizeof b)) ||
        (st = ss_tensor_borrow(&out, SS_DT_INT32, 1, od, all, sizeof all)))
        return st;
    st = ss_comm_allgather(c, NULL, &in, 0, rank == 0 ? &out : NULL);
    if (!st && rank == 0 && all[64 * NR - 1] != (int32_t)(it + 63))
        st = ss_errf(SS_ERR_INTERNAL, "allgather wrong");
    return st;
}

/* A rank that runs allreduce (or, posting, posting_round) until it fails, then checks the error
 * names `victim`. */
static int looping_rank(int rank, const char *session, int victim, const char *needle, ss_code code,
                        bool posting)
{
    ss_comm_config cfg = {.backend = SS_COMM_SHM,
                          .rank = rank,
                          .size = NR,
                          .session = session,
                          .timeout_ms = TIMEOUT_MS,
                          .join_timeout_ms = 30000};
    ss_comm *c = NULL;
    ss_status *st = ss_comm_create(&cfg, &c);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, st->msg);
        return 3;
    }
    float buf[256];
    for (long it = 0;; it++) {
        for (int i = 0; i < 256; i++)
            buf[i] = 1;
        st = posting ? posting_round(c, rank, victim, it)
                     : ss_comm_allreduce(c, NULL, buf, SS_DT_FLOAT32, 256);
        if (st && st->code == SS_ERR_INTERNAL) return 4;
        if (st) break;
        if (!posting && buf[0] != NR) return 4;
        if (rank == 0 && it == 300 && write(report[1], "x", 1) != 1) return 5;
    }
    char want[64];
    snprintf(want, sizeof want, needle, victim);
    printf("rank %d got: [%s] %s\n", rank, ss_code_name(st->code), st->msg);
    int bad = !strstr(st->msg, want) || st->code != code;
    if (bad)
        fprintf(stderr, "rank %d: expected %s error with \"%s\"\n", rank, ss_code_name(code), want);
    ss_status_free(st);
    uint64_t t0 = ss_now_ns();
    st = ss_comm_barrier(c, NULL); /* broken: fails at once */
    bad |= !st || ss_now_ns() - t0 > 50000000u;
    ss_status_free(st);
    ss_comm_destroy(c);
    fflush(stdout);
    return bad;
}

/* kill -9 (sig = SIGKILL) or SIGSTOP one rank mid-run. */
static void scenario_peer_failure(int sig, bool posting)
{
    char session[64];
    snprintf(session, sizeof session, "fail-%d-%d-%d", (int)getpid(), sig, posting);
    int victim = 2;
    /* posting: the victim is the root some wait for ("did not send to rank 1 within"), or the
     * member rank 0's allgather waits for ("did not arrive") */
    const char *needle = sig == SIGKILL ? "rank %d (pid"
                         : posting      ? "rank %d did not" /* send to (broadcast), arrive */
                                        : "rank %d did not arrive";
    ss_code code = sig == SIGKILL ? SS_ERR_UNAVAILABLE : SS_ERR_TIMEOUT;
    CHECK(pipe(report) == 0);
    pid_t parent = getpid();
    for (int r = 0; r < NR; r++) {
        kids[r] = fork();
        if (kids[r] == 0) {
            comm_test_die_with_parent(parent);
            close(report[0]);
            _exit(looping_rank(r, session, victim, needle, code, posting));
        }
    }
    close(report[1]);
    char ch;
    ssize_t got = read(report[0], &ch, 1); /* the group is up and running */
    close(report[0]);
    CHECK_MSG(got == 1, "the group never got going");
    uint64_t t_kill = ss_now_ns();
    kill(kids[victim], sig);
    for (int r = 0; r < NR; r++) {
        if (r == victim) continue;
        int status = wait_kid(kids[r], TIMEOUT_MS + 4000);
        double ms = (double)(ss_now_ns() - t_kill) / 1e6;
        CHECK_MSG(status != -1, "rank %d still running %.0f ms after rank %d got signal %d", r, ms,
                  victim, sig);
        if (status == -1) continue;
        kids[r] = 0;
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rank %d ended with status 0x%x",
                  r, status);
        /* bound: the timeout plus slack for a loaded 2-core machine */
        CHECK_MSG(ms < TIMEOUT_MS + 1500, "rank %d needed %.0f ms to give up", r, ms);
        /* a dead peer is found by its pid, without waiting out the timeout */
        if (sig == SIGKILL)
            CHECK_MSG(ms < TIMEOUT_MS * 0.9, "rank %d needed %.0f ms to see rank %d dead", r, ms,
                      victim);
        printf("     rank %d gave up %.0f ms after signal %d to rank %d\n", r, ms, sig, victim);
    }
    kill(kids[victim], SIGKILL); /* reap the victim only now: it was a zombie meanwhile */
    kill(kids[victim], SIGCONT);
    CHECK(waitpid(kids[victim], NULL, 0) == kids[victim]);
    kids[victim] = 0;
    kill_all();
    CHECK_MSG(!seg_exists(session), "segment of session %s left behind", session);
    ss_comm_shm_cleanup(session);
}

static int joining_rank(const char *session, int size, int join_ms)
{
    ss_comm_config cfg = {.backend = SS_COMM_SHM,
                          .rank = 0,
                          .size = size,
                          .session = session,
                          .timeout_ms = TIMEOUT_MS,
                          .join_timeout_ms = join_ms};
    ss_comm *c = NULL;
    ss_status *st = ss_comm_create(&cfg, &c);
    if (!st) {
        ss_comm_destroy(c);
        return 1;
    }
    printf("     lone rank got: %s\n", st->msg);
    int bad = !strstr(st->msg, "rank 1 did not join") || st->code != SS_ERR_TIMEOUT;
    ss_status_free(st);
    return bad;
}

static int pair_rank(const char *session, int rank)
{
    ss_comm_config cfg = {
        .backend = SS_COMM_SHM, .rank = rank, .size = 2, .session = session, .timeout_ms = 10000};
    ss_comm *c = NULL;
    ss_status *st = ss_comm_create(&cfg, &c);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, st->msg);
        ss_status_free(st);
        return 1;
    }
    int64_t v = rank + 1;
    st = ss_comm_allreduce(c, NULL, &v, SS_DT_INT64, 1);
    int bad = st != NULL || v != 3;
    ss_status_free(st);
    ss_comm_destroy(c);
    return bad;
}

/* Leave a stale segment: one rank of two joins and is SIGKILLed while it waits for the other. */
static void make_stale(const char *session)
{
    pid_t parent = getpid();
    kids[0] = fork();
    if (kids[0] == 0) {
        comm_test_die_with_parent(parent);
        _exit(joining_rank(session, 2, 60000));
    }
    for (int i = 0; i < 2000 && !seg_exists(session); i++)
        usleep(1000);
    usleep(20000);
    kill(kids[0], SIGKILL);
    waitpid(kids[0], NULL, 0);
    kids[0] = 0;
    CHECK_MSG(seg_exists(session), "no segment to go stale for session %s", session);
}

static void scenario_stale_and_join(void)
{
    char session[64];
    snprintf(session, sizeof session, "stale-%d", (int)getpid());
    make_stale(session);
    pid_t parent = getpid();
    for (int r = 0; r < 2; r++)
        if ((kids[r] = fork()) == 0) {
            comm_test_die_with_parent(parent);
            _exit(pair_rank(session, r));
        }
    for (int r = 0; r < 2; r++) {
        int status = wait_kid(kids[r], 20000);
        CHECK_MSG(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "rank %d of a group restarted over a stale segment failed (0x%x)", r, status);
        if (status != -1) kids[r] = 0;
    }
    kill_all();
    CHECK_MSG(!seg_exists(session), "segment left after the restarted group");

    make_stale(session);
    CHECK_OK(ss_comm_shm_cleanup(session));
    CHECK_MSG(!seg_exists(session), "ss_comm_shm_cleanup left the segment");
    CHECK_OK(ss_comm_shm_cleanup(session)); /* nothing there: fine */
    /* A creator killed before publishing leaves its temporary file: cleanup removes it too. */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char tmp[200];
    snprintf(tmp, sizeof tmp, "/dev/shm/.shardserve-%s.%d.0.tmp", session, (int)dead);
    FILE *f = fopen(tmp, "w");
    if (f) fclose(f);
    CHECK_OK(ss_comm_shm_cleanup(session));
    CHECK_MSG(access(tmp, F_OK) != 0, "%s left behind", tmp);
    unlink(tmp);
    CHECK_ERR(ss_comm_shm_cleanup("../etc"), "not valid");

    /* Peers that never come: a bounded join, naming them, and no segment left. */
    kids[0] = fork();
    if (kids[0] == 0) {
        comm_test_die_with_parent(parent);
        _exit(joining_rank(session, 2, 500));
    }
    int status = wait_kid(kids[0], 5000);
    CHECK_MSG(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "lone rank: join did not fail as expected (0x%x)", status);
    if (status != -1) kids[0] = 0;
    kill_all();
    CHECK_MSG(!seg_exists(session), "segment left after a failed join");
}

int main(int argc, char **argv)
{
    comm_test_args(argc, argv);
    setvbuf(stdout, NULL, _IONBF, 0);
    static const test_case cases[] = {
        {"kill -9 of a rank mid-run", NULL},
        {"SIGSTOP of a rank mid-run", NULL},
        {"kill -9 of a broadcast's root mid-run", NULL},
        {"SIGSTOP of a broadcast's root mid-run", NULL},
        {"stale segment, cleanup, join timeout", scenario_stale_and_join},
    };
    int n = (int)(sizeof cases / sizeof cases[0]), failed = 0;
    for (int i = 0; i < n; i++) {
        int before = check_failures;
        if (i < 4)
            scenario_peer_failure(i % 2 ? SIGSTOP : SIGKILL, i >= 2);
        else
            cases[i].fn();
        kill_all();
        printf("%s %s\n", check_failures != before ? "FAIL" : "ok  ", cases[i].name);
        failed += check_failures != before;
    }
    printf("%d passed, %d failed\n", n - failed, failed);
    return failed ? 1 : 0;
}
