/*
 * rest_gen_triton: Triton's generate extension over REST. POST
 * /v2/models/NAME[/versions/V]/generate answers one JSON object, .../generate_stream one
 * Server-Sent Event per batch of new tokens and a last one with finish_reason. The body's
 * fields (top level, or inside "parameters") map onto the generate method's inputs by name:
 * "prompt" (token ids) or "text_input" (text, with the servable's tokenizer.json), max_tokens,
 * temperature, top_k, top_p, min_p, seed, repetition_penalty, presence_penalty,
 * frequency_penalty, stop_token_ids, and "stop" (strings). Answers carry "tokens" (the new ids),
 * "text_output" when there is a tokenizer, and "finish_reason"; errors are {"error": "..."}.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "rest_gen.h"

/* NAME and V from /v2/models/NAME[/versions/V]/generate[_stream]. */
static bool triton_url(const char *url, gen_params *p, gen_err *e)
{
    if (strncmp(url, "/v2/models/", 11)) return gen_fail(e, 404, "", "unknown route %s", url);
    const char *name = url + 11;
    const char *end = strchr(name, '/');
    if (!end || end == name) return gen_fail(e, 404, "", "unknown route %s", url);
    p->model = strndup(name, (size_t)(end - name));
    if (!p->model) return gen_fail(e, 500, "", "out of memory");
    if (!strncmp(end, "/versions/", 10)) {
        char *stop = NULL;
        unsigned long long v = strtoull(end + 10, &stop, 10);
        if (stop == end + 10 || *stop != '/')
            return gen_fail(e, 400, "", "the model version in %s is not a number", url);
        p->version = v;
        end = stop;
    }
    p->stream = !strcmp(end, "/generate_stream");
    if (!p->stream && strcmp(end, "/generate"))
        return gen_fail(e, 404, "", "unknown route %s", url);
    return true;
}

static bool triton_parse(const char *url, const cJSON *root, gen_params *p, gen_err *e)
{
    if (!triton_url(url, p, e)) return false;
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "parameters");
    if (params && !cJSON_IsObject(params))
        return gen_fail(e, 400, "parameters", "'parameters' must be an object");
    if (params && !gen_parse_common(params, p, e)) return false;
    if (params && !gen_parse_stops(cJSON_GetObjectItemCaseSensitive(params, "stop"), p, e))
        return false;
    if (!gen_parse_common(root, p, e)) return false;
    if (!gen_parse_stops(cJSON_GetObjectItemCaseSensitive(root, "stop"), p, e)) return false;
    p->prompt_field = "prompt";
    p->prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p->prompt) {
        p->prompt_field = "text_input";
        p->prompt = cJSON_GetObjectItemCaseSensitive(root, "text_input");
    }
    if (!p->prompt) return gen_fail(e, 400, "prompt", "the body needs 'prompt' or 'text_input'");
    return true;
}

static void triton_error(const gen_err *e, sbuf *out)
{
    sb_str(out, "{\"error\":");
    if (!sb_json_string(out, e->msg, strlen(e->msg))) sb_str(out, "\"(not UTF-8)\"");
    sb_str(out, "}");
}

static void triton_head(ss_rest_gen *g, const int64_t *ids, size_t n, sbuf *out)
{
    const gen_info *info = ss_rest_gen_info(g);
    sb_str(out, "{\"model_name\":");
    sb_json_string(out, info->model, strlen(info->model));
    sb_printf(out, ",\"model_version\":\"%" PRIu64 "\",\"tokens\":", info->version);
    gen_put_ids(out, ids, n);
}

static void triton_text(const char *text, size_t tlen, sbuf *out)
{
    if (!text) return;
    sb_str(out, ",\"text_output\":");
    sb_json_string(out, text, tlen);
}

static void triton_reason(const char *reason, sbuf *out)
{
    sb_str(out, ",\"finish_reason\":");
    sb_json_string(out, reason, strlen(reason));
}

static void triton_chunk(ss_rest_gen *g, const int64_t *ids, size_t n, const char *text,
                         size_t tlen, sbuf *out)
{
    sb_str(out, "data: ");
    triton_head(g, ids, n, out);
    triton_text(text, tlen, out);
    sb_str(out, "}\n\n");
}

static void triton_last(ss_rest_gen *g, const char *reason, const char *text, size_t tlen,
                        sbuf *out)
{
    sb_str(out, "data: ");
    triton_head(g, NULL, 0, out);
    triton_text(text ? text : (ss_rest_gen_info(g)->text ? "" : NULL), tlen, out);
    triton_reason(reason, out);
    sb_str(out, "}\n\n");
}

static void triton_whole(ss_rest_gen *g, const int64_t *ids, size_t n, const char *text,
                         size_t tlen, const char *reason, sbuf *out)
{
    triton_head(g, ids, n, out);
    triton_text(text, tlen, out);
    triton_reason(reason, out);
    sb_str(out, "}");
}

const gen_codec ss_gen_codec_triton = {"generate",   triton_parse, triton_error,
                                       triton_chunk, triton_last,  triton_whole};
