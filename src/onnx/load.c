/*
 * Model loading. The .onnx file is mapped, unpacked by protobuf-c, and unmapped; initializers
 * become ss_tensors. External data files are mapped once each (read-only, MAP_PRIVATE) and shared
 * by all tensors that live in them, so a 1 GB model costs page cache, not anonymous memory.
 * Every location is resolved with realpath and must stay inside the model's folder.
 */
#include "shardserve/onnx.h"

#include "rewrite.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

ss_status *ss_onnx_external_tensor(ss_onnx_model *m, const Onnx__TensorProto *tp, ss_tensor *out);

/* SHARDSERVE_WEIGHTS=resident: external data is read into anonymous memory instead of mapped.
 * Page-cache weights are charged to whichever process first read the file and are reclaimed
 * under pressure (a rank over its memory limit thrashes instead of failing); resident weights
 * count against the rank's own limit, the way device memory does (tests/generative's cgroup test).
 * Returns MAP_FAILED with errno set on failure, like mmap. */
static void *read_resident(int fd, size_t len)
{
    /* 2 MiB-aligned and marked for transparent huge pages before the first touch, so the GEMM
     * kernels stream them with few TLB misses (an f32 GEMV read 1.2x faster; bench/RESULTS.md).
     * The slack around the aligned range is unmapped again, so munmap(base, len) frees it all. */
    const size_t huge = (size_t)2 << 20, page = (size_t)sysconf(_SC_PAGESIZE);
    size_t span = (len + page - 1) / page * page;
    char *raw = mmap(NULL, span + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return raw;
    char *base = (char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
    if (base > raw) munmap(raw, (size_t)(base - raw));
    if (raw + huge > base) munmap(base + span, (size_t)(raw + huge - base));
    madvise(base, span, MADV_HUGEPAGE);
    for (size_t done = 0; done < len;) {
        ssize_t n = pread(fd, (char *)base + done, len - done, (off_t)done);
        if (n <= 0) {
            int err = n < 0 ? errno : EIO;
            munmap(base, len);
            errno = err;
            return MAP_FAILED;
        }
        done += (size_t)n;
    }
    mprotect(base, len, PROT_READ);
    return base;
}

static bool weights_resident(void)
{
    const char *v = getenv("SHARDSERVE_WEIGHTS");
    return v && !strcmp(v, "resident");
}

static ss_status *map_file(ss_onnx_model *m, const char *path, ss_onnx_mapping **out)
{
    for (int i = 0; i < m->n_maps; i++)
        if (strcmp(m->maps[i].path, path) == 0) {
            *out = &m->maps[i];
            return NULL;
        }
    /* O_NONBLOCK: a FIFO would otherwise block the open until a writer comes (regular files
     * ignore the flag); anything but a regular file is refused right after */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return ss_errf(SS_ERR_IO, "cannot open external data %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ss_errf(SS_ERR_IO, "external data %s is not a regular file", path);
    }
    void *base = NULL;
    bool resident = weights_resident();
    if (sb.st_size > 0) {
        base = resident ? read_resident(fd, (size_t)sb.st_size)
                        : mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (base == MAP_FAILED) {
            close(fd);
            return ss_errf(SS_ERR_IO, "cannot map external data %s: %s", path, strerror(errno));
        }
        /* Weights are streamed by the GEMM kernels: ask for 2 MiB page-cache mappings (fewer
         * TLB misses; a hint, no anonymous memory; bench/RUNTIME.md). */
        madvise(base, (size_t)sb.st_size, MADV_HUGEPAGE);
    }
    close(fd);
    ss_onnx_mapping *maps = realloc(m->maps, (size_t)(m->n_maps + 1) * sizeof *maps);
    char *copy = strdup(path);
    if (!maps || !copy) {
        free(copy);
        if (maps) m->maps = maps;
        if (base) munmap(base, (size_t)sb.st_size);
        return ss_errf(SS_ERR_NOMEM, "out of memory mapping %s", path);
    }
    m->maps = maps;
    ss_onnx_mapping *mp = &m->maps[m->n_maps++];
    mp->base = base;
    mp->len = (size_t)sb.st_size;
    mp->path = copy;
    mp->resident = resident;
    *out = mp;
    return NULL;
}

/* Resolve `location` against the model folder; refuse anything that leaves it. */
static ss_status *resolve_location(const ss_onnx_model *m, const char *name, const char *location,
                                   char *resolved)
{
    if (!m->dir)
        return ss_errf(SS_ERR_INVALID, "tensor '%s': external data needs a model folder", name);
    if (location[0] == '/')
        return ss_errf(SS_ERR_INVALID,
                       "tensor '%s': external data location '%s' is absolute; it must be "
                       "relative to the model's folder",
                       name, location);
    char joined[PATH_MAX], dir_real[PATH_MAX];
    if ((size_t)snprintf(joined, sizeof joined, "%s/%s", m->dir, location) >= sizeof joined)
        return ss_errf(SS_ERR_INVALID, "tensor '%s': external data path too long", name);
    if (!realpath(m->dir, dir_real))
        return ss_errf(SS_ERR_IO, "model folder %s: %s", m->dir, strerror(errno));
    if (!realpath(joined, resolved))
        return ss_errf(SS_ERR_IO, "tensor '%s': external data file %s: %s", name, joined,
                       strerror(errno));
    size_t dl = strlen(dir_real);
    if (strncmp(resolved, dir_real, dl) != 0 || (resolved[dl] != '/' && dl > 1))
        return ss_errf(SS_ERR_INVALID,
                       "tensor '%s': external data location '%s' escapes the model's "
                       "folder %s",
                       name, location, dir_real);
    return NULL;
}

static ss_status *parse_u64(const char *name, const char *key, const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *v == '-' || end == v || *end)
        return ss_errf(SS_ERR_INVALID, "tensor '%s': external data %s '%s' is not a number", name,
                       key, v);
    *out = x;
    return NULL;
}

ss_status *ss_onnx_external_tensor(ss_onnx_model *m, const Onnx__TensorProto *tp, ss_tensor *out)
{
    const char *name = tp->name ? tp->name : "(unnamed)";
    const char *location = NULL;
    uint64_t offset = 0, length = UINT64_MAX;
    ss_status *st = NULL;
    for (size_t i = 0; i < tp->n_external_data && !st; i++) {
        const char *k = tp->external_data[i]->key, *v = tp->external_data[i]->value;
        if (!k || !v) continue;
        if (strcmp(k, "location") == 0)
            location = v;
        else if (strcmp(k, "offset") == 0)
            st = parse_u64(name, k, v, &offset);
        else if (strcmp(k, "length") == 0)
            st = parse_u64(name, k, v, &length);
    }
    if (st) return st;
    if (!location)
        return ss_errf(SS_ERR_INVALID, "tensor '%s': external data has no location", name);
    ss_dtype dt = (ss_dtype)tp->data_type;
    if (!ss_dtype_valid(tp->data_type) || dt == SS_DT_STRING)
        return ss_errf(SS_ERR_UNSUPPORTED, "tensor '%s': external data of type %d", name,
                       tp->data_type);
    if (tp->n_dims > SS_MAX_DIMS)
        return ss_errf(SS_ERR_LIMIT, "tensor '%s' has too many dims", name);
    int64_t dims[SS_MAX_DIMS];
    for (size_t i = 0; i < tp->n_dims; i++)
        dims[i] = tp->dims[i];
    int64_t numel = ss_shape_numel((int)tp->n_dims, dims);
    if (numel < 0) return ss_errf(SS_ERR_INVALID, "tensor '%s' has an invalid shape", name);
    uint64_t need = (uint64_t)numel * ss_dtype_size(dt);
    if (length == UINT64_MAX) length = need;
    if (length != need)
        return ss_errf(SS_ERR_INVALID,
                       "tensor '%s': external data length %llu, shape and dtype need %llu", name,
                       (unsigned long long)length, (unsigned long long)need);
    char resolved[PATH_MAX];
    st = resolve_location(m, name, location, resolved);
    if (st) return st;
    ss_onnx_mapping *mp = NULL;
    st = map_file(m, resolved, &mp);
    if (st) return ss_status_wrap(st, "tensor '%s'", name);
    if (offset > mp->len || length > mp->len - offset)
        return ss_errf(SS_ERR_INVALID,
                       "tensor '%s': external data %s is %zu bytes, too short for offset "
                       "%llu + length %llu",
                       name, resolved, mp->len, (unsigned long long)offset,
                       (unsigned long long)length);
    void *data = (char *)mp->base + offset;
    if (offset % ss_dtype_size(dt) != 0) { /* misaligned for its type: the one case we copy */
        ss_tensor view;
        st = ss_tensor_borrow(&view, dt, (int)tp->n_dims, dims, data, need);
        return st ? st : ss_tensor_copy(out, &view);
    }
    m->external_bytes += need;
    return ss_tensor_borrow(out, dt, (int)tp->n_dims, dims, need ? data : NULL, need);
}

/* A model that keeps its weights inside the .onnx (most under protobuf's 2 GB) has each
 * initializer's bytes copied by protobuf-c into a malloc block, which the tensor borrows and the
 * kernels read in place: on malloc's 4 KiB pages a GEMV streaming them misses the TLB every page.
 * A block of 2 MiB or more moves once to 2 MiB-aligned memory marked for transparent huge pages
 * before the copy touches it, as mapped external data is (the proto frees it with free(), as it
 * would protobuf-c's block). Moved after the unpack rather than unpacked there by an allocator of
 * ours: test_alloc_shard samples protobuf-c's own calls to malloc by their caller. When the
 * memory is short it stays where it is. */
static void raw_data_on_huge_pages(Onnx__TensorProto *tp)
{
    if (!tp->has_raw_data || tp->raw_data.len < ((size_t)2 << 20)) return;
    void *p = ss_huge_alloc(tp->raw_data.len);
    if (!p) return;
    memcpy(p, tp->raw_data.data, tp->raw_data.len);
    free(tp->raw_data.data);
    tp->raw_data.data = p;
}

static ss_status *load_initializers(ss_onnx_model *m)
{
    const Onnx__GraphProto *g = m->proto->graph;
    m->inits = calloc(g->n_initializer ? g->n_initializer : 1, sizeof *m->inits);
    if (!m->inits) return ss_errf(SS_ERR_NOMEM, "out of memory");
    if (g->n_sparse_initializer)
        return ss_errf(SS_ERR_UNSUPPORTED, "%s: sparse initializers are not supported", m->path);
    for (size_t i = 0; i < g->n_initializer; i++) {
        raw_data_on_huge_pages(g->initializer[i]);
        const Onnx__TensorProto *tp = g->initializer[i];
        ss_status *st = ss_onnx_tensor(m, tp, &m->inits[i].tensor);
        if (st) return ss_status_wrap(st, "%s", m->path);
        m->inits[i].name = tp->name ? tp->name : "";
        m->n_init++;
    }
    return NULL;
}

ss_status *ss_onnx_load_buffer(const void *buf, size_t len, const char *what, const char *dir,
                               ss_onnx_model **out)
{
    *out = NULL;
    ss_onnx_model *m = calloc(1, sizeof *m);
    if (!m) return ss_errf(SS_ERR_NOMEM, "out of memory");
    m->path = strdup(what);
    m->dir = dir ? strdup(dir) : NULL;
    m->proto = onnx__model_proto__unpack(NULL, len, buf);
    ss_status *st = NULL;
    if (!m->proto)
        st = ss_errf(SS_ERR_INVALID,
                     "%s: not an ONNX model (protobuf decoding failed: truncated or "
                     "another format)",
                     what);
    else if (!m->proto->graph)
        st = ss_errf(SS_ERR_INVALID, "%s: ONNX model has no graph", what);
    else if (m->proto->n_opset_import == 0 && m->proto->ir_version >= 3)
        st = ss_errf(SS_ERR_INVALID, "%s: ONNX model imports no opset", what);
    if (!st) st = ss_onnx_rewrite(&m->proto, what);
    if (!st) st = load_initializers(m);
    if (st) {
        ss_onnx_free(m);
        return st;
    }
    *out = m;
    return NULL;
}

ss_status *ss_onnx_load(const char *path, ss_onnx_model **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the open */
    if (fd < 0) return ss_errf(SS_ERR_IO, "cannot open model %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ss_errf(SS_ERR_IO, "model %s is not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return ss_errf(SS_ERR_INVALID, "%s: empty file, not an ONNX model", path);
    }
    void *buf = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (buf == MAP_FAILED) return ss_errf(SS_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash) *slash = 0;
    ss_status *st = ss_onnx_load_buffer(buf, (size_t)sb.st_size, path, slash ? dir : ".", out);
    munmap(buf, (size_t)sb.st_size);
    free(dir);
    return st;
}

void ss_onnx_free(ss_onnx_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_init; i++)
        ss_tensor_free(&m->inits[i].tensor);
    free(m->inits);
    for (int i = 0; i < m->n_maps; i++) {
        if (m->maps[i].base) munmap(m->maps[i].base, m->maps[i].len);
        free(m->maps[i].path);
    }
    free(m->maps);
    if (m->proto) onnx__model_proto__free_unpacked(m->proto, NULL);
    free(m->path);
    free(m->dir);
    free(m);
}

int64_t ss_onnx_opset(const ss_onnx_model *m, const char *domain)
{
    int def = !domain || !*domain || strcmp(domain, "ai.onnx") == 0;
    for (size_t i = 0; i < m->proto->n_opset_import; i++) {
        const char *d = m->proto->opset_import[i]->domain;
        int idef = !d || !*d || strcmp(d, "ai.onnx") == 0;
        if (def ? idef : (d && strcmp(d, domain) == 0)) return m->proto->opset_import[i]->version;
    }
    /* IR version < 3 models have no opset_import: they mean opset 1. */
    return (def && m->proto->n_opset_import == 0) ? 1 : 0;
}

const ss_tensor *ss_onnx_find_init(const ss_onnx_model *m, const char *name)
{
    for (int i = 0; i < m->n_init; i++)
        if (strcmp(m->inits[i].name, name) == 0) return &m->inits[i].tensor;
    return NULL;
}

ss_status *ss_onnx_read_value_info(const Onnx__ValueInfoProto *vi, ss_onnx_value_info *out)
{
    memset(out, 0, sizeof *out);
    out->name = vi->name ? vi->name : "";
    out->ndim = -1;
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return NULL; /* sequences, maps, optionals: is_tensor stays false */
    out->is_tensor = true;
    out->dtype = (ss_dtype)tp->tensor_type->elem_type;
    const Onnx__TensorShapeProto *sh = tp->tensor_type->shape;
    if (!sh) return NULL;
    if (sh->n_dim > SS_MAX_DIMS)
        return ss_errf(SS_ERR_LIMIT, "value '%s' has %zu dims (limit %d)", out->name, sh->n_dim,
                       SS_MAX_DIMS);
    out->ndim = (int)sh->n_dim;
    for (size_t i = 0; i < sh->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = sh->dim[i];
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
            d->dim_value >= 0) {
            out->dims[i] = d->dim_value;
        } else {
            out->dims[i] = -1;
            out->dim_names[i] =
                d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM ? d->dim_param
                                                                                      : "?";
        }
    }
    return NULL;
}
