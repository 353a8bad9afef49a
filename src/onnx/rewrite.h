/*
 * Graph rewrites at load, before the initializers are read: model-local functions inlined
 * (functions.c) and onnxruntime's fused com.microsoft ops lowered into the standard ops they fuse
 * (lower.c). Both build the new node lists from shallow copies and new nodes that live in the
 * rewriter until the model is packed and unpacked again (functions.c), after which the proto is
 * plain protobuf-c memory, as if the file had held the rewritten graph.
 */
#ifndef SS_ONNX_REWRITE_H
#define SS_ONNX_REWRITE_H

#include "shardserve/onnx.h"

typedef struct {
    Onnx__GraphProto *graph;
    size_t n_node;
    Onnx__NodeProto **node;
} ss_rw_saved_graph;

typedef struct {
    Onnx__ModelProto *mp;
    const char *what;
    void **allocs; /* everything made here, freed once the model is packed */
    size_t n_allocs, cap_allocs;
    ss_rw_saved_graph *saved; /* graphs whose node lists were replaced, restored before the free */
    size_t n_saved, cap_saved;
    size_t n_opset0;
    Onnx__OperatorSetIdProto **opset0; /* the model's imports before any was added */
    unsigned calls;
    size_t total_nodes;
} ss_rewriter;

/* Rewrites *proto's graphs (functions inlined, fused ops lowered); *proto may be replaced by a new
 * proto (the old one is freed). what: the model's name for errors. */
ss_status *ss_onnx_rewrite(Onnx__ModelProto **proto, const char *what);

/* p, kept until the rewrite ends (NULL, with p freed, when out of memory). */
void *ss_rw_keep(ss_rewriter *rw, void *p);
/* Appends node to the list (an error past the rewrite's node limit or out of memory). */
ss_status *ss_rw_push(ss_rewriter *rw, Onnx__NodeProto ***list, size_t *n, size_t *cap,
                      Onnx__NodeProto *node);
/* The model's import of a domain ("" and "ai.onnx" alike), or NULL. */
const Onnx__OperatorSetIdProto *ss_rw_import(const Onnx__ModelProto *mp, const char *domain);

/* lower.c: whether the node is a fused op lowered at load, and its lowering appended to the list.
 */
bool ss_onnx_lowered(const Onnx__NodeProto *node);
ss_status *ss_onnx_lower(ss_rewriter *rw, Onnx__NodeProto *node, Onnx__NodeProto ***list, size_t *n,
                         size_t *cap);

#endif
