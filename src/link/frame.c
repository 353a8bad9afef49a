/*
 * The link's wire format: the fixed frame prefix, the protobuf-c header of each frame type, and
 * the checks every received frame goes through. Pure functions over memory; the socket code
 * (conn.c) and ss_link_decode_frame share them, so the fuzzed decoder is the production one.
 *
 * Guarantee: nothing is allocated in proportion to a frame before the prefix and the header
 * have been checked against the limits, and the declared tensors (dtype x shape, string lengths)
 * add up exactly to the declared payload length.
 */
#include "link_internal.h"

#include "link.pb-c.h"

#include <stdlib.h>
#include <string.h>

static const ss_link_options default_opts = {
    .max_frame_bytes = UINT64_C(1) << 30,
    .max_header_bytes = 4u << 20,
    .max_tensors = 4096,
    .stall_timeout_ms = 10000,
    .handshake_timeout_ms = 5000,
    .connect_timeout_ms = 2000,
};

void ss_link_options_default(ss_link_options *opts)
{
    *opts = default_opts;
}

static const char *const type_names[] = {
    [SS_LINK_HELLO] = "HELLO",
    [SS_LINK_AUTH] = "AUTH",
    [SS_LINK_AUTH_ACK] = "AUTH_ACK",
    [SS_LINK_REGISTER] = "REGISTER",
    [SS_LINK_REGISTER_ACK] = "REGISTER_ACK",
    [SS_LINK_GET_META] = "GET_META",
    [SS_LINK_META] = "META",
    [SS_LINK_HEARTBEAT] = "HEARTBEAT",
    [SS_LINK_HEARTBEAT_ACK] = "HEARTBEAT_ACK",
    [SS_LINK_PREDICT] = "PREDICT",
    [SS_LINK_RESULT] = "RESULT",
    [SS_LINK_EXIT] = "EXIT",
    [SS_LINK_LOADING] = "LOADING",
};

#define N_TYPES ((int)(sizeof type_names / sizeof type_names[0]))

const char *ss_link_type_name(int type)
{
    if (type <= 0 || type >= N_TYPES || !type_names[type]) return "unknown";
    return type_names[type];
}

static const ProtobufCMessageDescriptor *const descriptors[] = {
    [SS_LINK_HELLO] = &shardserve__link__hello__descriptor,
    [SS_LINK_AUTH] = &shardserve__link__auth__descriptor,
    [SS_LINK_AUTH_ACK] = &shardserve__link__auth_ack__descriptor,
    [SS_LINK_REGISTER] = &shardserve__link__register__descriptor,
    [SS_LINK_REGISTER_ACK] = &shardserve__link__register_ack__descriptor,
    [SS_LINK_GET_META] = &shardserve__link__get_meta__descriptor,
    [SS_LINK_META] = &shardserve__link__meta__descriptor,
    [SS_LINK_HEARTBEAT] = &shardserve__link__heartbeat__descriptor,
    [SS_LINK_HEARTBEAT_ACK] = &shardserve__link__heartbeat__descriptor,
    [SS_LINK_PREDICT] = &shardserve__link__predict__descriptor,
    [SS_LINK_RESULT] = &shardserve__link__result__descriptor,
    [SS_LINK_EXIT] = &shardserve__link__exit__descriptor,
    /* who is loading, so a rank lost before REGISTER (OOM-killed while mapping its weights) is
     * named by the worker */
    [SS_LINK_LOADING] = &shardserve__link__register__descriptor,
};

bool link_type_has_tensors(int type)
{
    return type == SS_LINK_PREDICT || type == SS_LINK_RESULT;
}

/* ---------------------------------------------------------------- prefix */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return get32(p) | (uint64_t)get32(p + 4) << 32;
}

void link_prefix_put(uint8_t out[SS_LINK_PREFIX_BYTES], const link_prefix *p)
{
    put32(out, p->magic);
    put16(out + 4, p->version);
    put16(out + 6, p->type);
    put32(out + 8, p->header_len);
    put32(out + 12, p->n_payloads);
    put64(out + 16, p->payload_len);
    put32(out + 24, p->flags);
    put32(out + 28, p->reserved);
}

ss_status *link_prefix_parse(const uint8_t in[SS_LINK_PREFIX_BYTES], const ss_link_options *opts,
                             link_prefix *p)
{
    p->magic = get32(in);
    p->version = get16(in + 4);
    p->type = get16(in + 6);
    p->header_len = get32(in + 8);
    p->n_payloads = get32(in + 12);
    p->payload_len = get64(in + 16);
    p->flags = get32(in + 24);
    p->reserved = get32(in + 28);
    if (p->magic != SS_LINK_MAGIC)
        return ss_errf(SS_ERR_INVALID,
                       "bad frame magic 0x%08x (expected 0x%08x): not a shardserve link peer",
                       p->magic, SS_LINK_MAGIC);
    if (p->version != SS_LINK_VERSION)
        return ss_errf(SS_ERR_UNSUPPORTED, "frame version %u, this build speaks version %u",
                       p->version, SS_LINK_VERSION);
    if (p->type == 0 || p->type >= N_TYPES || !type_names[p->type])
        return ss_errf(SS_ERR_INVALID, "unknown frame type %u", p->type);
    if (p->flags || p->reserved)
        return ss_errf(SS_ERR_INVALID, "%s frame has reserved bits set (flags 0x%x, reserved 0x%x)",
                       ss_link_type_name(p->type), p->flags, p->reserved);
    if (p->header_len > opts->max_header_bytes)
        return ss_errf(SS_ERR_LIMIT, "%s frame header is %u bytes, the limit is %u",
                       ss_link_type_name(p->type), p->header_len, opts->max_header_bytes);
    if (!link_type_has_tensors(p->type) && (p->n_payloads || p->payload_len))
        return ss_errf(SS_ERR_INVALID, "%s frame carries no tensors but declares %u (%llu bytes)",
                       ss_link_type_name(p->type), p->n_payloads,
                       (unsigned long long)p->payload_len);
    if (p->n_payloads > opts->max_tensors)
        return ss_errf(SS_ERR_LIMIT, "%s frame declares %u tensors, the limit is %u",
                       ss_link_type_name(p->type), p->n_payloads, opts->max_tensors);
    uint64_t fixed = (uint64_t)SS_LINK_PREFIX_BYTES + p->header_len;
    if (p->payload_len > opts->max_frame_bytes || fixed > opts->max_frame_bytes - p->payload_len)
        return ss_errf(SS_ERR_LIMIT, "%s frame is %llu+%llu bytes, the limit is %llu",
                       ss_link_type_name(p->type), (unsigned long long)fixed,
                       (unsigned long long)p->payload_len,
                       (unsigned long long)opts->max_frame_bytes);
    return NULL;
}

/* ---------------------------------------------------------------- sizes */

/* Wire bytes of a numeric tensor of this dtype and shape, or an error. */
static ss_status *numeric_bytes(ss_dtype dt, int ndim, const int64_t *dims, uint64_t *out)
{
    size_t es = ss_dtype_size(dt);
    int64_t n = ss_shape_numel(ndim, dims);
    char sb[200];
    if (n < 0)
        return ss_errf(SS_ERR_INVALID,
                       "shape %s has a negative dim or too many elements (empty: dims past 2^32)",
                       ss_shape_str(ndim, dims, sb, sizeof sb));
    if ((uint64_t)n > UINT64_MAX / es)
        return ss_errf(SS_ERR_LIMIT, "shape %s of %s overflows a byte count",
                       ss_shape_str(ndim, dims, sb, sizeof sb), ss_dtype_name(dt));
    *out = (uint64_t)n * es;
    return NULL;
}

static ss_status *check_dtype(int dtype)
{
    if (!ss_dtype_valid(dtype) || dtype == SS_DT_UNDEFINED || ss_dtype_size((ss_dtype)dtype) == 0)
        return ss_errf(SS_ERR_INVALID, "unknown dtype %d", dtype);
    return NULL;
}

/* ---------------------------------------------------------------- pack */

static char *str_or_empty(const char *s)
{
    return (char *)(s ? s : "");
}

static ss_status *pack_spec(const ss_link_spec *s, Shardserve__Link__TensorSpec *out,
                            const char *role, size_t i)
{
    shardserve__link__tensor_spec__init(out);
    ss_status *st = check_dtype(s->dtype);
    if (!st && (s->ndim < 0 || s->ndim > SS_MAX_DIMS))
        st = ss_errf(SS_ERR_INVALID, "rank %d is outside 0..%d", s->ndim, SS_MAX_DIMS);
    for (int d = 0; !st && d < s->ndim; d++)
        if (s->dims[d] < -1) st = ss_errf(SS_ERR_INVALID, "dim %lld < -1", (long long)s->dims[d]);
    if (st) return ss_status_wrap(st, "%s %zu (%s)", role, i, str_or_empty(s->name));
    out->name = str_or_empty(s->name);
    out->dtype = s->dtype;
    out->n_shape = (size_t)s->ndim;
    out->shape = (int64_t *)s->dims;
    return NULL;
}

/* Describe tensor i for the header and add its wire size to *total. string_lens is malloc'd
 * for string tensors (freed by the caller). */
static ss_status *pack_tensor(const ss_tensor *t, const char *name, size_t i,
                              Shardserve__Link__TensorDesc *out, uint64_t *total)
{
    shardserve__link__tensor_desc__init(out);
    ss_status *st = check_dtype(t->dtype);
    if (!st && (t->ndim < 0 || t->ndim > SS_MAX_DIMS))
        st = ss_errf(SS_ERR_INVALID, "rank %d is outside 0..%d", t->ndim, SS_MAX_DIMS);
    uint64_t bytes = 0;
    if (!st && t->dtype != SS_DT_STRING) {
        st = numeric_bytes(t->dtype, t->ndim, t->dims, &bytes);
        if (!st && bytes != t->nbytes)
            st = ss_errf(SS_ERR_INVALID, "holds %zu bytes, its shape needs %llu", t->nbytes,
                         (unsigned long long)bytes);
        if (!st && bytes && !t->data) st = ss_errf(SS_ERR_INVALID, "has no data");
    } else if (!st) {
        int64_t n = ss_tensor_numel(t);
        if (n < 0)
            st = ss_errf(SS_ERR_INVALID, "bad shape");
        else if (n && !t->data)
            st = ss_errf(SS_ERR_INVALID, "has no data");
        else if (n) {
            out->string_lens = malloc((size_t)n * sizeof(uint64_t));
            if (!out->string_lens) st = ss_errf(SS_ERR_NOMEM, "string lengths");
        }
        const ss_string *s = t->data;
        for (int64_t k = 0; !st && k < n; k++) {
            if (s[k].len && !s[k].data)
                st = ss_errf(SS_ERR_INVALID, "string %lld has no data", (long long)k);
            out->string_lens[k] = s[k].len;
            bytes += s[k].len;
        }
        out->n_string_lens = st ? 0 : (size_t)n;
    }
    if (st) return ss_status_wrap(st, "tensor %zu (%s)", i, str_or_empty(name));
    out->name = str_or_empty(name);
    out->dtype = t->dtype;
    out->n_shape = (size_t)t->ndim;
    out->shape = (int64_t *)t->dims;
    *total += bytes;
    return NULL;
}

typedef union {
    ProtobufCMessage base;
    Shardserve__Link__Hello hello;
    Shardserve__Link__Auth auth;
    Shardserve__Link__AuthAck auth_ack;
    Shardserve__Link__Register reg;
    Shardserve__Link__RegisterAck reg_ack;
    Shardserve__Link__GetMeta get_meta;
    Shardserve__Link__Meta meta;
    Shardserve__Link__Heartbeat hb;
    Shardserve__Link__Predict predict;
    Shardserve__Link__Result result;
    Shardserve__Link__Exit exit;
} any_header;

/* Scratch memory a packed header points into. */
typedef struct {
    Shardserve__Link__TensorSpec *specs;
    Shardserve__Link__TensorSpec **spec_ptrs;
    Shardserve__Link__TensorDesc *descs;
    Shardserve__Link__TensorDesc **desc_ptrs;
    size_t n_descs;
    char (*keys)[LINK_SHM_KEY_MAX]; /* shm_key of descs in shared memory */
    Shardserve__Link__Place *places;
    Shardserve__Link__Place **place_ptrs;
} pack_scratch;

static void scratch_free(pack_scratch *s)
{
    for (size_t i = 0; s->descs && i < s->n_descs; i++)
        free(s->descs[i].string_lens);
    free(s->specs);
    free(s->spec_ptrs);
    free(s->descs);
    free(s->desc_ptrs);
    free(s->keys);
    free(s->places);
    free(s->place_ptrs);
}

/* Pack a[0..na) then b[0..nb) into s->spec_ptrs (what = "REGISTER" or "PREDICT", for errors). */
static ss_status *fill_specs(const ss_link_spec *a, size_t na, const ss_link_spec *b, size_t nb,
                             pack_scratch *s, const ss_link_options *opts, const char *what)
{
    size_t n = na + nb;
    if (n > opts->max_tensors)
        return ss_errf(SS_ERR_LIMIT, "%s declares %zu inputs and outputs, the limit is %u", what, n,
                       opts->max_tensors);
    s->specs = calloc(n ? n : 1, sizeof *s->specs);
    s->spec_ptrs = calloc(n ? n : 1, sizeof *s->spec_ptrs);
    if (!s->specs || !s->spec_ptrs) return ss_errf(SS_ERR_NOMEM, "%s specs", what);
    for (size_t i = 0; i < n; i++) {
        bool in = i < na;
        ss_status *st = pack_spec(in ? &a[i] : &b[i - na], &s->specs[i], in ? "input" : "output",
                                  in ? i : i - na);
        if (st) return st;
        s->spec_ptrs[i] = &s->specs[i];
    }
    return NULL;
}

/* A numeric tensor in shared memory (on a local link) goes by key: its bytes leave the payload. */
static void pack_shm(const ss_tensor *t, Shardserve__Link__TensorDesc *d, char *key,
                     uint64_t *payload, bool *in_shm)
{
    *in_shm = false;
    if (t->dtype == SS_DT_STRING || !t->nbytes ||
        !link_shm_find(t->data, t->nbytes, key, &d->shm_offset))
        return;
    d->shm_key = key;
    *payload -= t->nbytes;
    *in_shm = true;
}

static ss_status *fill_tensors(const ss_link_msg *m, const ss_tensor *const *tensors, size_t n,
                               pack_scratch *s, uint64_t *payload, bool *in_shm)
{
    s->descs = calloc(n ? n : 1, sizeof *s->descs);
    s->desc_ptrs = calloc(n ? n : 1, sizeof *s->desc_ptrs);
    s->keys = in_shm ? calloc(n ? n : 1, sizeof *s->keys) : NULL;
    if (!s->descs || !s->desc_ptrs || (in_shm && !s->keys))
        return ss_errf(SS_ERR_NOMEM, "tensor descriptors");
    s->n_descs = n;
    for (size_t i = 0; i < n; i++) {
        const char *name = m->tensor_names ? m->tensor_names[i] : NULL;
        if (!tensors[i]) return ss_errf(SS_ERR_INVALID, "tensor %zu is NULL", i);
        ss_status *st = pack_tensor(tensors[i], name, i, &s->descs[i], payload);
        if (st) return st;
        if (in_shm) pack_shm(tensors[i], &s->descs[i], s->keys[i], payload, &in_shm[i]);
        s->desc_ptrs[i] = &s->descs[i];
    }
    return NULL;
}

static ss_status *fill_places(const ss_link_msg *m, pack_scratch *s, const ss_link_options *opts)
{
    if (m->n_places > opts->max_tensors)
        return ss_errf(SS_ERR_LIMIT, "PREDICT places %zu outputs, the limit is %u", m->n_places,
                       opts->max_tensors);
    s->places = calloc(m->n_places ? m->n_places : 1, sizeof *s->places);
    s->place_ptrs = calloc(m->n_places ? m->n_places : 1, sizeof *s->place_ptrs);
    if (!s->places || !s->place_ptrs) return ss_errf(SS_ERR_NOMEM, "output places");
    for (size_t i = 0; i < m->n_places; i++) {
        Shardserve__Link__Place *p = &s->places[i];
        shardserve__link__place__init(p);
        p->output = m->places[i].output;
        p->shm_key = str_or_empty(m->places[i].key);
        p->shm_offset = m->places[i].offset;
        p->byte_size = m->places[i].byte_size;
        s->place_ptrs[i] = p;
    }
    return NULL;
}

static void set_bytes(ProtobufCBinaryData *b, const uint8_t *data, size_t len, bool present)
{
    b->data = present ? (uint8_t *)data : NULL;
    b->len = present ? len : 0;
}

ss_status *link_pack_header(const ss_link_msg *m, const link_handshake *hs,
                            const ss_tensor *const *tensors, size_t n_tensors,
                            const ss_link_options *opts, uint8_t **buf, size_t *len,
                            uint64_t *payload_len, bool *in_shm)
{
    *buf = NULL;
    *len = 0;
    *payload_len = 0;
    int type = (int)m->type;
    if (type <= 0 || type >= N_TYPES || !type_names[type])
        return ss_errf(SS_ERR_INVALID, "cannot send unknown frame type %d", type);
    if (n_tensors && !link_type_has_tensors(type))
        return ss_errf(SS_ERR_INVALID, "%s frames carry no tensors (%zu given)",
                       ss_link_type_name(type), n_tensors);
    if (n_tensors > opts->max_tensors)
        return ss_errf(SS_ERR_LIMIT, "%zu tensors in one frame, the limit is %u", n_tensors,
                       opts->max_tensors);
    static const link_handshake no_hs;
    if (!hs) hs = &no_hs;

    any_header h;
    pack_scratch s = {0};
    ss_status *st = NULL;
    protobuf_c_message_init(descriptors[type], &h);
    switch (type) {
    case SS_LINK_HELLO:
        set_bytes(&h.hello.nonce, hs->nonce, LINK_NONCE_BYTES, hs->has_nonce);
        h.hello.auth_required = hs->auth_required;
        break;
    case SS_LINK_AUTH:
        set_bytes(&h.auth.nonce, hs->nonce, LINK_NONCE_BYTES, hs->has_nonce);
        set_bytes(&h.auth.proof, hs->proof, LINK_PROOF_BYTES, hs->has_proof);
        break;
    case SS_LINK_AUTH_ACK:
        h.auth_ack.accepted = m->accepted;
        h.auth_ack.reason = str_or_empty(m->message);
        set_bytes(&h.auth_ack.proof, hs->proof, LINK_PROOF_BYTES, hs->has_proof);
        break;
    case SS_LINK_REGISTER:
    case SS_LINK_LOADING:
        h.reg.rank = m->rank;
        h.reg.rank_size = m->rank_size;
        h.reg.stage = m->stage;
        h.reg.stage_size = m->stage_size;
        h.reg.pid = m->pid;
        h.reg.batch_size = m->batch_size;
        h.reg.address = str_or_empty(m->address);
        h.reg.shares_inputs = m->shares_inputs;
        st = fill_specs(m->inputs, m->n_inputs, m->outputs, m->n_outputs, &s, opts, "REGISTER");
        h.reg.n_inputs = m->n_inputs;
        h.reg.inputs = s.spec_ptrs;
        h.reg.n_outputs = m->n_outputs;
        h.reg.outputs = s.spec_ptrs ? s.spec_ptrs + m->n_inputs : NULL;
        break;
    case SS_LINK_REGISTER_ACK:
        h.reg_ack.accepted = m->accepted;
        h.reg_ack.reason = str_or_empty(m->message);
        h.reg_ack.kv_cache_bytes = m->kv_cache_bytes;
        break;
    case SS_LINK_GET_META:
        h.get_meta.requester = str_or_empty(m->address);
        break;
    case SS_LINK_META:
        h.meta.json = str_or_empty(m->json);
        break;
    case SS_LINK_HEARTBEAT:
    case SS_LINK_HEARTBEAT_ACK:
        h.hb.seq = m->seq;
        h.hb.sent_ns = m->sent_ns;
        h.hb.comm_bytes = m->comm_bytes;
        break;
    case SS_LINK_PREDICT:
        h.predict.request_id = m->request_id;
        h.predict.return_result = m->return_result;
        h.predict.share_inputs = m->share_inputs;
        h.predict.quiet = m->quiet;
        h.predict.time_limit_ms = m->time_limit_ms;
        h.predict.input_root = m->has_input_root ? m->input_root + 1 : 0;
        if (m->has_input_root) {
            if (n_tensors)
                st = ss_errf(SS_ERR_INVALID, "inputs come by broadcast but %zu tensors are given",
                             n_tensors);
            if (!st) st = fill_specs(m->inputs, m->n_inputs, NULL, 0, &s, opts, "PREDICT");
            h.predict.n_input_specs = m->n_inputs;
            h.predict.input_specs = s.spec_ptrs;
        }
        if (!st) st = fill_tensors(m, tensors, n_tensors, &s, payload_len, in_shm);
        h.predict.n_tensors = n_tensors;
        h.predict.tensors = s.desc_ptrs;
        if (!st && m->n_places) st = fill_places(m, &s, opts);
        h.predict.n_places = st ? 0 : m->n_places;
        h.predict.places = s.place_ptrs;
        if (!st && (m->n_seq_release > opts->max_tensors || m->n_seq_create > opts->max_tensors))
            st = ss_errf(SS_ERR_LIMIT,
                         "PREDICT frees %zu and creates %zu sequences, the limit is %u",
                         m->n_seq_release, m->n_seq_create, opts->max_tensors);
        h.predict.n_seq_release = m->n_seq_release;
        h.predict.seq_release = m->seq_release;
        h.predict.n_seq_create = m->n_seq_create;
        h.predict.seq_create = m->seq_create;
        break;
    case SS_LINK_RESULT:
        h.result.request_id = m->request_id;
        h.result.status_code = m->status_code;
        h.result.message = str_or_empty(m->message);
        h.result.comm_bytes = m->comm_bytes;
        h.result.kv_blocks = m->kv_blocks;
        h.result.kv_block_tokens = m->kv_block_tokens;
        st = fill_tensors(m, tensors, n_tensors, &s, payload_len, in_shm);
        h.result.n_tensors = n_tensors;
        h.result.tensors = s.desc_ptrs;
        break;
    case SS_LINK_EXIT:
        h.exit.reason = str_or_empty(m->message);
        break;
    }
    if (st) {
        scratch_free(&s);
        return ss_status_wrap(st, "cannot send %s", ss_link_type_name(type));
    }
    size_t hlen = protobuf_c_message_get_packed_size(&h.base);
    uint64_t frame = SS_LINK_PREFIX_BYTES + (uint64_t)hlen;
    if (hlen > opts->max_header_bytes || *payload_len > opts->max_frame_bytes ||
        frame > opts->max_frame_bytes - *payload_len) {
        scratch_free(&s);
        return ss_errf(SS_ERR_LIMIT,
                       "cannot send %s: header %zu bytes (limit %u), frame %llu bytes (limit %llu)",
                       ss_link_type_name(type), hlen, opts->max_header_bytes,
                       (unsigned long long)(frame + *payload_len),
                       (unsigned long long)opts->max_frame_bytes);
    }
    uint8_t *out = malloc(SS_LINK_PREFIX_BYTES + hlen);
    if (!out) {
        scratch_free(&s);
        return ss_errf(SS_ERR_NOMEM, "cannot allocate a %zu-byte frame header", hlen);
    }
    protobuf_c_message_pack(&h.base, out + SS_LINK_PREFIX_BYTES);
    scratch_free(&s);
    link_prefix p = {.magic = SS_LINK_MAGIC,
                     .version = SS_LINK_VERSION,
                     .type = (uint16_t)type,
                     .header_len = (uint32_t)hlen,
                     .n_payloads = (uint32_t)n_tensors,
                     .payload_len = *payload_len};
    link_prefix_put(out, &p);
    *buf = out;
    *len = SS_LINK_PREFIX_BYTES + hlen;
    return NULL;
}

/* ---------------------------------------------------------------- unpack */

static char *dup_str(const char *s)
{
    return strdup(s ? s : "");
}

/* A header string into the message: absent is "", never NULL, so receivers need not check. */
static ss_status *dup_field(char **out, const char *s, const char *field)
{
    *out = dup_str(s);
    return *out ? NULL : ss_errf(SS_ERR_NOMEM, "cannot copy the %s", field);
}

static ss_status *unpack_spec(const Shardserve__Link__TensorSpec *in, ss_link_spec *out,
                              const char *role, size_t i)
{
    ss_status *st = check_dtype(in->dtype);
    if (!st && in->n_shape > SS_MAX_DIMS)
        st = ss_errf(SS_ERR_LIMIT, "rank %zu exceeds %d", in->n_shape, SS_MAX_DIMS);
    for (size_t d = 0; !st && d < in->n_shape; d++)
        if (in->shape[d] < -1)
            st = ss_errf(SS_ERR_INVALID, "dim %zu is %lld", d, (long long)in->shape[d]);
    if (st) return ss_status_wrap(st, "REGISTER %s %zu (%s)", role, i, in->name);
    out->name = dup_str(in->name);
    if (!out->name) return ss_errf(SS_ERR_NOMEM, "spec name");
    out->dtype = (ss_dtype)in->dtype;
    out->ndim = (int)in->n_shape;
    for (size_t d = 0; d < in->n_shape; d++)
        out->dims[d] = in->shape[d];
    return NULL;
}

static ss_status *unpack_specs(Shardserve__Link__TensorSpec **in, size_t n, const char *role,
                               ss_link_spec **out, size_t *n_out)
{
    *out = calloc(n ? n : 1, sizeof **out);
    if (!*out) return ss_errf(SS_ERR_NOMEM, "REGISTER specs");
    *n_out = n;
    for (size_t i = 0; i < n; i++) {
        ss_status *st = unpack_spec(in[i], &(*out)[i], role, i);
        if (st) return st;
    }
    return NULL;
}

/* Check one tensor descriptor and describe it in *t; *bytes gets its wire size. */
static ss_status *unpack_desc(const Shardserve__Link__TensorDesc *in, ss_tensor *t, uint64_t *bytes)
{
    ss_status *st = check_dtype(in->dtype);
    if (st) return st;
    if (in->n_shape > SS_MAX_DIMS)
        return ss_errf(SS_ERR_LIMIT, "rank %zu exceeds %d", in->n_shape, SS_MAX_DIMS);
    int64_t dims[SS_MAX_DIMS];
    for (size_t d = 0; d < in->n_shape; d++) {
        if (in->shape[d] < 0)
            return ss_errf(SS_ERR_INVALID, "dim %zu is %lld", d, (long long)in->shape[d]);
        dims[d] = in->shape[d];
    }
    int ndim = (int)in->n_shape;
    ss_dtype dt = (ss_dtype)in->dtype;
    if (dt != SS_DT_STRING) {
        if (in->n_string_lens)
            return ss_errf(SS_ERR_INVALID, "%s tensor carries string lengths", ss_dtype_name(dt));
        st = numeric_bytes(dt, ndim, dims, bytes);
        if (st) return st;
        memset(t, 0, sizeof *t);
        t->dtype = dt;
        t->ndim = ndim;
        memcpy(t->dims, dims, sizeof dims[0] * (size_t)ndim);
        t->nbytes = (size_t)*bytes;
        return NULL;
    }
    int64_t n = ss_shape_numel(ndim, dims);
    char sb[200];
    if (n < 0 || (uint64_t)n != in->n_string_lens)
        return ss_errf(SS_ERR_INVALID, "string tensor of shape %s has %zu lengths",
                       ss_shape_str(ndim, dims, sb, sizeof sb), in->n_string_lens);
    uint64_t sum = 0;
    for (size_t k = 0; k < in->n_string_lens; k++) {
        if (in->string_lens[k] > UINT64_MAX - sum)
            return ss_errf(SS_ERR_LIMIT, "string lengths overflow");
        sum += in->string_lens[k];
    }
    *bytes = sum;
    st = ss_tensor_alloc(t, SS_DT_STRING, ndim, dims);
    if (st) return st;
    ss_string *s = t->data;
    for (size_t k = 0; k < in->n_string_lens; k++)
        s[k].len = (size_t)in->string_lens[k];
    return NULL;
}

/* A tensor described by shared-memory key: mapped now, nothing of it in the payload. A key that
 * cannot be mapped is the request's problem (m->shm_error), not the link's. */
static ss_status *unpack_shm(const Shardserve__Link__TensorDesc *in, ss_tensor *t, uint64_t *size,
                             bool local, ss_link_msg *m)
{
    if (!local)
        return ss_errf(SS_ERR_INVALID, "shared memory '%.200s' named over a link that is not local",
                       in->shm_key);
    if (t->dtype == SS_DT_STRING)
        return ss_errf(SS_ERR_INVALID, "a string tensor cannot be in shared memory");
    *size = 0;
    ss_status *st = link_shm_map(in->shm_key, in->shm_offset, t, m);
    if (st && !m->shm_error) m->shm_error = strdup(st->msg);
    if (st && !m->shm_error) return ss_errf(SS_ERR_NOMEM, "shared memory error text");
    ss_status_free(st);
    return NULL;
}

static ss_status *unpack_places(Shardserve__Link__Place **in, size_t n, ss_link_msg *m,
                                const ss_link_options *opts)
{
    if (n > opts->max_tensors)
        return ss_errf(SS_ERR_LIMIT, "PREDICT places %zu outputs, the limit is %u", n,
                       opts->max_tensors);
    m->places = calloc(n ? n : 1, sizeof *m->places);
    if (!m->places) return ss_errf(SS_ERR_NOMEM, "output places");
    for (size_t i = 0; i < n; i++) {
        if (!link_shm_key_valid(in[i]->shm_key))
            return ss_errf(SS_ERR_INVALID, "output place %zu: '%.200s' is not a POSIX shm name", i,
                           in[i]->shm_key);
        m->n_places = i + 1;
        ss_link_place *p = &m->places[i];
        p->output = in[i]->output;
        p->offset = in[i]->shm_offset;
        p->byte_size = in[i]->byte_size;
        if (!(p->key = dup_str(in[i]->shm_key))) return ss_errf(SS_ERR_NOMEM, "output place");
    }
    return NULL;
}

static ss_status *unpack_tensors(const link_prefix *p, Shardserve__Link__TensorDesc **in, size_t n,
                                 ss_link_msg *m, uint64_t **sizes, bool local)
{
    if (n != p->n_payloads)
        return ss_errf(SS_ERR_INVALID, "header describes %zu tensors, the prefix declares %u", n,
                       p->n_payloads);
    m->tensors = calloc(n ? n : 1, sizeof *m->tensors);
    m->tensor_names = calloc(n ? n : 1, sizeof *m->tensor_names);
    *sizes = calloc(n ? n : 1, sizeof **sizes);
    if (!m->tensors || !m->tensor_names || !*sizes) return ss_errf(SS_ERR_NOMEM, "tensor table");
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        m->n_tensors = i + 1; /* so that ss_link_msg_free releases what was made so far */
        ss_status *st = unpack_desc(in[i], &m->tensors[i], &(*sizes)[i]);
        if (!st && in[i]->shm_key && in[i]->shm_key[0])
            st = unpack_shm(in[i], &m->tensors[i], &(*sizes)[i], local, m);
        if (!st && (*sizes)[i] > p->payload_len - total)
            st = ss_errf(SS_ERR_INVALID, "its %llu bytes overrun the declared payload of %llu",
                         (unsigned long long)(*sizes)[i], (unsigned long long)p->payload_len);
        if (st) return ss_status_wrap(st, "tensor %zu (%s)", i, in[i]->name);
        total += (*sizes)[i];
        m->tensor_names[i] = dup_str(in[i]->name);
        if (!m->tensor_names[i]) return ss_errf(SS_ERR_NOMEM, "tensor name");
    }
    if (total != p->payload_len)
        return ss_errf(SS_ERR_INVALID,
                       "declared tensors take %llu bytes but the payload length is %llu",
                       (unsigned long long)total, (unsigned long long)p->payload_len);
    return NULL;
}

static ss_status *copy_bytes(const ProtobufCBinaryData *b, uint8_t *out, size_t want, bool *present,
                             const char *what)
{
    *present = false;
    if (b->len == 0) return NULL;
    if (b->len != want)
        return ss_errf(SS_ERR_INVALID, "%s is %zu bytes, expected %zu", what, b->len, want);
    memcpy(out, b->data, want);
    *present = true;
    return NULL;
}

static ss_status *copy_ids(const int64_t *in, size_t n, int64_t **out, size_t *n_out)
{
    *out = malloc(sizeof(int64_t) * (n ? n : 1));
    if (!*out) return ss_errf(SS_ERR_NOMEM, "sequence ids");
    if (n) memcpy(*out, in, sizeof(int64_t) * n);
    *n_out = n;
    return NULL;
}

/* PREDICT's KV pool sequences to free and create. */
static ss_status *unpack_seqs(const any_header *h, ss_link_msg *m, const ss_link_options *opts)
{
    if (h->predict.n_seq_release > opts->max_tensors || h->predict.n_seq_create > opts->max_tensors)
        return ss_errf(SS_ERR_LIMIT, "PREDICT frees %zu and creates %zu sequences, the limit is %u",
                       h->predict.n_seq_release, h->predict.n_seq_create, opts->max_tensors);
    if (!h->predict.n_seq_release && !h->predict.n_seq_create) return NULL;
    ss_status *st = copy_ids(h->predict.seq_release, h->predict.n_seq_release, &m->seq_release,
                             &m->n_seq_release);
    if (!st)
        st = copy_ids(h->predict.seq_create, h->predict.n_seq_create, &m->seq_create,
                      &m->n_seq_create);
    return st;
}

static ss_status *unpack_fields(const link_prefix *p, const any_header *h,
                                const ss_link_options *opts, ss_link_msg *m, link_handshake *hs,
                                uint64_t **sizes, bool local)
{
    ss_status *st = NULL;
    switch (p->type) {
    case SS_LINK_HELLO:
        hs->auth_required = h->hello.auth_required;
        st = copy_bytes(&h->hello.nonce, hs->nonce, LINK_NONCE_BYTES, &hs->has_nonce, "nonce");
        if (!st && !hs->has_nonce) st = ss_errf(SS_ERR_INVALID, "HELLO without a nonce");
        return st;
    case SS_LINK_AUTH:
        st = copy_bytes(&h->auth.nonce, hs->nonce, LINK_NONCE_BYTES, &hs->has_nonce, "nonce");
        if (!st && !hs->has_nonce) st = ss_errf(SS_ERR_INVALID, "AUTH without a nonce");
        if (!st)
            st = copy_bytes(&h->auth.proof, hs->proof, LINK_PROOF_BYTES, &hs->has_proof, "proof");
        return st;
    case SS_LINK_AUTH_ACK:
        m->accepted = h->auth_ack.accepted;
        st = dup_field(&m->message, h->auth_ack.reason, "reason");
        if (st) return st;
        return copy_bytes(&h->auth_ack.proof, hs->proof, LINK_PROOF_BYTES, &hs->has_proof, "proof");
    case SS_LINK_REGISTER:
    case SS_LINK_LOADING:
        m->rank = h->reg.rank;
        m->rank_size = h->reg.rank_size;
        m->stage = h->reg.stage;
        m->stage_size = h->reg.stage_size;
        m->pid = h->reg.pid;
        m->batch_size = h->reg.batch_size;
        m->shares_inputs = h->reg.shares_inputs;
        st = dup_field(&m->address, h->reg.address, "address");
        if (st) return st;
        if (h->reg.n_inputs + h->reg.n_outputs > opts->max_tensors)
            return ss_errf(SS_ERR_LIMIT,
                           "REGISTER declares %zu inputs and outputs, the limit is %u",
                           h->reg.n_inputs + h->reg.n_outputs, opts->max_tensors);
        st = unpack_specs(h->reg.inputs, h->reg.n_inputs, "input", &m->inputs, &m->n_inputs);
        if (!st)
            st = unpack_specs(h->reg.outputs, h->reg.n_outputs, "output", &m->outputs,
                              &m->n_outputs);
        return st;
    case SS_LINK_REGISTER_ACK:
        m->accepted = h->reg_ack.accepted;
        m->kv_cache_bytes = h->reg_ack.kv_cache_bytes;
        return dup_field(&m->message, h->reg_ack.reason, "reason");
    case SS_LINK_GET_META:
        return dup_field(&m->address, h->get_meta.requester, "requester");
    case SS_LINK_META:
        return dup_field(&m->json, h->meta.json, "metadata");
    case SS_LINK_HEARTBEAT:
    case SS_LINK_HEARTBEAT_ACK:
        m->seq = h->hb.seq;
        m->sent_ns = h->hb.sent_ns;
        m->comm_bytes = h->hb.comm_bytes;
        return NULL;
    case SS_LINK_PREDICT:
        m->request_id = h->predict.request_id;
        m->return_result = h->predict.return_result;
        m->share_inputs = h->predict.share_inputs;
        m->quiet = h->predict.quiet;
        m->time_limit_ms = h->predict.time_limit_ms;
        if (h->predict.input_root) {
            if (h->predict.n_tensors)
                return ss_errf(SS_ERR_INVALID,
                               "PREDICT takes its inputs by broadcast but carries %zu tensors",
                               h->predict.n_tensors);
            if (h->predict.n_input_specs > opts->max_tensors)
                return ss_errf(SS_ERR_LIMIT, "PREDICT declares %zu inputs, the limit is %u",
                               h->predict.n_input_specs, opts->max_tensors);
            m->has_input_root = true;
            m->input_root = h->predict.input_root - 1;
            st = unpack_specs(h->predict.input_specs, h->predict.n_input_specs, "input", &m->inputs,
                              &m->n_inputs);
            if (st) return st;
            uint64_t total = 0; /* what the broadcast brings must be concrete and fit in a frame */
            for (size_t i = 0; i < m->n_inputs; i++) {
                uint64_t bytes = 0;
                for (int d = 0; d < m->inputs[i].ndim; d++)
                    if (m->inputs[i].dims[d] < 0)
                        return ss_errf(SS_ERR_INVALID, "PREDICT input %zu has a dynamic dim", i);
                if (m->inputs[i].dtype == SS_DT_STRING)
                    return ss_errf(SS_ERR_UNSUPPORTED,
                                   "PREDICT input %zu: string inputs cannot come by broadcast", i);
                st =
                    numeric_bytes(m->inputs[i].dtype, m->inputs[i].ndim, m->inputs[i].dims, &bytes);
                if (st) return st;
                total += bytes;
                if (total > opts->max_frame_bytes)
                    return ss_errf(SS_ERR_LIMIT, "PREDICT inputs by broadcast take over %llu bytes",
                                   (unsigned long long)opts->max_frame_bytes);
            }
        }
        if (h->predict.n_places)
            st = unpack_places(h->predict.places, h->predict.n_places, m, opts);
        if (!st) st = unpack_seqs(h, m, opts);
        if (st) return st;
        return unpack_tensors(p, h->predict.tensors, h->predict.n_tensors, m, sizes, local);
    case SS_LINK_RESULT:
        m->request_id = h->result.request_id;
        m->status_code = h->result.status_code;
        m->comm_bytes = h->result.comm_bytes;
        m->kv_blocks = h->result.kv_blocks;
        m->kv_block_tokens = h->result.kv_block_tokens;
        st = dup_field(&m->message, h->result.message, "message");
        if (st) return st;
        return unpack_tensors(p, h->result.tensors, h->result.n_tensors, m, sizes, local);
    case SS_LINK_EXIT:
        return dup_field(&m->message, h->exit.reason, "reason");
    }
    return ss_errf(SS_ERR_INTERNAL, "unhandled frame type %u", p->type);
}

/* protobuf-c answers NULL both for a malformed header and for a failed allocation; this
 * allocator tells the two apart, so a peer's good frame is never called invalid. */
static void *pb_alloc(void *failed, size_t size)
{
    void *p = malloc(size);
    if (!p) *(bool *)failed = true;
    return p;
}

static void pb_free(void *failed, void *p)
{
    free(p);
}

ss_status *link_unpack_header(const link_prefix *p, const uint8_t *hdr, const ss_link_options *opts,
                              ss_link_msg *m, link_handshake *hs, uint64_t **sizes, bool local)
{
    memset(m, 0, sizeof *m);
    *sizes = NULL;
    link_handshake scratch_hs;
    if (!hs) hs = &scratch_hs;
    memset(hs, 0, sizeof *hs);
    m->type = (ss_link_type)p->type;
    bool failed = false;
    ProtobufCAllocator alloc = {pb_alloc, pb_free, &failed};
    ProtobufCMessage *h =
        protobuf_c_message_unpack(descriptors[p->type], &alloc, p->header_len, hdr);
    if (!h && failed)
        return ss_errf(SS_ERR_NOMEM, "%s frame: out of memory unpacking its %u-byte header",
                       ss_link_type_name(p->type), p->header_len);
    if (!h)
        return ss_errf(SS_ERR_INVALID, "%s frame: the %u-byte header is not a valid protobuf",
                       ss_link_type_name(p->type), p->header_len);
    ss_status *st = unpack_fields(p, (const any_header *)h, opts, m, hs, sizes, local);
    protobuf_c_message_free_unpacked(h, &alloc);
    if (st) {
        ss_link_msg_free(m);
        free(*sizes);
        *sizes = NULL;
        if (st->code == SS_ERR_NOMEM)
            return ss_status_wrap(st, "%s frame", ss_link_type_name(p->type));
        return ss_status_wrap(st, "bad %s frame", ss_link_type_name(p->type));
    }
    return NULL;
}

/* ---------------------------------------------------------------- payload */

ss_status *link_read_payload(link_reader *r, ss_link_msg *m, const uint64_t *sizes)
{
    for (size_t i = 0; i < m->n_tensors; i++) {
        ss_tensor *t = &m->tensors[i];
        size_t n = (size_t)sizes[i];
        ss_status *st = NULL;
        if (t->dtype != SS_DT_STRING && n == 0 && t->nbytes) continue; /* in shared memory */
        if (t->dtype != SS_DT_STRING) {
            if (!t->data) {
                void *mem = NULL;
                if (posix_memalign(&mem, 64, n ? n : 64) != 0)
                    return ss_errf(SS_ERR_NOMEM, "cannot allocate %zu bytes for tensor %zu", n, i);
                t->data = mem;
                t->storage = SS_STORE_OWNED;
            }
            t->nbytes = n;
            if (n) st = r->read_exact(r->ctx, t->data, n);
        } else {
            char *all = malloc(n ? n : 1);
            if (!all) return ss_errf(SS_ERR_NOMEM, "cannot allocate %zu bytes of strings", n);
            if (n) st = r->read_exact(r->ctx, all, n);
            ss_string *s = t->data;
            int64_t count = ss_tensor_numel(t);
            size_t off = 0;
            for (int64_t k = 0; !st && k < count; k++) {
                size_t len = s[k].len;
                st = ss_tensor_set_string(t, k, all + off, len);
                off += len;
            }
            free(all);
        }
        if (st) return ss_status_wrap(st, "tensor %zu (%s)", i, m->tensor_names[i]);
    }
    return NULL;
}

void link_drop_places(ss_link_msg *m)
{
    for (size_t i = 0; m->places && i < m->n_places; i++)
        free(m->places[i].key);
    free(m->places);
    m->places = NULL;
    m->n_places = 0;
}

void ss_link_msg_free(ss_link_msg *m)
{
    if (!m) return;
    for (size_t i = 0; m->inputs && i < m->n_inputs; i++)
        free(m->inputs[i].name);
    for (size_t i = 0; m->outputs && i < m->n_outputs; i++)
        free(m->outputs[i].name);
    free(m->inputs);
    free(m->outputs);
    free(m->address);
    free(m->message);
    free(m->json);
    link_shm_let_go(m); /* before the tensors unmap: their guards go first */
    for (size_t i = 0; i < m->n_tensors; i++) {
        if (m->tensors) ss_tensor_free(&m->tensors[i]);
        if (m->tensor_names) free(m->tensor_names[i]);
    }
    free(m->tensors);
    free(m->tensor_names);
    link_drop_places(m);
    free(m->seq_release);
    free(m->seq_create);
    free(m->shm_error);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- frames in memory */

ss_status *ss_link_encode_frame(const ss_link_msg *msg, const ss_tensor *const *tensors,
                                size_t n_tensors, void **buf, size_t *len)
{
    uint8_t *hdr;
    size_t hlen;
    uint64_t payload;
    ss_status *st =
        link_pack_header(msg, NULL, tensors, n_tensors, &default_opts, &hdr, &hlen, &payload, NULL);
    if (st) return st;
    uint8_t *out = realloc(hdr, hlen + (size_t)payload);
    if (!out) {
        free(hdr);
        return ss_errf(SS_ERR_NOMEM, "cannot allocate a %llu-byte frame",
                       (unsigned long long)(hlen + payload));
    }
    size_t off = hlen;
    for (size_t i = 0; i < n_tensors; i++) {
        const ss_tensor *t = tensors[i];
        if (t->dtype != SS_DT_STRING) {
            if (t->nbytes) memcpy(out + off, t->data, t->nbytes);
            off += t->nbytes;
            continue;
        }
        const ss_string *s = t->data;
        for (int64_t k = 0; k < ss_tensor_numel(t); k++) {
            if (s[k].len) memcpy(out + off, s[k].data, s[k].len);
            off += s[k].len;
        }
    }
    *buf = out;
    *len = off;
    return NULL;
}

typedef struct {
    const uint8_t *p;
    size_t left;
    size_t frame_len;
} mem_source;

static ss_status *mem_read(void *ctx, void *dst, size_t n)
{
    mem_source *m = ctx;
    if (n > m->left)
        return ss_errf(SS_ERR_INVALID, "truncated frame: %zu more bytes needed, %zu left", n,
                       m->left);
    memcpy(dst, m->p, n);
    m->p += n;
    m->left -= n;
    return NULL;
}

ss_status *ss_link_decode_frame(const void *buf, size_t len, const ss_link_options *opts,
                                ss_link_msg *msg, size_t *consumed)
{
    memset(msg, 0, sizeof *msg);
    if (consumed) *consumed = 0;
    if (!opts) opts = &default_opts;
    if (len < SS_LINK_PREFIX_BYTES)
        return ss_errf(SS_ERR_INVALID, "truncated frame: %zu bytes, the prefix alone is %d", len,
                       SS_LINK_PREFIX_BYTES);
    link_prefix p;
    ss_status *st = link_prefix_parse(buf, opts, &p);
    if (st) return st;
    const uint8_t *hdr = (const uint8_t *)buf + SS_LINK_PREFIX_BYTES;
    size_t after = len - SS_LINK_PREFIX_BYTES;
    if (p.header_len > after)
        return ss_errf(SS_ERR_INVALID, "truncated frame: %s header is %u bytes, %zu present",
                       ss_link_type_name(p.type), p.header_len, after);
    if (p.payload_len > after - p.header_len)
        return ss_errf(SS_ERR_INVALID, "truncated frame: %s payload is %llu bytes, %zu present",
                       ss_link_type_name(p.type), (unsigned long long)p.payload_len,
                       after - p.header_len);
    uint64_t *sizes;
    st = link_unpack_header(&p, hdr, opts, msg, NULL, &sizes, false);
    if (st) return st;
    mem_source src = {hdr + p.header_len, (size_t)p.payload_len, 0};
    link_reader r = {mem_read, &src};
    st = link_read_payload(&r, msg, sizes);
    free(sizes);
    if (st) {
        ss_link_msg_free(msg);
        return st;
    }
    if (consumed) *consumed = SS_LINK_PREFIX_BYTES + p.header_len + (size_t)p.payload_len;
    return NULL;
}
