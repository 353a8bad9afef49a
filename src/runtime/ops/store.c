/*
 * ss_op_store_f64 (store.h): one element of any numeric dtype written from a double. Integer
 * conversions saturate instead of invoking undefined behaviour on out-of-range values.
 */
#include "store.h"

#include <math.h>

static double clampd(double v, double lo, double hi)
{
    return v != v ? 0 : v < lo ? lo : v > hi ? hi : v;
}

#define STORE_AS(T, VAL)                                                                           \
    do {                                                                                           \
        T x_ = (T)(VAL);                                                                           \
        memcpy(p, &x_, sizeof x_);                                                                 \
    } while (0)

void ss_op_store_f64(ss_tensor *t, int64_t i, double v)
{
    char *p = (char *)t->data + (size_t)i * ss_dtype_size(t->dtype);
    switch (t->dtype) {
    case SS_DT_FLOAT32:
        STORE_AS(float, v);
        break;
    case SS_DT_FLOAT64:
        STORE_AS(double, v);
        break;
    case SS_DT_FLOAT16:
        STORE_AS(uint16_t, ss_f32_to_f16((float)v));
        break;
    case SS_DT_BFLOAT16:
        STORE_AS(uint16_t, ss_f32_to_bf16((float)v));
        break;
    case SS_DT_INT8:
        STORE_AS(int8_t, clampd(v, INT8_MIN, INT8_MAX));
        break;
    case SS_DT_UINT8:
        STORE_AS(uint8_t, clampd(v, 0, UINT8_MAX));
        break;
    case SS_DT_BOOL:
        STORE_AS(uint8_t, v != 0);
        break;
    case SS_DT_INT16:
        STORE_AS(int16_t, clampd(v, INT16_MIN, INT16_MAX));
        break;
    case SS_DT_UINT16:
        STORE_AS(uint16_t, clampd(v, 0, UINT16_MAX));
        break;
    case SS_DT_INT32:
        STORE_AS(int32_t, clampd(v, INT32_MIN, INT32_MAX));
        break;
    case SS_DT_UINT32:
        STORE_AS(uint32_t, clampd(v, 0, UINT32_MAX));
        break;
    case SS_DT_INT64:
        STORE_AS(int64_t, ss_op_sat_i64(v));
        break;
    case SS_DT_UINT64:
        STORE_AS(uint64_t, v != v || v <= 0 ? 0 : v >= 0x1p64 ? UINT64_MAX : (uint64_t)v);
        break;
    default:
        break;
    }
}
