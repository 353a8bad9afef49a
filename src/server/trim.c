/*
 * trim (trim.h): malloc_trim after large requests. Every large request trims once it is freed, even
 * while another trim runs (that one may have walked the arenas before this request's memory was
 * free); a trim costs milliseconds, the requests that call it far more.
 */
#define _GNU_SOURCE
#include "trim.h"

#include <malloc.h>

void ss_server_trim_after(size_t bytes)
{
    if (bytes >= SS_SERVER_TRIM_BYTES) malloc_trim(0);
}
