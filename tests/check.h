/*
 * A minimal test harness: CHECK records a failure with file:line and keeps going, so one run
 * shows every broken expectation; TEST_MAIN runs the listed cases and exits non-zero if any
 * check failed.
 */
#ifndef SS_TEST_CHECK_H
#define SS_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardserve/core.h"

static int check_failures;
/* Arguments of the test executable (e.g. a fixture folder), for cases that need them. */
static int test_argc;
static char **test_argv;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

/* The call must succeed; on failure print its status. */
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        ss_status *st_ = (expr);                                                                   \
        if (st_) {                                                                                 \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, st_->msg);        \
            ss_status_free(st_);                                                                   \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

/* The call must fail, and its message must contain `needle`. */
#define CHECK_ERR(expr, needle)                                                                    \
    do {                                                                                           \
        ss_status *st_ = (expr);                                                                   \
        if (!st_) {                                                                                \
            fprintf(stderr, "%s:%d: %s succeeded, expected an error with \"%s\"\n", __FILE__,      \
                    __LINE__, #expr, needle);                                                      \
            check_failures++;                                                                      \
        } else {                                                                                   \
            if (!strstr(st_->msg, needle)) {                                                       \
                fprintf(stderr, "%s:%d: %s: error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,      \
                        #expr, st_->msg, needle);                                                  \
                check_failures++;                                                                  \
            }                                                                                      \
            ss_status_free(st_);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%g vs %g", (double)(a), (double)(b))

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

static inline int run_tests(const test_case *cases, int n)
{
    int failed_cases = 0;
    for (int i = 0; i < n; i++) {
        int before = check_failures;
        cases[i].fn();
        int bad = check_failures != before;
        failed_cases += bad;
        printf("%s %s\n", bad ? "FAIL" : "ok  ", cases[i].name);
    }
    printf("%d passed, %d failed\n", n - failed_cases, failed_cases);
    return failed_cases ? 1 : 0;
}

#define TEST(name)                                                                                 \
    {                                                                                              \
#name, name                                                                                \
    }
#define TEST_MAIN(...)                                                                             \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        test_argc = argc;                                                                          \
        test_argv = argv;                                                                          \
        static const test_case cases_[] = {__VA_ARGS__};                                           \
        return run_tests(cases_, (int)(sizeof cases_ / sizeof cases_[0]));                         \
    }

#endif
