/*
 * libFuzzer target for REST generation (-DSS_FUZZ=ON with clang): Triton's generate and OpenAI's
 * completions bodies through rest_gen's decoder, then a made-up answer through the encoders, as
 * one body or as the stream of events a worker's partial()/done() would write. Input: one byte
 * (bit 0: OpenAI, bit 1: a failed answer), "URL\n" (Triton's), then the body; the answer's
 * tokens come from the input's last bytes (some outside the vocabulary). The servable "gen" has
 * a small tokenizer.json, "ids" none. Any input must decode or give an error, never crash, leak
 * or read out of bounds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rest_gen.h"
#include "tokenizer/small_tokenizer.h"

static const uint8_t *answer_bytes;
static size_t answer_len;
static bool answer_fails;

static int fuzz_describe(void *ctx, const char *servable, uint64_t version,
                         ss_serving_signature **out, char *why, size_t cap)
{
    (void)ctx;
    (void)version;
    if (strcmp(servable, "gen") && strcmp(servable, "ids")) {
        snprintf(why, cap, "unknown");
        return SS_DESCRIBE_NOT_FOUND;
    }
    static const char *const ins[] = {"prompt", "max_tokens", "temperature",    "top_k",
                                      "top_p",  "seed",       "stop_token_ids", "stop"};
    static ss_serving_tensor_spec in[8], outs[2];
    for (int i = 0; i < 8; i++)
        in[i] = (ss_serving_tensor_spec){.name = (char *)ins[i], .ndim = i == 0 || i >= 6};
    outs[0] = (ss_serving_tensor_spec){.name = "tokens", .dtype = SS_DT_INT64, .ndim = 1};
    outs[1] = (ss_serving_tensor_spec){.name = "finish_reason", .dtype = SS_DT_STRING};
    ss_serving_method m = {
        .name = "generate", .inputs = in, .outputs = outs, .n_inputs = 8, .n_outputs = 2};
    ss_serving_signature sig = {
        .servable = (char *)servable, .version = 1, .methods = &m, .n_methods = 1};
    *out = ss_serving_signature_copy(&sig);
    return *out ? SS_DESCRIBE_OK : SS_DESCRIBE_NOT_READY;
}

/* The answer: every token, or a failure. */
static ss_predict_reply *fuzz_reply(const int64_t *ids, size_t n)
{
    if (answer_fails) return ss_predict_reply_error(SS_SERVING_INVALID_INPUTS, "refused");
    ss_predict_reply *r = ss_predict_reply_new(1);
    ss_tensor t = {0};
    int64_t dims[1] = {(int64_t)n};
    if (!r || ss_tensor_alloc(&t, SS_DT_INT64, 1, dims)) return r;
    if (n) memcpy(t.data, ids, n * sizeof *ids);
    ss_status_free(ss_serving_instance_put(&r->instances[0], "tokens", &t, false));
    ss_tensor_free(&t);
    ss_status_free(
        ss_serving_instance_put_string(&r->instances[0], "finish_reason", "stop", 4, false));
    return r;
}

static size_t fuzz_ids(int64_t *ids)
{
    size_t n = answer_len < 24 ? answer_len : 24;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = answer_bytes[answer_len - 1 - i];
        ids[i] = b == 0xFF ? 9999 : b == 0xFE ? -1 : b + (b & 1) * 3;
    }
    return n;
}

/* A worker that answers at once: each token as a partial, then done(). */
static void fuzz_predict(void *ctx, ss_predict_request *req, ss_predict_done done, void *done_ctx)
{
    (void)ctx;
    int64_t ids[24];
    size_t n = fuzz_ids(ids);
    for (size_t i = 0; req->partial && i < n && !ss_predict_request_cancelled(req); i++) {
        ss_serving_instance chunk = {0};
        ss_tensor t = {0};
        int64_t one[1] = {1};
        if (!ss_tensor_alloc(&t, SS_DT_INT64, 1, one)) {
            *(int64_t *)t.data = ids[i];
            ss_status_free(ss_serving_instance_put(&chunk, "tokens", &t, false));
            req->partial(req->partial_ctx, 0, &chunk);
        }
        ss_tensor_free(&t);
        ss_serving_instance_clear(&chunk);
    }
    done(done_ctx, fuzz_reply(ids, n));
}

static ss_predict_handler fuzz_handler = {.predict = fuzz_predict, .describe = fuzz_describe};
static ss_rest_gen_env *env;
static char dir[] = "/tmp/ss-fuzz-rest-gen-XXXXXX";

static void remove_dir(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/gen/tokenizer.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/gen", dir);
    rmdir(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[256];
    if (!mkdtemp(dir)) abort();
    atexit(remove_dir);
    snprintf(path, sizeof path, "%s/gen", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/gen/tokenizer.json", dir);
    cJSON *tok = small_tokenizer();
    char *text = cJSON_PrintUnformatted(tok);
    FILE *f = fopen(path, "w");
    if (!f || !text || fputs(text, f) < 0) abort();
    fclose(f);
    free(text);
    cJSON_Delete(tok);
    if (ss_rest_gen_env_new(&fuzz_handler, dir, &env)) abort();
    return 0;
}

static void keep_reply(void *ctx, ss_predict_reply *reply)
{
    *(ss_predict_reply **)ctx = reply;
}

static void noop_answered(void *ctx)
{
    (void)ctx;
}

static void fuzz_one(const gen_codec *codec, const char *url, const char *body, size_t len)
{
    ss_rest_gen *g = NULL;
    unsigned status = 0;
    char *out = NULL;
    size_t out_len = 0;
    if (!ss_rest_gen_decode(env, codec, url, body, len, NULL, &g, &status, &out, &out_len)) {
        free(out);
        return;
    }
    if (ss_rest_gen_streaming(g)) {
        ss_rest_gen_start(g, noop_answered, NULL);
        ss_rest_gen_close(g);
        return;
    }
    ss_predict_request *req = ss_rest_gen_take_request(g);
    ss_predict_reply *reply = NULL;
    fuzz_predict(NULL, req, keep_reply, &reply); /* partials too: they bring the text */
    reply = ss_predict_reply_finish(reply, req);
    ss_rest_gen_encode(g, reply, &status, &out, &out_len);
    free(out);
    ss_predict_reply_free(reply);
    ss_predict_request_free(req);
    ss_rest_gen_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    const uint8_t *nl = memchr(data + 1, '\n', size - 1);
    if (!nl) return 0;
    char *url = strndup((const char *)data + 1, (size_t)(nl - data - 1));
    size_t len = size - (size_t)(nl + 1 - data);
    char *body = malloc(len ? len : 1);
    if (url && body) {
        memcpy(body, nl + 1, len);
        answer_bytes = data;
        answer_len = size;
        answer_fails = data[0] & 2;
        fuzz_one(data[0] & 1 ? &ss_gen_codec_openai : &ss_gen_codec_triton, url, body, len);
    }
    free(url);
    free(body);
    return 0;
}
