/*
 * metrics: counters, gauges and histograms for operators, rendered in the Prometheus text
 * exposition format (version 0.0.4) by GET /metrics.
 *
 * A registry holds metric families (name, help, type, label names); a family holds series (one
 * per set of label values). Looking a family or series up takes the registry's mutex; updating a
 * series never does: values are atomics, so the hot path (one series pointer kept by the caller)
 * costs an atomic add. Series live as long as their registry (never removed), so a pointer stays
 * valid. Values that are cheaper to read at scrape time (a heartbeat's age, bytes moved by a
 * connection) come from collectors: callbacks run just before rendering, which set gauges or add
 * to counters. ss_metrics_remove_collector returns only once the callback is not running.
 *
 * Guarantees of the rendering: every family has one # HELP and one # TYPE line before its
 * samples; names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*; label values
 * escape \ " and newline; histogram buckets are cumulative, end with le="+Inf" equal to _count,
 * and are followed by _sum and _count.
 */
#ifndef SHARDSERVE_METRICS_H
#define SHARDSERVE_METRICS_H

#include "shardserve/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SS_METRICS_MAX_LABELS 4
#define SS_METRICS_MAX_BUCKETS 24

typedef enum { SS_METRIC_COUNTER, SS_METRIC_GAUGE, SS_METRIC_HISTOGRAM } ss_metric_type;

typedef struct ss_metrics ss_metrics;
typedef struct ss_metric_family ss_metric_family;
typedef struct ss_metric_series ss_metric_series;

/* The process-wide registry (what the REST server renders). Never freed. */
ss_metrics *ss_metrics_global(void);
ss_metrics *ss_metrics_new(void);
void ss_metrics_free(ss_metrics *m);

/* Get or create a family. label_names: n_labels (<= SS_METRICS_MAX_LABELS) names, comma-free.
 * buckets: strictly increasing upper bounds for a histogram (NULL = latency defaults in seconds,
 * 100 us .. 10 s). Returns NULL on a bad name, or when the name exists with another type or
 * other labels (a programming error; it is logged). */
ss_metric_family *ss_metrics_family(ss_metrics *m, ss_metric_type type, const char *name,
                                    const char *help, int n_labels, const char *const *label_names,
                                    const double *buckets, int n_buckets);
/* Get or create the series for these label values (as many as the family's labels). NULL-safe:
 * a NULL family gives NULL, and every update below accepts a NULL series and does nothing. */
ss_metric_series *ss_metrics_series(ss_metric_family *f, const char *const *label_values);

void ss_metric_add(ss_metric_series *s, double v);     /* counter (v >= 0) or gauge */
void ss_metric_set(ss_metric_series *s, double v);     /* gauge */
void ss_metric_observe(ss_metric_series *s, double v); /* histogram */
double ss_metric_value(const ss_metric_series *s);     /* counter/gauge value; histogram: its sum */
uint64_t ss_metric_count(const ss_metric_series *s);   /* histogram: observations */

/* Read without creating anything (for reports built from the same counters, as KServe's
 * statistics): call fn for every series of the family `name` whose label values equal `match`
 * (as many entries as the family's labels; a NULL entry, or a NULL match, accepts any value).
 * fn runs under the series lock: it must only read. Returns how many series were visited. */
typedef void (*ss_metrics_visit_fn)(void *ctx, const char *const *label_values,
                                    const ss_metric_series *s);
int ss_metrics_visit(ss_metrics *m, const char *name, const char *const *match,
                     ss_metrics_visit_fn fn, void *ctx);

/* Collectors run (in registration order) at the start of every render. */
typedef void (*ss_metrics_collect_fn)(void *ctx);
void ss_metrics_add_collector(ss_metrics *m, ss_metrics_collect_fn fn, void *ctx);
void ss_metrics_remove_collector(ss_metrics *m, ss_metrics_collect_fn fn, void *ctx);

/* The whole registry as Prometheus text; malloc'd, NUL-terminated, *len without the NUL.
 * NULL when out of memory. */
char *ss_metrics_render(ss_metrics *m, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
