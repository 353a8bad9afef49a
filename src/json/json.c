/*
 * json: cJSON's allocator wrapped to note a failed allocation (see json.h).
 */
#include "json.h"

#include <stdlib.h>

static _Thread_local bool alloc_failed;

static void *json_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p) alloc_failed = true;
    return p;
}

/* Before main, so no thread parses while the hooks change. cJSON then grows printed text by
 * malloc and copy instead of realloc; the codecs write their replies with sbuf, not cJSON. */
__attribute__((constructor)) static void json_hooks(void)
{
    cJSON_Hooks hooks = {json_malloc, free};
    cJSON_InitHooks(&hooks);
}

cJSON *ss_json_parse(const char *text, size_t len, const char **end, bool *oom)
{
    alloc_failed = false;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, end, false);
    *oom = !root && alloc_failed;
    while (root && end && *end < text + len &&
           (**end == ' ' || **end == '\t' || **end == '\n' || **end == '\r'))
        (*end)++;
    return root;
}
