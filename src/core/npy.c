/*
 * .npy files (numpy's array format, versions 1.0, 2.0 and 3.0): a magic string, a header length,
 * a Python-dict header {'descr', 'fortran_order', 'shape'}, then the raw C-order data.
 * Reading checks every field and the data length; anything we cannot represent (Fortran order,
 * big-endian, object or structured dtypes, truncated data) is a clear error naming the file.
 * Writing always produces version 1.0 (2.0 if the header would not fit).
 */
#include "shardserve/core.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *code; /* numpy type code without the byte-order character */
    ss_dtype dtype;
} npy_types[] = {
    {"f4", SS_DT_FLOAT32}, {"f8", SS_DT_FLOAT64}, {"f2", SS_DT_FLOAT16}, {"i1", SS_DT_INT8},
    {"i2", SS_DT_INT16},   {"i4", SS_DT_INT32},   {"i8", SS_DT_INT64},   {"u1", SS_DT_UINT8},
    {"u2", SS_DT_UINT16},  {"u4", SS_DT_UINT32},  {"u8", SS_DT_UINT64},  {"b1", SS_DT_BOOL},
};

/* Finds the value text after 'key': in the header dict. */
static const char *dict_value(const char *hdr, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(hdr, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

static ss_status *parse_descr(const char *hdr, const char *what, ss_dtype *dt)
{
    const char *v = dict_value(hdr, "descr");
    if (!v) return ss_errf(SS_ERR_INVALID, "%s: npy header has no 'descr'", what);
    if (*v != '\'') return ss_errf(SS_ERR_INVALID, "%s: npy structured dtypes are not supported", what);
    v++;
    const char *end = strchr(v, '\'');
    if (!end || end - v > 15) return ss_errf(SS_ERR_INVALID, "%s: malformed npy 'descr'", what);
    char descr[16];
    memcpy(descr, v, (size_t)(end - v));
    descr[end - v] = 0;
    char order = descr[0];
    const char *code = descr + 1;
    if (order == '>' && strcmp(code, "i1") && strcmp(code, "u1") && strcmp(code, "b1"))
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: big-endian npy data ('%s') is not supported; "
                       "convert with arr.astype(arr.dtype.newbyteorder('<'))", what, descr);
    if (order != '<' && order != '|' && order != '>')
        return ss_errf(SS_ERR_INVALID, "%s: npy 'descr' '%s' has no byte-order mark", what, descr);
    if (code[0] == 'O')
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: npy object arrays are not supported", what);
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
        if (strcmp(code, npy_types[i].code) == 0) {
            *dt = npy_types[i].dtype;
            return NULL;
        }
    return ss_errf(SS_ERR_UNSUPPORTED, "%s: npy dtype '%s' is not supported", what, descr);
}

static ss_status *parse_shape(const char *hdr, const char *what, int *ndim, int64_t *dims)
{
    const char *v = dict_value(hdr, "fortran_order");
    if (!v) return ss_errf(SS_ERR_INVALID, "%s: npy header has no 'fortran_order'", what);
    if (strncmp(v, "True", 4) == 0)
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: Fortran-order npy arrays are not supported; "
                       "save with np.ascontiguousarray", what);
    if (strncmp(v, "False", 5) != 0)
        return ss_errf(SS_ERR_INVALID, "%s: malformed npy 'fortran_order'", what);
    v = dict_value(hdr, "shape");
    if (!v || *v != '(') return ss_errf(SS_ERR_INVALID, "%s: npy header has no 'shape' tuple", what);
    v++;
    *ndim = 0;
    for (;;) {
        while (*v == ' ' || *v == ',') v++;
        if (*v == ')') break;
        if (!isdigit((unsigned char)*v))
            return ss_errf(SS_ERR_INVALID, "%s: malformed npy 'shape'", what);
        if (*ndim == SS_MAX_DIMS)
            return ss_errf(SS_ERR_LIMIT, "%s: npy array has more than %d dims", what, SS_MAX_DIMS);
        errno = 0;
        char *end;
        long long d = strtoll(v, &end, 10);
        if (errno || d < 0) return ss_errf(SS_ERR_INVALID, "%s: npy dim out of range", what);
        dims[(*ndim)++] = d;
        v = end;
    }
    return NULL;
}

ss_status *ss_npy_parse(const void *buf, size_t len, const char *what, ss_tensor *out)
{
    const unsigned char *p = buf;
    memset(out, 0, sizeof *out);
    if (len < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
        return ss_errf(SS_ERR_INVALID, "%s: not an npy file (bad magic)", what);
    int major = p[6];
    size_t hlen, off;
    if (major == 1) {
        hlen = (size_t)p[8] | ((size_t)p[9] << 8);
        off = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) return ss_errf(SS_ERR_INVALID, "%s: truncated npy header", what);
        hlen = (size_t)p[8] | ((size_t)p[9] << 8) | ((size_t)p[10] << 16) | ((size_t)p[11] << 24);
        off = 12;
    } else {
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: npy format version %d is not supported", what, major);
    }
    if (hlen > len - off) return ss_errf(SS_ERR_INVALID, "%s: truncated npy header", what);
    char *hdr = malloc(hlen + 1);
    if (!hdr) return ss_errf(SS_ERR_NOMEM, "%s: out of memory", what);
    memcpy(hdr, p + off, hlen);
    hdr[hlen] = 0;
    ss_dtype dt = SS_DT_UNDEFINED;
    int ndim = 0;
    int64_t dims[SS_MAX_DIMS];
    ss_status *st = parse_descr(hdr, what, &dt);
    if (!st) st = parse_shape(hdr, what, &ndim, dims);
    free(hdr);
    if (st) return st;
    st = ss_tensor_alloc(out, dt, ndim, dims);
    if (st) return ss_status_wrap(st, "%s", what);
    size_t data_off = off + hlen;
    if (len - data_off != out->nbytes) {
        size_t have = len - data_off, need = out->nbytes;
        ss_tensor_free(out);
        return ss_errf(SS_ERR_INVALID, "%s: npy data is %zu bytes, shape and dtype need %zu%s", what,
                       have, need, have < need ? " (truncated file)" : "");
    }
    memcpy(out->data, p + data_off, out->nbytes);
    return NULL;
}

ss_status *ss_npy_read(const char *path, ss_tensor *out)
{
    void *buf;
    size_t len;
    ss_status *st = ss_read_file(path, &buf, &len);
    if (st) return st;
    st = ss_npy_parse(buf, len, path, out);
    free(buf);
    return st;
}

static const char *npy_code(ss_dtype dt)
{
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
        if (npy_types[i].dtype == dt) return npy_types[i].code;
    return NULL;
}

ss_status *ss_npy_write(const char *path, const ss_tensor *t)
{
    const char *code = npy_code(t->dtype);
    if (!code)
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: cannot write %s tensors as npy", path,
                       ss_dtype_name(t->dtype));
    char shape[256] = "";
    size_t so = 0;
    for (int i = 0; i < t->ndim; i++)
        so += (size_t)snprintf(shape + so, sizeof shape - so, "%lld,%s", (long long)t->dims[i],
                               (i + 1 < t->ndim) ? " " : "");
    if (t->ndim > 1) shape[so - 1] = 0; /* "(2, 3)" not "(2, 3,)"; 1-D keeps "(5,)" */
    char dict[400];
    int dl = snprintf(dict, sizeof dict, "{'descr': '%c%s', 'fortran_order': False, 'shape': (%s), }",
                      ss_dtype_size(t->dtype) == 1 ? '|' : '<', code, shape);
    int v2 = dl + 1 + 10 > 65535;
    size_t pre = v2 ? 12 : 10;
    size_t total = (pre + (size_t)dl + 1 + 63) / 64 * 64;
    size_t hlen = total - pre;
    unsigned char head[512];
    memcpy(head, "\x93NUMPY", 6);
    head[6] = v2 ? 2 : 1;
    head[7] = 0;
    head[8] = hlen & 0xff;
    head[9] = (hlen >> 8) & 0xff;
    if (v2) head[10] = head[11] = 0;
    memcpy(head + pre, dict, (size_t)dl);
    memset(head + pre + dl, ' ', hlen - (size_t)dl - 1);
    head[total - 1] = '\n';
    FILE *f = fopen(path, "wb");
    if (!f) return ss_errf(SS_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    int ok = fwrite(head, 1, total, f) == total &&
             (t->nbytes == 0 || fwrite(t->data, 1, t->nbytes, f) == t->nbytes);
    if (fclose(f) != 0) ok = 0;
    if (!ok) return ss_errf(SS_ERR_IO, "short write on %s", path);
    return NULL;
}
