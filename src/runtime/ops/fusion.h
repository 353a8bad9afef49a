/*
 * Element-wise epilogues: a chain of element-wise nodes after one producer (Conv, MatMul, Gemm,
 * BatchNormalization, an element-wise op...) run as one pass over the producer's output instead
 * of one pass (and one buffer) per node. The planner (session.c: fuse_plan) finds the chains; this
 * file turns each absorbed node into a step and runs the steps.
 *
 * A step is an element-wise op on the running value y with at most one operand that is either a
 * constant varying along one axis of y's shape (a per-channel scale, a bias, a scalar), or,
 * computed before the producer ran, a tensor of y's exact shape (a residual), one varying along
 * one axis (an attention mask) or a single value (a scale). Every step keeps y's shape and
 * dtype (float32), so the producer writes the chain's last value directly and the intermediates
 * get no buffer. Each step computes what the unfused node computes, in the same order and
 * precision (BatchNormalization folds into a scale and shift: within rounding of the unfused op).
 * Built at plan time in one block; running allocates nothing.
 */
#ifndef SS_RUNTIME_OPS_FUSION_H
#define SS_RUNTIME_OPS_FUSION_H

#include <stdbool.h>
#include <stdint.h>

#include "../op.h"

typedef struct ss_epilogue ss_epilogue;

/* An empty epilogue over a float32 value of y's shape (dims are copied), run on up to `threads`
 * parts of the worker pool (reserved now). NULL if out of memory. */
ss_epilogue *ss_epilogue_new(const ss_tensor *y, int threads);
void ss_epilogue_free(ss_epilogue *ep);
int ss_epilogue_steps(const ss_epilogue *ep);

/* Appends node nd (opset) as a step whose input `chain` is the running value; in[i] are the
 * node's inputs as planned (constants have data; `ready[i]` says a non-constant input is computed
 * before the producer runs) and out its planned output. false (nothing appended) when the node is
 * not such a step: another op, another dtype or shape, an operand varying along two axes... */
bool ss_epilogue_add_node(ss_epilogue *ep, const ss_onnx_node *nd, int64_t opset, int n_in,
                          ss_tensor *const *in, const bool *ready, int chain, const ss_tensor *out);
/* The decomposed HardSwish of exporters (Paddle): y * Clip(y + a, lo, hi), computed as its nodes
 * do (the Div by 6 that usually follows is a step of its own). */
bool ss_epilogue_add_xclip(ss_epilogue *ep, float a, float lo, float hi);
/* The decomposed exact GELU of exporters (PyTorch before opset 20, BERT's own code):
 * y * (Erf(y / c) + b), computed as its Div, Erf, Add and Mul nodes do (the Mul by 0.5 that
 * usually follows is a step of its own). */
bool ss_epilogue_add_gelu(ss_epilogue *ep, float c, float b);
/* GELU's tanh approximation (GPT-2's "new GELU"), however the exporter spelled it out. */
#define SS_GELU_TANH_K 0.7978845608f /* sqrt(2 / pi) */
#define SS_GELU_TANH_C 0.044715f
bool ss_epilogue_add_gelu_tanh(ss_epilogue *ep);

/* Runs the steps over y in place (one pass, blocks that stay in L1), split over up to `threads`
 * parts of the worker pool when y is large. */
void ss_epilogue_run(const ss_epilogue *ep, float *y);

/* For a producer that runs the steps itself on each block of y it computes, while the block is in
 * cache (the quantized products' finishers): ss_epilogue_run then does nothing, and the producer
 * calls ss_epilogue_run_span on `span`, the n values of y[off, off + n) wherever they are (y's
 * buffer or the producer's own; any span, from any thread; a step's operand of y's shape is read
 * at y's offsets). */
void ss_epilogue_claim(ss_epilogue *ep);
void ss_epilogue_run_span(const ss_epilogue *ep, float *span, int64_t off, int64_t n);
/* A leading step as a library post-op (oneDNN's, see onednn.h): an element-wise function of y, or
 * a binary op with a constant per-channel (axis 1) vector, a scalar, or a tensor of y's shape. */
typedef enum {
    SS_PO_RELU,      /* y < 0 ? alpha * y : y */
    SS_PO_CLIP,      /* clamp to [alpha, beta] */
    SS_PO_LINEAR,    /* alpha * y + beta */
    SS_PO_HSWISH,    /* y * relu6(y + 3) / 6 */
    SS_PO_LOGISTIC,  /* 1 / (1 + exp(-y)) */
    SS_PO_GELU_ERF,  /* 0.5 y (1 + erf(y / sqrt 2)) */
    SS_PO_GELU_TANH, /* 0.5 y (1 + tanh(sqrt(2 / pi) (y + 0.044715 y^3))) */
    SS_PO_ADD,       /* binary ops: y op operand */
    SS_PO_SUB,
    SS_PO_MUL,
    SS_PO_DIV,
    SS_PO_MAX,
    SS_PO_MIN,
} ss_postop_kind;

typedef struct {
    ss_postop_kind kind;
    float alpha, beta;  /* parameters; a binary op's scalar operand is alpha */
    const float *chan;  /* binary: per-channel constant (dims[1] floats), NULL otherwise */
    const ss_tensor *t; /* binary: operand of y's shape, its data read at run time */
    int steps;          /* leading steps of the epilogue covered up to this post-op */
} ss_postop;

#define SS_EPILOGUE_MAX_POSTOPS 32
/* The longest prefix of ep's steps expressible as post-ops into out[] (at most `max`); returns
 * how many post-ops were written (0: the first step is not expressible). */
int ss_epilogue_postops(const ss_epilogue *ep, ss_postop *out, int max);
/* The operand of the first step when it adds a constant vector along the last axis (a MatMul's
 * bias), else NULL. */
const float *ss_epilogue_lead_bias(const ss_epilogue *ep);
/* Drops the first n steps (a library primitive now runs them). */
void ss_epilogue_drop(ss_epilogue *ep, int n);

/* Test hook / switch: plans made while disabled fuse nothing (SHARDSERVE_FUSION=0 disables too). */
void ss_fusion_enable(bool on);
bool ss_fusion_enabled(void);
/* How many nodes the session's current plan runs as steps of another node's epilogue
 * (session.c; tests check where fusion must and must not happen). */
int ss_session_fused_nodes(const ss_session *s);

#endif
