/*
 * Writing one element of any numeric dtype from a double (the counterpart of ss_op_elem_f64),
 * for kernels that compute in double whatever their output type: Shrink, Det, the window and
 * spectral ops. Integers round toward zero and saturate; run-time safe (no allocation).
 */
#ifndef SS_RUNTIME_OPS_STORE_H
#define SS_RUNTIME_OPS_STORE_H

#include "common.h"

/* Element i of t (numeric or bool) set to v converted to t's dtype. */
void ss_op_store_f64(ss_tensor *t, int64_t i, double v);

#endif
