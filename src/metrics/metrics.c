/*
 * metrics: a registry of counters, gauges and histograms with lock-free updates and a Prometheus
 * text renderer (see include/shardserve/metrics.h for the guarantees).
 *
 * Doubles live in _Atomic uint64_t (their bit patterns) and change by compare-and-swap, so an
 * update never takes a lock and never loses an increment. Histogram buckets are plain atomic
 * counts per bucket (not cumulative); the renderer accumulates them. A render reads each atomic
 * once; it is a consistent snapshot per value, not across values (as every Prometheus client).
 */
#include "shardserve/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ss_metric_series {
    char *values[SS_METRICS_MAX_LABELS];
    _Atomic uint64_t bits; /* counter/gauge value, or histogram sum */
    _Atomic uint64_t count;
    _Atomic uint64_t buckets[SS_METRICS_MAX_BUCKETS + 1]; /* the last one is +Inf */
    ss_metric_family *family;
    ss_metric_series *next;
};

struct ss_metric_family {
    ss_metric_type type;
    char *name, *help;
    int n_labels;
    char *labels[SS_METRICS_MAX_LABELS];
    int n_buckets;
    double bounds[SS_METRICS_MAX_BUCKETS];
    ss_metric_series *series, **tail;
    ss_metric_family *next;
};

typedef struct collector {
    ss_metrics_collect_fn fn;
    void *ctx;
    struct collector *next;
} collector;

struct ss_metrics {
    pthread_mutex_t mu;         /* families and series lists */
    pthread_mutex_t collect_mu; /* collector list; held while collectors run */
    ss_metric_family *families, **tail;
    collector *collectors;
};

static const double default_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                         0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};

/* ------------------------------------------------------------------ atomics on doubles */

static double bits_to_d(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t d_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static void atomic_add_d(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, d_to_bits(bits_to_d(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* ------------------------------------------------------------------ registry */

ss_metrics *ss_metrics_new(void)
{
    ss_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->collect_mu, NULL);
    m->tail = &m->families;
    return m;
}

static ss_metrics *global_registry;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static void global_init(void)
{
    global_registry = ss_metrics_new();
}

ss_metrics *ss_metrics_global(void)
{
    pthread_once(&global_once, global_init);
    return global_registry;
}

void ss_metrics_free(ss_metrics *m)
{
    if (!m) return;
    for (ss_metric_family *f = m->families; f;) {
        for (ss_metric_series *s = f->series; s;) {
            ss_metric_series *n = s->next;
            for (int i = 0; i < f->n_labels; i++)
                free(s->values[i]);
            free(s);
            s = n;
        }
        for (int i = 0; i < f->n_labels; i++)
            free(f->labels[i]);
        free(f->name);
        free(f->help);
        ss_metric_family *n = f->next;
        free(f);
        f = n;
    }
    for (collector *c = m->collectors; c;) {
        collector *n = c->next;
        free(c);
        c = n;
    }
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->collect_mu);
    free(m);
}

static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

ss_metric_family *ss_metrics_family(ss_metrics *m, ss_metric_type type, const char *name,
                                    const char *help, int n_labels, const char *const *label_names,
                                    const double *buckets, int n_buckets)
{
    if (!m || !valid_name(name, true) || n_labels < 0 || n_labels > SS_METRICS_MAX_LABELS)
        return NULL;
    for (int i = 0; i < n_labels; i++)
        if (!valid_name(label_names[i], false) || !strncmp(label_names[i], "__", 2) ||
            !strcmp(label_names[i], "le"))
            return NULL;
    if (type == SS_METRIC_HISTOGRAM && !buckets) {
        buckets = default_buckets;
        n_buckets = (int)(sizeof default_buckets / sizeof *default_buckets);
    }
    if (type != SS_METRIC_HISTOGRAM) n_buckets = 0;
    if (n_buckets < 0 || n_buckets > SS_METRICS_MAX_BUCKETS) return NULL;
    for (int i = 0; i < n_buckets; i++)
        if (!isfinite(buckets[i]) || (i && buckets[i] <= buckets[i - 1])) return NULL;
    pthread_mutex_lock(&m->mu);
    ss_metric_family *f;
    for (f = m->families; f; f = f->next)
        if (!strcmp(f->name, name)) break;
    if (f) {
        bool same = f->type == type && f->n_labels == n_labels;
        for (int i = 0; same && i < n_labels; i++)
            same = !strcmp(f->labels[i], label_names[i]);
        pthread_mutex_unlock(&m->mu);
        if (!same) SS_ERROR("metrics: %s is registered twice with different types or labels", name);
        return same ? f : NULL;
    }
    f = calloc(1, sizeof *f);
    bool ok = f && (f->name = strdup(name)) && (f->help = strdup(help ? help : ""));
    for (int i = 0; ok && i < n_labels; i++)
        ok = (f->labels[i] = strdup(label_names[i])) != NULL;
    if (!ok) {
        if (f) {
            for (int i = 0; i < n_labels; i++)
                free(f->labels[i]);
            free(f->name);
            free(f->help);
            free(f);
        }
        pthread_mutex_unlock(&m->mu);
        return NULL;
    }
    f->type = type;
    f->n_labels = n_labels;
    f->n_buckets = n_buckets;
    for (int i = 0; i < n_buckets; i++)
        f->bounds[i] = buckets[i];
    f->tail = &f->series;
    *m->tail = f;
    m->tail = &f->next;
    pthread_mutex_unlock(&m->mu);
    return f;
}

/* Series lists of every registry share one mutex: series are created rarely (first use of a
 * label set), and a family needs no pointer back to its registry. */
static pthread_mutex_t series_mu = PTHREAD_MUTEX_INITIALIZER;

ss_metric_series *ss_metrics_series(ss_metric_family *f, const char *const *label_values)
{
    if (!f) return NULL;
    pthread_mutex_lock(&series_mu);
    ss_metric_series *s;
    for (s = f->series; s; s = s->next) {
        bool same = true;
        for (int i = 0; same && i < f->n_labels; i++)
            same = !strcmp(s->values[i], label_values[i] ? label_values[i] : "");
        if (same) break;
    }
    if (!s && (s = calloc(1, sizeof *s))) {
        bool ok = true;
        for (int i = 0; ok && i < f->n_labels; i++)
            ok = (s->values[i] = strdup(label_values[i] ? label_values[i] : "")) != NULL;
        if (!ok) {
            for (int i = 0; i < f->n_labels; i++)
                free(s->values[i]);
            free(s);
            s = NULL;
        } else {
            s->family = f;
            *f->tail = s;
            f->tail = &s->next;
        }
    }
    pthread_mutex_unlock(&series_mu);
    return s;
}

void ss_metric_add(ss_metric_series *s, double v)
{
    if (!s || s->family->type == SS_METRIC_HISTOGRAM) return;
    if (s->family->type == SS_METRIC_COUNTER && !(v >= 0))
        return; /* counters only go up (NaN too) */
    atomic_add_d(&s->bits, v);
}

void ss_metric_set(ss_metric_series *s, double v)
{
    if (!s || s->family->type != SS_METRIC_GAUGE) return;
    atomic_store_explicit(&s->bits, d_to_bits(v), memory_order_relaxed);
}

void ss_metric_observe(ss_metric_series *s, double v)
{
    if (!s || s->family->type != SS_METRIC_HISTOGRAM || isnan(v)) return;
    const ss_metric_family *f = s->family;
    int b = 0;
    while (b < f->n_buckets && v > f->bounds[b])
        b++;
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_add_d(&s->bits, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

double ss_metric_value(const ss_metric_series *s)
{
    return s ? bits_to_d(atomic_load_explicit(&((ss_metric_series *)s)->bits, memory_order_relaxed))
             : 0;
}

uint64_t ss_metric_count(const ss_metric_series *s)
{
    return s ? atomic_load_explicit(&((ss_metric_series *)s)->count, memory_order_relaxed) : 0;
}

int ss_metrics_visit(ss_metrics *m, const char *name, const char *const *match,
                     ss_metrics_visit_fn fn, void *ctx)
{
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    ss_metric_family *f = m->families;
    while (f && strcmp(f->name, name) != 0)
        f = f->next;
    pthread_mutex_unlock(&m->mu);
    if (!f) return 0;
    int visited = 0;
    pthread_mutex_lock(&series_mu);
    for (ss_metric_series *s = f->series; s; s = s->next) {
        bool same = true;
        for (int i = 0; same && match && i < f->n_labels; i++)
            same = !match[i] || !strcmp(s->values[i], match[i]);
        if (!same) continue;
        fn(ctx, (const char *const *)s->values, s);
        visited++;
    }
    pthread_mutex_unlock(&series_mu);
    return visited;
}

void ss_metrics_add_collector(ss_metrics *m, ss_metrics_collect_fn fn, void *ctx)
{
    collector *c = m ? calloc(1, sizeof *c) : NULL;
    if (!c) return;
    c->fn = fn;
    c->ctx = ctx;
    pthread_mutex_lock(&m->collect_mu);
    collector **pp = &m->collectors;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    pthread_mutex_unlock(&m->collect_mu);
}

void ss_metrics_remove_collector(ss_metrics *m, ss_metrics_collect_fn fn, void *ctx)
{
    if (!m) return;
    pthread_mutex_lock(&m->collect_mu);
    for (collector **pp = &m->collectors; *pp; pp = &(*pp)->next)
        if ((*pp)->fn == fn && (*pp)->ctx == ctx) {
            collector *c = *pp;
            *pp = c->next;
            free(c);
            break;
        }
    pthread_mutex_unlock(&m->collect_mu);
}

/* ------------------------------------------------------------------ rendering */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = true;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void putf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Go's strconv formatting as Prometheus prints it: integers plainly, others shortest exact. */
static void put_number(sbuf *b, double v)
{
    if (isnan(v))
        puts_(b, "NaN");
    else if (isinf(v))
        puts_(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        putf(b, "%.0f", v);
    else {
        char tmp[40];
        for (int prec = 6; prec <= 17; prec++) { /* the shortest text that reads back as v */
            snprintf(tmp, sizeof tmp, "%.*g", prec, v);
            if (strtod(tmp, NULL) == v) break;
        }
        puts_(b, tmp);
    }
}

/* escape: label values escape \ " \n; help text escapes \ and \n. */
static void put_escaped(sbuf *b, const char *s, bool quote)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            puts_(b, "\\\\");
        else if (*p == '\n')
            puts_(b, "\\n");
        else if (quote && *p == '"')
            puts_(b, "\\\"");
        else
            put(b, p, 1);
    }
}

/* {a="x",b="y"[,le="..."]} */
static void put_labels(sbuf *b, const ss_metric_family *f, const ss_metric_series *s,
                       const char *le)
{
    if (!f->n_labels && !le) return;
    puts_(b, "{");
    for (int i = 0; i < f->n_labels; i++) {
        if (i) puts_(b, ",");
        puts_(b, f->labels[i]);
        puts_(b, "=\"");
        put_escaped(b, s->values[i], true);
        puts_(b, "\"");
    }
    if (le) {
        if (f->n_labels) puts_(b, ",");
        puts_(b, "le=\"");
        puts_(b, le);
        puts_(b, "\"");
    }
    puts_(b, "}");
}

char *ss_metrics_render(ss_metrics *m, size_t *len)
{
    if (len) *len = 0;
    if (!m) return NULL;
    pthread_mutex_lock(&m->collect_mu);
    for (collector *c = m->collectors; c; c = c->next)
        c->fn(c->ctx);
    pthread_mutex_unlock(&m->collect_mu);

    sbuf b = {0};
    puts_(&b, ""); /* an empty registry still renders "" */
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    pthread_mutex_lock(&m->mu);
    pthread_mutex_lock(&series_mu);
    for (const ss_metric_family *f = m->families; f; f = f->next) {
        putf(&b, "# HELP %s ", f->name);
        put_escaped(&b, f->help, false);
        putf(&b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (const ss_metric_series *s = f->series; s; s = s->next) {
            double v = ss_metric_value(s);
            if (f->type != SS_METRIC_HISTOGRAM) {
                puts_(&b, f->name);
                put_labels(&b, f, s, NULL);
                puts_(&b, " ");
                put_number(&b, v);
                puts_(&b, "\n");
                continue;
            }
            uint64_t cum = 0;
            for (int i = 0; i <= f->n_buckets; i++) {
                cum += atomic_load_explicit(&((ss_metric_series *)s)->buckets[i],
                                            memory_order_relaxed);
                char le[40];
                if (i == f->n_buckets)
                    snprintf(le, sizeof le, "+Inf");
                else {
                    sbuf t = {0};
                    put_number(&t, f->bounds[i]);
                    snprintf(le, sizeof le, "%s", t.buf ? t.buf : "0");
                    free(t.buf);
                }
                putf(&b, "%s_bucket", f->name);
                put_labels(&b, f, s, le);
                putf(&b, " %llu\n", (unsigned long long)cum);
            }
            putf(&b, "%s_sum", f->name);
            put_labels(&b, f, s, NULL);
            puts_(&b, " ");
            put_number(&b, v);
            putf(&b, "\n%s_count", f->name);
            put_labels(&b, f, s, NULL);
            putf(&b, " %llu\n", (unsigned long long)cum); /* == the +Inf bucket, by construction */
        }
    }
    pthread_mutex_unlock(&series_mu);
    pthread_mutex_unlock(&m->mu);
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    if (len) *len = b.len;
    return b.buf;
}
