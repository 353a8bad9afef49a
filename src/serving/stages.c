/*
 * stages: servable.json's stage pipelines, parsed and checked (names resolved to value slots) and
 * their C-function plugins loaded. Parsing loads nothing, so fuzzers and `shardserve` tools can
 * read any file; ss_pipeline_load_plugins dlopens, checks the ABI and calls init when the servable
 * starts. Every error names the file, the method, the stage (1-based, as MindSpore counts) and the
 * offending value; the model-count errors keep MindSpore's texts.
 */
#include "pipeline.h"
#include "pyrunner.h"

#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STAGES 64
#define MAX_NAMES 64

typedef struct {
    const char *what;
    const char *method;
    size_t stage; /* 1-based; 0 = the method itself */
} where;

static ss_status *bad(const where *at, const char *fmt, const char *a, const char *b)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a ? a : "", b ? b : "");
    if (at->stage)
        return ss_errf(SS_ERR_INVALID, "%s: method '%s' stage %zu: %s", at->what, at->method,
                       at->stage, msg);
    return ss_errf(SS_ERR_INVALID, "%s: method '%s': %s", at->what, at->method, msg);
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

/* A JSON list of non-empty names (< 128 chars) into a malloc'd array. */
static ss_status *names_read(const cJSON *arr, const where *at, const char *key, char ***out,
                             size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!arr) return NULL;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) > MAX_NAMES)
        return bad(at, "'%s' must be a list of at most 64 names", key, NULL);
    *out = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof **out);
    if (!*out) return ss_errf(SS_ERR_NOMEM, "out of memory");
    const cJSON *v;
    cJSON_ArrayForEach(v, arr)
    {
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= 128)
            return bad(at, "'%s' must hold non-empty names (< 128 chars)", key, NULL);
        if (!((*out)[(*n)++] = strdup(v->valuestring)))
            return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    return NULL;
}

/* The slot a reference names: a method input or an earlier stage's output. */
static bool slot_of(const ss_pipe_method *m, size_t n_stages, const char *name, size_t *slot)
{
    for (size_t i = 0; i < m->n_inputs; i++)
        if (!strcmp(m->inputs[i], name)) return (*slot = i), true;
    for (size_t s = 0; s < n_stages; s++)
        for (size_t k = 0; k < m->stages[s].n_outputs; k++)
            if (!strcmp(m->stages[s].out_names[k], name))
                return (*slot = m->stages[s].out_base + k), true;
    return false;
}

static ss_status *resolve_inputs(ss_pipe_method *m, size_t s, const where *at)
{
    ss_pipe_stage *st = &m->stages[s];
    st->in_slots = calloc(st->n_inputs + 1, sizeof *st->in_slots);
    if (!st->in_slots) return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < st->n_inputs; k++)
        if (!slot_of(m, s, st->in_names[k], &st->in_slots[k]))
            return bad(at,
                       "input '%s' is neither an input of the method nor an output of an "
                       "earlier stage",
                       st->in_names[k], NULL);
    return NULL;
}

/* Output names are new: not a method input, not an earlier output, not twice in this stage. */
static ss_status *place_outputs(ss_pipe_method *m, size_t s, const where *at)
{
    ss_pipe_stage *st = &m->stages[s];
    st->out_base = s ? m->stages[s - 1].out_base + m->stages[s - 1].n_outputs : m->n_inputs;
    for (size_t k = 0; k < st->n_outputs; k++) {
        size_t slot;
        bool twice = false;
        for (size_t j = 0; j < k; j++)
            twice = twice || !strcmp(st->out_names[j], st->out_names[k]);
        if (twice || slot_of(m, s, st->out_names[k], &slot))
            return bad(at, "output '%s' is already defined in this method (names are unique)",
                       st->out_names[k], NULL);
    }
    m->n_values = st->out_base + st->n_outputs;
    return NULL;
}

static ss_status *stage_strdup(char **dst, const char *src)
{
    *dst = strdup(src);
    return *dst ? NULL : ss_errf(SS_ERR_NOMEM, "out of memory");
}

/* A file named in the servable's config, relative to that config's folder. */
static void beside(const char *config_path, const char *name, char *path, size_t cap)
{
    const char *slash = strrchr(config_path, '/');
    int dir_len = slash && name[0] != '/' ? (int)(slash - config_path) : 0;
    snprintf(path, cap, "%.*s%s%s", dir_len, config_path, dir_len ? "/" : "", name);
}

static ss_status *default_tag(ss_pipe_stage *st, const char *servable)
{
    if (st->tag) return NULL;
    char tag[512];
    snprintf(tag, sizeof tag, "Function '%s.%s'", servable, st->symbol);
    return stage_strdup(&st->tag, tag);
}

/* "library", "symbol", "config" of a c_function stage; the library relative to servable.json. */
static ss_status *read_c_function(ss_pipe_stage *st, const cJSON *j, const where *at,
                                  const char *servable)
{
    const cJSON *lib = cJSON_GetObjectItemCaseSensitive(j, "library");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(j, "symbol");
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(j, "config");
    if (!cJSON_IsString(lib) || !lib->valuestring[0] || strlen(lib->valuestring) > 2048)
        return bad(at, "a c_function stage needs 'library' (a shared library path)", NULL, NULL);
    if (sym && (!cJSON_IsString(sym) || !sym->valuestring[0] || strlen(sym->valuestring) > 255))
        return bad(at, "'symbol' must be a non-empty name", NULL, NULL);
    char path[4096];
    beside(at->what, lib->valuestring, path, sizeof path);
    ss_status *e = stage_strdup(&st->library, path);
    if (!e) e = stage_strdup(&st->symbol, sym ? sym->valuestring : SS_PLUGIN_DEFAULT_SYMBOL);
    if (e) return e;
    st->config_json = cfg ? cJSON_PrintUnformatted(cfg) : strdup("{}");
    if (!st->config_json) return ss_errf(SS_ERR_NOMEM, "out of memory");
    return default_tag(st, servable);
}

/* "module" (a .py file, relative to the config), "function" and MindSpore's "batch_size" (absent:
 * per instance) of a python_function stage. */
static ss_status *read_python_function(ss_pipe_stage *st, const cJSON *j, const where *at,
                                       const char *servable)
{
    const cJSON *mod = cJSON_GetObjectItemCaseSensitive(j, "module");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(j, "function");
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(j, "batch_size");
    if (!cJSON_IsString(mod) || !mod->valuestring[0] || strlen(mod->valuestring) > 2048)
        return bad(at, "a python_function stage needs 'module' (a .py file)", NULL, NULL);
    if (!cJSON_IsString(fn) || !fn->valuestring[0] || strlen(fn->valuestring) > 255)
        return bad(at, "a python_function stage needs 'function' (a name)", NULL, NULL);
    st->batch_size = -1;
    if (bs && !cJSON_IsNull(bs)) {
        if (!cJSON_IsNumber(bs) || bs->valuedouble != (double)(int)bs->valuedouble ||
            bs->valuedouble > 1e6)
            return bad(at, "Parameter 'batch_size' should be int, at most 1000000", NULL, NULL);
        if (bs->valuedouble < 0)
            return bad(at, "Parameter 'batch_size' should be >= 0", NULL, NULL);
        st->batch_size = (int)bs->valuedouble;
    }
    char path[4096];
    beside(at->what, mod->valuestring, path, sizeof path);
    ss_status *e = stage_strdup(&st->module, path);
    if (!e) e = stage_strdup(&st->symbol, fn->valuestring);
    return e ? e : default_tag(st, servable);
}

/* The backend a model stage names: the declared model's subgraph 0. */
static ss_status *find_stage_model(ss_pipeline *p, const cJSON *j, const where *at, size_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "model");
    const char *name = cJSON_IsString(v) ? v->valuestring : NULL;
    for (size_t k = 0; name && k < p->n_models; k++)
        if (!strcmp(p->models[k].key, name) && p->models[k].subgraph == 0) return (*out = k), NULL;
    char declared[1024] = "";
    for (size_t k = 0, off = 0; k < p->n_models && off < sizeof declared; k++)
        if (p->models[k].subgraph == 0)
            off += (size_t)snprintf(declared + off, sizeof declared - off, "%s'%s'",
                                    off ? ", " : "", p->models[k].key);
    return bad(at, "'model' must name a model the servable declares, got '%s' (declared: %s)",
               name ? name : "(missing)", declared);
}

/* The model's counts are the same in every stage that runs it (MindSpore's texts). */
static ss_status *read_model(ss_pipeline *p, ss_pipe_stage *st, const cJSON *j, const where *at)
{
    ss_status *e = find_stage_model(p, j, at, &st->model);
    if (e) return e;
    ss_pipe_model *md = &p->models[st->model];
    if (!st->n_inputs || !st->n_outputs)
        return bad(at, "a model stage needs 'inputs' and 'outputs'", NULL, NULL);
    for (size_t k = 0; k < st->n_inputs; k++)
        for (size_t i = 0; i < k; i++)
            if (!strcmp(st->in_names[i], st->in_names[k]))
                return bad(at, "a model stage takes '%s' twice (not supported)", st->in_names[k],
                           NULL);
    if (!st->tag) {
        char tag[512];
        snprintf(tag, sizeof tag, "Model '%s'", md->key);
        if ((e = stage_strdup(&st->tag, tag))) return e;
    }
    if (!md->inputs) { /* the first model stage names the internal method's values */
        md->n_inputs = st->n_inputs;
        md->n_outputs = st->n_outputs;
        md->inputs = st->in_names;
        md->outputs = st->out_names;
        return NULL;
    }
    if (st->n_inputs != md->n_inputs || st->n_outputs != md->n_outputs)
        return ss_errf(SS_ERR_INVALID,
                       "%s: method '%s' stage %zu: RegisterInputOutputInfo failed, %s count %zu "
                       "not match old count %zu, model: %s",
                       at->what, at->method, at->stage,
                       st->n_inputs != md->n_inputs ? "inputs" : "outputs",
                       st->n_inputs != md->n_inputs ? st->n_inputs : st->n_outputs,
                       st->n_inputs != md->n_inputs ? md->n_inputs : md->n_outputs, md->key);
    return NULL;
}

static ss_status *read_stage(ss_pipeline *p, ss_pipe_method *m, size_t s, const cJSON *j,
                             const where *at)
{
    ss_pipe_stage *st = &m->stages[s];
    if (!cJSON_IsObject(j)) return bad(at, "a stage must be an object", NULL, NULL);
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    const cJSON *tag = cJSON_GetObjectItemCaseSensitive(j, "tag");
    const char *k = cJSON_IsString(kind) ? kind->valuestring : "(missing)";
    if (strcmp(k, "model") && strcmp(k, "c_function") && strcmp(k, "python_function"))
        return bad(at, "'kind' must be \"model\", \"c_function\" or \"python_function\", got '%s'",
                   k, NULL);
    st->kind = !strcmp(k, "model")        ? SS_STAGE_MODEL
               : !strcmp(k, "c_function") ? SS_STAGE_C_FUNCTION
                                          : SS_STAGE_PYTHON;
    if (tag && (!cJSON_IsString(tag) || !tag->valuestring[0]))
        return bad(at, "'tag' must be a non-empty string", NULL, NULL);
    ss_status *e = tag ? stage_strdup(&st->tag, tag->valuestring) : NULL;
    if (!e)
        e = names_read(cJSON_GetObjectItemCaseSensitive(j, "inputs"), at, "inputs", &st->in_names,
                       &st->n_inputs);
    if (!e)
        e = names_read(cJSON_GetObjectItemCaseSensitive(j, "outputs"), at, "outputs",
                       &st->out_names, &st->n_outputs);
    if (!e && !st->n_outputs) e = bad(at, "a stage needs 'outputs'", NULL, NULL);
    if (!e) e = resolve_inputs(m, s, at);
    if (!e) e = place_outputs(m, s, at);
    if (e) return e;
    if (st->kind == SS_STAGE_PYTHON) return read_python_function(st, j, at, p->servable);
    return st->kind == SS_STAGE_MODEL ? read_model(p, st, j, at)
                                      : read_c_function(st, j, at, p->servable);
}

/* A method without "stages" in a composed servable is one model stage over its own names. */
static ss_status *plain_method_stage(ss_pipeline *p, ss_pipe_method *m, const where *at)
{
    cJSON *j = cJSON_CreateObject(),
          *ins = cJSON_CreateStringArray((const char **)m->inputs, (int)m->n_inputs);
    cJSON *outs = cJSON_CreateStringArray((const char **)m->outputs, (int)m->n_outputs);
    if (!j || !ins || !outs || !cJSON_AddStringToObject(j, "kind", "model") ||
        !cJSON_AddStringToObject(j, "model", p->models[0].key)) {
        cJSON_Delete(j);
        cJSON_Delete(ins);
        cJSON_Delete(outs);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(j, "inputs", ins);
    cJSON_AddItemToObject(j, "outputs", outs);
    ss_status *e = read_stage(p, m, 0, j, &(where){at->what, m->name, 1});
    cJSON_Delete(j);
    return e;
}

static ss_status *read_returns(ss_pipe_method *m, const cJSON *j, const where *at)
{
    const cJSON *ret = cJSON_GetObjectItemCaseSensitive(j, "returns");
    char **names = m->outputs;
    size_t n = m->n_outputs;
    ss_status *e = ret ? names_read(ret, at, "returns", &names, &n) : NULL;
    if (!e && n != m->n_outputs) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%zu", n);
        snprintf(b, sizeof b, "%zu", m->n_outputs);
        e = bad(at, "Method return output size %s not match registered %s", a, b);
    }
    if (!e && !(m->returns = calloc(n + 1, sizeof *m->returns)))
        e = ss_errf(SS_ERR_NOMEM, "out of memory");
    for (size_t k = 0; !e && k < n; k++)
        if (!slot_of(m, m->n_stages, names[k], &m->returns[k]))
            e = bad(at, "returns '%s', which is neither a method input nor a stage output",
                    names[k], NULL);
    if (names != m->outputs) names_free(names, n);
    return e;
}

static ss_status *read_method(ss_pipeline *p, ss_pipe_method *m, const cJSON *j, const char *what)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (!cJSON_IsString(name)) return ss_errf(SS_ERR_INVALID, "%s: a method needs a 'name'", what);
    if (!(m->name = strdup(name->valuestring))) return ss_errf(SS_ERR_NOMEM, "out of memory");
    where at = {what, m->name, 0};
    ss_status *e = names_read(cJSON_GetObjectItemCaseSensitive(j, "inputs"), &at, "inputs",
                              &m->inputs, &m->n_inputs);
    if (!e)
        e = names_read(cJSON_GetObjectItemCaseSensitive(j, "outputs"), &at, "outputs", &m->outputs,
                       &m->n_outputs);
    if (e) return e;
    m->n_values = m->n_inputs;
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(j, "stages");
    int n = cJSON_GetArraySize(stages);
    /* an empty list is a method that returns its inputs (MindSpore allows it) */
    if (stages && (!cJSON_IsArray(stages) || n > MAX_STAGES))
        return bad(&at, "'stages' must be a list of at most 64 stages", NULL, NULL);
    m->stages = calloc(n > 0 ? (size_t)n : 1, sizeof *m->stages);
    if (!m->stages) return ss_errf(SS_ERR_NOMEM, "out of memory");
    if (!stages) {
        m->n_stages = 1;
        e = plain_method_stage(p, m, &at);
        return e ? e : read_returns(m, j, &at);
    }
    const cJSON *s;
    cJSON_ArrayForEach(s, stages)
    {
        where st_at = {what, m->name, m->n_stages + 1};
        m->n_stages++;
        if ((e = read_stage(p, m, m->n_stages - 1, s, &st_at))) return e;
    }
    return read_returns(m, j, &at);
}

static bool any_stages(const cJSON *methods)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, methods) if (cJSON_GetObjectItemCaseSensitive(m, "stages")) return true;
    return false;
}

static ss_status *read_methods(ss_pipeline *p, const cJSON *methods, const char *what)
{
    p->methods = calloc((size_t)cJSON_GetArraySize(methods) + 1, sizeof *p->methods);
    if (!p->methods) return ss_errf(SS_ERR_NOMEM, "out of memory");
    const cJSON *m;
    cJSON_ArrayForEach(m, methods)
    {
        ss_status *e = read_method(p, &p->methods[p->n_methods++], m, what);
        if (e) return e;
    }
    bool any = false;
    for (size_t k = 0; k < p->n_models; k++)
        any = any || p->models[k].inputs;
    if (!any)
        return ss_errf(SS_ERR_INVALID,
                       "%s: no method runs the model '%s'; a servable needs at least one model "
                       "stage",
                       what, p->models[0].key);
    return NULL;
}

static ss_status *add_model(ss_pipeline *p, const char *key, size_t decl, uint32_t subgraph,
                            const char *what)
{
    if (p->n_models == SS_PIPE_MAX_MODELS)
        return ss_errf(SS_ERR_LIMIT, "%s: more than %d models and subgraphs together", what,
                       SS_PIPE_MAX_MODELS);
    ss_pipe_model *m = &p->models[p->n_models++];
    char internal[160];
    snprintf(internal, sizeof internal, "@call_%s_%u", key, subgraph);
    m->decl = decl;
    m->subgraph = subgraph;
    ss_status *e = stage_strdup(&m->key, key);
    return e ? e : stage_strdup(&m->method, internal);
}

/* A model's subgraphs: one per file ("files"), one when it has none (a distributed model). */
static ss_status *add_subgraphs(ss_pipeline *p, const cJSON *m, const char *key, size_t decl,
                                const char *what)
{
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(m, "files");
    int n_sub =
        cJSON_IsArray(files) && cJSON_GetArraySize(files) > 0 ? cJSON_GetArraySize(files) : 1;
    ss_status *e = NULL;
    for (int sub = 0; !e && sub < n_sub; sub++)
        e = add_model(p, key, decl, (uint32_t)sub, what);
    return e;
}

/* "models": [{"name", "files": [one per subgraph]}, ...]; absent: one model, named after the
 * servable, its "files" those of the root (the rest of each entry is the worker's, config.c). */
static ss_status *read_models(ss_pipeline *p, const cJSON *root, const char *what)
{
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models"), *m;
    if (!models) return add_subgraphs(p, root, p->servable, 0, what);
    if (!cJSON_IsArray(models) || !cJSON_GetArraySize(models))
        return ss_errf(SS_ERR_INVALID, "%s: 'models' must be a non-empty list of models", what);
    size_t decl = 0;
    cJSON_ArrayForEach(m, models)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        const cJSON *files = cJSON_GetObjectItemCaseSensitive(m, "files");
        if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > 100)
            return ss_errf(SS_ERR_INVALID, "%s: model %zu needs a 'name' (1 to 100 chars)", what,
                           decl);
        for (size_t k = 0; k < p->n_models; k++)
            if (!strcmp(p->models[k].key, name->valuestring))
                return ss_errf(SS_ERR_INVALID, "%s: model '%s' is declared twice", what,
                               name->valuestring);
        if (files && !cJSON_IsArray(files))
            return ss_errf(SS_ERR_INVALID, "%s: model '%s': 'files' must be a list", what,
                           name->valuestring);
        ss_status *e = add_subgraphs(p, m, name->valuestring, decl++, what);
        if (e) return e;
    }
    return NULL;
}

ss_status *ss_pipeline_parse(const char *text, size_t len, const char *what, const char *servable,
                             ss_pipeline **out)
{
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *methods = cJSON_GetObjectItemCaseSensitive(root, "methods");
    bool models = cJSON_GetObjectItemCaseSensitive(root, "models") ||
                  cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "files")) > 1;
    if (!cJSON_IsArray(methods) || !(models || any_stages(methods))) { /* the config says why */
        cJSON_Delete(root);
        return NULL;
    }
    ss_pipeline *p = calloc(1, sizeof *p);
    ss_status *e = p ? NULL : ss_errf(SS_ERR_NOMEM, "out of memory");
    if (!e) e = stage_strdup(&p->servable, servable);
    if (!e) e = read_models(p, root, what);
    if (!e) e = read_methods(p, methods, what);
    cJSON_Delete(root);
    if (e) {
        ss_pipeline_free(p);
        return e;
    }
    *out = p;
    return NULL;
}

size_t ss_pipeline_model_count(const ss_pipeline *p)
{
    return p->n_models;
}

const char *ss_pipeline_model_method(const ss_pipeline *p, size_t model, size_t *decl,
                                     uint32_t *subgraph)
{
    if (decl) *decl = p->models[model].decl;
    if (subgraph) *subgraph = p->models[model].subgraph;
    return p->models[model].method;
}

size_t ss_pipeline_model_names(const ss_pipeline *p, size_t model, bool outputs,
                               const char *const **names)
{
    const ss_pipe_model *m = &p->models[model];
    *names = (const char *const *)(outputs ? m->outputs : m->inputs);
    return outputs ? m->n_outputs : m->n_inputs;
}

size_t ss_pipeline_find_model(const ss_pipeline *p, size_t decl, uint32_t subgraph)
{
    for (size_t k = 0; k < p->n_models; k++)
        if (p->models[k].decl == decl && p->models[k].subgraph == subgraph) return k;
    return SIZE_MAX;
}

/* ------------------------------------------------------------------ plugins */

static ss_status *load_plugin(ss_pipe_stage *st, const where *at)
{
    dlerror();
    if (!(st->dl = dlopen(st->library, RTLD_NOW | RTLD_LOCAL)))
        return bad(at, "cannot load the C function library: %s", dlerror(), NULL);
    ss_plugin_entry_fn entry = (ss_plugin_entry_fn)(uintptr_t)dlsym(st->dl, st->symbol);
    if (!entry)
        return bad(at,
                   "library '%s' has no symbol '%s' (a plugin exports a function returning "
                   "its ss_plugin_descriptor)",
                   st->library, st->symbol);
    const ss_plugin_descriptor *d = entry();
    if (!d || d->abi_version != SS_PLUGIN_ABI_VERSION ||
        d->struct_size < sizeof(ss_plugin_descriptor) || !d->init || !d->run) {
        char got[160];
        snprintf(got, sizeof got, "plugin '%s' was built for ABI version %u, this server speaks %u",
                 st->symbol, d ? d->abi_version : 0, SS_PLUGIN_ABI_VERSION);
        return bad(at, "%s (or its descriptor is incomplete)", got, NULL);
    }
    char err[1024] = "";
    st->state =
        d->init(st->config_json, (uint32_t)st->n_inputs, (const char *const *)st->in_names,
                (uint32_t)st->n_outputs, (const char *const *)st->out_names, err, sizeof err);
    if (!st->state) {
        err[sizeof err - 1] = 0;
        return bad(at, "plugin '%s' init failed: %s", st->symbol, err[0] ? err : "(no reason)");
    }
    st->desc = d;
    st->serial = !(d->flags & SS_PLUGIN_THREAD_SAFE);
    st->here = (d->flags & SS_PLUGIN_INLINE) != 0;
    pthread_mutex_init(&st->run_mu, NULL);
    st->mu_ready = true;
    return NULL;
}

/* Every python_function stage of the servable as the runner pool sees it (NULL: none). */
static ss_status *python_specs(ss_pipeline *p, ss_pystage_spec **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t total = 0;
    for (size_t m = 0; m < p->n_methods; m++)
        for (size_t s = 0; s < p->methods[m].n_stages; s++)
            total += p->methods[m].stages[s].kind == SS_STAGE_PYTHON;
    if (!total) return NULL;
    ss_pystage_spec *specs = calloc(total, sizeof *specs);
    char **keys = calloc(total, sizeof *keys);
    for (size_t m = 0; specs && keys && m < p->n_methods; m++)
        for (size_t s = 0; s < p->methods[m].n_stages; s++) {
            ss_pipe_stage *st = &p->methods[m].stages[s];
            if (st->kind != SS_STAGE_PYTHON) continue;
            size_t len = strlen(p->servable) + strlen(st->symbol) + 2;
            if (!(keys[*n] = malloc(len))) break;
            snprintf(keys[*n], len, "%s.%s", p->servable, st->symbol);
            specs[*n] =
                (ss_pystage_spec){st->module,     st->symbol,   keys[*n],     p->methods[m].name,
                                  st->batch_size, st->n_inputs, st->n_outputs};
            (*n)++;
        }
    if (!specs || !keys || *n != total) {
        for (size_t i = 0; keys && i < *n; i++)
            free(keys[i]);
        free(keys);
        free(specs);
        *n = 0;
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    free(keys); /* the specs keep the strings: load_python frees them */
    *out = specs;
    return NULL;
}

/* Start the runner pool and bind each python_function stage to it, in python_specs' order. */
static ss_status *load_python(ss_pipeline *p)
{
    ss_pystage_spec *specs;
    size_t n;
    ss_status *e = python_specs(p, &specs, &n);
    if (e || !n) return e;
    long runners = getenv("SHARDSERVE_PY_RUNNERS") ? atol(getenv("SHARDSERVE_PY_RUNNERS")) : 2;
    e = ss_pypool_start(p->servable, specs, n,
                        runners < 1   ? 1
                        : runners > 8 ? 8
                                      : (size_t)runners,
                        &p->py);
    for (size_t i = 0; i < n; i++)
        free((char *)specs[i].key);
    free(specs);
    if (e) return ss_status_wrap(e, "servable '%s': Python stages", p->servable);
    uint32_t k = 0;
    for (size_t m = 0; m < p->n_methods; m++)
        for (size_t s = 0; s < p->methods[m].n_stages; s++) {
            ss_pipe_stage *st = &p->methods[m].stages[s];
            if (st->kind != SS_STAGE_PYTHON) continue;
            st->state = ss_pypool_stage_state(p->py, k++);
        }
    return NULL;
}

ss_status *ss_pipeline_load_plugins(ss_pipeline *p)
{
    for (size_t m = 0; m < p->n_methods; m++)
        for (size_t s = 0; s < p->methods[m].n_stages; s++) {
            ss_pipe_stage *st = &p->methods[m].stages[s];
            if (st->kind != SS_STAGE_C_FUNCTION) continue;
            ss_status *e = load_plugin(st, &(where){"servable.json", p->methods[m].name, s + 1});
            if (e) return e;
        }
    return load_python(p);
}

static void stage_clear(ss_pipe_stage *st, bool plugins_only)
{
    if (st->state && st->desc && st->desc->fini) st->desc->fini(st->state);
    if (st->dl) dlclose(st->dl);
    if (st->mu_ready) pthread_mutex_destroy(&st->run_mu);
    st->state = st->dl = NULL;
    st->mu_ready = false;
    if (plugins_only) return;
    free(st->tag);
    free(st->in_slots);
    free(st->library);
    free(st->symbol);
    free(st->config_json);
    free(st->module);
    names_free(st->in_names, st->n_inputs);
    names_free(st->out_names, st->n_outputs);
}

void ss_pipeline_unload_plugins(ss_pipeline *p)
{
    for (size_t m = 0; p && m < p->n_methods; m++)
        for (size_t s = 0; s < p->methods[m].n_stages; s++)
            stage_clear(&p->methods[m].stages[s], true);
    if (p) ss_pypool_free(p->py), p->py = NULL;
}

void ss_pipeline_free(ss_pipeline *p)
{
    if (!p) return;
    ss_pipeline_stop(p);
    for (size_t m = 0; m < p->n_methods; m++) {
        ss_pipe_method *pm = &p->methods[m];
        for (size_t s = 0; pm->stages && s < pm->n_stages; s++)
            stage_clear(&pm->stages[s], false);
        free(pm->stages);
        free(pm->returns);
        free(pm->name);
        names_free(pm->inputs, pm->n_inputs);
        names_free(pm->outputs, pm->n_outputs);
    }
    ss_pypool_free(p->py);
    for (size_t k = 0; k < p->n_models; k++)
        free(p->models[k].key), free(p->models[k].method);
    free(p->methods);
    free(p->servable);
    free(p);
}
