/*
 * The decoded-size estimate (pb_budget.h) against what protobuf-c really allocates: each message
 * is unpacked with a counting allocator (the peak of live bytes, glibc's block sizes) and with
 * glibc's own malloc (mallinfo2's bytes in use afterwards), for the shapes hostile clients use —
 * many small MindSpore instances, unknown fields, KServe's packed int64 zeros (1 byte on the wire,
 * 8 decoded), strings, bytes and map entries.
 */
#define _GNU_SOURCE
#include <malloc.h>

#include "budget.h"
#include "check.h"
#include "grpc_service.pb-c.h"
#include "ms_service.pb-c.h"
#include "pb_budget.h"
#include "rest_codec.h"
#include "sbuf.h"

/* Under AddressSanitizer malloc is not glibc's: glibc's block sizes are checked in other builds. */
#if defined(__SANITIZE_ADDRESS__)
#define GLIBC_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GLIBC_MALLOC 0
#endif
#endif
#ifndef GLIBC_MALLOC
#define GLIBC_MALLOC 1
#endif

/* ------------------------------------------------------------------ wire writer */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} wbuf;

static void put(wbuf *w, const void *bytes, size_t n)
{
    if (!n) return; /* memcpy into a buffer not yet allocated is undefined even for 0 bytes */
    if (w->len + n > w->cap) {
        w->cap = (w->len + n) * 2;
        w->p = realloc(w->p, w->cap);
    }
    memcpy(w->p + w->len, bytes, n);
    w->len += n;
}

static void put_varint(wbuf *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    put(w, b, n);
}

static void put_len(wbuf *w, uint32_t field, const void *bytes, size_t n)
{
    put_varint(w, (uint64_t)field << 3 | 2);
    put_varint(w, n);
    put(w, bytes, n);
}

static void put_sub(wbuf *w, uint32_t field, wbuf *sub)
{
    put_len(w, field, sub->p, sub->len);
    free(sub->p);
    *sub = (wbuf){0};
}

/* ------------------------------------------------------------------ measuring the unpack */

typedef struct {
    size_t live, peak;
} tally;

static size_t glibc_block(size_t n)
{
    size_t b = (n + 8 + 15) & ~(size_t)15;
    return b < 32 ? 32 : b;
}

static void *tally_alloc(void *ctx, size_t n)
{
    tally *t = ctx;
    size_t *p = malloc(n + 16);
    p[0] = n;
    t->live += glibc_block(n);
    if (t->live > t->peak) t->peak = t->live;
    return p + 2;
}

static void tally_free(void *ctx, void *ptr)
{
    tally *t = ctx;
    if (!ptr) return;
    size_t *p = (size_t *)ptr - 2;
    t->live -= glibc_block(p[0]);
    free(p);
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* The estimate covers the unpack's peak (counted), over it by at most 5% + 4 KB (a nested
 * message's scan tables are counted as if alive at the end), and glibc's bytes in use after the
 * unpack match the counted decoded form (so the block sizes are glibc's). */
static void check_estimate(const char *what, const ProtobufCMessageDescriptor *desc, wbuf *w)
{
    size_t est = ss_pb_unpacked_bytes(desc, w->p, w->len);
    tally t = {0};
    ProtobufCAllocator counting = {tally_alloc, tally_free, &t};
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &counting, w->len, w->p);
    CHECK_MSG(m != NULL, "%s: protobuf-c refused the test message", what);
    if (!m) return;
    size_t kept = t.live;
    protobuf_c_message_free_unpacked(m, &counting);
    size_t before = heap_in_use();
    m = protobuf_c_message_unpack(desc, NULL, w->len, w->p);
    size_t held = heap_in_use() - before;
    protobuf_c_message_free_unpacked(m, NULL);
    fprintf(stderr,
            "%s: %zu bytes on the wire, estimate %zu, counted peak %zu and decoded form %zu, glibc "
            "holds %zu\n",
            what, w->len, est, t.peak, kept, held);
    CHECK_MSG(est >= t.peak && est <= t.peak + t.peak / 20 + 4096, "%s: estimate %zu, peak %zu",
              what, est, t.peak);
    /* glibc may hand out blocks cached by the unpack before (counted in use already), and maps
     * large ones whole pages at a time */
    size_t diff = held > kept ? held - kept : kept - held;
    CHECK_MSG(!GLIBC_MALLOC || diff <= kept / 50 + 4096, "%s: glibc holds %zu, counted %zu", what,
              held, kept);
    free(w->p);
}

/* ------------------------------------------------------------------ messages */

/* n MindSpore instances of one 4 x 17 float32 tensor "x", and `unknown` unknown fields. */
static wbuf predict_request(size_t n, size_t unknown)
{
    wbuf req = {0}, spec = {0}, inst = {0}, entry = {0}, tensor = {0}, shape = {0};
    put_len(&spec, 1, "matmul", 6);
    put_len(&spec, 2, "predict", 7);
    put_sub(&req, 1, &spec);
    float data[4 * 17] = {0};
    for (size_t i = 0; i < n; i++) {
        put_len(&shape, 1, "\x04\x11", 2); /* packed dims [4, 17] */
        put_sub(&tensor, 1, &shape);
        put_varint(&tensor, 2 << 3);
        put_varint(&tensor, 9); /* MS_FLOAT32 */
        put_len(&tensor, 3, data, sizeof data);
        put_len(&entry, 1, "x", 1);
        put_sub(&entry, 2, &tensor);
        put_sub(&inst, 1, &entry);
        put_sub(&req, 2, &inst);
    }
    for (size_t i = 0; i < unknown; i++)
        put(&req, "\x78\x00", 2); /* field 15, varint 0 */
    return req;
}

static void many_instances(void)
{
    wbuf w = predict_request(3000, 0);
    check_estimate("3,000 MindSpore instances",
                   &mindspore__serving__proto__predict_request__descriptor, &w);
}

static void unknown_fields(void)
{
    wbuf w = predict_request(1, 50000);
    check_estimate("50,000 unknown fields", &mindspore__serving__proto__predict_request__descriptor,
                   &w);
}

static void empty_message(void)
{
    wbuf w = {0};
    put(&w, "", 0);
    check_estimate("an empty PredictRequest",
                   &mindspore__serving__proto__predict_request__descriptor, &w);
}

/* KServe: a parameter map entry, one input whose int64 contents are 200,000 packed zeros (1 byte
 * each on the wire, 8 decoded), a second with unpacked bools and strings, 1 MB of raw bytes. */
static void kserve_packed_zeros(void)
{
    wbuf req = {0}, input = {0}, contents = {0}, param = {0}, entry = {0};
    put_len(&req, 1, "matmul", 6);
    put_len(&param, 3, "a string parameter", 18);
    put_len(&entry, 1, "key", 3);
    put_sub(&entry, 2, &param);
    put_sub(&req, 4, &entry);
    uint8_t *zeros = calloc(200000, 1);
    put_len(&contents, 3, zeros, 200000);
    put_len(&input, 1, "x", 1);
    put_len(&input, 2, "INT64", 5);
    put_len(&input, 3, "\x01\xc0\x9a\x0c", 4); /* shape [1, 200000] */
    put_sub(&input, 5, &contents);
    put_sub(&req, 5, &input);
    for (int i = 0; i < 1000; i++) {
        put_varint(&contents, 1 << 3); /* bool_contents, not packed */
        put_varint(&contents, 1);
        put_len(&contents, 8, "bytes", 5);
    }
    put_len(&input, 1, "y", 1);
    put_sub(&input, 5, &contents);
    put_sub(&req, 5, &input);
    put_len(&req, 7, zeros, 200000);
    free(zeros);
    check_estimate("KServe packed zeros", &inference__model_infer_request__descriptor, &req);
}

/* MindSpore REST: the row budget's charge for a body of n instances of `keys` one-float inputs
 * (ss_pb_instance_bytes through the codec) covers what the parsed request and a reply of as many
 * one-float outputs hold in glibc's heap. */
static void rest_instances(size_t n, int keys)
{
    sbuf body = {0};
    sb_str(&body, "{\"instances\": [");
    for (size_t i = 0; i < n; i++) {
        sb_str(&body, i ? ",{" : "{");
        for (int k = 0; k < keys; k++)
            sb_printf(&body, "%s\"input_%d\": 1.5", k ? "," : "", k);
        sb_str(&body, "}");
    }
    sb_str(&body, "]}");
    size_t before = heap_in_use(), held = 0;
    ss_predict_request *req = NULL;
    CHECK_OK(ss_rest_parse_request_limited("/model/m:predict", body.p, body.len, NULL, NULL, &req,
                                           &held));
    free(body.p);
    if (!req) return;
    ss_predict_reply *reply = ss_predict_reply_new(n);
    for (size_t i = 0; reply && i < n; i++)
        for (int k = 0; k < keys; k++) {
            char name[16];
            snprintf(name, sizeof name, "output_%d", k);
            ss_tensor t = {0};
            CHECK_OK(ss_tensor_alloc(&t, SS_DT_FLOAT32, 0, NULL));
            CHECK_OK(ss_serving_instance_put(&reply->instances[i], name, &t, false));
        }
    size_t used = heap_in_use() - before;
    fprintf(stderr, "REST %zu instances x %d inputs: charged %zu, the request and reply hold %zu\n",
            n, keys, held, used);
    CHECK_MSG(!GLIBC_MALLOC || held >= used, "%d keys: charged %zu bytes, held %zu", keys, held,
              used);
    ss_predict_reply_free(reply);
    ss_predict_request_free(req);
    ss_server_rows_give(held);
}

static void rest_instances_charged(void)
{
    for (int keys = 1; keys <= 16; keys *= 2)
        rest_instances(4096, keys);
}

TEST_MAIN(TEST(many_instances), TEST(unknown_fields), TEST(empty_message),
          TEST(kserve_packed_zeros), TEST(rest_instances_charged))
