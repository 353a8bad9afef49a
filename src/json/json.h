/*
 * json: cJSON parsing that tells text that is not JSON from a parse that found no memory. cJSON's
 * parsers return NULL for both; the REST codecs answer the first with a 400 naming the client's
 * mistake and the second with a 500, and a tokenizer.json that failed to load for lack of memory
 * is not remembered as broken. cJSON allocates through a wrapper (installed once, before main)
 * that notes a failed allocation in a thread-local flag.
 */
#ifndef SS_JSON_H
#define SS_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* cJSON_ParseWithLengthOpts(text, len, end, false), with *end (if given) past the whitespace
 * after the value too, so that text holding exactly one value leaves it at text + len. When it
 * returns NULL, *oom says whether an allocation failed (the text may be valid JSON) rather than
 * the text being malformed. */
cJSON *ss_json_parse(const char *text, size_t len, const char **end, bool *oom);

#endif
