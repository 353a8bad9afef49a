/*
 * conv.c's AveragePool and MaxPool for other ops' use (qlinear.c's QLinearAveragePool and
 * NhwcMaxPool): the window geometry from the node's attributes, and the pooling over it. Planes
 * are [N, C, spatial...]; a channels-last caller transposes around them.
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
/* A MaxPool plan over x (attributes auto_pad, ceil_mode, dilations, kernel_shape, pads, strides);
 * sets output 0's shape (x's dtype). */
ss_status *ss_maxpool_plan_init(ss_kctx *k, const ss_tensor *x, void *plan);
/* y = the window maxima of x (uint8 or int8, dt), laid out as x and output 0; padding never
 * wins. */
void ss_maxpool_run_q8(const void *plan, ss_dtype dt, const void *x, void *y);

#endif
