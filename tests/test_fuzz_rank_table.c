/*
 * libFuzzer target for the rank-table parser (built with -DSS_FUZZ=ON and clang): any byte string
 * (not NUL-terminated) must parse into a table whose rank ids are 0..n-1 with bounded strings, or
 * give an error naming the input; never crash, leak or read past the buffer. A parsed table is
 * also put through ss_rank_table_check with a few servable shapes.
 */
#include "shardserve/worker.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy of exactly `size` bytes, so ASan catches a read past the end */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    ss_rank_table t;
    memset(&t, 0, sizeof t);
    ss_status *st = ss_rank_table_parse(text, size, "fuzz", &t);
    free(text);
    if (st) {
        if (!strstr(st->msg, "fuzz") && st->code != SS_ERR_NOMEM) abort();
        ss_status_free(st);
        return 0;
    }
    if (t.n <= 0 || !t.ranks || !t.json) abort();
    for (int i = 0; i < t.n; i++) {
        if (t.ranks[i].rank_id != i || t.ranks[i].device_id < 0) abort();
        if (strnlen(t.ranks[i].ip, sizeof t.ranks[i].ip) >= sizeof t.ranks[i].ip) abort();
    }
    static const int shapes[][2] = {{1, 1}, {2, 1}, {8, 1}, {16, 2}, {3, 2}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        st = ss_rank_table_check(&t, shapes[i][0], shapes[i][1], "fuzz");
        if (st) ss_status_free(st);
    }
    ss_rank_table_free(&t);
    return 0;
}
