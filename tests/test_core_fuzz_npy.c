/*
 * libFuzzer target for the .npy parser (built with -DSS_FUZZ=ON and clang): any byte string must
 * parse into a self-consistent tensor or give an error naming the input, never crash, leak, read
 * out of bounds or allocate more than the input could hold.
 */
#include "shardserve/core.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_tensor t;
    ss_status *st = ss_npy_parse(data, size, "fuzz", &t);
    if (st) {
        if (strncmp(st->msg, "fuzz: ", 6) != 0) abort();
        ss_status_free(st);
        return 0;
    }
    int64_t n = ss_tensor_numel(&t);
    if (n < 0 || (size_t)n * ss_dtype_size(t.dtype) != t.nbytes || t.nbytes > size) abort();
    ss_tensor_free(&t);
    return 0;
}
