/*
 * pb_budget: count the fields of a protobuf message on the wire before protobuf-c unpacks it.
 * protobuf-c allocates for every field it keeps, unknown ones included, so a 100 MB message of
 * 2-byte fields would cost gigabytes; a decoder counts first and refuses past its budget. A shape
 * names the length-delimited fields that are messages (counted inside too); everything else is
 * one field.
 *
 * ss_pb_unpacked_bytes goes further: from the message's descriptor it computes what
 * protobuf_c_message_unpack will allocate (each struct's sizeof, repeated arrays, strings and
 * bytes copied, unknown fields, the scan tables), so a server can charge the decoded size against
 * its memory budget before it unpacks.
 */
#ifndef SS_SERVER_PB_BUDGET_H
#define SS_SERVER_PB_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

typedef struct ss_pb_shape ss_pb_shape;
struct ss_pb_shape {
    size_t n;
    const uint32_t *fields;          /* field numbers holding messages */
    const ss_pb_shape *const *inner; /* their shapes (NULL: count their fields, not deeper) */
};

/* Fields of buf (and of the nested messages the shape names) > limit? Malformed wire data
 * stops the count where it breaks: the unpacker reports it. */
bool ss_pb_over_budget(const uint8_t *buf, size_t len, const ss_pb_shape *shape, size_t limit);

/* The bytes protobuf_c_message_unpack(desc, len, buf) will take from malloc at its peak, with
 * glibc's per-block overhead: the decoded form plus the scan tables alive meanwhile. Linear in the
 * number of fields (payloads are skipped, not read). SIZE_MAX for messages nested deeper than
 * protobuf-c's own recursion should be asked to go. Malformed wire data stops the count where it
 * breaks: the unpacker reports it. */
size_t ss_pb_unpacked_bytes(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len);

/* One malloc block of n bytes as glibc sizes it (header, 16-byte alignment, 32 bytes at least),
 * for a decoder adding its own structures to the estimate. */
size_t ss_pb_block_bytes(size_t n);
/* The item array (and name index) of one serving instance (serving.h) holding `items` items. */
size_t ss_pb_items_bytes(size_t items);
/* One instance of a request as the server holds it once built, however small its tensors: the
 * serving instance and its reply's, an item array each, per input a name block and per output a
 * name and a tensor block; with `own_inputs` a tensor block per input too (a decoder that
 * allocates each input, as JSON's; KServe's rows borrow the message's bytes, charged with it).
 * `name_bytes` is the longest name with its NUL. Both front ends that turn one request into many
 * instances (KServe's batch rows, MindSpore REST's instances) charge this per instance. */
size_t ss_pb_instance_bytes(size_t n_inputs, size_t n_outputs, size_t name_bytes, bool own_inputs);

#endif
