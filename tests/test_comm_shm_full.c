/*
 * A full /dev/shm: two shm ranks join in a private mount namespace whose /dev/shm is a 64 KiB
 * tmpfs, far smaller than their segment. Each must fail at join with an error naming /dev/shm
 * and the bytes needed, and exit normally: before segments were reserved up front, the join
 * succeeded (the file was sparse) and the first collective died of SIGBUS ("killed by signal 7").
 * Needs CAP_SYS_ADMIN (unshare + mount); without it the test fails saying so.
 */
#define _GNU_SOURCE /* unshare */
#include "test_comm_common.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/wait.h>

#define NR 2

static int full_rank(int rank, pid_t parent)
{
    comm_test_die_with_parent(parent);
    ss_comm_config cfg = {.backend = SS_COMM_SHM,
                          .rank = rank,
                          .size = NR,
                          .session = "full",
                          .timeout_ms = 2000,
                          .join_timeout_ms = 5000};
    ss_comm *c = NULL;
    ss_status *st = ss_comm_create(&cfg, &c);
    if (!st) { /* the old behaviour: joined on a sparse file; touching it raises SIGBUS */
        static float buf[1 << 20];
        st = ss_comm_allreduce(c, NULL, buf, SS_DT_FLOAT32, 1 << 20);
        fprintf(stderr, "rank %d: joined a segment /dev/shm cannot hold\n", rank);
        ss_status_free(st);
        ss_comm_destroy(c);
        return 2;
    }
    printf("rank %d: [%s] %s\n", rank, ss_code_name(st->code), st->msg);
    int bad = st->code != SS_ERR_LIMIT || !strstr(st->msg, "/dev/shm") || !strstr(st->msg, "bytes");
    ss_status_free(st);
    return bad;
}

int main(int argc, char **argv)
{
    comm_test_args(argc, argv);
    setvbuf(stdout, NULL, _IONBF, 0);
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=64k") != 0) {
        fprintf(stderr,
                "FAIL cannot mount a small tmpfs on /dev/shm in a mount namespace (needs "
                "root): %s\n",
                strerror(errno));
        return 1;
    }
    pid_t parent = getpid(), kids[NR];
    for (int r = 0; r < NR; r++)
        if ((kids[r] = fork()) == 0) _exit(full_rank(r, parent));
    int failed = 0;
    for (int r = 0; r < NR; r++) {
        int status = 0;
        waitpid(kids[r], &status, 0);
        if (WIFSIGNALED(status))
            printf("FAIL rank %d killed by signal %d\n", r, WTERMSIG(status));
        else if (WEXITSTATUS(status) != 0)
            printf("FAIL rank %d exit %d\n", r, WEXITSTATUS(status));
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    printf("%s a full /dev/shm is an error at join\n", failed ? "FAIL" : "ok  ");
    return failed ? 1 : 0;
}
