/*
 * budget (budget.h): a lock-free counter with a ceiling; take() retries its compare-and-swap only
 * while other threads change the count at the same moment.
 */
#include "budget.h"

#include "shardserve/server.h"

bool ss_byte_budget_take(ss_byte_budget *b, size_t n)
{
    size_t used = atomic_load(&b->used);
    do {
        if (n > b->limit || used > b->limit - n) {
            if (b->refused) ss_metric_add(b->refused, 1);
            return false;
        }
    } while (!atomic_compare_exchange_weak(&b->used, &used, used + n));
    return true;
}

void ss_byte_budget_give(ss_byte_budget *b, size_t n)
{
    atomic_fetch_sub(&b->used, n);
}

/* ------------------------------------------------------------------ the rows budget */

static ss_byte_budget rows_held = {.limit = (size_t)SS_KSERVE_DEFAULT_MAX_ROWS_MB << 20};
static ss_metric_series *rows_refused; /* made by ss_server_set_kserve_max_rows_mb */

void ss_server_set_kserve_max_rows_mb(int mb)
{
    if (mb > 0) rows_held.limit = (size_t)mb << 20;
    static const char *const labels[] = {"limit"};
    ss_metric_family *f =
        ss_metrics_family(ss_metrics_global(), SS_METRIC_COUNTER, "shardserve_kserve_refused_total",
                          "KServe requests refused by a limit", 1, labels, NULL, 0);
    rows_refused = ss_metrics_series(f, (const char *const[]){"batch_rows"});
}

bool ss_server_rows_take(size_t bytes, size_t *used, size_t *limit)
{
    *limit = rows_held.limit;
    *used = atomic_load(&rows_held.used);
    if (bytes <= rows_held.limit && ss_byte_budget_take(&rows_held, bytes)) return true;
    if (rows_refused) ss_metric_add(rows_refused, 1);
    return false;
}

void ss_server_rows_give(size_t bytes)
{
    ss_byte_budget_give(&rows_held, bytes);
}
