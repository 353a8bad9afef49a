/*
 * oneDNN (Debian libdnnl-dev 2.6, C API) as a kernel library for the runtime's ops, and the
 * kernel-selection switch SHARDSERVE_KERNELS=auto|onednn|own|blas shared by them.
 *
 * A primitive is made when the plan is made (shapes known, fixed: runtime dims fall back to slow
 * gemm:jit code in 2.6). Constant weights are reordered once, at plan time, into the layout the
 * primitive prefers (format_tag any); the caller then drops the original's pages when they are
 * a file mapping. The scratchpad is the caller's (user scratchpad mode): the planner hands every
 * node a slice of the session arena, so a run allocates nothing in our code, and a primitive
 * may run on any thread (the library-mode scratchpad of this build is thread-local).
 *
 * Threads: oneDNN runs on libgomp and reads the calling thread's OpenMP thread count; each
 * primitive records the count it was made for and sets it on the calling thread before it runs.
 */
#ifndef SS_RUNTIME_ONEDNN_H
#define SS_RUNTIME_ONEDNN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../op.h"
#include "fusion.h"
#include "shardserve/core.h"

typedef enum {
    SS_KERNELS_AUTO = 0, /* per shape class, what measured fastest (see matmul.c) */
    SS_KERNELS_ONEDNN,   /* oneDNN wherever it takes the case */
    SS_KERNELS_OWN,      /* own kernels where they exist, OpenBLAS otherwise (before oneDNN) */
    SS_KERNELS_BLAS,     /* OpenBLAS for every GEMM */
} ss_kernels;

/* The mode for plans made now: the forced one if set, else SHARDSERVE_KERNELS (an unknown value
 * is reported once and means auto). */
ss_kernels ss_kernels_mode(void);
/* Test hook: plans made after this use k (SS_KERNELS_AUTO restores the environment's choice). */
void ss_kernels_force(ss_kernels k);
/* Plans made on this thread from now use k, over the forced mode and the environment, until
 * the call that restores the returned previous scope (SS_KERNELS_AUTO: no scope). */
ss_kernels ss_kernels_scope(ss_kernels k);
const char *ss_kernels_name(ss_kernels k);
/* Whether a GEMM of M x K x N (M folded over batches) should try oneDNN under mode: always for
 * float32 under onednn, for float32 products above the measured per-call break-even under auto. */
bool ss_kernels_use_dnnl(ss_kernels mode, ss_dtype dt, int64_t M, int64_t K, int64_t N);
/* Threads a primitive of `macs` multiply-adds gets out of the session's `threads`. */
int ss_dnnl_threads(int64_t macs, int threads);

/* oneDNN's dispatch ISA on this CPU ("avx512_core_bf16", ...) and whether bf16 math is native. */
const char *ss_dnnl_isa_name(void);
bool ss_dnnl_bf16_native(void);
/* How many oneDNN matmul executions ran in f32 / on bf16 weights (tests check the path taken). */
unsigned long ss_dnnl_calls(void);
unsigned long ss_dnnl_bf16_calls(void);
/* How many times constant weights were reordered into a packed layout. */
unsigned long ss_dnnl_packs(void);

#define SS_DNNL_MAX_DIMS 12
/* Up to this many rows (batch dims folded in) a float32 primitive reads constant weights in
 * place instead of a packed copy (see weights_in_place in onednn.c). */
#define SS_DNNL_IN_PLACE_MAX_ROWS 16

/* dst[batch.., M, N] = src[batch.., M, K] x wei[batch.., K, N] (+ bias), batch dims broadcast
 * (size 1 on one side). All tensors have nd dims; strides are in elements (a transposed operand
 * is a stride swap). */
typedef struct {
    int nd;
    int64_t src_dims[SS_DNNL_MAX_DIMS], src_strides[SS_DNNL_MAX_DIMS];
    int64_t wei_dims[SS_DNNL_MAX_DIMS], wei_strides[SS_DNNL_MAX_DIMS];
    int64_t dst_dims[SS_DNNL_MAX_DIMS];
    const float *wei_const; /* constant weights: reordered once now, run's wei is ignored */
    bool has_bias;
    int64_t bias_dims[SS_DNNL_MAX_DIMS]; /* dense, each dim dst's or 1 */
    const float *bias_const;             /* constant bias (already scaled): copied now */
    float bias_scale;                    /* for bias_const */
    bool bf16; /* bf16 weights and activations, f32 accumulation and output */
    int threads;
    ss_kctx *k; /* packed weights are shared through its session (NULL: owned) */
    /* post-ops after the bias (a fused epilogue's leading steps), as ss_dnnl_conv_desc's: constant
     * operands copied now, a tensor operand's data read on each run */
    const ss_postop *po;
    int n_po;
    /* non-NULL: fail with SS_ERR_UNSUPPORTED unless oneDNN picks this implementation */
    const char *require_impl;
} ss_dnnl_matmul_desc;

typedef struct ss_dnnl_matmul ss_dnnl_matmul;

/* Makes the primitive (and the packed weights). Fails with SS_ERR_UNSUPPORTED when oneDNN has no
 * implementation for the case, so the caller can take another kernel. *scratch_bytes is what
 * run needs in `scratch` (64-byte aligned). */
ss_status *ss_dnnl_matmul_create(const ss_dnnl_matmul_desc *d, ss_dnnl_matmul **out,
                                 size_t *scratch_bytes);
/* Runs it; allocates nothing in our code. wei / bias are ignored when they were constant. */
ss_status *ss_dnnl_matmul_run(ss_dnnl_matmul *m, const float *src, const float *wei,
                              const float *bias, float *dst, void *scratch);
/* oneDNN's implementation name ("brg:avx512_core", ...). */
const char *ss_dnnl_matmul_impl(const ss_dnnl_matmul *m);
/* How many matmul executions ran post-ops (tests check the path taken). */
unsigned long ss_dnnl_matmul_postop_calls(void);
/* Whether the packed weights are a copy (the original's pages can go). */
bool ss_dnnl_matmul_owns_weights(const ss_dnnl_matmul *m);
void ss_dnnl_matmul_free(ss_dnnl_matmul *m);

/* Conv (forward inference) over nsp = 1..3 spatial dims, X and Y plain NC[D]HW as ONNX has them
 * unless ss_dnnl_conv_relayout says otherwise. The primitive picks its own activation layout
 * (format any: nhwc or blocked on AVX-512); X is reordered into it and Y out of it on each run, in
 * the scratch area. Weights (ONNX [M, C/group, k...]) and bias are constants, packed once. */
typedef struct {
    int nsp;
    int64_t N, C, M, group;
    int64_t in[3], out[3], kernel[3], stride[3], dilation[3], pad_begin[3], pad_end[3];
    const float *wei_const;  /* required */
    const float *bias_const; /* NULL: no bias */
    int threads;
    ss_kctx *k; /* as in ss_dnnl_matmul_desc */
    /* post-ops run by the primitive on Y (a fused epilogue's leading steps): constant operands
     * are copied now, a tensor operand's data is read on each run */
    const ss_postop *po;
    int n_po;
    /* non-NULL: fail with SS_ERR_UNSUPPORTED, before packing anything, unless oneDNN picks this
     * implementation (post-ops must not send the case to a slower kernel) */
    const char *require_impl;
    /* keep the Conv direct even where Winograd would be chosen (a float16 model's Conv, whose
     * output is rounded to float16 after the op: Winograd's different rounding compounds there) */
    bool direct_only;
    /* po[0] is an Add of a tensor of Y's shape (a residual): run it as oneDNN's sum post-op, which
     * accumulates into Y's buffer, so the operand is copied (or reordered) into it before each run
     * instead of read as a binary operand: a binary operand in plain NCHW sends 1x1 Convs to
     * gemm:jit, sum keeps brgconv_1x1 */
    bool sum;
} ss_dnnl_conv_desc;

typedef struct ss_dnnl_conv ss_dnnl_conv;

/* How many of po[0..n) one primitive can take: oneDNN 2.6's kernels give every eltwise post-op of
 * one kind the parameters of the first (HardSigmoid's Clip(0, 1) then a Clip(0.2, 0.7) clipped
 * to [0, 1] twice), so the list stops before a kind that comes back with other parameters. */
int ss_dnnl_postops_usable(const ss_postop *po, int n);
/* Remakes a node's primitive with the post-ops po[0, n), swapping it in and setting *took when
 * that succeeded; an UNSUPPORTED case is no error (*took stays false). */
typedef ss_status *(*ss_dnnl_postop_make)(ss_kctx *k, void *ctx, const ss_postop *po, int n,
                                          bool *took);
/* The planner's fuse hook shared by Conv and MatMul: offers make the whole-step prefixes of
 * po[0, all) that oneDNN can combine, longest first, until one is taken; the steps it took leave
 * ep (the epilogue's pass runs the rest). */
ss_status *ss_dnnl_fuse_postops(ss_kctx *k, ss_epilogue *ep, const ss_postop *po, int all,
                                ss_dnnl_postop_make make, void *ctx);
/* With post-ops, create fails with SS_ERR_UNSUPPORTED when oneDNN rejects them. */
ss_status *ss_dnnl_conv_create(const ss_dnnl_conv_desc *d, ss_dnnl_conv **out,
                               size_t *scratch_bytes);
ss_status *ss_dnnl_conv_run(ss_dnnl_conv *c, const float *x, float *y, void *scratch);
const char *ss_dnnl_conv_impl(const ss_dnnl_conv *c);
void ss_dnnl_conv_free(ss_dnnl_conv *c);
/* The layout pass (session.c: layout_plan): X's bytes arrive in x_layout (a oneDNN memory
 * descriptor another primitive wrote them in; NULL: plain), and with y_native Y is left in the
 * primitive's own layout, returned in *y_layout (valid while c lives), instead of reordered to
 * plain. *scratch_bytes is the new need (it can grow: a plain X the primitive took as is may now
 * need a reorder from another layout). */
ss_status *ss_dnnl_conv_relayout(ss_dnnl_conv *c, const void *x_layout, bool y_native,
                                 const void **y_layout, size_t *scratch_bytes);
/* With a sum post-op (desc.sum): the operand's bytes arrive in `layout` (a oneDNN memory
 * descriptor; NULL: plain), so each run copies them into Y's buffer when it is the primitive's
 * destination layout, else reorders them. */
ss_status *ss_dnnl_conv_sum_relayout(ss_dnnl_conv *c, const void *layout);
/* Whether a run copies the sum operand straight into Y's buffer (same layout, Y written in
 * place): then Y may be the operand's own buffer, and the copy is skipped. */
bool ss_dnnl_conv_sum_copies_into_y(const ss_dnnl_conv *c);
unsigned long ss_dnnl_conv_calls(void);
/* Of those, how many ran post-ops (a fused epilogue's steps inside the primitive). */
unsigned long ss_dnnl_conv_postop_calls(void);
/* Of those, how many ran a Winograd implementation (3x3 stride-1 Convs on AVX-512, onednn.c). */
unsigned long ss_dnnl_conv_winograd_calls(void);

/* MaxPool (forward inference) on a tensor whose bytes are in a oneDNN layout (src_layout, from
 * ss_dnnl_conv_relayout or another pool), for the layout pass: padding never wins, as in ONNX. */
typedef struct {
    int nsp;
    int64_t in[3], out[3], kernel[3], stride[3], dilation[3], pad_begin[3], pad_end[3];
    const void *src_layout; /* required: the descriptor X's bytes are laid out by */
    bool y_native;          /* Y stays in the primitive's layout (else plain NC[D]HW) */
    int threads;
} ss_dnnl_pool_desc;

typedef struct ss_dnnl_pool ss_dnnl_pool;

/* *y_layout: Y's layout when y_native (valid while the pool lives), else NULL. */
ss_status *ss_dnnl_pool_create(const ss_dnnl_pool_desc *d, ss_dnnl_pool **out,
                               size_t *scratch_bytes, const void **y_layout);
ss_status *ss_dnnl_pool_run(ss_dnnl_pool *p, const float *x, float *y, void *scratch);
void ss_dnnl_pool_free(ss_dnnl_pool *p);

/* Bytes a tensor takes in a layout (blocked layouts pad the channels to the block). */
size_t ss_dnnl_layout_bytes(const void *layout);
/* How many activation reorders (plain <-> a kernel's layout) ran, in convolutions and pools:
 * tests count a run's to see the layout pass at work. */
unsigned long ss_dnnl_reorder_calls(void);
/* Of those, the ones this file ran itself (float32 channels-last <-> 16-channel blocks, between
 * a layout-pass neighbour and a Convolution that wants the other, e.g. a Winograd one): oneDNN
 * 2.6's reorder takes 2-3 times as long on 2 threads as on 1 there. SHARDSERVE_DNNL_RELAYOUT=0
 * leaves them to oneDNN (same-binary comparisons). */
unsigned long ss_dnnl_own_relayout_calls(void);
/* Test hook / switch: plans made while disabled keep every tensor plain between nodes
 * (SHARDSERVE_LAYOUT=0 disables too: same-binary comparisons). */
void ss_layout_enable(bool on);
bool ss_layout_enabled(void);

#endif
