/*
 * Model-local functions inlined at load (functions.c).
 */
#ifndef SS_ONNX_FUNCTIONS_H
#define SS_ONNX_FUNCTIONS_H

#include "shardserve/onnx.h"

/* Replaces every call of a model-local function in *proto's graphs by the function's body; *proto
 * may be replaced by a new proto (the old one is freed). what: the model's name for errors. */
ss_status *ss_onnx_inline_functions(Onnx__ModelProto **proto, const char *what);

#endif
