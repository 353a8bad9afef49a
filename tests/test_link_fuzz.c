/*
 * libFuzzer target for the link's frame decoder (built with -DSS_FUZZ=ON and clang): any byte
 * string must decode cleanly or give an error, never crash, leak or read out of bounds.
 */
#include "shardserve/link.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_link_options o;
    ss_link_options_default(&o);
    o.max_frame_bytes = 1u << 20; /* keep allocations small under the fuzzer */
    size_t used = 0;
    while (size) {
        ss_link_msg m;
        ss_status *st = ss_link_decode_frame(data, size, &o, &m, &used);
        if (st) {
            ss_status_free(st);
            break;
        }
        ss_link_msg_free(&m);
        data += used;
        size -= used;
    }
    return 0;
}
