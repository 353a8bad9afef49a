/*
 * Building one rank's ONNX graph with protobuf-c structs. Everything a rank graph allocates
 * (nodes, attributes, strings, tensor protos) comes from one bump arena freed in one go after the
 * model is written; original attributes are shared by pointer, never copied. Initializers go to
 * the rank's external data file at 64-byte aligned offsets; small ones stay inline.
 */
#ifndef SS_SHARD_BUILD_H
#define SS_SHARD_BUILD_H

#include "shardserve/onnx.h"

#include <stdio.h>

typedef struct arena_block arena_block;

typedef struct {
    arena_block *blocks;
    Onnx__NodeProto **nodes;
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    Onnx__ValueInfoProto **inputs, **outputs;
    size_t n_inputs, n_outputs, cap_inputs, cap_outputs;
    char **init_names; /* emitted initializer names (parallel to inits) */
    size_t cap_init_names;
    FILE *data;
    char *data_buf;            /* data's stdio buffer (rg_open_data), freed after the close */
    const char *data_location; /* file name relative to the model */
    size_t data_off;
    size_t param_bytes;
    int counter;      /* for unique node names */
    ss_status *error; /* first failure while building (allocation, write) */
} rank_graph;

/* Creates the external-data file `path` for g (g->data): NULL, or an error naming it. `large`:
 * the model's weights reach 2 MiB, and the file is written in 2 MiB blocks (build.c). */
ss_status *rg_open_data(rank_graph *g, const char *path, bool large);
void *rg_alloc(rank_graph *g, size_t n);
char *rg_strdup(rank_graph *g, const char *s);
char *rg_printf(rank_graph *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append a node; inputs/outputs are copied into the arena. domain NULL = default. */
Onnx__NodeProto *rg_node(rank_graph *g, const char *op_type, const char *domain, int n_in,
                         const char *const *inputs, int n_out, const char *const *outputs);
void rg_attr_int(rank_graph *g, Onnx__NodeProto *n, const char *name, int64_t v);
void rg_attr_ints(rank_graph *g, Onnx__NodeProto *n, const char *name, const int64_t *v, int count);
void rg_attr_string(rank_graph *g, Onnx__NodeProto *n, const char *name, const char *v);
/* Share every attribute of `from`. */
void rg_attr_copy(rank_graph *g, Onnx__NodeProto *n, const Onnx__NodeProto *from);
/* Share every attribute of `from` except those named in `skip` (NULL-terminated). */
void rg_attr_copy_except(rank_graph *g, Onnx__NodeProto *n, const Onnx__NodeProto *from,
                         const char *const *skip);

bool rg_has_init(const rank_graph *g, const char *name);
/* Emit `t` (or, with parts > 1, its index-th of `parts` equal slices along `axis`) as an
 * initializer named `name`, once per name. */
void rg_init(rank_graph *g, const char *name, const ss_tensor *t, int axis, int parts, int index);
/* The same for an axis made of `blocks` equal blocks (a fused [q | k | v] projection): the
 * index-th of `parts` slices of every block, concatenated. */
void rg_init_blocked(rank_graph *g, const char *name, const ss_tensor *t, int axis, int blocks,
                     int parts, int index);
/* A small int64 vector initializer. */
void rg_init_i64(rank_graph *g, const char *name, const int64_t *v, int count);

/* Record st as the graph's failure (the first one wins; later ones are freed). */
void rg_fail(rank_graph *g, ss_status *st);

void rg_add_input(rank_graph *g, Onnx__ValueInfoProto *vi);
void rg_add_output(rank_graph *g, Onnx__ValueInfoProto *vi);

void rg_free(rank_graph *g);

#endif
