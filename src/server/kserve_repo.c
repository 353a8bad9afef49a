/*
 * kserve_repo: the model repository extension's REST side and the name rules both codecs share
 * (see kserve_repo.h).
 */
#include "kserve_repo.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "kserve_rest.h"
#include "sbuf.h"

static bool no_repository(const ss_predict_handler *h, ss_kserve_error *err)
{
    if (h->set_loaded && h->index) return false;
    ss_kserve_fail(err, 501, "this server has no model repository");
    return true;
}

bool ss_kserve_repo_set_loaded(const ss_predict_handler *h, const char *model, uint64_t version,
                               bool loaded, ss_kserve_error *err)
{
    if (no_repository(h, err)) return false;
    char why[512] = "";
    if (h->set_loaded(h->ctx, model, version, loaded, why, sizeof why) == SS_DESCRIBE_OK)
        return true;
    const char *dot = strrchr(model, '.');
    if (dot && dot != model) { /* NAME.METHOD names the servable NAME */
        char servable[256];
        snprintf(servable, sizeof servable, "%.*s", (int)(dot - model), model);
        if (h->set_loaded(h->ctx, servable, version, loaded, why, sizeof why) == SS_DESCRIBE_OK)
            return true;
    }
    ss_kserve_fail(err, 404, "cannot %s model '%.200s': %s", loaded ? "load" : "unload", model,
                   why);
    return false;
}

bool ss_kserve_repo_index(const ss_predict_handler *h, bool ready_only,
                          ss_serving_index_entry **out, size_t *n, ss_kserve_error *err)
{
    if (no_repository(h, err)) return false;
    if (!h->index(h->ctx, out, n)) {
        ss_kserve_fail(err, 500, "out of memory listing the repository");
        return false;
    }
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++)
        if (!ready_only || !strcmp((*out)[i].state, "READY")) (*out)[kept++] = (*out)[i];
    *n = kept;
    return true;
}

/* ------------------------------------------------------------------ REST */

static void index_json(sbuf *s, const ss_serving_index_entry *e, size_t n)
{
    sb_str(s, "[");
    for (size_t i = 0; i < n; i++) {
        sb_str(s, i ? ",{\"name\":" : "{\"name\":");
        if (!sb_json_string(s, e[i].servable, strlen(e[i].servable))) sb_str(s, "\"?\"");
        sb_printf(s, ",\"version\":\"%llu\",\"state\":\"%s\",\"reason\":",
                  (unsigned long long)e[i].version, e[i].state);
        if (!sb_json_string(s, e[i].reason, strlen(e[i].reason))) sb_str(s, "\"\"");
        sb_str(s, "}");
    }
    sb_str(s, "]");
}

/* The body: empty, or a JSON object (NULL with err otherwise; free with cJSON_Delete). */
static bool parse_body(const char *body, size_t len, cJSON **root, ss_kserve_error *err)
{
    *root = NULL;
    size_t i = 0;
    while (i < len && strchr(" \t\r\n", body[i]))
        i++;
    if (i == len) return true;
    bool oom = false;
    *root = ss_json_parse(body, len, NULL, &oom);
    if (oom) {
        ss_kserve_fail(err, 500, "out of memory while parsing the request body");
        return false;
    }
    if (*root && cJSON_IsObject(*root)) return true;
    cJSON_Delete(*root);
    *root = NULL;
    ss_kserve_fail(err, 400, "the request body is not a JSON object");
    return false;
}

/* parameters.version: a number or its text; absent = every version. */
static bool version_param(const cJSON *root, uint64_t *version, ss_kserve_error *err)
{
    *version = 0;
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "parameters");
    if (params && !cJSON_IsObject(params)) {
        ss_kserve_fail(err, 400, "'parameters' must be a JSON object");
        return false;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(params, "version");
    if (!v) return true;
    char text[32] = "";
    if (cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble < 9.0e15)
        snprintf(text, sizeof text, "%.0f", v->valuedouble);
    else if (cJSON_IsString(v))
        snprintf(text, sizeof text, "%s", v->valuestring);
    if (!text[0] || !ss_kserve_parse_version(text, strlen(text), version) || !*version ||
        (cJSON_IsNumber(v) && v->valuedouble != (double)*version)) {
        ss_kserve_fail(err, 400, "parameter 'version' must be a version number (1, 2, ...)");
        return false;
    }
    return true;
}

static int post_index(const ss_predict_handler *h, const cJSON *root, sbuf *s, ss_kserve_error *err)
{
    const cJSON *ready = cJSON_GetObjectItemCaseSensitive(root, "ready");
    if (ready && !cJSON_IsBool(ready)) {
        ss_kserve_fail(err, 400, "'ready' must be true or false");
        return 400;
    }
    ss_serving_index_entry *e = NULL;
    size_t n = 0;
    if (!ss_kserve_repo_index(h, cJSON_IsTrue(ready), &e, &n, err)) return err->status;
    index_json(s, e, n);
    free(e);
    return 200;
}

static int unknown_route(const char *url, ss_kserve_error *err)
{
    ss_kserve_fail(err, 404, "unknown route POST %.200s", url);
    return 404;
}

/* /v2/repository/models/NAME/{load,unload} */
static int post_model(const ss_predict_handler *h, const char *url, const cJSON *root,
                      ss_kserve_error *err)
{
    const char *name = url + strlen("/v2/repository/models/");
    const char *slash = strchr(name, '/');
    bool load = slash && !strcmp(slash, "/load");
    if (!slash || (!load && strcmp(slash, "/unload") != 0)) return unknown_route(url, err);
    if (slash == name || slash - name >= 256) {
        ss_kserve_fail(err, 400, "the model name must have 1 to 255 characters");
        return 400;
    }
    char model[256];
    snprintf(model, sizeof model, "%.*s", (int)(slash - name), name);
    uint64_t version = 0;
    if (!version_param(root, &version, err)) return 400;
    return ss_kserve_repo_set_loaded(h, model, version, load, err) ? 200 : err->status;
}

void ss_kserve_rest_repository(const ss_predict_handler *h, const char *url, const char *body,
                               size_t len, int *status, char **out, size_t *out_len)
{
    sbuf s = {0};
    ss_kserve_error err = {0};
    cJSON *root = NULL;
    if (!parse_body(body, len, &root, &err))
        *status = 400;
    else if (!strcmp(url, "/v2/repository/index"))
        *status = post_index(h, root, &s, &err);
    else if (!strncmp(url, "/v2/repository/models/", 22))
        *status = post_model(h, url, root, &err);
    else
        *status = unknown_route(url, &err);
    cJSON_Delete(root);
    if (*status != 200) {
        free(s.p);
        *out = ss_kserve_rest_error_json(err.msg, out_len);
        return;
    }
    if (!s.p) sb_str(&s, "");
    *out = s.oom ? NULL : s.p;
    *out_len = s.oom ? 0 : s.len;
    if (s.oom) free(s.p);
}
