/*
 * The link's frame encoder and decoder under allocation failure: every frame type (PREDICT and
 * RESULT with tensors of every kind, REGISTER with specs, the handshake frames) is encoded and
 * decoded with the 1st, 2nd, 3rd ... allocation failing, and each run must give the same frame or
 * message as a clean run, or SS_ERR_NOMEM, with nothing leaked. Malformed frames, whose decoding
 * allocates part of a message before it finds the fault, must give their usual error.
 */
#include "allocfail.h"
#include "link_internal.h"
#include "test_link_util.h"

typedef struct {
    char name[64];
    ss_link_msg msg;
    const ss_tensor *const *ts;
    size_t n;
    void *frame; /* the clean encoding */
    size_t len;
    /* what the last run produced */
    ss_link_msg got;
    void *buf;
    size_t blen, used;
} frame_case;

static ss_status *run_encode(void *ctx)
{
    frame_case *f = ctx;
    return ss_link_encode_frame(&f->msg, f->ts, f->n, &f->buf, &f->blen);
}

static bool verify_encode(void *ctx)
{
    frame_case *f = ctx;
    bool same = f->blen == f->len && memcmp(f->buf, f->frame, f->len) == 0;
    free(f->buf);
    return same;
}

static ss_status *run_decode(void *ctx)
{
    frame_case *f = ctx;
    return ss_link_decode_frame(f->frame, f->len, NULL, &f->got, &f->used);
}

/* Frames tl_msg_matches does not know: the handshake (its nonce and proof are not in the message).
 */
static bool handshake_matches(const ss_link_msg *sent, const ss_link_msg *got)
{
    if (sent->type == SS_LINK_AUTH_ACK)
        return got->accepted == sent->accepted && tl_str_eq(got->message, sent->message);
    return true;
}

/* The decoder gives "" for an absent string, never NULL (tl_msg_matches cannot tell them apart). */
static bool strings_present(const ss_link_msg *m)
{
    switch (m->type) {
    case SS_LINK_REGISTER:
    case SS_LINK_GET_META:
        return m->address != NULL;
    case SS_LINK_META:
        return m->json != NULL;
    case SS_LINK_REGISTER_ACK:
    case SS_LINK_AUTH_ACK:
    case SS_LINK_RESULT:
    case SS_LINK_EXIT:
        return m->message != NULL;
    default:
        return true;
    }
}

static bool verify_decode(void *ctx)
{
    frame_case *f = ctx;
    bool handshake = f->msg.type == SS_LINK_HELLO || f->msg.type == SS_LINK_AUTH ||
                     f->msg.type == SS_LINK_AUTH_ACK;
    bool same = f->used == f->len && f->got.type == f->msg.type && strings_present(&f->got) &&
                (handshake ? handshake_matches(&f->msg, &f->got)
                           : tl_msg_matches(&f->msg, f->ts, f->n, &f->got));
    ss_link_msg_free(&f->got);
    return same;
}

/* Run the loop on encoding (unless the frame was not made by ss_link_encode_frame) and decoding. */
static void check_frame(frame_case *f, bool encode)
{
    if (encode) CHECK_OK(ss_link_encode_frame(&f->msg, f->ts, f->n, &f->frame, &f->len));
    CHECK(f->frame != NULL);
    if (!f->frame) return;
    long allocs = 0;
    char name[96];
    if (encode) {
        snprintf(name, sizeof name, "encode %s", f->name);
        allocfail_case enc = {.name = name, .ctx = f, .run = run_encode, .verify = verify_encode};
        CHECK_MSG(allocfail_loop(&enc, &allocs) == 0, "%s", name);
    }
    snprintf(name, sizeof name, "decode %s", f->name);
    allocfail_case dec = {.name = name, .ctx = f, .run = run_decode, .verify = verify_decode};
    CHECK_MSG(allocfail_loop(&dec, &allocs) == 0, "%s", name);
    CHECK_MSG(allocs > 0, "decoding %s allocated nothing: the test exercised nothing", f->name);
    if (getenv("SS_TEST_VERBOSE")) printf("     %-28s %ld allocations\n", f->name, allocs);
    free(f->frame);
}

static void every_frame_type(void)
{
    ss_link_spec in[2] = {{"x", SS_DT_FLOAT32, 2, {-1, 96}}, {"mask", SS_DT_BOOL, 0, {0}}};
    ss_link_spec out[1] = {{"y", SS_DT_FLOAT16, 3, {-1, 16, 4}}};
    int64_t d23[2] = {2, 3}, d4[1] = {4}, d0[1] = {0};
    ss_tensor f32 = tl_numeric(SS_DT_FLOAT32, 2, d23, 1);
    ss_tensor i64 = tl_numeric(SS_DT_INT64, 1, d4, 2);
    ss_tensor empty = tl_numeric(SS_DT_UINT8, 1, d0, 3);
    ss_tensor scalar = tl_numeric(SS_DT_FLOAT64, 0, NULL, 6);
    const char *sv[3] = {"", "abc", "a\0b"};
    size_t sl[3] = {0, 3, 3};
    ss_tensor str = tl_strings(3, sv, sl);
    const ss_tensor *ts[5] = {&f32, &i64, &empty, &scalar, &str};
    char *names[5] = {"x", "ids", "none", "s", "text"};
    ss_link_spec bin[2] = {{"x", SS_DT_FLOAT32, 2, {128, 96}}, {"mask", SS_DT_BOOL, 0, {0}}};

    frame_case cases[] = {
        {"REGISTER",
         {.type = SS_LINK_REGISTER,
          .rank = 3,
          .rank_size = 8,
          .pid = 1234,
          .inputs = in,
          .n_inputs = 2,
          .outputs = out,
          .n_outputs = 1,
          .address = "127.0.0.1:7003",
          .shares_inputs = true}},
        {"REGISTER without specs", {.type = SS_LINK_REGISTER}},
        {"REGISTER_ACK", {.type = SS_LINK_REGISTER_ACK, .message = "rank 3 is already registered"}},
        {"GET_META", {.type = SS_LINK_GET_META, .address = "host-a"}},
        {"META", {.type = SS_LINK_META, .json = "{\"rank_table\": {\"a\": [1, 2]}}"}},
        {"HEARTBEAT", {.type = SS_LINK_HEARTBEAT, .seq = 77, .sent_ns = 5}},
        {"HEARTBEAT_ACK", {.type = SS_LINK_HEARTBEAT_ACK, .seq = 78, .comm_bytes = 1ull << 40}},
        {"EXIT", {.type = SS_LINK_EXIT, .message = "worker stopping"}},
        {"AUTH_ACK", {.type = SS_LINK_AUTH_ACK, .accepted = true, .message = "welcome"}},
        {"PREDICT with tensors",
         {.type = SS_LINK_PREDICT, .request_id = 99, .return_result = true, .tensor_names = names},
         ts,
         5},
        {"PREDICT by broadcast",
         {.type = SS_LINK_PREDICT,
          .request_id = 5,
          .has_input_root = true,
          .inputs = bin,
          .n_inputs = 2}},
        {"RESULT with tensors",
         {.type = SS_LINK_RESULT,
          .request_id = 99,
          .status_code = 1,
          .message = "Inputs size not match",
          .tensor_names = names},
         ts,
         5},
        {"RESULT empty", {.type = SS_LINK_RESULT, .request_id = 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_frame(&cases[i], true);
    for (int i = 0; i < 5; i++)
        ss_tensor_free((ss_tensor *)ts[i]);
}

/* HELLO and AUTH carry handshake bytes that only the internal packer writes. */
static void handshake_frames(void)
{
    link_handshake hs = {.has_nonce = true, .has_proof = true, .auth_required = true};
    memset(hs.nonce, 0xab, sizeof hs.nonce);
    memset(hs.proof, 0xcd, sizeof hs.proof);
    ss_link_options opts;
    ss_link_options_default(&opts);
    ss_link_type types[2] = {SS_LINK_HELLO, SS_LINK_AUTH};
    for (int i = 0; i < 2; i++) {
        frame_case f = {.msg = {.type = types[i]}};
        snprintf(f.name, sizeof f.name, "%s", ss_link_type_name(types[i]));
        uint64_t payload = 0;
        CHECK_OK(link_pack_header(&f.msg, &hs, NULL, 0, &opts, (uint8_t **)&f.frame, &f.len,
                                  &payload, NULL));
        check_frame(&f, false);
    }
}

/* ---------------------------------------------------------------- malformed frames */

static ss_status *run_decode_bad(void *ctx)
{
    frame_case *f = ctx;
    ss_status *st = ss_link_decode_frame(f->frame, f->len, NULL, &f->got, &f->used);
    if (!st) ss_link_msg_free(&f->got);
    return st;
}

static bool never_called(void *ctx)
{
    return false;
}

static void expect_bad(uint8_t *frame, size_t len, const char *name, const char *expect)
{
    frame_case f = {.frame = frame, .len = len};
    char full[96];
    snprintf(full, sizeof full, "decode %s", name);
    allocfail_case c = {.name = full,
                        .ctx = &f,
                        .run = run_decode_bad,
                        .verify = never_called,
                        .expect_error = expect};
    CHECK_MSG(allocfail_loop(&c, NULL) == 0, "%s", full);
    free(frame);
}

static void put32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Faults found after part of the message was built: the second spec or tensor, or the totals. */
static void malformed_frames(void)
{
    ss_link_spec in[2] = {{"x", SS_DT_FLOAT32, 1, {4}}, {"y", SS_DT_FLOAT32, 1, {4}}};
    ss_link_msg reg = {.type = SS_LINK_REGISTER, .inputs = in, .n_inputs = 2, .address = "a"};
    void *buf;
    size_t len;
    CHECK_OK(ss_link_encode_frame(&reg, NULL, 0, &buf, &len));
    /* the second spec's dtype varint (FLOAT32 = 1) becomes 99: an unknown dtype */
    uint8_t *p = buf, *last = NULL;
    for (size_t i = SS_LINK_PREFIX_BYTES; i + 1 < len; i++)
        if (p[i] == 0x10 && p[i + 1] == SS_DT_FLOAT32) last = p + i + 1;
    CHECK(last != NULL);
    if (last) *last = 99;
    expect_bad(buf, len, "REGISTER with a bad second spec", "input 1 (y): unknown dtype 99");

    int64_t d2[1] = {2};
    ss_tensor a = tl_numeric(SS_DT_INT32, 1, d2, 1),
              s = tl_strings(2, (const char *[]){"ab", "c"}, (size_t[]){2, 1});
    const ss_tensor *ts[3] = {&a, &s, &a};
    char *names[3] = {"a", "s", "a2"};
    ss_link_msg pred = {.type = SS_LINK_PREDICT, .request_id = 1, .tensor_names = names};
    CHECK_OK(ss_link_encode_frame(&pred, ts, 3, &buf, &len));
    put32le((uint8_t *)buf + 12, 2); /* the prefix declares 2 tensors, the header describes 3 */
    expect_bad(buf, len, "PREDICT with a wrong tensor count", "the prefix declares 2");

    CHECK_OK(ss_link_encode_frame(&pred, ts, 3, &buf, &len));
    uint64_t shorter = 8 + 3 + 8 - 1; /* the payload length one byte short of the tensors */
    memcpy((uint8_t *)buf + 16, &shorter, 8);
    expect_bad(buf, len - 1, "PREDICT with a short payload", "overrun");

    CHECK_OK(ss_link_encode_frame(&pred, ts, 3, &buf, &len));
    uint64_t longer = 8 + 3 + 8 + 1;
    memcpy((uint8_t *)buf + 16, &longer, 8);
    uint8_t *grown = realloc(buf, len + 1);
    CHECK(grown != NULL);
    if (grown) expect_bad(grown, len + 1, "PREDICT with a long payload", "payload length is 20");
    ss_tensor_free(&a);
    ss_tensor_free(&s);
}

TEST_MAIN(TEST(every_frame_type), TEST(handshake_frames), TEST(malformed_frames))
