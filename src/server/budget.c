/*
 * budget (budget.h): a lock-free counter with a ceiling; take() retries its compare-and-swap only
 * while other threads change the count at the same moment.
 */
#include "budget.h"

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
