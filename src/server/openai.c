/*
 * openai: OpenAI's legacy completions API over the generate servables. POST /v1/completions
 * takes "model" (the servable), "prompt" (text with the servable's tokenizer.json, or token ids),
 * max_tokens, temperature, top_p, seed, stop, presence_penalty, frequency_penalty (and vLLM's
 * top_k, min_p, repetition_penalty, stop_token_ids), n = 1 only, and "stream" (Server-Sent
 * Events in OpenAI's chunk format, ending with "data: [DONE]"). Answers carry the text when
 * there is a tokenizer, and always "token_ids" (vLLM's name) and usage. Errors are OpenAI's
 * {"error": {"message", "type", "param", "code"}} with 400/404/503/500. GET /v1/models lists
 * the ready servables that generate.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "rest_gen.h"

/* prompt: text, ids, or a list holding exactly one of those (OpenAI's batched form). */
static bool openai_prompt(const cJSON *root, gen_params *p, gen_err *e)
{
    p->prompt_field = "prompt";
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!prompt || cJSON_IsNull(prompt)) return gen_fail(e, 400, "prompt", "'prompt' is required");
    if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) >= 1 &&
        (cJSON_IsString(prompt->child) || cJSON_IsArray(prompt->child))) {
        if (cJSON_GetArraySize(prompt) > 1)
            return gen_fail(e, 400, "prompt",
                            "'prompt' holds %d prompts; this server takes one per request",
                            cJSON_GetArraySize(prompt));
        prompt = prompt->child;
    }
    if (!cJSON_IsString(prompt) && !cJSON_IsArray(prompt))
        return gen_fail(e, 400, "prompt", "'prompt' must be a string or a list of token ids");
    p->prompt = prompt;
    return true;
}

/* Fields that ask for what this server does not do. */
static bool openai_unsupported(const cJSON *root, gen_err *e)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "n");
    if (n && !cJSON_IsNull(n) && !(cJSON_IsNumber(n) && n->valuedouble == 1))
        return gen_fail(e, 400, "n", "'n' must be 1: one completion per request is supported");
    const cJSON *best = cJSON_GetObjectItemCaseSensitive(root, "best_of");
    if (best && !cJSON_IsNull(best) && !(cJSON_IsNumber(best) && best->valuedouble == 1))
        return gen_fail(e, 400, "best_of", "'best_of' must be 1");
    const cJSON *echo = cJSON_GetObjectItemCaseSensitive(root, "echo");
    if (echo && !cJSON_IsNull(echo) && !cJSON_IsFalse(echo))
        return gen_fail(e, 400, "echo", "'echo' is not supported");
    const cJSON *logprobs = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    if (logprobs && !cJSON_IsNull(logprobs))
        return gen_fail(e, 400, "logprobs", "'logprobs' is not supported");
    const cJSON *suffix = cJSON_GetObjectItemCaseSensitive(root, "suffix");
    if (suffix && !cJSON_IsNull(suffix))
        return gen_fail(e, 400, "suffix", "'suffix' is not supported");
    return true;
}

static bool openai_parse(const char *url, const cJSON *root, gen_params *p, gen_err *e)
{
    (void)url;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0])
        return gen_fail(e, 400, "model", "'model' must name a model (a servable)");
    if (!(p->model = strdup(model->valuestring))) return gen_fail(e, 500, "", "out of memory");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream))
        return gen_fail(e, 400, "stream", "'stream' must be true or false");
    p->stream = cJSON_IsTrue(stream);
    return openai_unsupported(root, e) && openai_prompt(root, p, e) &&
           gen_parse_common(root, p, e) &&
           gen_parse_stops(cJSON_GetObjectItemCaseSensitive(root, "stop"), p, e);
}

static void openai_error(const gen_err *e, sbuf *out)
{
    const char *type = e->status < 500    ? "invalid_request_error"
                       : e->status == 503 ? "service_unavailable"
                                          : "server_error";
    bool no_model = e->status == 404 && !strcmp(e->param, "model");
    sb_str(out, "{\"error\":{\"message\":");
    if (!sb_json_string(out, e->msg, strlen(e->msg))) sb_str(out, "\"(not UTF-8)\"");
    sb_str(out, ",\"type\":");
    sb_json_string(out, type, strlen(type));
    sb_str(out, ",\"param\":");
    if (e->param[0])
        sb_json_string(out, e->param, strlen(e->param));
    else
        sb_str(out, "null");
    sb_str(out, no_model ? ",\"code\":\"model_not_found\"}}" : ",\"code\":null}}");
}

static void openai_head(ss_rest_gen *g, sbuf *out)
{
    const gen_info *info = ss_rest_gen_info(g);
    sb_str(out, "{\"id\":");
    sb_json_string(out, info->id, strlen(info->id));
    sb_printf(out, ",\"object\":\"text_completion\",\"created\":%ld,\"model\":", info->created);
    sb_json_string(out, info->model, strlen(info->model));
}

/* One choice: its text ("" without a tokenizer), token ids and finish reason (null: more comes). */
static void openai_choice(const int64_t *ids, size_t n, const char *text, size_t tlen,
                          const char *reason, sbuf *out)
{
    sb_str(out, ",\"choices\":[{\"index\":0,\"text\":");
    sb_json_string(out, text ? text : "", text ? tlen : 0);
    sb_str(out, ",\"token_ids\":");
    gen_put_ids(out, ids, n);
    sb_str(out, ",\"logprobs\":null,\"finish_reason\":");
    if (reason)
        sb_json_string(out, reason, strlen(reason));
    else
        sb_str(out, "null");
    sb_str(out, "}]");
}

static void openai_usage(ss_rest_gen *g, sbuf *out)
{
    const gen_info *info = ss_rest_gen_info(g);
    sb_printf(out, ",\"usage\":{\"prompt_tokens\":%zu,", info->prompt_tokens);
    sb_printf(out, "\"completion_tokens\":%zu,", info->completion_tokens);
    sb_printf(out, "\"total_tokens\":%zu}", info->prompt_tokens + info->completion_tokens);
}

static void openai_chunk(ss_rest_gen *g, const int64_t *ids, size_t n, const char *text,
                         size_t tlen, sbuf *out)
{
    sb_str(out, "data: ");
    openai_head(g, out);
    openai_choice(ids, n, text, tlen, NULL, out);
    sb_str(out, "}\n\n");
}

static void openai_last(ss_rest_gen *g, const char *reason, const char *text, size_t tlen,
                        sbuf *out)
{
    sb_str(out, "data: ");
    openai_head(g, out);
    openai_choice(NULL, 0, text, tlen, reason, out);
    openai_usage(g, out);
    sb_str(out, "}\n\n");
}

static void openai_whole(ss_rest_gen *g, const int64_t *ids, size_t n, const char *text,
                         size_t tlen, const char *reason, sbuf *out)
{
    openai_head(g, out);
    openai_choice(ids, n, text, tlen, reason, out);
    openai_usage(g, out);
    sb_str(out, "}");
}

const gen_codec ss_gen_codec_openai = {"completions", openai_parse, openai_error,
                                       openai_chunk,  openai_last,  openai_whole};

/* Does the ready version of `servable` have a generate method? */
static bool openai_generates(const ss_predict_handler *h, const char *servable)
{
    ss_serving_signature *sig = NULL;
    char why[256];
    if (!h->describe || h->describe(h->ctx, servable, 0, &sig, why, sizeof why) != SS_DESCRIBE_OK)
        return false;
    bool yes = false;
    for (size_t i = 0; i < sig->n_methods && !yes; i++)
        for (size_t k = 0; k < sig->methods[i].n_inputs; k++)
            yes = yes || !strcmp(sig->methods[i].inputs[k].name, "prompt");
    ss_serving_signature_free(sig);
    return yes;
}

void ss_openai_models(const ss_predict_handler *h, unsigned *status, char **body, size_t *len)
{
    ss_serving_index_entry *e = NULL;
    size_t n = 0;
    sbuf s = {0};
    sb_str(&s, "{\"object\":\"list\",\"data\":[");
    bool first = true;
    if (h->index && h->index(h->ctx, &e, &n))
        for (size_t i = 0; i < n; i++) {
            bool seen = false;
            for (size_t k = 0; k < i && !seen; k++)
                seen = !strcmp(e[k].servable, e[i].servable);
            if (seen || strcmp(e[i].state, "READY") || !openai_generates(h, e[i].servable))
                continue;
            sb_str(&s, first ? "{\"id\":" : ",{\"id\":");
            sb_json_string(&s, e[i].servable, strlen(e[i].servable));
            sb_str(&s, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"shardserve\"}");
            first = false;
        }
    free(e);
    sb_str(&s, "]}");
    *status = s.oom ? 500 : 200;
    *body = s.oom ? NULL : s.p;
    *len = s.len;
    if (s.oom) free(s.p);
}
