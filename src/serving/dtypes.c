/*
 * dtypes: MindSpore's names for tensor types, in one table: the DataType enum values of its gRPC
 * proto (and the "proto::MS_*" texts its errors print), its C++ names ("kMSI_*"), and the type
 * names of its REST objects ({"type": "fp32", ...}). Every front end and the checks use this.
 */
#include "shardserve/serving.h"

#include <string.h>

typedef struct {
    ss_dtype dtype;
    bool is_bytes;
    const char *proto_name; /* the DataType value is the row's index */
    const char *kmsi;
} ms_type;

/* Indexed by MindSpore's proto DataType value. */
static const ms_type ms_types[] = {
    {SS_DT_UNDEFINED, false, "proto::MS_UNKNOWN", "kMSI_Unknown"},
    {SS_DT_BOOL, false, "proto::kMSI_Bool", "kMSI_Bool"}, /* sic: MindSpore's own text */
    {SS_DT_INT8, false, "proto::MS_INT8", "kMSI_Int8"},
    {SS_DT_UINT8, false, "proto::MS_UINT8", "kMSI_Uint8"},
    {SS_DT_INT16, false, "proto::MS_INT16", "kMSI_Int16"},
    {SS_DT_UINT16, false, "proto::MS_UINT16", "kMSI_Uint16"},
    {SS_DT_INT32, false, "proto::MS_INT32", "kMSI_Int32"},
    {SS_DT_UINT32, false, "proto::MS_UINT32", "kMSI_Uint32"},
    {SS_DT_INT64, false, "proto::MS_INT64", "kMSI_Int64"},
    {SS_DT_UINT64, false, "proto::MS_UINT64", "kMSI_Uint64"},
    {SS_DT_FLOAT16, false, "proto::MS_FLOAT16", "kMSI_Float16"},
    {SS_DT_FLOAT32, false, "proto::MS_FLOAT32", "kMSI_Float32"},
    {SS_DT_FLOAT64, false, "proto::MS_FLOAT64", "kMSI_Float64"},
    {SS_DT_STRING, false, "proto::MS_STRING", "kMSI_String"},
    {SS_DT_STRING, true, "proto::MS_BYTES", "kMSI_String"},
};
#define MS_TYPES (int)(sizeof ms_types / sizeof ms_types[0])

/* REST object type names; the first of a dtype is the name MindSpore prints for it. */
static const struct {
    const char *name;
    ss_dtype dtype;
    bool is_bytes;
} rest_types[] = {
    {"float16", SS_DT_FLOAT16, false}, {"float32", SS_DT_FLOAT32, false},
    {"float64", SS_DT_FLOAT64, false}, {"str", SS_DT_STRING, false},
    {"bytes", SS_DT_STRING, true},     {"int8", SS_DT_INT8, false},
    {"int16", SS_DT_INT16, false},     {"int32", SS_DT_INT32, false},
    {"int64", SS_DT_INT64, false},     {"uint8", SS_DT_UINT8, false},
    {"uint16", SS_DT_UINT16, false},   {"uint32", SS_DT_UINT32, false},
    {"uint64", SS_DT_UINT64, false},   {"fp16", SS_DT_FLOAT16, false},
    {"fp32", SS_DT_FLOAT32, false},    {"fp64", SS_DT_FLOAT64, false},
    {"bool", SS_DT_BOOL, false},
};

ss_dtype ss_serving_ms_dtype_from_proto(int value, bool *is_bytes)
{
    bool ok = value >= 0 && value < MS_TYPES;
    if (is_bytes) *is_bytes = ok && ms_types[value].is_bytes;
    return ok ? ms_types[value].dtype : SS_DT_UNDEFINED;
}

int ss_serving_ms_dtype_to_proto(ss_dtype dt, bool is_bytes)
{
    for (int i = 1; i < MS_TYPES; i++)
        if (ms_types[i].dtype == dt && ms_types[i].is_bytes == (dt == SS_DT_STRING && is_bytes))
            return i;
    return 0;
}

const char *ss_serving_ms_proto_dtype_name(int value)
{
    return ms_types[value >= 0 && value < MS_TYPES ? value : 0].proto_name;
}

const char *ss_serving_ms_dtype_name(ss_dtype dt)
{
    for (int i = 1; i < MS_TYPES; i++)
        if (ms_types[i].dtype == dt) return ms_types[i].kmsi;
    return ms_types[0].kmsi;
}

bool ss_serving_ms_rest_type(const char *name, ss_dtype *dt, bool *is_bytes)
{
    for (size_t i = 0; i < sizeof rest_types / sizeof rest_types[0]; i++)
        if (strcmp(rest_types[i].name, name) == 0) {
            *dt = rest_types[i].dtype;
            *is_bytes = rest_types[i].is_bytes;
            return true;
        }
    return false;
}

const char *ss_serving_ms_rest_type_name(ss_dtype dt, bool is_bytes)
{
    for (size_t i = 0; i < sizeof rest_types / sizeof rest_types[0]; i++)
        if (rest_types[i].dtype == dt && rest_types[i].is_bytes == (dt == SS_DT_STRING && is_bytes))
            return rest_types[i].name;
    return "";
}
