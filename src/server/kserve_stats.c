/*
 * kserve_stats: Triton's per-model statistics from the /metrics counters (see kserve_stats.h).
 * One series of shardserve_requests_total per (servable, version, method, outcome) lists the
 * models; the latency and batch histograms are then read for each.
 */
#include "kserve_stats.h"

#include "shardserve/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ss_kserve_stats *items;
    size_t n, cap;
    bool oom;
} stats_list;

static ss_kserve_stats *find_or_add(stats_list *l, const char *const *labels)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].servable, labels[0]) && !strcmp(l->items[i].version, labels[1]) &&
            !strcmp(l->items[i].method, labels[2]))
            return &l->items[i];
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        ss_kserve_stats *grown = realloc(l->items, cap * sizeof *grown);
        if (!grown) {
            l->oom = true;
            return NULL;
        }
        l->items = grown;
        l->cap = cap;
    }
    ss_kserve_stats *st = &l->items[l->n++];
    memset(st, 0, sizeof *st);
    snprintf(st->servable, sizeof st->servable, "%s", labels[0]);
    snprintf(st->version, sizeof st->version, "%s", labels[1]);
    snprintf(st->method, sizeof st->method, "%s", labels[2]);
    return st;
}

/* Requests the registry refused before resolving a method carry no method: not a model. */
static void count_requests(void *ctx, const char *const *labels, const ss_metric_series *s)
{
    if (!labels[0][0] || !labels[1][0] || !labels[2][0]) return;
    ss_kserve_stats *st = find_or_add(ctx, labels);
    if (!st) return;
    uint64_t n = (uint64_t)ss_metric_value(s);
    if (!strcmp(labels[3], "ok"))
        st->success.count += n;
    else
        st->fail.count += n;
}

static void add_histogram(void *ctx, const char *const *labels, const ss_metric_series *s)
{
    (void)labels;
    ss_kserve_duration *d = ctx;
    d->count += ss_metric_count(s);
    d->ns += (uint64_t)(ss_metric_value(s) * 1e9 + 0.5);
}

static void read_histogram(const char *family, const char *const *labels, ss_kserve_duration *d)
{
    ss_metrics_visit(ss_metrics_global(), family, labels, add_histogram, d);
}

/* shardserve_batch_size: one observation per batch, its value the batch's instances. */
static void add_batches(void *ctx, const char *const *labels, const ss_metric_series *s)
{
    (void)labels;
    ss_kserve_stats *st = ctx;
    st->execution_count += ss_metric_count(s);
    st->inference_count += (uint64_t)(ss_metric_value(s) + 0.5);
}

static void fill(ss_kserve_stats *st)
{
    const char *labels[] = {st->servable, st->version, st->method};
    ss_kserve_duration total = {0};
    read_histogram("shardserve_request_duration_seconds", labels, &total);
    st->success.ns = total.ns;
    read_histogram("shardserve_request_queue_seconds", labels, &st->queue);
    read_histogram("shardserve_request_compute_seconds", labels, &st->compute_infer);
    ss_metrics_visit(ss_metrics_global(), "shardserve_batch_size", labels, add_batches, st);
}

/* The KServe model name: NAME for a servable's only method, else NAME.METHOD. */
static void model_name(const ss_predict_handler *h, ss_kserve_stats *st)
{
    ss_serving_signature *sig = NULL;
    char why[256];
    uint64_t v = strtoull(st->version, NULL, 10);
    bool only = h->describe &&
                h->describe(h->ctx, st->servable, v, &sig, why, sizeof why) == SS_DESCRIBE_OK &&
                sig->n_methods == 1;
    if (sig) ss_serving_signature_free(sig);
    snprintf(st->model, sizeof st->model, only ? "%s" : "%s.%s", st->servable, st->method);
}

static bool collect(const ss_predict_handler *h, const char *const *match, const char *model,
                    ss_kserve_stats **out, size_t *n, ss_kserve_error *err)
{
    stats_list l = {0};
    ss_metrics_visit(ss_metrics_global(), "shardserve_requests_total", match, count_requests, &l);
    if (l.oom) {
        free(l.items);
        ss_kserve_fail(err, 500, "out of memory reading statistics");
        return false;
    }
    for (size_t i = 0; i < l.n; i++) {
        fill(&l.items[i]);
        if (model)
            snprintf(l.items[i].model, sizeof l.items[i].model, "%s", model);
        else
            model_name(h, &l.items[i]);
    }
    *out = l.items;
    *n = l.n;
    return true;
}

bool ss_kserve_stats_collect(const ss_predict_handler *h, const char *model, const char *version,
                             ss_kserve_stats **out, size_t *n, ss_kserve_error *err)
{
    *out = NULL;
    *n = 0;
    if (!model || !model[0]) return collect(h, NULL, NULL, out, n, err);
    uint64_t v = 0;
    if (!ss_kserve_parse_version(version, strlen(version), &v)) {
        ss_kserve_fail(err, 404, "unknown version '%.40s' of model '%.200s'", version, model);
        return false;
    }
    ss_kserve_call *call = ss_kserve_call_new();
    if (!call) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    bool ok = ss_kserve_resolve(h, model, v, call, err);
    if (ok) {
        char vs[24] = "";
        if (v) snprintf(vs, sizeof vs, "%llu", (unsigned long long)v);
        const char *match[] = {call->sig->servable, v ? vs : NULL, call->method->name, NULL};
        ok = collect(h, match, model, out, n, err);
    }
    if (ok && *n == 0 && (*out = calloc(1, sizeof **out))) { /* not used yet: all zero */
        *n = 1;
        snprintf((*out)->model, sizeof(*out)->model, "%s", model);
        snprintf((*out)->version, sizeof(*out)->version, "%llu",
                 (unsigned long long)call->sig->version);
    }
    ss_kserve_call_free(call);
    return ok;
}
