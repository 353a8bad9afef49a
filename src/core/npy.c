/*
 * .npy files (numpy's array format, versions 1.0, 2.0 and 3.0): a magic string, a header length,
 * a Python-dict header {'descr', 'fortran_order', 'shape'}, then the raw C-order data.
 * Reading checks every field and the data length; anything we cannot represent (Fortran order,
 * big-endian, object or structured dtypes, truncated data) is a clear error naming the file.
 * Writing always produces version 1.0, which fits any header of at most SS_MAX_DIMS dims.
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
    while (*p == ' ')
        p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

static ss_status *parse_descr(const char *hdr, const char *what, ss_dtype *dt)
{
    const char *v = dict_value(hdr, "descr");
    if (!v) return ss_errf(SS_ERR_INVALID, "%s: npy header has no 'descr'", what);
    if (*v != '\'')
        return ss_errf(SS_ERR_INVALID, "%s: npy structured dtypes are not supported", what);
    v++;
    const char *end = strchr(v, '\'');
    if (!end || end - v > 15) return ss_errf(SS_ERR_INVALID, "%s: malformed npy 'descr'", what);
    char descr[16];
    memcpy(descr, v, (size_t)(end - v));
    descr[end - v] = 0;
    char order = descr[0];
    const char *code = descr + 1;
    if (order == '>' && strcmp(code, "i1") && strcmp(code, "u1") && strcmp(code, "b1"))
        return ss_errf(SS_ERR_UNSUPPORTED,
                       "%s: big-endian npy data ('%s') is not supported; "
                       "convert with arr.astype(arr.dtype.newbyteorder('<'))",
                       what, descr);
    if (order != '<' && order != '|' && order != '>')
        return ss_errf(SS_ERR_INVALID, "%s: npy 'descr' '%s' has no byte-order mark", what, descr);
    if (code[0] == 'O')
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: npy object arrays are not supported", what);
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
        if (strcmp(code, npy_types[i].code) == 0) {
            *dt = npy_types[i].dtype;
            return NULL;
        }
    return ss_errf(SS_ERR_UNSUPPORTED,
                   "%s: npy dtype '%s' is not supported (only bool, int, uint and float types)",
                   what, descr);
}

static ss_status *parse_shape(const char *hdr, const char *what, int *ndim, int64_t *dims)
{
    const char *v = dict_value(hdr, "fortran_order");
    if (!v) return ss_errf(SS_ERR_INVALID, "%s: npy header has no 'fortran_order'", what);
    if (strncmp(v, "True", 4) == 0)
        return ss_errf(SS_ERR_UNSUPPORTED,
                       "%s: Fortran-order npy arrays are not supported; "
                       "save with np.ascontiguousarray",
                       what);
    if (strncmp(v, "False", 5) != 0)
        return ss_errf(SS_ERR_INVALID, "%s: malformed npy 'fortran_order'", what);
    v = dict_value(hdr, "shape");
    if (!v || *v != '(')
        return ss_errf(SS_ERR_INVALID, "%s: npy header has no 'shape' tuple", what);
    v++;
    *ndim = 0;
    for (;;) {
        while (*v == ' ' || *v == ',')
            v++;
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

/* Reads magic, version and header length; on success the *hlen header bytes start at *off. */
static ss_status *parse_preamble(const unsigned char *p, size_t len, const char *what, size_t *off,
                                 size_t *hlen)
{
    if (len == 0) return ss_errf(SS_ERR_INVALID, "%s: empty file, not an npy array", what);
    if (len < 6 || memcmp(p, "\x93NUMPY", 6) != 0)
        return ss_errf(SS_ERR_INVALID, "%s: not an npy file (bad magic)", what);
    if (len < 10)
        return ss_errf(SS_ERR_INVALID, "%s: truncated npy header (file is only %zu bytes)", what,
                       len);
    int major = p[6];
    if (major == 1) {
        *hlen = (size_t)p[8] | ((size_t)p[9] << 8);
        *off = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return ss_errf(SS_ERR_INVALID, "%s: truncated npy header (file is only %zu bytes)",
                           what, len);
        *hlen = (size_t)p[8] | ((size_t)p[9] << 8) | ((size_t)p[10] << 16) | ((size_t)p[11] << 24);
        *off = 12;
    } else {
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: npy format version %d.%d is not supported", what,
                       major, p[7]);
    }
    if (*hlen > len - *off)
        return ss_errf(SS_ERR_INVALID,
                       "%s: truncated npy header (header length %zu, but only %zu bytes follow)",
                       what, *hlen, len - *off);
    return NULL;
}

ss_status *ss_npy_parse(const void *buf, size_t len, const char *what, ss_tensor *out)
{
    const unsigned char *p = buf;
    memset(out, 0, sizeof *out);
    size_t off = 0, hlen = 0;
    ss_status *st = parse_preamble(p, len, what, &off, &hlen);
    if (st) return st;
    char *hdr = malloc(hlen + 1);
    if (!hdr) return ss_errf(SS_ERR_NOMEM, "%s: out of memory", what);
    memcpy(hdr, p + off, hlen);
    hdr[hlen] = 0;
    ss_dtype dt = SS_DT_UNDEFINED;
    int ndim = 0;
    int64_t dims[SS_MAX_DIMS];
    st = parse_descr(hdr, what, &dt);
    if (!st) st = parse_shape(hdr, what, &ndim, dims);
    free(hdr);
    if (st) return st;
    /* Check the data length before allocating: the header's shape is untrusted and may claim
     * terabytes in a file of a few bytes. */
    char sb[200];
    ss_shape_str(ndim, dims, sb, sizeof sb);
    int64_t n = ss_shape_numel(ndim, dims);
    size_t es = ss_dtype_size(dt);
    if (n < 0 || (uint64_t)n > SIZE_MAX / es)
        return ss_errf(SS_ERR_LIMIT,
                       "%s: npy shape %s has too many elements (or, empty, dims past 2^32)", what,
                       sb);
    size_t need = (size_t)n * es, have = len - off - hlen;
    if (have < need)
        return ss_errf(SS_ERR_INVALID,
                       "%s: truncated npy data: %zu bytes, but shape %s of %s needs %zu", what,
                       have, sb, ss_dtype_name(dt), need);
    if (have > need)
        return ss_errf(SS_ERR_INVALID,
                       "%s: npy data has %zu trailing bytes after the %zu that shape %s of %s "
                       "needs",
                       what, have - need, need, sb, ss_dtype_name(dt));
    st = ss_tensor_alloc(out, dt, ndim, dims);
    if (st) return ss_status_wrap(st, "%s", what);
    if (need) memcpy(out->data, p + off + hlen, need);
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

/* The version 1.0 header for t: magic, length, dict padded with spaces to a multiple of 64 bytes
 * and ended by '\n', as numpy writes it. Returns its length. With at most SS_MAX_DIMS dims the
 * dict is under 300 bytes, so 1.0's 16-bit length always suffices. */
static size_t npy_header(const ss_tensor *t, const char *code, char head[static 512])
{
    char shape[SS_MAX_DIMS * 22 + 1] = ""; /* "2, 3", "5," or "", as Python prints tuples */
    size_t so = 0;
    for (int i = 0; i < t->ndim; i++)
        so += (size_t)snprintf(shape + so, sizeof shape - so, "%s%lld%s", i ? " " : "",
                               (long long)t->dims[i], (i + 1 < t->ndim || t->ndim == 1) ? "," : "");
    int dl =
        snprintf(head + 10, 512 - 10, "{'descr': '%c%s', 'fortran_order': False, 'shape': (%s), }",
                 ss_dtype_size(t->dtype) == 1 ? '|' : '<', code, shape);
    size_t total = (10 + (size_t)dl + 1 + 63) / 64 * 64, hlen = total - 10;
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)(hlen & 0xff);
    head[9] = (char)(hlen >> 8);
    memset(head + 10 + dl, ' ', hlen - (size_t)dl - 1);
    head[total - 1] = '\n';
    return total;
}

ss_status *ss_npy_write(const char *path, const ss_tensor *t)
{
    const char *code = npy_code(t->dtype);
    if (!code)
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: cannot write %s tensors as npy", path,
                       ss_dtype_name(t->dtype));
    int64_t n = t->ndim >= 0 && t->ndim <= SS_MAX_DIMS ? ss_tensor_numel(t) : -1;
    if (n < 0 || (uint64_t)n > SIZE_MAX / ss_dtype_size(t->dtype) ||
        (size_t)n * ss_dtype_size(t->dtype) != t->nbytes || (t->nbytes && !t->data))
        return ss_errf(SS_ERR_INTERNAL, "%s: tensor's shape, dtype and %zu data bytes disagree",
                       path, t->nbytes);
    char head[512];
    size_t total = npy_header(t, code, head);
    FILE *f = fopen(path, "wb");
    if (!f) return ss_errf(SS_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    int ok = fwrite(head, 1, total, f) == total &&
             (t->nbytes == 0 || fwrite(t->data, 1, t->nbytes, f) == t->nbytes);
    int err = errno;
    if (fclose(f) != 0) ok = 0, err = errno;
    if (!ok) {
        remove(path); /* no half-written file that looks like an array */
        return ss_errf(SS_ERR_IO, "cannot write %s: %s", path, strerror(err));
    }
    return NULL;
}
