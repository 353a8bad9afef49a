/* pb_budget: a bounded field count over protobuf wire data (see pb_budget.h). */
#include "pb_budget.h"

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

static void count(const uint8_t *p, const uint8_t *end, const ss_pb_shape *shape, size_t limit,
                  size_t *fields)
{
    uint64_t key, n;
    while (p < end && *fields <= limit && varint(&p, end, &key)) {
        ++*fields;
        switch (key & 7) {
        case 0:
            if (!varint(&p, end, &n)) return;
            continue;
        case 1:
            n = 8;
            break;
        case 5:
            n = 4;
            break;
        case 2:
            if (!varint(&p, end, &n)) return;
            break;
        default:
            return;
        }
        if (n > (uint64_t)(end - p)) return;
        bool is_message;
        const ss_pb_shape *inner = inner_of(shape, (uint32_t)(key >> 3), &is_message);
        if ((key & 7) == 2 && is_message) count(p, p + n, inner, limit, fields);
        p += n;
    }
}

bool ss_pb_over_budget(const uint8_t *buf, size_t len, const ss_pb_shape *shape, size_t limit)
{
    size_t fields = 0;
    count(buf, buf + len, shape, limit, &fields);
    return fields > limit;
}
