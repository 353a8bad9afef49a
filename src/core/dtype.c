/*
 * Element types: sizes, names and the half-precision conversions. Conversions round to nearest
 * even and keep NaN/Inf, as numpy and ONNX do.
 */
#include "shardserve/core.h"

#include <stdio.h>
#include <string.h>

size_t ss_dtype_size(ss_dtype dt)
{
    switch (dt) {
    case SS_DT_BOOL:
    case SS_DT_UINT8:
    case SS_DT_INT8:
        return 1;
    case SS_DT_UINT16:
    case SS_DT_INT16:
    case SS_DT_FLOAT16:
    case SS_DT_BFLOAT16:
        return 2;
    case SS_DT_INT32:
    case SS_DT_UINT32:
    case SS_DT_FLOAT32:
        return 4;
    case SS_DT_INT64:
    case SS_DT_UINT64:
    case SS_DT_FLOAT64:
        return 8;
    case SS_DT_STRING:
        return sizeof(ss_string);
    case SS_DT_SEQUENCE:
        return 16; /* the sequence's address and a signature of its shapes (runtime) */
    case SS_DT_UNDEFINED:
        return 0;
    }
    return 0;
}

const char *ss_dtype_name(ss_dtype dt)
{
    switch (dt) {
    case SS_DT_FLOAT32:
        return "float32";
    case SS_DT_UINT8:
        return "uint8";
    case SS_DT_INT8:
        return "int8";
    case SS_DT_UINT16:
        return "uint16";
    case SS_DT_INT16:
        return "int16";
    case SS_DT_INT32:
        return "int32";
    case SS_DT_INT64:
        return "int64";
    case SS_DT_STRING:
        return "string";
    case SS_DT_BOOL:
        return "bool";
    case SS_DT_FLOAT16:
        return "float16";
    case SS_DT_FLOAT64:
        return "float64";
    case SS_DT_UINT32:
        return "uint32";
    case SS_DT_UINT64:
        return "uint64";
    case SS_DT_BFLOAT16:
        return "bfloat16";
    case SS_DT_SEQUENCE:
        return "sequence";
    case SS_DT_UNDEFINED:
        return "undefined";
    }
    /* Values from files and requests may be anything; name the number so errors stay useful. */
    static _Thread_local char unknown[24];
    snprintf(unknown, sizeof unknown, "unknown(%d)", (int)dt);
    return unknown;
}

bool ss_dtype_valid(int v)
{
    return (v >= 1 && v <= 13) || v == SS_DT_BFLOAT16;
}

bool ss_dtype_is_float(ss_dtype dt)
{
    return dt == SS_DT_FLOAT32 || dt == SS_DT_FLOAT64 || dt == SS_DT_FLOAT16 ||
           dt == SS_DT_BFLOAT16;
}

bool ss_dtype_is_int(ss_dtype dt)
{
    switch (dt) {
    case SS_DT_UINT8:
    case SS_DT_INT8:
    case SS_DT_UINT16:
    case SS_DT_INT16:
    case SS_DT_INT32:
    case SS_DT_INT64:
    case SS_DT_UINT32:
    case SS_DT_UINT64:
        return true;
    default:
        return false;
    }
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float ss_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        /* subnormal: value = mant * 2^-24 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t ss_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* Inf or NaN */
        return (uint16_t)(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 | ((abs >> 13) & 0x3ff) : 0));
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds past the largest half */
    if (abs < 0x38800000u) {                                  /* result is subnormal or zero */
        if (abs < 0x33000000u) return (uint16_t)sign; /* below half the smallest subnormal */
        uint32_t exp = abs >> 23;
        uint32_t mant = (abs & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - exp; /* 14..24 */
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = abs - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t half = r >> 13;
    uint32_t rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)(sign | half);
}
