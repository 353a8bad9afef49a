/*
 * conv.c's AveragePool for another op's use (qlinear.c's QLinearAveragePool): the window geometry
 * from the node's attributes, and the float32 average over it.
 */
#ifndef SS_RUNTIME_OPS_POOL_H
#define SS_RUNTIME_OPS_POOL_H

#include "../op.h"

/* The plan's size, for a caller that keeps it inside its own state block. */
size_t ss_avgpool_plan_bytes(void);
/* An AveragePool plan over x (N, C, spatial...; attributes auto_pad, ceil_mode, count_include_pad,
 * kernel_shape, pads, strides of k's node) into `plan`; sets output 0's shape (x's dtype). */
ss_status *ss_avgpool_plan_init(ss_kctx *k, const ss_tensor *x, void *plan);
/* y = the window averages of x, both float32 and laid out as x and output 0. */
void ss_avgpool_run_f32(const void *plan, const float *x, float *y);

#endif
