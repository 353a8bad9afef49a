/*
 * One rank: group config + communicator + session. The collectives table handed to the runtime
 * maps group names to the communicator's groups; peers are world ranks throughout.
 */
#include "shardserve/agent.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ss_rank {
    ss_rank_config cfg;
    ss_comm *comm;
    ss_session *session;
    ss_collectives coll;
};

static ss_status *cfg_int(const cJSON *root, const char *key, const char *path, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6 ||
        v->valuedouble != (int)v->valuedouble)
        return ss_errf(SS_ERR_INVALID, "%s: '%s' must be a non-negative integer", path, key);
    *out = (int)v->valuedouble;
    return NULL;
}

static ss_status *parse_groups(const cJSON *groups, const char *path, ss_rank_config *c)
{
    if (!cJSON_IsObject(groups))
        return ss_errf(SS_ERR_INVALID, "%s: 'groups' must be an object", path);
    const cJSON *g;
    cJSON_ArrayForEach(g, groups)
    {
        if (c->n_groups == SS_MAX_GROUPS)
            return ss_errf(SS_ERR_LIMIT, "%s: more than %d groups", path, SS_MAX_GROUPS);
        int n = cJSON_GetArraySize(g);
        if (!cJSON_IsArray(g) || n < 1 || n > c->rank_size ||
            strlen(g->string) >= sizeof c->group_names[0])
            return ss_errf(SS_ERR_INVALID, "%s: group '%s' must list 1..%d ranks", path, g->string,
                           c->rank_size);
        int i = c->n_groups;
        snprintf(c->group_names[i], sizeof c->group_names[i], "%s", g->string);
        c->group_ranks[i] = calloc((size_t)n, sizeof(int));
        if (!c->group_ranks[i]) return ss_errf(SS_ERR_NOMEM, "out of memory");
        c->group_sizes[i] = n;
        c->n_groups++;
        int k = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, g)
        {
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= c->rank_size)
                return ss_errf(SS_ERR_INVALID, "%s: group '%s' has a rank outside 0..%d", path,
                               g->string, c->rank_size - 1);
            c->group_ranks[i][k++] = (int)v->valuedouble;
        }
    }
    return NULL;
}

ss_status *ss_rank_config_load(const char *path, ss_rank_config *c)
{
    memset(c, 0, sizeof *c);
    void *buf;
    size_t len;
    ss_status *st = ss_read_file(path, &buf, &len);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ss_errf(SS_ERR_INVALID,
                       "%s: not a JSON object (a group config written by 'shardserve shard')",
                       path);
    }
    st = cfg_int(root, "rank", path, &c->rank);
    if (!st) st = cfg_int(root, "rank_size", path, &c->rank_size);
    if (!st) st = cfg_int(root, "stage", path, &c->stage);
    if (!st) st = cfg_int(root, "stage_size", path, &c->stage_size);
    if (!st) st = cfg_int(root, "position", path, &c->position);
    if (!st) st = cfg_int(root, "ranks_per_stage", path, &c->ranks_per_stage);
    if (!st && (c->rank >= c->rank_size || c->stage >= c->stage_size ||
                c->stage_size * c->ranks_per_stage != c->rank_size))
        st = ss_errf(SS_ERR_INVALID,
                     "%s: rank %d, rank_size %d, stage %d of %d, %d per stage do not fit together",
                     path, c->rank, c->rank_size, c->stage, c->stage_size, c->ranks_per_stage);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!st && (!cJSON_IsString(model) || strlen(model->valuestring) >= sizeof c->model ||
                strchr(model->valuestring, '/')))
        st =
            ss_errf(SS_ERR_INVALID, "%s: 'model' must be a file name in the config's folder", path);
    if (!st) snprintf(c->model, sizeof c->model, "%s", model->valuestring);
    if (!st) st = parse_groups(cJSON_GetObjectItemCaseSensitive(root, "groups"), path, c);
    const cJSON *weights = cJSON_GetObjectItemCaseSensitive(root, "weights");
    if (!st && weights &&
        !(cJSON_IsString(weights) && ss_weights_parse(weights->valuestring, &c->weights)))
        st = ss_errf(SS_ERR_INVALID, "%s: 'weights' must be \"f32\", \"bf16\" or \"int8\"", path);
    cJSON_Delete(root);
    if (!st) {
        snprintf(c->dir, sizeof c->dir, "%s", path);
        char *slash = strrchr(c->dir, '/');
        if (slash)
            *slash = 0;
        else
            snprintf(c->dir, sizeof c->dir, ".");
    }
    if (st) ss_rank_config_free(c);
    return st;
}

void ss_rank_config_free(ss_rank_config *c)
{
    for (int i = 0; i < c->n_groups; i++)
        free(c->group_ranks[i]);
    c->n_groups = 0;
}

/* ------------------------------------------------------------------ collectives over ss_comm */

static const ss_comm_group *group_of(void *ctx, const char *name)
{
    return ss_comm_group_find(((ss_rank *)ctx)->comm, name);
}

static int coll_group_size(void *ctx, const char *name)
{
    const ss_comm_group *g = group_of(ctx, name);
    return g ? ss_comm_group_size(g) : -1;
}

static int coll_group_rank(void *ctx, const char *name)
{
    const ss_comm_group *g = group_of(ctx, name);
    return g ? ss_comm_group_rank(g) : -1;
}

static ss_status *coll_allreduce(void *ctx, const char *group, void *buf, ss_dtype dt, size_t count)
{
    return ss_comm_allreduce(((ss_rank *)ctx)->comm, group_of(ctx, group), buf, dt, count);
}

static ss_status *coll_allgather(void *ctx, const char *group, const ss_tensor *in, int axis,
                                 ss_tensor *out)
{
    return ss_comm_allgather(((ss_rank *)ctx)->comm, group_of(ctx, group), in, axis, out);
}

static ss_status *coll_broadcast(void *ctx, const char *group, int root, void *buf, size_t nbytes)
{
    return ss_comm_broadcast(((ss_rank *)ctx)->comm, group_of(ctx, group), buf, nbytes, root);
}

static ss_status *coll_send(void *ctx, int peer, const void *buf, size_t nbytes)
{
    return ss_comm_send(((ss_rank *)ctx)->comm, NULL, buf, nbytes, peer);
}

static ss_status *coll_recv(void *ctx, int peer, void *buf, size_t nbytes)
{
    return ss_comm_recv(((ss_rank *)ctx)->comm, NULL, buf, nbytes, peer);
}

bool ss_rank_load_refused(const ss_status *st)
{
    return st && (st->code == SS_ERR_INVALID || st->code == SS_ERR_UNSUPPORTED ||
                  st->code == SS_ERR_LIMIT);
}

size_t ss_rank_run_bytes(int local_ranks, const char **source)
{
    const char *user = getenv("SHARDSERVE_RANK_RUN_MB");
    char *end = NULL;
    long mb = user ? strtol(user, &end, 10) : 0;
    if (user && end != user && !*end && mb >= 1 && mb <= (1L << 30)) {
        if (source) *source = "SHARDSERVE_RANK_RUN_MB";
        return (size_t)mb << 20;
    }
    if (user)
        SS_WARN("SHARDSERVE_RANK_RUN_MB='%s' is not a size in MiB (1..%ld): using the default",
                user, 1L << 30);
    if (source)
        *source = local_ranks > 1 ? "half the usable memory, shared by this host's ranks"
                                  : "half the usable memory";
    uint64_t usable = ss_usable_memory();
    return (size_t)(usable / 2 / (uint64_t)(local_ranks > 0 ? local_ranks : 1));
}

/* The ranks that share this host's memory: with shm the whole group; under mpirun the ranks
 * it started on this node. */
static int local_ranks(const ss_rank_options *opt, int rank_size)
{
    if (opt->backend == SS_COMM_SHM) return rank_size;
    const char *n = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    long v = n ? strtol(n, NULL, 10) : 1;
    return v >= 1 && v <= rank_size ? (int)v : 1;
}

ss_status *ss_rank_open(const char *config_path, const ss_rank_options *opt, ss_rank **out)
{
    *out = NULL;
    if (opt->refused) *opt->refused = false;
    ss_rank *r = calloc(1, sizeof *r);
    if (!r) return ss_errf(SS_ERR_NOMEM, "out of memory");
    ss_status *st = ss_rank_config_load(config_path, &r->cfg);
    if (st) {
        if (opt->refused) *opt->refused = ss_rank_load_refused(st);
        free(r);
        return st;
    }
    ss_comm_group_def defs[SS_MAX_GROUPS];
    int nd = 0;
    for (int i = 0; i < r->cfg.n_groups; i++) {
        if (!strcmp(r->cfg.group_names[i], SS_COMM_WORLD)) continue;
        defs[nd++] = (ss_comm_group_def){r->cfg.group_names[i], r->cfg.group_ranks[i],
                                         r->cfg.group_sizes[i]};
    }
    ss_comm_config cc = {
        .backend = opt->backend,
        .rank = r->cfg.rank,
        .size = r->cfg.rank_size,
        .session = opt->session,
        .timeout_ms = opt->timeout_ms,
        .join_timeout_ms = opt->join_timeout_ms,
        .groups = defs,
        .ngroups = nd,
    };
    st = ss_comm_create(&cc, &r->comm);
    if (!st && (ss_comm_rank(r->comm) != r->cfg.rank || ss_comm_size(r->comm) != r->cfg.rank_size))
        st = ss_errf(SS_ERR_INVALID,
                     "%s is for rank %d of %d, but the communicator made this rank %d of %d",
                     config_path, r->cfg.rank, r->cfg.rank_size, ss_comm_rank(r->comm),
                     ss_comm_size(r->comm));
    r->coll = (ss_collectives){
        r,         coll_group_size, coll_group_rank, coll_allreduce, coll_allgather, coll_broadcast,
        coll_send, coll_recv};
    char model[8192];
    if (opt->model_path)
        snprintf(model, sizeof model, "%s", opt->model_path);
    else
        snprintf(model, sizeof model, "%s/%s", r->cfg.dir, r->cfg.model);
    ss_session_options so = {.blas_threads = opt->blas_threads ? opt->blas_threads : 1,
                             .coll = &r->coll,
                             .weights = r->cfg.weights,
                             .kv_cache_bytes = opt->kv_cache_bytes,
                             .max_run_bytes = opt->max_run_bytes};
    if (!st && !so.max_run_bytes) {
        const char *source = "";
        so.max_run_bytes = ss_rank_run_bytes(local_ranks(opt, r->cfg.rank_size), &source);
        SS_INFO("rank %d: one run may take up to %zu MiB (%s)", r->cfg.rank, so.max_run_bytes >> 20,
                source);
    }
    if (!st) {
        st = ss_session_create(model, &so, &r->session);
        if (opt->refused) *opt->refused = ss_rank_load_refused(st); /* not the communicator's */
    }
    if (st) {
        st = ss_status_wrap(st, "rank %d", r->cfg.rank);
        ss_rank_close(r);
        return st;
    }
    *out = r;
    return NULL;
}

void ss_rank_close(ss_rank *r)
{
    if (!r) return;
    ss_session_free(r->session);
    ss_comm_destroy(r->comm);
    ss_rank_config_free(&r->cfg);
    free(r);
}

const ss_rank_config *ss_rank_get_config(const ss_rank *r)
{
    return &r->cfg;
}
ss_session *ss_rank_session(ss_rank *r)
{
    return r->session;
}
ss_comm *ss_rank_comm(ss_rank *r)
{
    return r->comm;
}
