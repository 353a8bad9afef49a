/*
 * Quantized element helpers shared by quant.c and conv.c's ConvInteger/QLinearConv.
 */
#ifndef SS_RUNTIME_OPS_QUANT_H
#define SS_RUNTIME_OPS_QUANT_H

#include "../op.h"

/* uint8, int8, uint16 or int16: the quantized types the kernels read and write. */
bool ss_quant_dtype(ss_dtype dt);
/* uint8 or int8: the operands of the integer matrix products and convolutions. */
bool ss_quant_dtype8(ss_dtype dt);
/* dst[i] = v saturated to dt's range (v already rounded; NaN gives 0). */
void ss_quant_store(void *dst, int64_t i, ss_dtype dt, double v);

#endif
