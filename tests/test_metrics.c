/*
 * metrics unit test: exact Prometheus text for a small registry (counter, gauge, histogram,
 * label escaping, number formatting), lock-free updates from several threads lose nothing,
 * collectors run before rendering and stop after removal, bad names and conflicting
 * re-registrations are refused, and visiting reads matching series without creating any. The
 * rendered text is also written to the file given as argv[1] (if any) so the Python strict parser
 * (test_metrics_format.py) can check it.
 */
#include "check.h"
#include "shardserve/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_exact_text(void)
{
    ss_metrics *m = ss_metrics_new();
    CHECK(m);
    const char *l2[] = {"servable", "outcome"};
    ss_metric_family *req = ss_metrics_family(m, SS_METRIC_COUNTER, "t_requests_total",
                                              "Requests\nanswered \\ all", 2, l2, NULL, 0);
    ss_metric_family *g =
        ss_metrics_family(m, SS_METRIC_GAUGE, "t_inflight", "In flight", 0, NULL, NULL, 0);
    const double b[] = {0.5, 1, 2.5};
    const char *l1[] = {"servable"};
    ss_metric_family *h =
        ss_metrics_family(m, SS_METRIC_HISTOGRAM, "t_latency_seconds", "Latency", 1, l1, b, 3);
    CHECK(req && g && h);
    const char *v1[] = {"mat\"mul\\\n", "ok"};
    ss_metric_add(ss_metrics_series(req, v1), 3);
    ss_metric_add(ss_metrics_series(req, v1), 2);
    ss_metric_add(ss_metrics_series(req, v1), -7); /* counters never go down */
    ss_metric_add(ss_metrics_series(g, NULL), 2);
    ss_metric_add(ss_metrics_series(g, NULL), -0.25);
    const char *hv[] = {"m"};
    ss_metric_series *hs = ss_metrics_series(h, hv);
    ss_metric_observe(hs, 0.5); /* le is inclusive */
    ss_metric_observe(hs, 0.75);
    ss_metric_observe(hs, 3);
    ss_metric_observe(hs, 1);
    CHECK(ss_metric_count(hs) == 4);
    CHECK(ss_metric_value(hs) == 5.25);
    size_t len = 0;
    char *text = ss_metrics_render(m, &len);
    CHECK(text && len == strlen(text));
    const char *want = "# HELP t_requests_total Requests\\nanswered \\\\ all\n"
                       "# TYPE t_requests_total counter\n"
                       "t_requests_total{servable=\"mat\\\"mul\\\\\\n\",outcome=\"ok\"} 5\n"
                       "# HELP t_inflight In flight\n"
                       "# TYPE t_inflight gauge\n"
                       "t_inflight 1.75\n"
                       "# HELP t_latency_seconds Latency\n"
                       "# TYPE t_latency_seconds histogram\n"
                       "t_latency_seconds_bucket{servable=\"m\",le=\"0.5\"} 1\n"
                       "t_latency_seconds_bucket{servable=\"m\",le=\"1\"} 3\n"
                       "t_latency_seconds_bucket{servable=\"m\",le=\"2.5\"} 3\n"
                       "t_latency_seconds_bucket{servable=\"m\",le=\"+Inf\"} 4\n"
                       "t_latency_seconds_sum{servable=\"m\"} 5.25\n"
                       "t_latency_seconds_count{servable=\"m\"} 4\n";
    if (strcmp(text, want)) fprintf(stderr, "got:\n%s\nwant:\n%s\n", text, want);
    CHECK(strcmp(text, want) == 0);
    free(text);
    ss_metrics_free(m);
}

static void test_refusals(void)
{
    ss_metrics *m = ss_metrics_new();
    const char *bad_label[] = {"le"}, *dunder[] = {"__x"}, *ok[] = {"a"}, *other[] = {"b"};
    CHECK(!ss_metrics_family(m, SS_METRIC_COUNTER, "1abc", "", 0, NULL, NULL, 0));
    CHECK(!ss_metrics_family(m, SS_METRIC_COUNTER, "a-b", "", 0, NULL, NULL, 0));
    CHECK(!ss_metrics_family(m, SS_METRIC_HISTOGRAM, "h", "", 1, bad_label, NULL, 0));
    CHECK(!ss_metrics_family(m, SS_METRIC_GAUGE, "g", "", 1, dunder, NULL, 0));
    const double unsorted[] = {1, 1};
    CHECK(!ss_metrics_family(m, SS_METRIC_HISTOGRAM, "h", "", 0, NULL, unsorted, 2));
    ss_metric_family *f = ss_metrics_family(m, SS_METRIC_COUNTER, "c_total", "", 1, ok, NULL, 0);
    CHECK(f);
    CHECK(ss_metrics_family(m, SS_METRIC_COUNTER, "c_total", "again", 1, ok, NULL, 0) ==
          f); /* same: shared */
    CHECK(!ss_metrics_family(m, SS_METRIC_GAUGE, "c_total", "", 1, ok, NULL, 0));
    CHECK(!ss_metrics_family(m, SS_METRIC_COUNTER, "c_total", "", 1, other, NULL, 0));
    /* NULL family/series: updates are no-ops */
    CHECK(!ss_metrics_series(NULL, NULL));
    ss_metric_add(NULL, 1);
    ss_metric_observe(NULL, 1);
    ss_metrics_free(m);
}

typedef struct {
    ss_metric_series *c, *h;
} thr_arg;

static void *hammer(void *p)
{
    thr_arg *a = p;
    for (int i = 0; i < 100000; i++) {
        ss_metric_add(a->c, 1);
        ss_metric_observe(a->h, 0.001);
    }
    return NULL;
}

static void test_threads(void)
{
    ss_metrics *m = ss_metrics_new();
    ss_metric_family *c = ss_metrics_family(m, SS_METRIC_COUNTER, "n_total", "", 0, NULL, NULL, 0);
    ss_metric_family *h =
        ss_metrics_family(m, SS_METRIC_HISTOGRAM, "d_seconds", "", 0, NULL, NULL, 0);
    thr_arg a = {ss_metrics_series(c, NULL), ss_metrics_series(h, NULL)};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, &a);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(ss_metric_value(a.c) == 400000);
    CHECK(ss_metric_count(a.h) == 400000);
    char *text = ss_metrics_render(m, NULL);
    CHECK(text && strstr(text, "n_total 400000\n") &&
          strstr(text, "d_seconds_bucket{le=\"0.001\"} 400000\n") &&
          strstr(text, "d_seconds_count 400000\n"));
    free(text);
    ss_metrics_free(m);
}

static int collected;
static void collect(void *ctx)
{
    collected++;
    ss_metric_set(ctx, 42);
}

static void test_collectors(void)
{
    ss_metrics *m = ss_metrics_new();
    const char *l[] = {"rank"}, *v[] = {"0"};
    ss_metric_series *s =
        ss_metrics_series(ss_metrics_family(m, SS_METRIC_GAUGE, "up", "", 1, l, NULL, 0), v);
    ss_metrics_add_collector(m, collect, s);
    char *text = ss_metrics_render(m, NULL);
    CHECK(collected == 1 && text && strstr(text, "up{rank=\"0\"} 42\n"));
    free(text);
    ss_metrics_remove_collector(m, collect, s);
    ss_metric_set(s, 0);
    text = ss_metrics_render(m, NULL);
    CHECK(collected == 1 && text && strstr(text, "up{rank=\"0\"} 0\n"));
    free(text);
    ss_metrics_free(m);
}

/* A registry with every shape, for the Python strict parser. */
static void test_write_sample(void)
{
    if (test_argc < 2) return;
    const char *out_path = test_argv[1];
    ss_metrics *m = ss_metrics_new();
    const char *l[] = {"servable", "method"}, *v[] = {"a\"b", "p\\q\nr"}, *v2[] = {"x", ""};
    ss_metric_family *c =
        ss_metrics_family(m, SS_METRIC_COUNTER, "s_total", "with \\ and\nnewline", 2, l, NULL, 0);
    ss_metric_family *g = ss_metrics_family(m, SS_METRIC_GAUGE, "s:gauge", "", 0, NULL, NULL, 0);
    ss_metric_family *h =
        ss_metrics_family(m, SS_METRIC_HISTOGRAM, "s_seconds", "h", 2, l, NULL, 0);
    ss_metrics_family(m, SS_METRIC_COUNTER, "s_empty_total", "no series", 0, NULL, NULL, 0);
    ss_metric_add(ss_metrics_series(c, v), 1e20);
    ss_metric_add(ss_metrics_series(c, v2), 0.1);
    ss_metric_set(ss_metrics_series(g, NULL), -1.5e-9);
    for (int i = 0; i < 50; i++)
        ss_metric_observe(ss_metrics_series(h, v), i * 0.013);
    ss_metrics_series(h, v2);
    char *text = ss_metrics_render(m, NULL);
    FILE *f = fopen(out_path, "w");
    CHECK(f && text);
    fputs(text, f);
    fclose(f);
    free(text);
    ss_metrics_free(m);
}

static void test_global(void)
{
    CHECK(ss_metrics_global() && ss_metrics_global() == ss_metrics_global());
}

static void sum_visited(void *ctx, const char *const *labels, const ss_metric_series *s)
{
    double *sum = ctx;
    *sum += ss_metric_value(s) + (labels[1][0] == 'b' ? 1000 : 0);
}

static void test_visit(void)
{
    ss_metrics *m = ss_metrics_new();
    static const char *const names[] = {"model", "outcome"};
    ss_metric_family *f =
        ss_metrics_family(m, SS_METRIC_COUNTER, "req_total", "requests", 2, names, NULL, 0);
    ss_metric_add(ss_metrics_series(f, (const char *const[]){"a", "ok"}), 3);
    ss_metric_add(ss_metrics_series(f, (const char *const[]){"a", "bad"}), 4);
    ss_metric_add(ss_metrics_series(f, (const char *const[]){"b", "ok"}), 5);
    double sum = 0;
    CHECK(ss_metrics_visit(m, "req_total", (const char *const[]){"a", NULL}, sum_visited, &sum) ==
          2);
    CHECK(sum == 1007); /* 3 + 4, and the "bad" outcome's label was seen */
    sum = 0;
    CHECK(ss_metrics_visit(m, "req_total", NULL, sum_visited, &sum) == 3 && sum == 1012);
    CHECK(ss_metrics_visit(m, "req_total", (const char *const[]){"z", NULL}, sum_visited, &sum) ==
          0);
    CHECK(ss_metrics_visit(m, "nope_total", NULL, sum_visited, &sum) == 0);
    size_t len = 0;
    char *text = ss_metrics_render(m, &len);
    CHECK(text && !strstr(text, "\"z\"")); /* nothing was created */
    free(text);
    ss_metrics_free(m);
}

TEST_MAIN(TEST(test_visit), TEST(test_exact_text), TEST(test_refusals), TEST(test_threads),
          TEST(test_collectors), TEST(test_write_sample), TEST(test_global))
