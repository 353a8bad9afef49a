/*
 * The link's wire format in memory: every message type survives encode -> ss_link_decode_frame
 * unchanged, and a table of malformed frames (bad prefix fields, lying lengths, truncation,
 * undecodable or inconsistent protobuf headers) each gives a clear error and never a crash.
 * Ends with a few thousand random mutations of a good frame (useful under ASan/UBSan).
 */
#include "test_link_util.h"

/* ---------------------------------------------------------------- hand-made protobuf */

typedef struct {
    uint8_t b[4096];
    size_t n;
} pb;

static void pb_varint(pb *p, uint64_t v)
{
    while (v >= 0x80) {
        p->b[p->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p->b[p->n++] = (uint8_t)v;
}
static void pb_tag(pb *p, int field, int wire)
{
    pb_varint(p, (uint64_t)(field << 3 | wire));
}
static void pb_uint(pb *p, int field, uint64_t v)
{
    pb_tag(p, field, 0);
    pb_varint(p, v);
}
static void pb_bytes(pb *p, int field, const void *data, size_t len)
{
    pb_tag(p, field, 2);
    pb_varint(p, len);
    memcpy(p->b + p->n, data, len);
    p->n += len;
}
static void pb_sub(pb *p, int field, const pb *sub)
{
    pb_bytes(p, field, sub->b, sub->n);
}
static void pb_packed(pb *p, int field, const int64_t *v, size_t n)
{
    pb tmp = {.n = 0};
    for (size_t i = 0; i < n; i++)
        pb_varint(&tmp, (uint64_t)v[i]);
    pb_sub(p, field, &tmp);
}

/* A TensorDesc / TensorSpec (same field numbers for name, dtype, shape). */
static pb desc(const char *name, int64_t dtype, const int64_t *shape, size_t nd,
               const int64_t *lens, size_t nl)
{
    pb d = {.n = 0};
    pb_bytes(&d, 1, name, strlen(name));
    pb_uint(&d, 2, (uint64_t)dtype);
    if (nd) pb_packed(&d, 3, shape, nd);
    if (nl) pb_packed(&d, 4, lens, nl);
    return d;
}

/* Frame = prefix + header + payload bytes (payload_len given separately so it can lie). */
static size_t frame(uint8_t *out, int type, const pb *hdr, uint32_t n_payloads,
                    uint64_t payload_len, size_t payload_present)
{
    uint8_t pre[SS_LINK_PREFIX_BYTES] = {0};
    uint32_t magic = SS_LINK_MAGIC;
    memcpy(pre, &magic, 4);
    pre[4] = SS_LINK_VERSION;
    pre[6] = (uint8_t)type;
    uint32_t hl = (uint32_t)hdr->n;
    memcpy(pre + 8, &hl, 4);
    memcpy(pre + 12, &n_payloads, 4);
    memcpy(pre + 16, &payload_len, 8);
    memcpy(out, pre, sizeof pre);
    memcpy(out + sizeof pre, hdr->b, hdr->n);
    memset(out + sizeof pre + hdr->n, 0x5a, payload_present);
    return sizeof pre + hdr->n + payload_present;
}

/* ---------------------------------------------------------------- round trips */

/* SS_LINK_CORPUS_DIR=dir saves every encoded frame there: seeds for fuzz_link_frame. */
static void save_seed(const void *buf, size_t len)
{
    static int count;
    const char *dir = getenv("SS_LINK_CORPUS_DIR");
    if (!dir) return;
    char path[512];
    snprintf(path, sizeof path, "%s/frame%02d", dir, count++);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(buf, 1, len, f);
        fclose(f);
    }
}

static void roundtrip(const ss_link_msg *m, const ss_tensor *const *ts, size_t n)
{
    void *buf = NULL;
    size_t len = 0, used = 0;
    CHECK_OK(ss_link_encode_frame(m, ts, n, &buf, &len));
    save_seed(buf, len);
    ss_link_msg got;
    CHECK_OK(ss_link_decode_frame(buf, len, NULL, &got, &used));
    CHECK_MSG(used == len, "%zu of %zu", used, len);
    CHECK_MSG(tl_msg_matches(m, ts, n, &got), "%s did not survive", ss_link_type_name(m->type));
    ss_link_msg_free(&got);
    free(buf);
}

static void every_message_type_round_trips(void)
{
    ss_link_spec in[2] = {{"x", SS_DT_FLOAT32, 2, {-1, 96}}, {"mask", SS_DT_BOOL, 0, {0}}};
    ss_link_spec out[1] = {{"y", SS_DT_FLOAT16, 3, {-1, 16, 4}}};
    ss_link_msg reg = {.type = SS_LINK_REGISTER,
                       .rank = 3,
                       .rank_size = 8,
                       .stage = 1,
                       .stage_size = 2,
                       .pid = 123456,
                       .batch_size = 4,
                       .inputs = in,
                       .n_inputs = 2,
                       .outputs = out,
                       .n_outputs = 1,
                       .address = "127.0.0.1:7003",
                       .shares_inputs = true};
    roundtrip(&reg, NULL, 0);
    ss_link_msg reg_empty = {.type = SS_LINK_REGISTER};
    roundtrip(&reg_empty, NULL, 0);
    roundtrip(&(ss_link_msg){.type = SS_LINK_REGISTER_ACK,
                             .accepted = false,
                             .message = "rank 3 is already registered"},
              NULL, 0);
    roundtrip(&(ss_link_msg){.type = SS_LINK_GET_META, .address = "host-a"}, NULL, 0);
    roundtrip(&(ss_link_msg){.type = SS_LINK_META, .json = "{\"rank_table\": {\"a\": [1, 2]}}"},
              NULL, 0);
    roundtrip(&(ss_link_msg){.type = SS_LINK_HEARTBEAT, .seq = 77, .sent_ns = UINT64_MAX - 5}, NULL,
              0);
    roundtrip(
        &(ss_link_msg){
            .type = SS_LINK_HEARTBEAT_ACK, .seq = 78, .sent_ns = 1, .comm_bytes = 1ull << 40},
        NULL, 0);
    roundtrip(&(ss_link_msg){.type = SS_LINK_EXIT, .message = "worker stopping"}, NULL, 0);

    int64_t d23[2] = {2, 3}, d4[1] = {4}, d0[1] = {0}, d222[3] = {2, 2, 2};
    ss_tensor f32 = tl_numeric(SS_DT_FLOAT32, 2, d23, 1);
    ss_tensor i64 = tl_numeric(SS_DT_INT64, 1, d4, 2);
    ss_tensor empty = tl_numeric(SS_DT_UINT8, 1, d0, 3);
    ss_tensor f16 = tl_numeric(SS_DT_FLOAT16, 3, d222, 4);
    ss_tensor b = tl_numeric(SS_DT_BOOL, 1, d4, 5);
    ss_tensor scalar = tl_numeric(SS_DT_FLOAT64, 0, NULL, 6);
    ss_tensor bf = tl_numeric(SS_DT_BFLOAT16, 1, d4, 7);
    const char *sv[3] = {"", "abc", "a\0b"};
    size_t sl[3] = {0, 3, 3};
    ss_tensor str = tl_strings(3, sv, sl);
    const ss_tensor *ts[8] = {&f32, &i64, &empty, &f16, &b, &scalar, &bf, &str};
    char *names[8] = {"x", "ids", "none", "h", "flag", "s", "bf", "text"};
    roundtrip(&(ss_link_msg){.type = SS_LINK_PREDICT,
                             .request_id = 99,
                             .return_result = true,
                             .tensor_names = names},
              ts, 8);
    roundtrip(&(ss_link_msg){.type = SS_LINK_RESULT,
                             .request_id = 99,
                             .status_code = 1,
                             .message = "Inputs size not match"},
              ts, 8);
    roundtrip(&(ss_link_msg){.type = SS_LINK_RESULT, .request_id = 1, .comm_bytes = UINT64_MAX - 1},
              NULL, 0);
    /* inputs through the comm layer: the stage root shares its tensors, the others get specs */
    roundtrip(
        &(ss_link_msg){
            .type = SS_LINK_PREDICT, .request_id = 5, .share_inputs = true, .tensor_names = names},
        ts, 8);
    ss_link_spec bin[2] = {{"x", SS_DT_FLOAT32, 2, {128, 96}}, {"mask", SS_DT_BOOL, 0, {0}}};
    roundtrip(&(ss_link_msg){.type = SS_LINK_PREDICT,
                             .request_id = 5,
                             .has_input_root = true,
                             .input_root = 0,
                             .inputs = bin,
                             .n_inputs = 2,
                             .quiet = true},
              NULL, 0);
    roundtrip(
        &(ss_link_msg){
            .type = SS_LINK_PREDICT, .request_id = 6, .has_input_root = true, .input_root = 4095},
        NULL, 0);
    void *buf = NULL;
    size_t len = 0;
    CHECK_ERR(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_PREDICT, .has_input_root = true},
                                   ts, 1, &buf, &len),
              "inputs come by broadcast but 1 tensors are given");
    for (int i = 0; i < 8; i++)
        ss_tensor_free((ss_tensor *)ts[i]);
}

static void frames_decode_one_after_another(void)
{
    void *a, *b;
    size_t la, lb, used;
    int64_t d[1] = {5};
    ss_tensor t = tl_numeric(SS_DT_INT32, 1, d, 9);
    const ss_tensor *ts[1] = {&t};
    CHECK_OK(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 1}, ts, 1,
                                  &a, &la));
    CHECK_OK(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_HEARTBEAT, .seq = 2}, NULL, 0, &b,
                                  &lb));
    uint8_t *both = malloc(la + lb);
    memcpy(both, a, la);
    memcpy(both + la, b, lb);
    ss_link_msg m;
    CHECK_OK(ss_link_decode_frame(both, la + lb, NULL, &m, &used));
    CHECK(used == la && m.type == SS_LINK_PREDICT && tl_tensor_equal(&m.tensors[0], &t));
    ss_link_msg_free(&m);
    CHECK_OK(ss_link_decode_frame(both + used, la + lb - used, NULL, &m, &used));
    CHECK(used == lb && m.type == SS_LINK_HEARTBEAT && m.seq == 2);
    ss_link_msg_free(&m);
    free(both);
    free(a);
    free(b);
    ss_tensor_free(&t);
}

static void send_side_rejects_inconsistent_tensors(void)
{
    void *buf;
    size_t len;
    int64_t d[2] = {2, 3};
    ss_tensor t = tl_numeric(SS_DT_FLOAT32, 2, d, 1);
    const ss_tensor *ts[1] = {&t};
    t.nbytes -= 4;
    CHECK_ERR(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_PREDICT}, ts, 1, &buf, &len),
              "holds 20 bytes, its shape needs 24");
    t.nbytes += 4;
    CHECK_ERR(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_HEARTBEAT}, ts, 1, &buf, &len),
              "carry no tensors");
    t.dtype = (ss_dtype)42;
    CHECK_ERR(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_RESULT}, ts, 1, &buf, &len),
              "unknown dtype 42");
    t.dtype = SS_DT_FLOAT32;
    CHECK_ERR(ss_link_encode_frame(&(ss_link_msg){.type = (ss_link_type)77}, NULL, 0, &buf, &len),
              "unknown frame type 77");
    ss_tensor_free(&t);
}

/* ---------------------------------------------------------------- malformed table */

typedef struct {
    const char *name;
    uint8_t *buf;
    size_t len;
    const char *expect;
} bad_case;

static uint8_t *good_predict(size_t *len)
{
    int64_t d[2] = {2, 3};
    ss_tensor t = tl_numeric(SS_DT_FLOAT32, 2, d, 1);
    const ss_tensor *ts[1] = {&t};
    void *buf;
    CHECK_OK(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 5}, ts, 1,
                                  &buf, len));
    ss_tensor_free(&t);
    return buf;
}

static bad_case patched(const char *name, size_t off, const void *bytes, size_t n,
                        const char *expect)
{
    size_t len;
    uint8_t *buf = good_predict(&len);
    memcpy(buf + off, bytes, n);
    return (bad_case){name, buf, len, expect};
}

static bad_case truncated(const char *name, size_t cut, const char *expect)
{
    size_t len;
    uint8_t *buf = good_predict(&len);
    return (bad_case){name, buf, len - cut, expect};
}

static bad_case crafted(const char *name, int type, const pb *hdr, uint32_t np, uint64_t pl,
                        size_t present, const char *expect)
{
    uint8_t *buf = malloc(SS_LINK_PREFIX_BYTES + hdr->n + present + 1);
    size_t len = frame(buf, type, hdr, np, pl, present);
    return (bad_case){name, buf, len, expect};
}

static pb predict_with(const pb *d)
{
    pb h = {.n = 0};
    pb_uint(&h, 1, 7);
    pb_sub(&h, 4, d);
    return h;
}

/* A PREDICT header with input_root = 1 and one spec or tensor descriptor in `field`. */
static pb by_broadcast(int field, pb d)
{
    pb h = {.n = 0};
    pb_uint(&h, 6, 1);
    pb_sub(&h, field, &d);
    return h;
}

static void malformed_frames_give_clear_errors(void)
{
    bad_case cases[64];
    int n = 0;
    uint32_t u32;
    uint16_t u16;
    uint64_t u64;
    cases[n++] = (bad_case){"empty buffer", (uint8_t *)calloc(1, 1), 0, "truncated frame"};
    cases[n++] = truncated("half a prefix", 0, ""); /* replaced below */
    cases[n - 1].len = 10;
    cases[n - 1].expect = "prefix alone is 32";
    u32 = 0x54544548; /* "HETT": an HTTP client */
    cases[n++] = patched("bad magic", 0, &u32, 4, "bad frame magic");
    u16 = 2;
    cases[n++] = patched("future version", 4, &u16, 2, "frame version 2");
    u16 = 0;
    cases[n++] = patched("type 0", 6, &u16, 2, "unknown frame type 0");
    u16 = 300;
    cases[n++] = patched("type 300", 6, &u16, 2, "unknown frame type 300");
    u32 = 1;
    cases[n++] = patched("flags set", 24, &u32, 4, "reserved bits");
    u32 = 64u << 20;
    cases[n++] = patched("header over limit", 8, &u32, 4, "header is 67108864 bytes, the limit");
    u64 = UINT64_C(3) << 30;
    cases[n++] = patched("payload over 1 GiB", 16, &u64, 8, "limit is 1073741824");
    u64 = UINT64_MAX;
    cases[n++] = patched("payload length 2^64-1", 16, &u64, 8, "limit is");
    u32 = 5000;
    cases[n++] = patched("too many tensors", 12, &u32, 4, "declares 5000 tensors");
    u32 = 2;
    cases[n++] = patched("tensor count disagrees", 12, &u32, 4, "prefix declares 2");
    u64 = 20;
    cases[n++] = patched("payload shorter than the shape", 16, &u64, 8, "overrun");
    u64 = 28;
    cases[n++] = patched("payload longer than the shape", 16, &u64, 8, "truncated frame");
    cases[n++] = truncated("payload cut short", 5, "truncated frame: PREDICT payload");
    cases[n++] = truncated("header cut short", 24 + 3, "truncated frame: PREDICT header");

    pb garbage = {.n = 8};
    memset(garbage.b, 0xff, 8);
    cases[n++] = crafted("undecodable protobuf", SS_LINK_REGISTER, &garbage, 0, 0, 0,
                         "not a valid protobuf");
    pb wrong_wire = {.n = 0};
    pb_bytes(&wrong_wire, 1, "zz", 2); /* Heartbeat.seq is a varint, not bytes */
    cases[n++] =
        crafted("wrong wire type", SS_LINK_HEARTBEAT, &wrong_wire, 0, 0, 0, "not a valid protobuf");
    pb empty = {.n = 0};
    cases[n++] = crafted("heartbeat declaring tensors", SS_LINK_HEARTBEAT, &empty, 1, 4, 4,
                         "carries no tensors");

    int64_t neg[2] = {2, -1}, big[2] = {INT64_C(1) << 40, INT64_C(1) << 40},
            ovf[2] = {INT64_C(1) << 31, INT64_C(1) << 31}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1},
            two[1] = {2}, lens1[1] = {3}, hugelens[2] = {INT64_MIN, INT64_MIN};
    pb d, h;
    d = desc("x", SS_DT_FLOAT32, neg, 2, NULL, 0), h = predict_with(&d);
    cases[n++] = crafted("negative dim", SS_LINK_PREDICT, &h, 1, 8, 8, "dim 1 is -1");
    d = desc("x", 99, two, 1, NULL, 0), h = predict_with(&d);
    cases[n++] = crafted("unknown dtype", SS_LINK_PREDICT, &h, 1, 8, 8, "unknown dtype 99");
    d = desc("x", 0, two, 1, NULL, 0), h = predict_with(&d);
    cases[n++] = crafted("undefined dtype", SS_LINK_PREDICT, &h, 1, 8, 8, "unknown dtype 0");
    d = desc("x", SS_DT_FLOAT32, nine, 9, NULL, 0), h = predict_with(&d);
    cases[n++] = crafted("rank 9", SS_LINK_PREDICT, &h, 1, 4, 4, "rank 9 exceeds 8");
    d = desc("x", SS_DT_UINT8, big, 2, NULL, 0), h = predict_with(&d);
    cases[n++] = crafted("dims overflow", SS_LINK_PREDICT, &h, 1, 8, 8, "too many elements");
    d = desc("x", SS_DT_FLOAT64, ovf, 2, NULL, 0), h = predict_with(&d);
    cases[n++] = crafted("bytes overflow", SS_LINK_PREDICT, &h, 1, 8, 8, "overflows a byte count");
    d = desc("x", SS_DT_INT32, two, 1, lens1, 1), h = predict_with(&d);
    cases[n++] = crafted("numeric with string lengths", SS_LINK_PREDICT, &h, 1, 8, 8,
                         "carries string lengths");
    d = desc("s", SS_DT_STRING, two, 1, lens1, 1), h = predict_with(&d);
    cases[n++] = crafted("string count mismatch", SS_LINK_PREDICT, &h, 1, 3, 3, "has 1 lengths");
    d = desc("s", SS_DT_STRING, two, 1, hugelens, 2), h = predict_with(&d);
    cases[n++] = crafted("string lengths overflow", SS_LINK_PREDICT, &h, 1, 3, 3, "overflow");
    d = desc("s", SS_DT_STRING, two, 1, (int64_t[]){3, 4}, 2), h = predict_with(&d);
    cases[n++] = crafted("string bytes missing", SS_LINK_PREDICT, &h, 1, 7, 5, "truncated frame");
    h = (pb){.n = 0};
    pb_uint(&h, 1, 7);
    cases[n++] = crafted("tensor frame without descriptors", SS_LINK_RESULT, &h, 0, 16, 16,
                         "take 0 bytes but the payload length is 16");

    pb spec = desc("x", SS_DT_FLOAT32, (int64_t[]){-2}, 1, NULL, 0);
    pb reg = {.n = 0};
    pb_sub(&reg, 7, &spec);
    cases[n++] = crafted("register spec dim -2", SS_LINK_REGISTER, &reg, 0, 0, 0,
                         "input 0 (x): dim 0 is -2");
    pb spec2 = desc("y", 1234, NULL, 0, NULL, 0);
    reg = (pb){.n = 0};
    pb_sub(&reg, 8, &spec2);
    cases[n++] = crafted("register spec bad dtype", SS_LINK_REGISTER, &reg, 0, 0, 0,
                         "output 0 (y): unknown dtype 1234");
    pb hello = {.n = 0};
    pb_bytes(&hello, 1, "short", 5);
    cases[n++] = crafted("hello with a 5-byte nonce", SS_LINK_HELLO, &hello, 0, 0, 0,
                         "nonce is 5 bytes, expected 32");
    cases[n++] =
        crafted("hello without nonce", SS_LINK_HELLO, &empty, 0, 0, 0, "HELLO without a nonce");
    { /* PREDICT taking its inputs by broadcast (input_root = field 6, input_specs = field 7) */
        int64_t dyn[2] = {-1, 96}, big[2] = {INT64_C(1) << 40, 96}, ok[2] = {2, 2};
        pb h = by_broadcast(7, desc("x", SS_DT_FLOAT32, dyn, 2, NULL, 0));
        cases[n++] = crafted("broadcast spec with a dynamic dim", SS_LINK_PREDICT, &h, 0, 0, 0,
                             "dynamic dim");
        h = by_broadcast(7, desc("x", SS_DT_FLOAT32, big, 2, NULL, 0));
        cases[n++] = crafted("broadcast spec over 1 GiB", SS_LINK_PREDICT, &h, 0, 0, 0,
                             "take over 1073741824 bytes");
        h = by_broadcast(7, desc("s", SS_DT_STRING, ok, 2, NULL, 0));
        cases[n++] =
            crafted("broadcast of a string input", SS_LINK_PREDICT, &h, 0, 0, 0, "string inputs");
        h = by_broadcast(4, desc("x", SS_DT_FLOAT32, ok, 2, NULL, 0)); /* a tensor too */
        cases[n++] = crafted("broadcast inputs and tensors", SS_LINK_PREDICT, &h, 1, 16, 16,
                             "carries 1 tensors");
    }

    for (int i = 0; i < n; i++) {
        ss_link_msg m;
        size_t used = 99;
        ss_status *st = ss_link_decode_frame(cases[i].buf, cases[i].len, NULL, &m, &used);
        CHECK_MSG(st != NULL, "case '%s' decoded", cases[i].name);
        if (st && getenv("SS_TEST_VERBOSE")) printf("     %-36s -> %s\n", cases[i].name, st->msg);
        if (st) {
            CHECK_MSG(strstr(st->msg, cases[i].expect) != NULL, "case '%s': \"%s\" lacks \"%s\"",
                      cases[i].name, st->msg, cases[i].expect);
            CHECK_MSG(st->code == SS_ERR_INVALID || st->code == SS_ERR_LIMIT ||
                          st->code == SS_ERR_UNSUPPORTED,
                      "case '%s': code %s", cases[i].name, ss_code_name(st->code));
        } else {
            ss_link_msg_free(&m);
        }
        CHECK(used == 0);
        ss_status_free(st);
        free(cases[i].buf);
    }
    printf("     %d malformed frames rejected\n", n);
}

static void limits_are_configurable(void)
{
    size_t len;
    uint8_t *buf = good_predict(&len);
    ss_link_options o;
    ss_link_options_default(&o);
    CHECK(o.max_frame_bytes == UINT64_C(1) << 30);
    o.max_frame_bytes = 40;
    ss_link_msg m;
    CHECK_ERR(ss_link_decode_frame(buf, len, &o, &m, NULL), "the limit is 40");
    ss_link_options_default(&o);
    o.max_tensors = 0;
    CHECK_ERR(ss_link_decode_frame(buf, len, &o, &m, NULL), "declares 1 tensors, the limit is 0");
    ss_link_options_default(&o);
    o.max_header_bytes = 4;
    CHECK_ERR(ss_link_decode_frame(buf, len, &o, &m, NULL), "the limit is 4");
    free(buf);
}

/* Random byte flips and cuts of good frames: every outcome is a clean success or an error. */
static void random_mutations_never_crash(void)
{
    size_t len;
    uint8_t *good = good_predict(&len);
    const char *sv[2] = {"hello", "w"};
    size_t sl[2] = {5, 1};
    ss_tensor s = tl_strings(2, sv, sl);
    const ss_tensor *ts[1] = {&s};
    void *sbuf;
    size_t slen;
    CHECK_OK(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_RESULT, .message = "m"}, ts, 1,
                                  &sbuf, &slen));
    unsigned seed = 12345;
    int errors = 0, oks = 0;
    for (int iter = 0; iter < 20000; iter++) {
        const uint8_t *src = iter & 1 ? sbuf : good;
        size_t n = iter & 1 ? slen : len;
        uint8_t *b = malloc(n);
        memcpy(b, src, n);
        int flips = 1 + (int)(rand_r(&seed) % 4);
        for (int f = 0; f < flips; f++)
            b[rand_r(&seed) % n] = (uint8_t)rand_r(&seed);
        size_t cut = rand_r(&seed) % 8 == 0 ? rand_r(&seed) % n : n;
        ss_link_msg m;
        ss_status *st = ss_link_decode_frame(b, cut, NULL, &m, NULL);
        if (st)
            errors++;
        else {
            oks++;
            ss_link_msg_free(&m);
        }
        ss_status_free(st);
        free(b);
    }
    CHECK(errors > 1000);
    printf("     20000 mutations: %d errors, %d decoded\n", errors, oks);
    free(good);
    free(sbuf);
    ss_tensor_free(&s);
}

TEST_MAIN(TEST(every_message_type_round_trips), TEST(frames_decode_one_after_another),
          TEST(send_side_rejects_inconsistent_tensors), TEST(malformed_frames_give_clear_errors),
          TEST(limits_are_configurable), TEST(random_mutations_never_crash))
