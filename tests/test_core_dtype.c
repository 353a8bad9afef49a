/*
 * Element types: every dtype's size and name, and the float16/bfloat16 conversions. The
 * conversions are checked exhaustively for all 65536 half patterns (round trip through float32),
 * against an independent decoder written here with ldexp, and against numpy (float16) and torch
 * (bfloat16) reference values for ~1.2M float32 inputs generated at test time by
 * tests/npy/float_oracle.py (path in SS_CORE_FLOAT_ORACLE).
 */
#include "check.h"

#include <stdint.h>

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

static void sizes_and_names(void)
{
    static const struct {
        ss_dtype dt;
        size_t size;
        const char *name;
        bool is_float, is_int;
    } want[] = {
        {SS_DT_FLOAT32, 4, "float32", true, false}, {SS_DT_UINT8, 1, "uint8", false, true},
        {SS_DT_INT8, 1, "int8", false, true},       {SS_DT_UINT16, 2, "uint16", false, true},
        {SS_DT_INT16, 2, "int16", false, true},     {SS_DT_INT32, 4, "int32", false, true},
        {SS_DT_INT64, 8, "int64", false, true},     {SS_DT_STRING, sizeof(ss_string), "string"},
        {SS_DT_BOOL, 1, "bool", false, false},      {SS_DT_FLOAT16, 2, "float16", true, false},
        {SS_DT_FLOAT64, 8, "float64", true, false}, {SS_DT_UINT32, 4, "uint32", false, true},
        {SS_DT_UINT64, 8, "uint64", false, true},   {SS_DT_BFLOAT16, 2, "bfloat16", true, false},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ss_dtype dt = want[i].dt;
        CHECK_MSG(ss_dtype_size(dt) == want[i].size, "%s size %zu", want[i].name,
                  ss_dtype_size(dt));
        CHECK_MSG(strcmp(ss_dtype_name(dt), want[i].name) == 0, "%d named %s", (int)dt,
                  ss_dtype_name(dt));
        CHECK_MSG(ss_dtype_valid((int)dt), "%s not valid", want[i].name);
        CHECK_MSG(ss_dtype_is_float(dt) == want[i].is_float, "%s is_float", want[i].name);
        CHECK_MSG(ss_dtype_is_int(dt) == want[i].is_int, "%s is_int", want[i].name);
    }
    CHECK(ss_dtype_size(SS_DT_UNDEFINED) == 0);
    CHECK(strcmp(ss_dtype_name(SS_DT_UNDEFINED), "undefined") == 0);
    CHECK(!ss_dtype_valid(0));
    /* ONNX numbers we do not implement (complex, float8, int4, ...) and garbage. */
    static const int invalid[] = {-1, 14, 15, 17, 18, 19, 20, 21, 22, 255, 100000};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        ss_dtype dt = (ss_dtype)invalid[i];
        CHECK_MSG(!ss_dtype_valid(invalid[i]), "%d valid", invalid[i]);
        CHECK_MSG(ss_dtype_size(dt) == 0, "%d has size %zu", invalid[i], ss_dtype_size(dt));
        CHECK(!ss_dtype_is_float(dt) && !ss_dtype_is_int(dt));
        char want_name[32];
        snprintf(want_name, sizeof want_name, "unknown(%d)", invalid[i]);
        CHECK_MSG(strcmp(ss_dtype_name(dt), want_name) == 0, "%d named %s", invalid[i],
                  ss_dtype_name(dt));
    }
}

/* IEEE binary16 decoded from first principles, independent of the code under test. */
static double ref_f16(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0x1f)
        v = mant ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp(mant, -24);
    else
        v = ldexp(0x400 | mant, exp - 25);
    return sign ? -v : v;
}

static void f16_all_patterns(void)
{
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = ss_f16_to_f32(h);
        double ref = ref_f16(h);
        uint16_t back = ss_f32_to_f16(f);
        bool ok = isnan(ref) ? isnan(f) && (back & 0x3ff) && (back & 0x7c00) == 0x7c00 &&
                                   (back & 0x8000) == (h & 0x8000) && !!signbit(f) == (h >> 15)
                             : (double)f == ref && !!signbit(f) == (h >> 15) && back == h;
        if (!ok && bad++ < 5)
            fprintf(stderr, "f16 0x%04x -> %a (want %a) -> 0x%04x\n", h, f, ref, back);
    }
    CHECK_MSG(bad == 0, "%d of 65536 float16 patterns decode or round-trip wrongly", bad);
}

static void bf16_all_patterns(void)
{
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = ss_bf16_to_f32(h);
        uint16_t back = ss_f32_to_bf16(f);
        bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (nan)
            bad += !isnan(f) || (back & 0x7f80) != 0x7f80 || !(back & 0x7f) ||
                   (back & 0x8000) != (h & 0x8000);
        else
            bad += f32_bits(f) != (uint32_t)h << 16 || back != h;
    }
    CHECK_MSG(bad == 0, "%d of 65536 bfloat16 patterns decode or round-trip wrongly", bad);
}

/* Rounding rules spelled out, so a failure names the rule rather than a random input. */
static void rounding_rules(void)
{
    CHECK(ss_f32_to_f16(1.0f) == 0x3c00);
    CHECK(ss_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);            /* tie, even stays */
    CHECK(ss_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);        /* tie, odd rounds up */
    CHECK(ss_f32_to_f16(1.0f + 0x1p-11f + 0x1p-23f) == 0x3c01); /* just past tie */
    CHECK(ss_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(ss_f32_to_f16(65519.996f) == 0x7bff);
    CHECK(ss_f32_to_f16(65520.0f) == 0x7c00); /* tie with an odd max rounds to Inf */
    CHECK(ss_f32_to_f16(-1e10f) == 0xfc00);
    CHECK(ss_f32_to_f16(INFINITY) == 0x7c00 && ss_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK(ss_f32_to_f16(0x1p-24f) == 0x0001); /* smallest subnormal */
    CHECK(ss_f32_to_f16(0x1p-25f) == 0x0000); /* tie with 0 rounds to even 0 */
    CHECK(ss_f32_to_f16(0x1.000002p-25f) == 0x0001);
    CHECK(ss_f32_to_f16(-0x1p-26f) == 0x8000);           /* underflow keeps the sign */
    CHECK(ss_f32_to_f16(0x1p-14f - 0x1p-25f) == 0x0400); /* rounds up into the normals */
    CHECK(ss_f32_to_f16(-0.0f) == 0x8000);
    CHECK(ss_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80); /* tie, even */
    CHECK(ss_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82);
    CHECK(ss_f32_to_bf16(bits_f32(0x7f7fffff)) == 0x7f80); /* FLT_MAX rounds to Inf */
    CHECK(ss_f32_to_bf16(bits_f32(0x7f800001)) != 0x7f80); /* a NaN whose payload rounds away */
    CHECK(isnan(ss_bf16_to_f32(ss_f32_to_bf16(bits_f32(0xff800001)))));
    CHECK(isnan(ss_f16_to_f32(ss_f32_to_f16(bits_f32(0x7f800001)))));
}

typedef struct {
    uint32_t n;
    uint32_t *in;
    uint16_t *f16, *bf16;
    uint32_t *f16_dec, *bf16_dec;
    void *buf;
} oracle;

static bool load_oracle(oracle *o)
{
    const char *path = getenv("SS_CORE_FLOAT_ORACLE");
    CHECK_MSG(path != NULL, "SS_CORE_FLOAT_ORACLE is not set (run through ctest)");
    if (!path) return false;
    size_t len;
    ss_status *st = ss_read_file(path, &o->buf, &len);
    CHECK_MSG(st == NULL, "%s", st ? st->msg : "");
    if (st) {
        ss_status_free(st);
        return false;
    }
    const unsigned char *p = o->buf;
    uint32_t version;
    if (len >= 12) {
        memcpy(&version, p + 4, 4);
        memcpy(&o->n, p + 8, 4);
    }
    bool ok = len >= 12 && memcmp(p, "SSFO", 4) == 0 && version == 1 &&
              len == 12 + (size_t)o->n * 8 + 65536 * 8;
    CHECK_MSG(ok, "%s: not a version-1 oracle file of the right size", path);
    if (!ok) return false;
    o->in = (uint32_t *)(p + 12);
    o->f16 = (uint16_t *)(o->in + o->n);
    o->bf16 = o->f16 + o->n;
    o->f16_dec = (uint32_t *)(o->bf16 + o->n);
    o->bf16_dec = o->f16_dec + 65536;
    CHECK_MSG(o->n >= 1000000, "oracle holds only %u inputs", o->n);
    return true;
}

static bool is_f16_nan(uint16_t h)
{
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}
static bool is_bf16_nan(uint16_t h)
{
    return (h & 0x7f80) == 0x7f80 && (h & 0x7f);
}

static void against_numpy_and_torch(void)
{
    oracle o;
    memset(&o, 0, sizeof o);
    if (!load_oracle(&o)) {
        free(o.buf);
        return;
    }
    uint32_t bad16 = 0, badbf = 0;
    for (uint32_t i = 0; i < o.n; i++) {
        float x = bits_f32(o.in[i]);
        uint16_t h = ss_f32_to_f16(x), b = ss_f32_to_bf16(x);
        /* NaN payloads differ between implementations; NaN must stay NaN with its sign (torch
         * canonicalises the sign away, so bfloat16 only checks NaN-ness). */
        bool ok16 = is_f16_nan(o.f16[i]) ? is_f16_nan(h) && (h & 0x8000) == (o.f16[i] & 0x8000)
                                         : h == o.f16[i];
        bool okbf = is_bf16_nan(o.bf16[i]) ? is_bf16_nan(b) : b == o.bf16[i];
        if (!ok16 && bad16++ < 5)
            fprintf(stderr, "f32 0x%08x (%a): f16 0x%04x, numpy 0x%04x\n", o.in[i], x, h, o.f16[i]);
        if (!okbf && badbf++ < 5)
            fprintf(stderr, "f32 0x%08x (%a): bf16 0x%04x, torch 0x%04x\n", o.in[i], x, b,
                    o.bf16[i]);
    }
    CHECK_MSG(bad16 == 0, "%u of %u float32->float16 conversions differ from numpy", bad16, o.n);
    CHECK_MSG(badbf == 0, "%u of %u float32->bfloat16 conversions differ from torch", badbf, o.n);
    uint32_t bad_dec = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float a = ss_f16_to_f32((uint16_t)h), b = ss_bf16_to_f32((uint16_t)h);
        float na = bits_f32(o.f16_dec[h]), nb = bits_f32(o.bf16_dec[h]);
        bad_dec += isnan(na) ? !isnan(a) : f32_bits(a) != o.f16_dec[h];
        bad_dec += isnan(nb) ? !isnan(b) : f32_bits(b) != o.bf16_dec[h];
    }
    CHECK_MSG(bad_dec == 0, "%u half->float32 decodes differ from numpy/torch", bad_dec);
    printf("compared %u float32 inputs with numpy (float16) and torch (bfloat16)\n", o.n);
    free(o.buf);
}

TEST_MAIN(TEST(sizes_and_names), TEST(f16_all_patterns), TEST(bf16_all_patterns),
          TEST(rounding_rules), TEST(against_numpy_and_torch))
