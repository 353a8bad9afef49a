/*
 * trim (trim.h): malloc_trim after large requests, at most one trim running at a time (a trim walks
 * every arena; concurrent large requests need only one of them to do it).
 */
#define _GNU_SOURCE
#include "trim.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>

void ss_server_trim_after(size_t bytes)
{
    static atomic_bool busy;
    if (bytes < SS_SERVER_TRIM_BYTES || atomic_exchange(&busy, true)) return;
    malloc_trim(0);
    atomic_store(&busy, false);
}
