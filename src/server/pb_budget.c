/* pb_budget: a bounded field count over protobuf wire data, and protobuf-c's decoded size (see
 * pb_budget.h). */
#include "pb_budget.h"

#include <stdlib.h>

#include "shardserve/serving.h"

static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

static const ss_pb_shape *inner_of(const ss_pb_shape *shape, uint32_t field, bool *is_message)
{
    for (size_t i = 0; shape && i < shape->n; i++) {
        if (shape->fields[i] == field) {
            *is_message = true;
            return shape->inner ? shape->inner[i] : NULL;
        }
    }
    *is_message = false;
    return NULL;
}

/* The next field: its key, where its data starts after the key (`start`: unknown fields are kept
 * from there) and its payload (a varint's own bytes). false at the end or on malformed data. */
static bool next_field(const uint8_t **p, const uint8_t *end, uint64_t *key, const uint8_t **start,
                       const uint8_t **payload, size_t *n)
{
    uint64_t len = 0;
    if (*p >= end || !varint(p, end, key)) return false;
    *start = *payload = *p;
    switch (*key & 7) {
    case 0:
        if (!varint(p, end, &len)) return false;
        *n = (size_t)(*p - *start);
        return true;
    case 1:
        len = 8;
        break;
    case 5:
        len = 4;
        break;
    case 2:
        if (!varint(p, end, &len)) return false;
        *payload = *p;
        break;
    default:
        return false;
    }
    if (len > (uint64_t)(end - *p)) return false;
    *n = (size_t)len;
    *p += len;
    return true;
}

static void count(const uint8_t *p, const uint8_t *end, const ss_pb_shape *shape, size_t limit,
                  size_t *fields)
{
    uint64_t key;
    const uint8_t *start, *payload;
    size_t n;
    while (*fields <= limit && next_field(&p, end, &key, &start, &payload, &n)) {
        ++*fields;
        bool is_message;
        const ss_pb_shape *inner = inner_of(shape, (uint32_t)(key >> 3), &is_message);
        if ((key & 7) == 2 && is_message) count(payload, payload + n, inner, limit, fields);
    }
}

bool ss_pb_over_budget(const uint8_t *buf, size_t len, const ss_pb_shape *shape, size_t limit)
{
    size_t fields = 0;
    count(buf, buf + len, shape, limit, &fields);
    return fields > limit;
}

/* ------------------------------------------------------------------ decoded size */

#define MAX_DEPTH 64
#define SMALL_FIELDS 32 /* repeated-field counts kept on the stack up to this many fields */

/* protobuf-c's ScannedMember (protobuf-c.c, not exported): its scan tables hold one per field of
 * the message being unpacked; the first 16 live on the stack, then slabs of 32, 64, ... */
typedef struct {
    uint32_t tag;
    uint8_t wire_type, length_prefix_len;
    const ProtobufCFieldDescriptor *field;
    size_t len;
    const uint8_t *data;
} scanned_member;

/* glibc: an 8-byte header, 16-byte alignment, 32 bytes at least. */
size_t ss_pb_block_bytes(size_t n)
{
    size_t b = (n + 8 + 15) & ~(size_t)15;
    return b < 32 ? 32 : b;
}

/* serving.h's instance grows its item array from 4 slots, doubling, and indexes names from 8
 * items on (4 uint32 slots per item). */
size_t ss_pb_items_bytes(size_t items)
{
    size_t cap = 4;
    while (cap < items)
        cap *= 2;
    return ss_pb_block_bytes(cap * sizeof(ss_serving_item)) +
           (items >= 8 ? ss_pb_block_bytes(4 * items * sizeof(uint32_t)) : 0);
}

size_t ss_pb_instance_bytes(size_t n_inputs, size_t n_outputs, size_t name_bytes, bool own_inputs)
{
    size_t name = ss_pb_block_bytes(name_bytes), tensor = ss_pb_block_bytes(1);
    return 2 * sizeof(ss_serving_instance) + ss_pb_items_bytes(n_inputs) +
           ss_pb_items_bytes(n_outputs) + n_inputs * (name + (own_inputs ? tensor : 0)) +
           n_outputs * (name + tensor);
}

/* sizeof_elt_in_repeated_array (protobuf-c.c) */
static size_t elt_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

/* count_packed_elements (protobuf-c.c) */
static size_t packed_count(ProtobufCType type, const uint8_t *p, size_t n)
{
    switch (type) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return n / 4;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return n / 8;
    case PROTOBUF_C_TYPE_BOOL:
        return n;
    default: {
        size_t count = 0;
        for (size_t i = 0; i < n; i++)
            count += !(p[i] & 0x80);
        return count;
    }
    }
}

static size_t scan_tables(size_t fields)
{
    size_t bytes = 0;
    for (size_t cap = 16, slab = 32; cap < fields; cap += slab, slab *= 2)
        bytes += ss_pb_block_bytes(slab * sizeof(scanned_member));
    return bytes;
}

typedef struct {
    size_t kept;      /* the decoded message, freed by free_unpacked */
    size_t transient; /* scan tables alive at the deepest point of the unpack */
} unpacked;

static unpacked message_bytes(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                              const uint8_t *end, int depth);

/* One field's own allocations besides its slot: a string, a bytes copy, a nested message. */
static void field_bytes(const ProtobufCFieldDescriptor *f, int type, const uint8_t *payload,
                        size_t n, int depth, unpacked *u, size_t *deepest)
{
    if (type != 2) return;
    if (f->type == PROTOBUF_C_TYPE_STRING) u->kept += ss_pb_block_bytes(n + 1);
    if (f->type == PROTOBUF_C_TYPE_BYTES && n) u->kept += ss_pb_block_bytes(n);
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) return;
    unpacked inner = message_bytes(f->descriptor, payload, payload + n, depth + 1);
    u->kept = inner.kept == SIZE_MAX ? SIZE_MAX : u->kept + inner.kept;
    if (inner.transient > *deepest) *deepest = inner.transient;
}

static unpacked message_bytes(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                              const uint8_t *end, int depth)
{
    unpacked u = {ss_pb_block_bytes(desc->sizeof_message), 0};
    if (depth > MAX_DEPTH) return (unpacked){SIZE_MAX, 0};
    size_t small[SMALL_FIELDS] = {0};
    size_t *counts =
        desc->n_fields <= SMALL_FIELDS ? small : calloc(desc->n_fields, sizeof *counts);
    if (!counts) return (unpacked){SIZE_MAX, 0};
    size_t fields = 0, unknown = 0, deepest = 0, n;
    uint64_t key;
    const uint8_t *start, *payload;
    while (u.kept != SIZE_MAX && next_field(&p, end, &key, &start, &payload, &n)) {
        fields++;
        int type = (int)(key & 7);
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3));
        if (!f) { /* kept as it came, from after its key */
            unknown++;
            u.kept += ss_pb_block_bytes((size_t)(p - start));
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            bool packed = type == 2 && f->type != PROTOBUF_C_TYPE_STRING &&
                          f->type != PROTOBUF_C_TYPE_BYTES && f->type != PROTOBUF_C_TYPE_MESSAGE;
            counts[f - desc->fields] += packed ? packed_count(f->type, payload, n) : 1;
        }
        field_bytes(f, type, payload, n, depth, &u, &deepest);
    }
    for (unsigned i = 0; i < desc->n_fields && u.kept != SIZE_MAX; i++)
        if (counts[i]) u.kept += ss_pb_block_bytes(counts[i] * elt_size(desc->fields[i].type));
    if (counts != small) free(counts);
    if (unknown && u.kept != SIZE_MAX)
        u.kept += ss_pb_block_bytes(unknown * sizeof(ProtobufCMessageUnknownField));
    u.transient = scan_tables(fields) + deepest;
    return u;
}

size_t ss_pb_unpacked_bytes(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len)
{
    unpacked u = message_bytes(desc, buf, buf + len, 0);
    return u.kept == SIZE_MAX || u.kept > SIZE_MAX - u.transient ? SIZE_MAX : u.kept + u.transient;
}
