/*
 * The worker's two input files: MindSpore's rank table (server_list and group_list forms, every
 * value a string, rank ids in file order) and shardserve's servable.json, the declarative
 * stand-in for MindSpore's servable_config.py. Every rule that MindSpore enforces is enforced
 * here, with an error naming the file and the offending entry.
 */
#include "shardserve/worker.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A decimal digit string without leading zeros ("0" is fine), below 2^31. */
static bool plain_decimal(const char *s, int *out)
{
    if (!s || !*s || (s[0] == '0' && s[1]) || strlen(s) > 9) return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return false;
    *out = atoi(s);
    return true;
}

static const char *str_field(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static ss_status *add_rank(ss_rank_table *t, int cap, const char *what, const char *ip,
                           const char *device, const char *rank)
{
    int dev, rk;
    if (!ip || !*ip || strlen(ip) >= sizeof t->ranks[0].ip)
        return ss_errf(SS_ERR_INVALID, "%s: rank entry %d has no valid server_id (a string IP)",
                       what, t->n);
    if (!plain_decimal(device, &dev))
        return ss_errf(SS_ERR_INVALID,
                       "%s: rank entry %d: device_id must be a decimal string without leading "
                       "zeros, got %s",
                       what, t->n, device ? device : "(missing or not a string)");
    if (!plain_decimal(rank, &rk))
        return ss_errf(SS_ERR_INVALID,
                       "%s: rank entry %d: rank_id must be a decimal string without leading "
                       "zeros, got %s",
                       what, t->n, rank ? rank : "(missing or not a string)");
    if (rk != t->n)
        return ss_errf(SS_ERR_INVALID,
                       "%s: device size not match rank_id: entry %d has rank_id %d (rank ids must "
                       "be 0, 1, 2, ... in file order)",
                       what, t->n, rk);
    if (t->n >= cap) return ss_errf(SS_ERR_LIMIT, "%s: more than %d ranks", what, cap);
    ss_rank_entry *e = &t->ranks[t->n++];
    snprintf(e->ip, sizeof e->ip, "%s", ip);
    e->device_id = dev;
    e->rank_id = rk;
    return NULL;
}

#define MAX_RANKS 4096

ss_status *ss_rank_table_parse(const char *text, size_t len, const char *what, ss_rank_table *t)
{
    memset(t, 0, sizeof *t);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ss_errf(SS_ERR_INVALID, "%s: not a JSON object (a rank table)", what);
    }
    t->ranks = calloc(MAX_RANKS, sizeof *t->ranks);
    t->json = malloc(len + 1);
    ss_status *st = (!t->ranks || !t->json) ? ss_errf(SS_ERR_NOMEM, "out of memory") : NULL;
    if (!st) {
        memcpy(t->json, text, len);
        t->json[len] = 0;
    }
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(root, "group_list");
    const cJSON *servers = cJSON_GetObjectItemCaseSensitive(root, "server_list");
    const cJSON *item, *dev;
    if (st) {
    } else if (groups) {
        if (!cJSON_IsArray(groups))
            st = ss_errf(SS_ERR_INVALID, "%s: 'group_list' must be a list", what);
        /* an object's members must not be walked as if it were the list (that dropped the error) */
        if (!st) cJSON_ArrayForEach(item, groups)
            {
                const cJSON *insts = cJSON_GetObjectItemCaseSensitive(item, "instance_list");
                if (!cJSON_IsArray(insts)) {
                    st = ss_errf(SS_ERR_INVALID,
                                 "%s: a group_list entry has no 'instance_list' list", what);
                    break;
                }
                const cJSON *inst;
                cJSON_ArrayForEach(inst, insts)
                {
                    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(inst, "devices");
                    const cJSON *first = cJSON_IsArray(devs) ? cJSON_GetArrayItem(devs, 0) : NULL;
                    st = add_rank(t, MAX_RANKS, what, str_field(inst, "server_id"),
                                  first ? str_field(first, "device_id") : NULL,
                                  str_field(inst, "rank_id"));
                    if (st) break;
                }
                if (st) break;
            }
    } else if (cJSON_IsArray(servers)) {
        cJSON_ArrayForEach(item, servers)
        {
            const cJSON *devs = cJSON_GetObjectItemCaseSensitive(item, "device");
            if (!cJSON_IsArray(devs)) {
                st = ss_errf(SS_ERR_INVALID, "%s: a server_list entry has no 'device' list", what);
                break;
            }
            cJSON_ArrayForEach(dev, devs)
            {
                st = add_rank(t, MAX_RANKS, what, str_field(item, "server_id"),
                              str_field(dev, "device_id"), str_field(dev, "rank_id"));
                if (st) break;
            }
            if (st) break;
        }
    } else {
        st = ss_errf(SS_ERR_INVALID, "%s: a rank table needs 'server_list' or 'group_list'", what);
    }
    if (!st && t->n == 0) st = ss_errf(SS_ERR_INVALID, "%s: the rank table lists no device", what);
    cJSON_Delete(root);
    if (st) ss_rank_table_free(t);
    return st;
}

ss_status *ss_rank_table_load(const char *path, ss_rank_table *out)
{
    void *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    ss_status *st = ss_read_file(path, &buf, &len);
    if (st) return ss_status_wrap(st, "rank table");
    st = ss_rank_table_parse(buf, len, path, out);
    free(buf);
    return st;
}

ss_status *ss_rank_table_check(const ss_rank_table *t, int rank_size, int stage_size,
                               const char *what)
{
    if (stage_size < 1 || rank_size < 1 || rank_size % stage_size)
        return ss_errf(SS_ERR_INVALID, "rank_size %d must be a multiple of stage_size %d",
                       rank_size, stage_size);
    if (t->n != rank_size)
        return ss_errf(SS_ERR_INVALID,
                       "Rank size %d declared in rank table file %s not equal to %d declared in "
                       "servable config",
                       t->n, what, rank_size);
    if (stage_size == 1) {
        for (int i = 0; i < t->n; i++) {
            if (t->ranks[i].device_id >= 8)
                return ss_errf(SS_ERR_INVALID, "%s: rank %d: device_id %d must be below 8", what, i,
                               t->ranks[i].device_id);
            for (int j = 0; j < i; j++)
                if (!strcmp(t->ranks[i].ip, t->ranks[j].ip) &&
                    t->ranks[i].device_id == t->ranks[j].device_id)
                    return ss_errf(SS_ERR_INVALID, "%s: ranks %d and %d use device %d of %s twice",
                                   what, j, i, t->ranks[i].device_id, t->ranks[i].ip);
        }
        return NULL;
    }
    if (rank_size < 8)
        return ss_errf(SS_ERR_INVALID,
                       "%s: with stage_size %d, rank_size must be at least 8, got %d", what,
                       stage_size, rank_size);
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->ranks[i].ip, t->ranks[i / 8 * 8].ip) || t->ranks[i].device_id != i % 8)
            return ss_errf(SS_ERR_INVALID,
                           "%s: with stage_size > 1 every block of 8 ranks must sit on one server "
                           "with device ids 0..7 in order; rank %d is device %d of %s",
                           what, i, t->ranks[i].device_id, t->ranks[i].ip);
    return NULL;
}

void ss_rank_table_free(ss_rank_table *t)
{
    free(t->ranks);
    free(t->json);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------ servable.json */

static ss_status *name_list(const cJSON *arr, const char *what, const char *key, char (*dst)[128],
                            int *n)
{
    *n = 0;
    if (!arr) return NULL;
    if (!cJSON_IsArray(arr))
        return ss_errf(SS_ERR_INVALID, "%s: '%s' must be a list of names", what, key);
    const cJSON *v;
    cJSON_ArrayForEach(v, arr)
    {
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= 128)
            return ss_errf(SS_ERR_INVALID, "%s: '%s' must hold non-empty names (< 128 chars)", what,
                           key);
        if (*n == SS_MAX_IO)
            return ss_errf(SS_ERR_LIMIT, "%s: '%s' has more than %d names", what, key, SS_MAX_IO);
        for (int i = 0; i < *n; i++)
            if (!strcmp(dst[i], v->valuestring))
                return ss_errf(SS_ERR_INVALID, "%s: '%s' lists '%s' twice", what, key,
                               v->valuestring);
        snprintf(dst[(*n)++], 128, "%s", v->valuestring);
    }
    return NULL;
}

static ss_status *int_field(const cJSON *o, const char *key, const char *what, int lo, int hi,
                            int dflt, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        if (dflt < lo) return ss_errf(SS_ERR_INVALID, "%s: '%s' is required", what, key);
        *out = dflt;
        return NULL;
    }
    /* range first: converting a double outside int's range (1e300) to int is undefined */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
        v->valuedouble != (double)(int)v->valuedouble)
        return ss_errf(SS_ERR_INVALID, "%s: '%s' must be an integer in %d..%d", what, key, lo, hi);
    *out = (int)v->valuedouble;
    return NULL;
}

/* Every method's inputs as "method 'm' has inputs x, b; ..." (cut short with "..." when long). */
static void method_inputs(const ss_servable_config *c, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = 0;
    for (int m = 0; m < c->n_methods; m++)
        for (int i = 0; i < c->methods[m].n_inputs; i++) {
            const char *sep = i ? ", " : m ? "; method '" : "method '";
            int w = snprintf(out + off, cap - off, "%s%s%s%s", sep, i ? "" : c->methods[m].name,
                             i ? "" : "' has inputs ", c->methods[m].inputs[i]);
            if (w < 0 || (size_t)w >= cap - off) {
                snprintf(out + cap - 4, 4, "...");
                return;
            }
            off += (size_t)w;
        }
}

/* MindSpore's without_batch_dim_inputs index the model's inputs, which are every method's inputs
 * here: a name no method declares is a typo that would silently leave that input batched. */
static ss_status *check_no_batch_names(const ss_servable_config *c, const char *what)
{
    for (int b = 0; b < c->n_no_batch && c->methods[0].n_inputs; b++) {
        const char *name = c->without_batch_dim_inputs[b];
        bool found = false;
        for (int m = 0; m < c->n_methods && !found; m++)
            for (int i = 0; i < c->methods[m].n_inputs && !found; i++)
                found = !strcmp(c->methods[m].inputs[i], name);
        if (found) continue;
        char inputs[1024];
        method_inputs(c, inputs, sizeof inputs);
        return ss_errf(SS_ERR_INVALID,
                       "%s: 'without_batch_dim_inputs' names '%s', which is not an input of any "
                       "method (%s)",
                       what, name, inputs);
    }
    return NULL;
}

/* A composed servable's worker serves one method: its model's subgraph, as the stages feed it
 * (no names: only Model.call reaches it, and the worker takes the model's own). */
static void model_method(ss_servable_config *c, size_t model)
{
    ss_method_config *mc = &c->methods[0];
    memset(mc, 0, sizeof *mc);
    c->n_methods = 1;
    snprintf(mc->name, sizeof mc->name, "%s",
             ss_pipeline_model_method(c->stages, model, NULL, NULL));
    const char *const *names;
    size_t n = ss_pipeline_model_names(c->stages, model, false, &names);
    for (size_t k = 0; k < n && k < SS_MAX_IO; k++)
        snprintf(mc->inputs[mc->n_inputs++], sizeof mc->inputs[0], "%s", names[k]);
    n = ss_pipeline_model_names(c->stages, model, true, &names);
    for (size_t k = 0; k < n && k < SS_MAX_IO; k++)
        snprintf(mc->outputs[mc->n_outputs++], sizeof mc->outputs[0], "%s", names[k]);
}

/* The inputs a generate method may take (a request's sampling parameters) and its outputs. */
static const char *const gen_inputs[] = {"prompt",
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
                                         "stop",
                                         NULL};
static const char *const gen_outputs[] = {"tokens", "finish_reason", "text", NULL};

static bool listed(const char *const *names, const char *n)
{
    for (; *names; names++)
        if (!strcmp(*names, n)) return true;
    return false;
}

static ss_status *gen_method(const ss_method_config *mc, const char *what)
{
    bool prompt = false, tokens = false;
    for (int i = 0; i < mc->n_inputs; i++) {
        if (!listed(gen_inputs, mc->inputs[i]))
            return ss_errf(SS_ERR_INVALID,
                           "%s: generate method '%s' has input '%s'; it takes prompt, max_tokens, "
                           "temperature, top_k, top_p, min_p, seed, repetition_penalty, "
                           "presence_penalty, frequency_penalty, stop_token_ids, stop",
                           what, mc->name, mc->inputs[i]);
        prompt = prompt || !strcmp(mc->inputs[i], "prompt");
    }
    for (int i = 0; i < mc->n_outputs; i++) {
        if (!listed(gen_outputs, mc->outputs[i]))
            return ss_errf(SS_ERR_INVALID,
                           "%s: generate method '%s' has output '%s'; it gives tokens, "
                           "finish_reason and text",
                           what, mc->name, mc->outputs[i]);
        tokens = tokens || !strcmp(mc->outputs[i], "tokens");
    }
    if (!prompt || !tokens)
        return ss_errf(SS_ERR_INVALID,
                       "%s: generate method '%s' needs input 'prompt' and output "
                       "'tokens'",
                       what, mc->name);
    return NULL;
}

/* "generate": {max_tokens, max_running, max_sequences, step_tokens, max_context, micro_batches,
 * kv_cache_mb, stop_token_ids}. */
static ss_status *gen_config(const cJSON *g, const char *what, ss_servable_config *c)
{
    ss_generate_config *gc = &c->gen;
    if (!cJSON_IsObject(g))
        return ss_errf(SS_ERR_INVALID, "%s: 'generate' must be an object", what);
    gc->enabled = true;
    ss_status *st = int_field(g, "max_tokens", what, 1, 1 << 20, 16, &gc->max_tokens);
    if (!st) st = int_field(g, "max_running", what, 1, 4096, 32, &gc->max_running);
    if (!st) st = int_field(g, "max_sequences", what, 1, 1 << 16, 256, &gc->max_sequences);
    if (!st) st = int_field(g, "step_tokens", what, 1, 1 << 20, 512, &gc->step_tokens);
    if (!st) st = int_field(g, "max_context", what, 0, 1 << 30, 0, &gc->max_context);
    if (!st) st = int_field(g, "micro_batches", what, 0, 8, 0, &gc->micro_batches);
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(g, "kv_cache_mb");
    if (!st && kv && (!cJSON_IsNumber(kv) || !(kv->valuedouble > 0 && kv->valuedouble <= 1 << 20)))
        st = ss_errf(SS_ERR_INVALID, "%s: 'kv_cache_mb' must be a number of MiB in (0, 1048576]",
                     what);
    if (!st && kv) gc->kv_cache_mb = kv->valuedouble;
    if (!st && gc->max_sequences < gc->max_running)
        st = ss_errf(SS_ERR_INVALID, "%s: 'max_sequences' %d is below 'max_running' %d", what,
                     gc->max_sequences, gc->max_running);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(g, "stop_token_ids"), *v;
    if (!st && ids && (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) > SS_GEN_MAX_STOP_IDS))
        st = ss_errf(SS_ERR_INVALID, "%s: 'stop_token_ids' must be a list of at most %d ids", what,
                     SS_GEN_MAX_STOP_IDS);
    if (!st && ids) cJSON_ArrayForEach(v, ids)
        {
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2147483647.0 ||
                v->valuedouble != (double)(int64_t)v->valuedouble)
                return ss_errf(SS_ERR_INVALID, "%s: 'stop_token_ids' holds a non-id", what);
            gc->stop_ids[gc->n_stop_ids++] = (int64_t)v->valuedouble;
        }
    for (int m = 0; !st && m < c->n_methods; m++)
        st = gen_method(&c->methods[m], what);
    if (!st && c->with_batch_dim)
        st = ss_errf(SS_ERR_INVALID,
                     "%s: a generative servable takes each request as it is: set "
                     "'with_batch_dim' to false",
                     what);
    return st;
}

/* "distributed" {rank_size, stage_size, with_batch_dim, ...} and "batching" of the servable, or
 * of one of its "models" (a local model, one with "files", may leave rank_size out: 1). */
static ss_status *read_group(const cJSON *o, const char *what, bool local, ss_servable_config *c)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "distributed");
    ss_status *st = NULL;
    if (!cJSON_IsObject(d) && (d || !local)) /* absent in a local model: every default */
        st = ss_errf(SS_ERR_INVALID, "%s: 'distributed' {rank_size, stage_size, ...} is required",
                     what);
    if (!st) st = int_field(d, "rank_size", what, 1, 4096, local ? 1 : -1, &c->rank_size);
    if (!st) st = int_field(d, "stage_size", what, 1, 4096, 1, &c->stage_size);
    if (!st && c->rank_size % c->stage_size)
        st = ss_errf(SS_ERR_INVALID, "%s: rank_size %d must be a multiple of stage_size %d", what,
                     c->rank_size, c->stage_size);
    if (!st) {
        const cJSON *wb = cJSON_GetObjectItemCaseSensitive(d, "with_batch_dim");
        if (wb && !cJSON_IsBool(wb))
            st = ss_errf(SS_ERR_INVALID, "%s: 'with_batch_dim' must be true or false", what);
        c->with_batch_dim = !wb || cJSON_IsTrue(wb);
        const cJSON *bi = cJSON_GetObjectItemCaseSensitive(d, "broadcast_inputs");
        if (!st && bi && !cJSON_IsBool(bi))
            st = ss_errf(SS_ERR_INVALID, "%s: 'broadcast_inputs' must be true or false", what);
        c->broadcast_inputs = !bi || cJSON_IsTrue(bi);
        const cJSON *pi = cJSON_GetObjectItemCaseSensitive(d, "enable_pipeline_infer");
        if (!st && pi && !cJSON_IsBool(pi))
            st = ss_errf(SS_ERR_INVALID, "%s: 'enable_pipeline_infer' must be true or false", what);
        c->pipeline = !pi || cJSON_IsTrue(pi);
    }
    if (!st)
        st = name_list(cJSON_GetObjectItemCaseSensitive(d, "without_batch_dim_inputs"), what,
                       "without_batch_dim_inputs", c->without_batch_dim_inputs, &c->n_no_batch);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "batching");
    if (!st && b && !cJSON_IsObject(b))
        st = ss_errf(SS_ERR_INVALID, "%s: 'batching' must be an object", what);
    if (!st && b) st = int_field(b, "max_batch_size", what, 0, 1 << 20, 0, &c->max_batch_size);
    if (!st && b)
        st = int_field(b, "max_queue_delay_us", what, 0, 10000000, 0, &c->max_queue_delay_us);
    return st;
}

static ss_status *read_methods(const cJSON *root, const char *what, ss_servable_config *c)
{
    const cJSON *methods = cJSON_GetObjectItemCaseSensitive(root, "methods");
    if (!cJSON_IsArray(methods) || cJSON_GetArraySize(methods) < 1)
        return ss_errf(SS_ERR_INVALID, "%s: 'methods' must list at least one method", what);
    const cJSON *m;
    cJSON_ArrayForEach(m, methods)
    {
        if (c->n_methods == 16) return ss_errf(SS_ERR_LIMIT, "%s: more than 16 methods", what);
        ss_method_config *mc = &c->methods[c->n_methods];
        const char *mn = str_field(m, "name");
        if (!mn || !mn[0] || strlen(mn) >= sizeof mc->name)
            return ss_errf(SS_ERR_INVALID, "%s: method %d needs a 'name'", what, c->n_methods);
        for (int i = 0; i < c->n_methods; i++)
            if (!strcmp(c->methods[i].name, mn))
                return ss_errf(SS_ERR_INVALID, "%s: method '%s' is declared twice", what, mn);
        snprintf(mc->name, sizeof mc->name, "%s", mn);
        ss_status *st = name_list(cJSON_GetObjectItemCaseSensitive(m, "inputs"), what, "inputs",
                                  mc->inputs, &mc->n_inputs);
        if (!st)
            st = name_list(cJSON_GetObjectItemCaseSensitive(m, "outputs"), what, "outputs",
                           mc->outputs, &mc->n_outputs);
        if (!st && (mc->n_inputs == 0 || mc->n_outputs == 0))
            st = ss_errf(SS_ERR_INVALID, "%s: method '%s' needs 'inputs' and 'outputs'", what, mn);
        if (st) return st;
        c->n_methods++;
    }
    return NULL;
}

/* The entry of "models" that backend `model` serves (the root when there is no list), and its
 * subgraph's file (a local model). */
static ss_status *model_entry(const cJSON *root, const char *what, ss_servable_config *c,
                              const cJSON **out)
{
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    size_t decl = 0;
    uint32_t subgraph = 0;
    if (c->stages) ss_pipeline_model_method(c->stages, (size_t)c->model, &decl, &subgraph);
    *out = models ? cJSON_GetArrayItem(models, (int)decl) : root;
    if (models && cJSON_GetObjectItemCaseSensitive(root, "batching"))
        return ss_errf(SS_ERR_INVALID,
                       "%s: with \"models\", \"batching\" goes in each model's entry (a top-level "
                       "one would be ignored)",
                       what);
    if (models) snprintf(c->model_name, sizeof c->model_name, "%s", str_field(*out, "name"));
    c->subgraph = subgraph;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(*out, "files");
    if (!files) return NULL;
    const cJSON *f = cJSON_IsArray(files) ? cJSON_GetArrayItem(files, (int)subgraph) : NULL;
    if (!cJSON_IsString(f) || !f->valuestring[0] ||
        strlen(f->valuestring) >= sizeof c->local_file || strstr(f->valuestring, ".."))
        return ss_errf(SS_ERR_INVALID,
                       "%s: model '%s': 'files' must list file names in the version folder", what,
                       c->model_name);
    snprintf(c->local_file, sizeof c->local_file, "%s", f->valuestring);
    return NULL;
}

ss_status *ss_servable_config_parse_model(const char *text, size_t len, const char *what,
                                          const char *name, int model, ss_servable_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->model_name, sizeof c->model_name, "%s", name);
    c->model = model;
    c->n_models = 1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ss_errf(SS_ERR_INVALID, "%s: not a JSON object (see README: servable.json)", what);
    }
    ss_status *st = read_methods(root, what, c);
    if (!st) st = ss_pipeline_parse(text, len, what, name, &c->stages);
    if (!st && c->stages) c->n_models = (int)ss_pipeline_model_count(c->stages);
    if (!st && (model < 0 || model >= c->n_models))
        st = ss_errf(SS_ERR_INVALID, "%s: no model %d", what, model);
    const cJSON *group = root;
    if (!st) st = model_entry(root, what, c, &group);
    if (!st) st = read_group(group, what, cJSON_GetObjectItemCaseSensitive(group, "files"), c);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "generate");
    if (!st && g) st = gen_config(g, what, c);
    cJSON_Delete(root);
    if (!st && c->gen.enabled && c->stages)
        st = ss_errf(SS_ERR_INVALID, "%s: a generative servable's methods have no stages", what);
    if (!st && c->stages) model_method(c, (size_t)model);
    if (!st) st = check_no_batch_names(c, what);
    if (!st && model > 0) ss_pipeline_free(c->stages), c->stages = NULL; /* model 0's worker's */
    if (st) ss_servable_config_clear(c);
    return st;
}

ss_status *ss_servable_config_parse(const char *text, size_t len, const char *what,
                                    const char *name, ss_servable_config *c)
{
    return ss_servable_config_parse_model(text, len, what, name, 0, c);
}

void ss_servable_config_clear(ss_servable_config *c)
{
    ss_pipeline_free(c->stages);
    c->stages = NULL;
}

ss_status *ss_servable_config_text(const char *servable_dir, const char *name, char **text,
                                   size_t *len, char *path, size_t path_cap)
{
    *text = NULL;
    if (!name[0] || strchr(name, '/') || !strcmp(name, "..") || !strcmp(name, "."))
        return ss_errf(SS_ERR_INVALID, "servable name '%s' must be a plain folder name", name);
    snprintf(path, path_cap, "%s/%s/servable.json", servable_dir, name);
    if (access(path, F_OK) != 0) { /* MindSpore's servable_config.py, through the shim */
        snprintf(path, path_cap, "%s/%s/servable_config.py", servable_dir, name);
        if (access(path, F_OK) == 0) {
            ss_status *st = ss_pyconfig_export(servable_dir, name, text, len);
            if (!st) SS_INFO("servable %s: declared by %s", name, path);
            return st;
        }
        snprintf(path, path_cap, "%s/%s/servable.json", servable_dir, name);
    }
    void *buf;
    ss_status *st = ss_read_file(path, &buf, len);
    if (st) return ss_status_wrap(st, "servable '%s'", name);
    *text = buf;
    return NULL;
}

ss_status *ss_servable_config_load(const char *servable_dir, const char *name,
                                   ss_servable_config *out)
{
    char path[4096], *text;
    size_t len;
    ss_status *st = ss_servable_config_text(servable_dir, name, &text, &len, path, sizeof path);
    if (st) return st;
    st = ss_servable_config_parse(text, len, path, name, out);
    free(text);
    return st;
}
