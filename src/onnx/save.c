/* Serialize a model proto to a file (used by the shard tool). */
#include "shardserve/onnx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ss_status *ss_onnx_save_proto(const ss_onnx_proto *proto, const char *path)
{
    size_t len = onnx__model_proto__get_packed_size(proto);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return ss_errf(SS_ERR_NOMEM, "cannot allocate %zu bytes to write %s", len, path);
    onnx__model_proto__pack(proto, buf);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(buf);
        return ss_errf(SS_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    }
    int ok = fwrite(buf, 1, len, f) == len;
    if (fclose(f) != 0) ok = 0;
    free(buf);
    return ok ? NULL : ss_errf(SS_ERR_IO, "short write on %s", path);
}
