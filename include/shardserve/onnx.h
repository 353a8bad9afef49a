/*
 * onnx: read and write ONNX models.
 *
 * The protobuf-c code is generated at build time from the system's onnx.proto (Debian
 * libonnx-dev); this module adds what protobuf does not: initializers as ss_tensors (raw_data,
 * typed fields, or external data mapped read-only with mmap and bounds-checked, never copied),
 * opset lookup, attribute accessors, and value-info shapes with symbolic dims.
 *
 * Guarantees: a truncated or non-ONNX file, a missing or short external file, or an external
 * location that escapes the model's folder is a clear error naming the file and tensor.
 */
#ifndef SHARDSERVE_ONNX_H
#define SHARDSERVE_ONNX_H

#include "onnx.pb-c.h"
#include "shardserve/core.h"

typedef Onnx__ModelProto ss_onnx_proto;
typedef Onnx__NodeProto ss_onnx_node;
typedef Onnx__AttributeProto ss_onnx_attr;

typedef struct {
    void *base;
    size_t len;
    char *path;
    bool
        resident; /* SHARDSERVE_WEIGHTS=resident: anonymous memory, the only copy (never dropped) */
} ss_onnx_mapping;

typedef struct {
    const char *name;
    ss_tensor tensor; /* borrowed: points into the proto, a mapping, or owned converted data */
} ss_onnx_initializer;

typedef struct ss_onnx_model {
    ss_onnx_proto *proto;
    char *path;
    char *dir; /* folder of the model file; external data locations are relative to it */
    int n_init;
    ss_onnx_initializer *inits;
    int n_maps;
    ss_onnx_mapping *maps;
    size_t external_bytes; /* bytes of initializer data mapped from external files */
} ss_onnx_model;

/* A graph input or output: name, dtype and shape; dynamic dims are -1 with dim_names[i] set. */
typedef struct {
    const char *name;
    ss_dtype dtype;
    int ndim; /* -1 when the model declares no shape */
    int64_t dims[SS_MAX_DIMS];
    const char *dim_names[SS_MAX_DIMS];
    bool is_tensor; /* false for sequence/map/optional types */
} ss_onnx_value_info;

ss_status *ss_onnx_load(const char *path, ss_onnx_model **out);
/* Parse a model from memory; external data is resolved against `dir` (may be NULL: none allowed).
 */
ss_status *ss_onnx_load_buffer(const void *buf, size_t len, const char *what, const char *dir,
                               ss_onnx_model **out);
void ss_onnx_free(ss_onnx_model *m);

/* Opset version imported for a domain ("" and "ai.onnx" are the same); 0 if not imported. */
int64_t ss_onnx_opset(const ss_onnx_model *m, const char *domain);
/* Initializer by name, or NULL. */
const ss_tensor *ss_onnx_find_init(const ss_onnx_model *m, const char *name);

/* Convert a TensorProto to a tensor. Data in raw_data is borrowed from the proto; typed fields
 * are converted into owned storage; external data needs `m` (for its folder and mappings). */
ss_status *ss_onnx_tensor(ss_onnx_model *m, const Onnx__TensorProto *tp, ss_tensor *out);
/* Parse a standalone serialized TensorProto (.pb test data) into an owned tensor. */
ss_status *ss_onnx_parse_tensor_file(const char *path, ss_tensor *out);

ss_status *ss_onnx_read_value_info(const Onnx__ValueInfoProto *vi, ss_onnx_value_info *out);

/* Attribute accessors: NULL / default when absent. */
const ss_onnx_attr *ss_onnx_attr_find(const ss_onnx_node *n, const char *name);
int64_t ss_onnx_attr_int(const ss_onnx_node *n, const char *name, int64_t dflt);
float ss_onnx_attr_float(const ss_onnx_node *n, const char *name, float dflt);
/* Returns the count (or -1 if absent) and points *vals at the proto's array. */
int ss_onnx_attr_ints(const ss_onnx_node *n, const char *name, const int64_t **vals);
/* Returns a NUL-terminated copy in buf, or NULL if absent. */
const char *ss_onnx_attr_string(const ss_onnx_node *n, const char *name, char *buf, size_t cap);

/* Serialize a model proto to a file. */
ss_status *ss_onnx_save_proto(const ss_onnx_proto *proto, const char *path);

#endif
