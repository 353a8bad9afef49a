/*
 * libFuzzer target for the servable.json parser (built with -DSS_FUZZ=ON and clang): any byte
 * string (not NUL-terminated) must parse into a config whose counts and names are within their
 * fixed arrays and whose rank/stage sizes are consistent, or give an error naming the input;
 * never crash, leak or read past the buffer.
 */
#include "shardserve/worker.h"

#include <stdlib.h>
#include <string.h>

static void check_names(char (*names)[128], int n)
{
    if (n < 0 || n > SS_MAX_IO) abort();
    for (int i = 0; i < n; i++)
        if (strnlen(names[i], 128) >= 128) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    ss_servable_config c;
    memset(&c, 0, sizeof c);
    ss_status *st = ss_servable_config_parse(text, size, "fuzz", "fuzzed", &c);
    free(text);
    if (st) {
        if (!strstr(st->msg, "fuzz") && st->code != SS_ERR_NOMEM) abort();
        ss_status_free(st);
        return 0;
    }
    if (c.rank_size < 1 || c.stage_size < 1 || c.rank_size % c.stage_size) abort();
    if (c.n_methods < 1 || c.n_methods > 16) abort();
    check_names(c.without_batch_dim_inputs, c.n_no_batch);
    for (int m = 0; m < c.n_methods; m++) {
        if (strnlen(c.methods[m].name, 128) >= 128) abort();
        check_names(c.methods[m].inputs, c.methods[m].n_inputs);
        check_names(c.methods[m].outputs, c.methods[m].n_outputs);
    }
    ss_servable_config_clear(&c);
    return 0;
}
