/*
 * pb_budget: count the fields of a protobuf message on the wire before protobuf-c unpacks it.
 * protobuf-c allocates for every field it keeps, unknown ones included, so a 100 MB message of
 * 2-byte fields would cost gigabytes; a decoder counts first and refuses past its budget. A shape
 * names the length-delimited fields that are messages (counted inside too); everything else is
 * one field.
 */
#ifndef SS_SERVER_PB_BUDGET_H
#define SS_SERVER_PB_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ss_pb_shape ss_pb_shape;
struct ss_pb_shape {
    size_t n;
    const uint32_t *fields;          /* field numbers holding messages */
    const ss_pb_shape *const *inner; /* their shapes (NULL: count their fields, not deeper) */
};

/* Fields of buf (and of the nested messages the shape names) > limit? Malformed wire data
 * stops the count where it breaks: the unpacker reports it. */
bool ss_pb_over_budget(const uint8_t *buf, size_t len, const ss_pb_shape *shape, size_t limit);

#endif
