/*
 * The SIGBUS guard over client shared memory (src/link/shm_guard.c): a guarded mapping whose
 * object shrinks under it is read and written on zero pages, is reported lost with its key, and the
 * process lives; a SIGBUS outside any guarded range still kills (the child of a fork shows it).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "shardserve/link.h"

#define SIZE (1 << 20)

/* A fresh shm object of SIZE bytes mapped read-write; *key names it. */
static unsigned char *map_object(char *key, size_t cap, int *fd)
{
    snprintf(key, cap, "/ss-test-guard-%d-%d", (int)getpid(), rand());
    *fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(*fd >= 0 && ftruncate(*fd, SIZE) == 0);
    unsigned char *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    CHECK(m != MAP_FAILED);
    memset(m, 7, SIZE);
    return m;
}

static void a_shrunk_object_costs_the_range_not_the_process(void)
{
    char key[64], named[256] = "";
    int fd;
    unsigned char *m = map_object(key, sizeof key, &fd);
    CHECK_OK(ss_link_shm_guard(m, SIZE, key));
    CHECK(!ss_link_shm_lost(m, SIZE, named, sizeof named));
    CHECK(ftruncate(fd, SIZE / 4) == 0);
    CHECK(m[0] == 7); /* still inside the object */
    volatile unsigned char *v = m;
    unsigned char past = v[SIZE / 2]; /* SIGBUS without the guard */
    v[SIZE - 1] = 9;                  /* and a write */
    CHECK(past == 0 && v[SIZE - 1] == 9);
    CHECK(ss_link_shm_lost(m + 10, 4, named, sizeof named));
    CHECK_MSG(!strcmp(named, key), "lost range named '%s', not '%s'", named, key);
    ss_link_shm_unguard(m);
    CHECK(!ss_link_shm_lost(m, SIZE, NULL, 0)); /* unguarded: no longer known */
    munmap(m, SIZE);
    close(fd);
    shm_unlink(key);
}

static void other_ranges_are_not_lost(void)
{
    char k1[64], k2[64];
    int f1, f2;
    unsigned char *a = map_object(k1, sizeof k1, &f1), *b = map_object(k2, sizeof k2, &f2);
    CHECK_OK(ss_link_shm_guard(a, SIZE, k1));
    CHECK_OK(ss_link_shm_guard(b, SIZE, k2));
    CHECK(ftruncate(f1, 0) == 0);
    volatile unsigned char *v = a;
    CHECK(v[100] == 0);
    CHECK(ss_link_shm_lost(a, SIZE, NULL, 0));
    CHECK(!ss_link_shm_lost(b, SIZE, NULL, 0) && b[100] == 7);
    ss_link_shm_unguard(a);
    ss_link_shm_unguard(b);
    munmap(a, SIZE);
    munmap(b, SIZE);
    close(f1);
    close(f2);
    shm_unlink(k1);
    shm_unlink(k2);
}

static void an_unguarded_sigbus_still_kills(void)
{
    char key[64], other[64];
    int fd, ofd;
    unsigned char *m = map_object(key, sizeof key, &fd);
    unsigned char *g = map_object(other, sizeof other, &ofd);
    CHECK_OK(ss_link_shm_guard(g, SIZE, other)); /* the handler is installed */
    pid_t pid = fork();
    if (pid == 0) {
        if (ftruncate(fd, 0) != 0) _exit(3);
        volatile unsigned char *v = m;
        _exit(v[10] == 0 ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    /* killed by SIGBUS (under a sanitizer: its report and a failing exit), never a clean exit on
     * zero pages */
    CHECK_MSG((WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) ||
                  (WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3),
              "child status %#x", status);
    ss_link_shm_unguard(g);
    munmap(m, SIZE);
    munmap(g, SIZE);
    close(fd);
    close(ofd);
    shm_unlink(key);
    shm_unlink(other);
}

TEST_MAIN(TEST(a_shrunk_object_costs_the_range_not_the_process), TEST(other_ranges_are_not_lost),
          TEST(an_unguarded_sigbus_still_kills))
