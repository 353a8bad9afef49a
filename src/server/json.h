/*
 * json: cJSON parsing that tells a body that is not JSON from one that found no memory. cJSON's
 * parsers return NULL for both; the REST codecs answer the first with a 400 naming the client's
 * mistake and the second with a 500. cJSON allocates through a wrapper (installed once, before
 * main) that notes a failed allocation in a thread-local flag.
 */
#ifndef SS_SERVER_JSON_H
#define SS_SERVER_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* cJSON_ParseWithLengthOpts(text, len, end, false); when it returns NULL, *oom says whether an
 * allocation failed (the text may be valid JSON) rather than the text being malformed. */
cJSON *ss_json_parse(const char *text, size_t len, const char **end, bool *oom);

#endif
