/*
 * libFuzzer target for the ONNX loader (built with -DSS_FUZZ=ON and clang): any byte string given
 * to ss_onnx_load_buffer must load into a model whose initializers are self-consistent, or give an
 * error naming the input; never crash, leak, or read out of bounds. No folder is given, so
 * external data is always refused (the fuzzer never touches the file system).
 */
#include "shardserve/onnx.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_onnx_model *m = NULL;
    ss_status *st = ss_onnx_load_buffer(data, size, "fuzz", NULL, &m);
    if (st) {
        if (!strstr(st->msg, "fuzz")) abort();
        ss_status_free(st);
        return 0;
    }
    for (int i = 0; i < m->n_init; i++) {
        const ss_tensor *t = &m->inits[i].tensor;
        int64_t n = ss_tensor_numel(t);
        if (n < 0 || (size_t)n * ss_dtype_size(t->dtype) != t->nbytes) abort();
        /* touch every byte: ASan sees any initializer pointing outside its storage */
        volatile uint8_t acc = 0;
        for (size_t b = 0; b < t->nbytes; b++)
            acc ^= ((const uint8_t *)t->data)[b];
        (void)acc;
    }
    (void)ss_onnx_opset(m, "");
    ss_onnx_free(m);
    return 0;
}
