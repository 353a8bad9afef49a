/*
 * REST generation under allocation failure: OpenAI's POST /v1/completions and Triton's generate
 * extension bodies through rest_gen's decoder (openai_parse / triton_parse, gen_parse_common,
 * gen_parse_stops, the request built against the servable's signature, a text prompt through its
 * tokenizer.json), then a worker's answer through the encoders: one body (ss_rest_gen_encode) or
 * an event stream of chunks and a last event (ss_rest_gen_start, ss_rest_gen_respond), each with
 * the 1st, 2nd, 3rd ... allocation failing. Bodies: prompts as ids and as text, every sampling
 * field, stop as a string and as a list, stream true and false, and malformed ones.
 *
 * A run's outcome is a transcript: the request the worker got and the HTTP answer (status,
 * content type, body or event stream). Every run must give exactly the clean run's transcript
 * (a malformed body's 400 included), or fail as the server's fault: a 500 (or a 503 saying "out
 * of memory"), or a stream that is the clean one's first events followed by nothing or by an
 * error event. Never a crash, a leak, or a 400 that blames the client for a failed allocation.
 *
 * There is no HTTP server: the libmicrohttpd calls ss_rest_gen_respond makes are defined here
 * (the executable's definitions come before the shared library's), so the response it queues is
 * read back at once. The transcript is written into a fixed buffer: the test's own bookkeeping
 * must not allocate inside the armed window.
 */
#include "allocfail.h"
#include "check.h"
#include "rest_gen.h"
#include "tokenizer/small_tokenizer.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the transcript */

typedef struct {
    char text[16384];
    size_t len;
    bool overflow;
} transcript;

static void say(transcript *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(transcript *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = sizeof t->text - t->len;
    int n = vsnprintf(t->text + t->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        t->overflow = true;
        t->len = sizeof t->text - 1;
        return;
    }
    t->len += (size_t)n;
}

/* The request's id counts requests and "created" is the clock: drop their digits in place. */
static void drop_digits_after(transcript *t, const char *mark)
{
    for (char *at = strstr(t->text, mark); at; at = strstr(at, mark)) {
        at += strlen(mark);
        size_t n = strspn(at, "0123456789");
        memmove(at, at + n, strlen(at + n) + 1);
        t->len -= n;
    }
}

static transcript *current; /* the run's, for the worker and the HTTP stand-ins */

/* ---------------------------------------------------------------- libmicrohttpd stand-ins */

struct MHD_Response {
    MHD_ContentReaderCallback read;
    void *read_cls;
    MHD_ContentReaderFreeCallback read_free;
    char *body;
    size_t len;
    bool must_free;
};

static struct MHD_Response response; /* one at a time; static: no allocation */
static char fake_conn_storage;
#define FAKE_CONN ((struct MHD_Connection *)&fake_conn_storage)

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
                                                     enum MHD_ResponseMemoryMode mode)
{
    response = (struct MHD_Response){
        .body = buffer, .len = size, .must_free = mode == MHD_RESPMEM_MUST_FREE};
    return &response;
}

struct MHD_Response *MHD_create_response_from_callback(uint64_t size, size_t block_size,
                                                       MHD_ContentReaderCallback crc, void *crc_cls,
                                                       MHD_ContentReaderFreeCallback crfc)
{
    (void)size;
    (void)block_size;
    response = (struct MHD_Response){.read = crc, .read_cls = crc_cls, .read_free = crfc};
    return &response;
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *resp, const char *header,
                                        const char *content)
{
    (void)resp;
    if (!strcmp(header, MHD_HTTP_HEADER_CONTENT_TYPE)) say(current, " %s", content);
    return MHD_YES;
}

/* The answer is complete by now (the worker answers at once): read all of it. */
enum MHD_Result MHD_queue_response(struct MHD_Connection *conn, unsigned int status,
                                   struct MHD_Response *resp)
{
    (void)conn;
    say(current, " -> HTTP %u\n", status);
    if (!resp->read) {
        say(current, "%.*s", (int)resp->len, resp->body);
        return MHD_YES;
    }
    char buf[4096];
    for (uint64_t pos = 0;;) {
        ssize_t n = resp->read(resp->read_cls, pos, buf, sizeof buf);
        if (n == MHD_CONTENT_READER_END_OF_STREAM) break;
        if (n <= 0) {
            say(current, "(the stream did not end)");
            break;
        }
        say(current, "%.*s", (int)n, buf);
        pos += (uint64_t)n;
    }
    return MHD_YES;
}

void MHD_destroy_response(struct MHD_Response *resp)
{
    if (resp->read_free) resp->read_free(resp->read_cls);
    if (resp->must_free) free(resp->body);
    *resp = (struct MHD_Response){0};
}

/* rest_gen's streams are made without a connection, and read only once they have ended */
void MHD_suspend_connection(struct MHD_Connection *conn)
{
    (void)conn;
}

void MHD_resume_connection(struct MHD_Connection *conn)
{
    (void)conn;
}

/* ---------------------------------------------------------------- the servables and the worker */

/* "gen" has the small tokenizer.json (and a max_context of 24), "ids" none; both declare every
 * input a generate method may take. */
static int gen_describe(void *ctx, const char *servable, uint64_t version,
                        ss_serving_signature **out, char *why, size_t cap)
{
    (void)ctx;
    bool gen = !strcmp(servable, "gen");
    if ((!gen && strcmp(servable, "ids")) || version > 1) {
        snprintf(why, cap, "unknown");
        return SS_DESCRIBE_NOT_FOUND;
    }
    static const char *const names[] = {"prompt",
                                        "max_tokens",
                                        "temperature",
                                        "top_k",
                                        "top_p",
                                        "min_p",
                                        "seed",
                                        "repetition_penalty",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "stop_token_ids",
                                        "stop"};
    enum { N_IN = sizeof names / sizeof names[0] };
    ss_serving_tensor_spec in[N_IN], outs[2];
    for (int i = 0; i < N_IN; i++)
        in[i] = (ss_serving_tensor_spec){.name = (char *)names[i],
                                         .dtype = i == 0 || i == 10 ? SS_DT_INT64 : SS_DT_FLOAT64,
                                         .ndim = i == 0 || i >= 10};
    outs[0] = (ss_serving_tensor_spec){.name = "tokens", .dtype = SS_DT_INT64, .ndim = 1};
    outs[1] = (ss_serving_tensor_spec){.name = "finish_reason", .dtype = SS_DT_STRING};
    ss_serving_method m = {
        .name = "generate", .inputs = in, .outputs = outs, .n_inputs = N_IN, .n_outputs = 2};
    ss_serving_signature sig = {.servable = (char *)servable,
                                .version = 1,
                                .methods = &m,
                                .n_methods = 1,
                                .max_context = gen ? 24 : 0};
    *out = ss_serving_signature_copy(&sig);
    if (!*out) snprintf(why, cap, "out of memory"); /* as the serving registry answers */
    return *out ? SS_DESCRIBE_OK : SS_DESCRIBE_NOT_READY;
}

static void dump_request(const ss_predict_request *req)
{
    say(current, "request %s.%s v%" PRIu64 " finish_reason:%d partial:%d n%zu:", req->servable,
        req->method, req->version, req->want_finish_reason, req->partial != NULL, req->count);
    for (size_t i = 0; i < req->count; i++)
        for (size_t k = 0; k < req->instances[i].count; k++) {
            const ss_serving_item *it = &req->instances[i].items[k];
            const ss_tensor *t = &it->tensor;
            say(current, " %s:%s[", it->name, ss_dtype_name(t->dtype));
            for (int d = 0; d < t->ndim; d++)
                say(current, "%" PRId64 ",", t->dims[d]);
            say(current, "]=");
            size_t n = (size_t)ss_tensor_numel(t);
            for (size_t e = 0; e < n; e++) {
                if (t->dtype == SS_DT_INT64) say(current, "%" PRId64 ",", ((int64_t *)t->data)[e]);
                if (t->dtype == SS_DT_FLOAT64) say(current, "%.17g,", ((double *)t->data)[e]);
                if (t->dtype == SS_DT_STRING) {
                    const ss_string *s = &((ss_string *)t->data)[e];
                    say(current, "'%.*s',", (int)s->len, s->data ? s->data : "(null)");
                }
            }
        }
    say(current, "\n");
}

/* The answer: the bytes of "hi hic" as ids, one piece each (257 is the merge "hi"). */
static const int64_t answer_ids[] = {104, 105, 32, 257, 99};
static const char *const answer_text[] = {"h", "i", " ", "hi", "c"};
enum { N_ANSWER = sizeof answer_ids / sizeof answer_ids[0] };

static bool put_one(ss_serving_instance *inst, int64_t id, const char *text)
{
    ss_tensor t = {0};
    int64_t one[1] = {1};
    ss_status *st = ss_tensor_alloc(&t, SS_DT_INT64, 1, one);
    if (!st) *(int64_t *)t.data = id;
    if (!st) st = ss_serving_instance_put(inst, "tokens", &t, false);
    ss_tensor_free(&t);
    if (!st) st = ss_serving_instance_put_string(inst, "text", text, strlen(text), false);
    bool ok = !st;
    ss_status_free(st);
    return ok;
}

static ss_predict_reply *whole_answer(void)
{
    ss_predict_reply *r = ss_predict_reply_new(1);
    ss_tensor t = {0};
    int64_t dims[1] = {N_ANSWER};
    ss_status *st = r ? ss_tensor_alloc(&t, SS_DT_INT64, 1, dims) : NULL;
    if (r && !st) memcpy(t.data, answer_ids, sizeof answer_ids);
    if (r && !st) st = ss_serving_instance_put(&r->instances[0], "tokens", &t, false);
    ss_tensor_free(&t);
    if (r && !st)
        st = ss_serving_instance_put_string(&r->instances[0], "finish_reason", "stop", 4, false);
    if (r && !st) return r;
    ss_status_free(st);
    ss_predict_reply_free(r);
    return ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory");
}

static int64_t max_tokens(const ss_predict_request *req)
{
    const ss_serving_item *it =
        req->count ? ss_serving_instance_find(&req->instances[0], "max_tokens") : NULL;
    return it && it->tensor.dtype == SS_DT_INT64 ? *(int64_t *)it->tensor.data : 0;
}

/* A worker that answers at once: each token (and its text) as a piece, then done(). It refuses
 * max_tokens 999 (the client's fault); a failed allocation of its own fails the request. It sees
 * a cancellation only before every second piece, as a real worker's piece already on its way
 * still arrives after one. */
static void gen_predict(void *ctx, ss_predict_request *req, ss_predict_done done, void *done_ctx)
{
    (void)ctx;
    dump_request(req);
    if (max_tokens(req) == 999) {
        done(done_ctx, ss_predict_reply_error(SS_SERVING_INVALID_INPUTS,
                                              "max_tokens 999 is over the servable's 64"));
        return;
    }
    for (size_t i = 0; req->partial && i < N_ANSWER; i++) {
        if (i % 2 == 0 && ss_predict_request_cancelled(req)) {
            done(done_ctx, ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "cancelled"));
            return;
        }
        ss_serving_instance piece = {0};
        bool ok = put_one(&piece, answer_ids[i], answer_text[i]);
        if (ok) req->partial(req->partial_ctx, 0, &piece);
        ss_serving_instance_clear(&piece);
        if (!ok) {
            done(done_ctx, ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory"));
            return;
        }
    }
    done(done_ctx, whole_answer());
}

static const ss_predict_handler gen_handler = {.predict = gen_predict, .describe = gen_describe};

static char servable_dir[] = "/tmp/ss-alloc-gen-XXXXXX";

static void write_servables(void)
{
    char path[256];
    CHECK(mkdtemp(servable_dir) != NULL);
    snprintf(path, sizeof path, "%s/gen", servable_dir);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/gen/tokenizer.json", servable_dir);
    cJSON *tok = small_tokenizer();
    char *text = cJSON_PrintUnformatted(tok);
    FILE *f = fopen(path, "w");
    CHECK(f && text && fputs(text, f) >= 0);
    if (f) fclose(f);
    free(text);
    cJSON_Delete(tok);
}

static void remove_servables(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/gen/tokenizer.json", servable_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/gen", servable_dir);
    rmdir(path);
    rmdir(servable_dir);
}

/* ---------------------------------------------------------------- one request */

typedef struct {
    const char *name;
    const gen_codec *codec;
    const char *url, *body;
    bool cold;       /* a new environment per run: the tokenizer is loaded in the armed window */
    long min_allocs; /* the clean run makes at least this many allocations */
    transcript got;
    const char *want; /* the clean run's transcript */
    bool streamed;
    ss_rest_gen_env *env;
} gen_case;

static void keep_reply(void *ctx, ss_predict_reply *reply)
{
    *(ss_predict_reply **)ctx = reply;
}

static void answered(void *ctx)
{
    (void)ctx;
}

/* A 500, or a 503 that ran out of memory: the server's fault. */
static bool server_failed(const transcript *t)
{
    const char *http = strstr(t->text, "-> HTTP ");
    unsigned status = http ? (unsigned)atoi(http + 8) : 0;
    return status == 500 || (status == 503 && strstr(http, "out of memory"));
}

/* A stream that broke off: the clean one's events up to some point, then nothing or an error
 * event (the worker's or the server's failure, never a different event). */
static bool stream_broke_off(const char *got, const char *want)
{
    const char *start = strstr(want, "text/event-stream -> HTTP 200\n");
    size_t head = start ? (size_t)(start - want) + strlen("text/event-stream -> HTTP 200\n") : 0;
    if (!start || strncmp(got, want, head)) return false;
    const char *g = got + head, *w = want + head;
    for (;;) { /* whole events in common */
        const char *end = strstr(g, "\n\n");
        size_t n = end ? (size_t)(end + 2 - g) : 0;
        if (!end || strncmp(g, w, n)) break;
        g += n, w += n;
    }
    if (!*g) return true;
    return !strncmp(g, "data: {\"error\":", 15) &&
           (strstr(g, "out of memory") || strstr(g, "cancelled"));
}

static ss_status *run_plain(gen_case *c, ss_rest_gen *g)
{
    ss_predict_request *req = ss_rest_gen_take_request(g);
    ss_predict_reply *reply = NULL;
    gen_predict(NULL, req, keep_reply, &reply); /* the pieces too: they bring the text */
    reply = ss_predict_reply_finish(reply, req);
    unsigned status = 0;
    char *body = NULL;
    size_t len = 0;
    ss_rest_gen_encode(g, reply, &status, &body, &len);
    say(&c->got, "answer -> HTTP %u\n%.*s", status, body ? (int)len : 3, body ? body : "NULL");
    free(body);
    ss_predict_reply_free(reply);
    ss_predict_request_free(req);
    ss_rest_gen_free(g);
    return NULL;
}

static ss_status *run_gen(void *ctx)
{
    gen_case *c = ctx;
    c->got.len = 0, c->got.text[0] = 0, c->got.overflow = false;
    current = &c->got;
    ss_rest_gen_env *env = c->env;
    if (c->cold) {
        ss_status *st = ss_rest_gen_env_new(&gen_handler, servable_dir, &env);
        if (st) return st;
    }
    ss_rest_gen *g = NULL;
    unsigned status = 0;
    char *reply = NULL;
    size_t len = 0;
    if (!ss_rest_gen_decode(env, c->codec, c->url, c->body, strlen(c->body), NULL, &g, &status,
                            &reply, &len)) {
        say(&c->got, "decode -> HTTP %u\n%.*s", status, reply ? (int)len : 3,
            reply ? reply : "NULL");
        free(reply);
    } else if (ss_rest_gen_streaming(g)) {
        c->streamed = true;
        say(&c->got, "stream\n");
        ss_rest_gen_start(g, answered, NULL);
        say(&c->got, "respond");
        ss_rest_gen_respond(g, FAKE_CONN);
        ss_rest_gen_close(g);
    } else {
        run_plain(c, g);
    }
    if (c->cold) ss_rest_gen_env_free(env);
    drop_digits_after(&c->got, "\"cmpl-");
    drop_digits_after(&c->got, "\"created\":");
    if (server_failed(&c->got)) return ss_errf(SS_ERR_NOMEM, "%s", c->got.text);
    if (c->want && c->streamed && strcmp(c->got.text, c->want) &&
        stream_broke_off(c->got.text, c->want))
        return ss_errf(SS_ERR_NOMEM, "the stream broke off: %s", c->got.text);
    return NULL; /* verify compares it with the clean run's */
}

static bool verify_gen(void *ctx)
{
    gen_case *c = ctx;
    bool same = !c->got.overflow && !strcmp(c->got.text, c->want);
    if (!same) fprintf(stderr, "  got:\n%s\n  want:\n%s\n", c->got.text, c->want);
    return same;
}

static ss_rest_gen_env *warm_env; /* the tokenizer loaded once, before any loop */

static void gen_under_failures(gen_case *c, const char *expect)
{
    c->env = warm_env;
    CHECK_OK(run_gen(c));
    CHECK_MSG(!c->got.overflow && strstr(c->got.text, expect), "%s: the clean run gave\n%s\n",
              c->name, c->got.text);
    char *want = strdup(c->got.text);
    CHECK(want != NULL);
    if (!want) return;
    c->want = want;
    allocfail_case a = {.name = c->name, .ctx = c, .run = run_gen, .verify = verify_gen};
    long allocs = 0;
    CHECK(allocfail_loop(&a, &allocs) == 0);
    CHECK_MSG(allocs >= c->min_allocs, "%s: %ld allocations", c->name, allocs);
    printf("%s: %ld allocations, each failed in turn\n", c->name, allocs);
    c->want = NULL;
    free(want);
}

/* ---------------------------------------------------------------- the cases */

#define COMPLETIONS "/v1/completions"
#define OPENAI &ss_gen_codec_openai
#define TRITON &ss_gen_codec_triton

static void openai_requests(void)
{
    gen_case ids_every_field = {
        .name = "OpenAI, ids prompt, every sampling field, stop string",
        .codec = OPENAI,
        .url = COMPLETIONS,
        .body = "{\"model\": \"gen\", \"prompt\": [104, 105, 32, 257], \"max_tokens\": 5,"
                " \"temperature\": 0.7, \"top_k\": 40, \"top_p\": 0.9, \"min_p\": 0.05,"
                " \"seed\": 1234, \"repetition_penalty\": 1.1, \"presence_penalty\": 0.5,"
                " \"frequency_penalty\": -0.25, \"stop\": \"\\n\\n\", \"stop_token_ids\": [2, 3],"
                " \"n\": 1, \"best_of\": 1, \"echo\": false, \"logprobs\": null, \"suffix\": null,"
                " \"stream\": false, \"user\": \"u1\", \"metadata\": {\"a\": [1, {}]}}",
        .min_allocs = 20};
    gen_under_failures(&ids_every_field, "\"text\":\"hi hic\"");

    gen_case text_stream = {.name = "OpenAI, text prompt, stop list, streamed",
                            .codec = OPENAI,
                            .url = COMPLETIONS,
                            .body =
                                "{\"model\": \"gen\", \"prompt\": \"hi <s> caf\\u00e9 \\u20ac\","
                                " \"stop\": [\"</s>\", \"\\u20ac\", \"x\"], \"max_tokens\": 4,"
                                " \"temperature\": 0, \"seed\": null, \"stream\": true}",
                            .min_allocs = 20};
    gen_under_failures(&text_stream, "data: [DONE]");

    gen_case batched_ids = {.name = "OpenAI, batched ids prompt, no tokenizer",
                            .codec = OPENAI,
                            .url = COMPLETIONS,
                            .body = "{\"model\": \"ids\", \"prompt\": [[1, 2, 3]], \"stop\": null,"
                                    " \"top_p\": 1}",
                            .min_allocs = 10};
    gen_under_failures(&batched_ids, "\"token_ids\":[104,105,32,257,99]");

    gen_case ids_stream = {.name = "OpenAI, ids prompt, no tokenizer, streamed",
                           .codec = OPENAI,
                           .url = COMPLETIONS,
                           .body = "{\"model\": \"ids\", \"prompt\": [5, 6, 7], \"stream\": true,"
                                   " \"stop\": [\"a\"]}",
                           .min_allocs = 10};
    gen_under_failures(&ids_stream, "data: [DONE]");

    gen_case text_cold = {.name = "OpenAI, text prompt, tokenizer loaded in the run",
                          .codec = OPENAI,
                          .url = COMPLETIONS,
                          .body = "{\"model\": \"gen\", \"prompt\": [\"hi <x> h i\"],"
                                  " \"max_tokens\": 3}",
                          .cold = true,
                          .min_allocs = 100};
    gen_under_failures(&text_cold, "\"text\":\"hi hic\"");

    gen_case refused = {.name = "OpenAI, refused by the worker",
                        .codec = OPENAI,
                        .url = COMPLETIONS,
                        .body = "{\"model\": \"gen\", \"prompt\": [1], \"max_tokens\": 999}",
                        .min_allocs = 10};
    gen_under_failures(&refused, "HTTP 400");
}

static void openai_malformed(void)
{
    static const struct {
        const char *body, *expect;
    } bad[] = {
        {"{\"model\": \"gen\", \"prompt\": \"hi\", \"temperature\": \"hot\"}", "must be a number"},
        {"{\"model\": \"gen\", \"prompt\": \"hi\", \"top_k\": 1.5}", "must be an integer"},
        {"{\"model\": \"gen\", \"prompt\": [1, \"x\"], \"max_tokens\": 2}", "element 1"},
        {"{\"model\": \"gen\", \"prompt\": \"hi\", \"stop\": [\"a\", 3]}", "strings only"},
        {"{\"model\": \"gen\", \"prompt\": \"hi\", \"stop\": {\"a\": 1}}", "'stop' must be"},
        {"{\"model\": \"gen\", \"prompt\": \"hi\", \"stream\": \"yes\"}", "true or false"},
        {"{\"model\": \"gen\", \"prompt\": \"hi\", \"n\": 2}", "'n' must be 1"},
        {"{\"model\": \"gen\", \"prompt\": \"hi\", \"stop_token_ids\": [1, -5]}", "element 1"},
        {"{\"model\": \"gen\", \"prompt\": \"hi\", \"stop_token_ids\": 7}", "list of integers"},
        {"{\"model\": \"nope\", \"prompt\": [1]}", "model_not_found"},
        {"{\"model\": 7, \"prompt\": [1]}", "must name a model"},
        {"{\"model\": \"ids\", \"prompt\": \"hi\"}", "no usable tokenizer.json"},
        {"{\"model\": \"gen\", \"prompt\": \"h i h i h i h i h i h i h i h i h i h i h i h i h\"}",
         "max_context 24"},
        {"{\"model\": \"gen\", \"prompt\": [1, 2,}", "not a JSON object"},
        {"{\"model\": \"gen\", \"prompt\": \"\\ud800\"}", "not a JSON object"},
        {"[{\"model\": \"gen\"}]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "OpenAI, malformed body %zu (%s)", i + 1, bad[i].expect);
        gen_case c = {.name = name, .codec = OPENAI, .url = COMPLETIONS, .body = bad[i].body};
        gen_under_failures(&c, bad[i].expect);
        CHECK_MSG(strstr(c.got.text, "HTTP 400") || strstr(c.got.text, "HTTP 404"), "%s: %s", name,
                  c.got.text);
    }
}

static void triton_requests(void)
{
    gen_case text_every_field = {
        .name = "Triton, text_input, every field in parameters, stop string and list",
        .codec = TRITON,
        .url = "/v2/models/gen/generate",
        .body = "{\"text_input\": \"caf\\u00e9 hi\", \"parameters\": {\"max_tokens\": 5,"
                " \"temperature\": 0.5, \"top_k\": 3, \"top_p\": 0.8, \"min_p\": 0.1, \"seed\": 7,"
                " \"repetition_penalty\": 1.2, \"presence_penalty\": 0.1,"
                " \"frequency_penalty\": 0.2, \"stop\": [\"x\", \"yz\"], \"stop_token_ids\": [0]},"
                " \"stop\": \"!\", \"extra\": {\"a\": [1]}, \"id\": \"r7\"}",
        .min_allocs = 20};
    gen_under_failures(&text_every_field, "\"text_output\":\"hi hic\"");

    gen_case ids_stream = {.name = "Triton, ids prompt, version 1, streamed",
                           .codec = TRITON,
                           .url = "/v2/models/gen/versions/1/generate_stream",
                           .body = "{\"prompt\": [104, 105], \"max_tokens\": 3, \"top_k\": 2,"
                                   " \"stop\": [\"hi\"]}",
                           .min_allocs = 20};
    gen_under_failures(&ids_stream, "\"finish_reason\":\"stop\"");

    gen_case ids_plain = {.name = "Triton, ids prompt, no tokenizer",
                          .codec = TRITON,
                          .url = "/v2/models/ids/generate",
                          .body = "{\"prompt\": [1, 2, 3], \"seed\": -1, \"parameters\": {}}",
                          .min_allocs = 10};
    gen_under_failures(&ids_plain, "\"tokens\":[104,105,32,257,99]");

    gen_case refused_stream = {.name = "Triton, streamed, refused by the worker before any event",
                               .codec = TRITON,
                               .url = "/v2/models/gen/generate_stream",
                               .body = "{\"prompt\": [1, 2], \"max_tokens\": 999}",
                               .min_allocs = 10};
    gen_under_failures(&refused_stream, "HTTP 400");
}

static void triton_malformed(void)
{
    static const struct {
        const char *url, *body, *expect;
    } bad[] = {
        {"/v2/models/gen/generate", "{\"prompt\": [1], \"parameters\": [1]}", "must be an object"},
        {"/v2/models/gen/generate", "{\"prompt\": [1], \"parameters\": {\"top_p\": \"x\"}}",
         "must be a number"},
        {"/v2/models/gen/generate", "{\"max_tokens\": 3}", "needs 'prompt' or 'text_input'"},
        {"/v2/models/gen/versions/x/generate", "{\"prompt\": [1]}", "not a number"},
        {"/v2/models/gen/generate", "{\"prompt\": [1, 2], \"stop\": [1]}", "strings only"},
        {"/v2/models/gen/generate", "{\"prompt\": [], \"max_tokens\": 3}", "non-empty list"},
        {"/v2/models/ids/generate_stream", "{\"text_input\": \"hi\"}", "no usable tokenizer"},
        {"/v2/models/gen/generate_stream", "{\"prompt\": [1], \"stop_token_ids\": [1.5]}",
         "element 0"},
        {"/v2/models/gen/generate", "{\"prompt\": [1], \"seed\": 1e300}", "beyond any value"},
        {"/v2/models/gen/generate", "{\"prompt\": [1]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "Triton, malformed body %zu (%s)", i + 1, bad[i].expect);
        gen_case c = {.name = name, .codec = TRITON, .url = bad[i].url, .body = bad[i].body};
        gen_under_failures(&c, bad[i].expect);
        CHECK_MSG(strstr(c.got.text, "HTTP 400"), "%s: %s", name, c.got.text);
    }
}

static void setup(void)
{
    write_servables();
    /* the logger's first line allocates for good (the time zone): not inside a loop */
    SS_WARN("test_alloc_gen: servables in %s", servable_dir);
    CHECK_OK(ss_rest_gen_env_new(&gen_handler, servable_dir, &warm_env));
    /* load the tokenizer outside the loops (the cold case loads it inside) */
    gen_case warm = {.name = "warm-up",
                     .codec = OPENAI,
                     .url = COMPLETIONS,
                     .body = "{\"model\": \"gen\", \"prompt\": \"hi\"}",
                     .env = warm_env};
    CHECK_OK(run_gen(&warm));
    CHECK_MSG(strstr(warm.got.text, "HTTP 200"), "warm-up: %s", warm.got.text);
}

static void teardown(void)
{
    ss_rest_gen_env_free(warm_env);
    remove_servables();
}

TEST_MAIN(TEST(setup), TEST(openai_requests), TEST(openai_malformed), TEST(triton_requests),
          TEST(triton_malformed), TEST(teardown))
