/*
 * The worker's input files under allocation failure: the rank table parser (server_list and
 * group_list forms) and the servable.json parser, run with the 1st, 2nd, 3rd ... allocation
 * failing. Each run must give exactly the clean run's table or config, or an error that is
 * SS_ERR_NOMEM or names the file, with nothing leaked; bad files keep their usual error. The
 * same again through the loaders that read the files.
 */
#include "allocfail.h"
#include "check.h"
#include "shardserve/worker.h"

#include <sys/stat.h>
#include <unistd.h>

#define WHAT "alloc_test.json"
/* cJSON returns NULL both for a syntax error and when an allocation fails, and its only
 * allocator hooks are process-wide, so an allocation failing inside cJSON_Parse surfaces as the
 * parsers' "not a JSON object" error. That one text is accepted besides SS_ERR_NOMEM; any other
 * error under an injected failure (a field silently lost, say) fails the test. */
#define CJSON_OOM WHAT ": not a JSON object"

static const char server_list[] =
    "{\"version\": \"1.0\", \"server_count\": \"2\", \"status\": \"completed\", \"server_list\": ["
    "{\"server_id\": \"10.0.0.1\", \"host_nic_ip\": \"reserve\", \"device\": ["
    "{\"device_id\": \"0\", \"device_ip\": \"192.1.27.6\", \"rank_id\": \"0\"},"
    "{\"device_id\": \"1\", \"device_ip\": \"192.2.27.6\", \"rank_id\": \"1\"}]},"
    "{\"server_id\": \"10.0.0.2\", \"device\": ["
    "{\"device_id\": \"0\", \"device_ip\": \"192.1.27.7\", \"rank_id\": \"2\"}]}]}";

static const char group_list[] =
    "{\"board_id\": \"0x0000\", \"status\": \"completed\", \"group_count\": \"1\", \"group_list\": "
    "["
    "{\"group_name\": \"hccl_world_group\", \"device_num\": \"3\", \"instance_list\": ["
    "{\"devices\": [{\"device_id\": \"0\", \"device_ip\": \"192.1.27.0\"}], \"rank_id\": \"0\","
    " \"server_id\": \"127.0.0.1\"},"
    "{\"devices\": [{\"device_id\": \"1\", \"device_ip\": \"192.1.27.1\"}], \"rank_id\": \"1\","
    " \"server_id\": \"127.0.0.1\"},"
    "{\"devices\": [{\"device_id\": \"2\", \"device_ip\": \"192.1.27.2\"}], \"rank_id\": \"2\","
    " \"server_id\": \"127.0.0.2\"}]}]}";

/* rank 1 is listed as rank 2: found after rank 0 was added */
static const char bad_rank_order[] =
    "{\"server_list\": [{\"server_id\": \"10.0.0.1\", \"device\": ["
    "{\"device_id\": \"0\", \"rank_id\": \"0\"}, {\"device_id\": \"1\", \"rank_id\": \"2\"}]}]}";

static const char servable[] =
    "{\"distributed\": {\"rank_size\": 16, \"stage_size\": 2, \"with_batch_dim\": true,"
    " \"without_batch_dim_inputs\": [\"mask\"], \"broadcast_inputs\": false,"
    " \"enable_pipeline_infer\": true},"
    " \"batching\": {\"max_batch_size\": 8, \"max_queue_delay_us\": 500},"
    " \"methods\": [{\"name\": \"predict\", \"inputs\": [\"x\", \"mask\"], \"outputs\": [\"y\"]},"
    " {\"name\": \"embed\", \"inputs\": [\"x\"], \"outputs\": [\"h\", \"y\"]}]}";

/* the second method lacks outputs: found after the first one was read */
static const char bad_servable[] =
    "{\"distributed\": {\"rank_size\": 1},"
    " \"methods\": [{\"name\": \"a\", \"inputs\": [\"x\"], \"outputs\": [\"y\"]},"
    " {\"name\": \"b\", \"inputs\": [\"x\"]}]}";

/* ---------------------------------------------------------------- rank table */

typedef struct {
    const char *text;
    ss_rank_table want, got;
} table_case;

static ss_status *run_table(void *ctx)
{
    table_case *t = ctx;
    return ss_rank_table_parse(t->text, strlen(t->text), WHAT, &t->got);
}

static bool verify_table(void *ctx)
{
    table_case *t = ctx;
    bool same = t->got.n == t->want.n && t->got.json && !strcmp(t->got.json, t->want.json);
    for (int i = 0; same && i < t->want.n; i++)
        same = !strcmp(t->got.ranks[i].ip, t->want.ranks[i].ip) &&
               t->got.ranks[i].device_id == t->want.ranks[i].device_id &&
               t->got.ranks[i].rank_id == t->want.ranks[i].rank_id;
    ss_rank_table_free(&t->got);
    return same;
}

static void table_loop(const char *name, const char *text, int n_ranks)
{
    table_case t = {.text = text};
    CHECK_OK(ss_rank_table_parse(text, strlen(text), WHAT, &t.want));
    CHECK_MSG(t.want.n == n_ranks, "%s: %d ranks", name, t.want.n);
    allocfail_case c = {.name = name,
                        .ctx = &t,
                        .run = run_table,
                        .verify = verify_table,
                        .error_needle = CJSON_OOM};
    long allocs = 0;
    CHECK_MSG(allocfail_loop(&c, &allocs) == 0, "%s", name);
    CHECK_MSG(allocs > 0, "%s allocated nothing", name);
    ss_rank_table_free(&t.want);
}

static void rank_table_server_list(void)
{
    table_loop("rank table, server_list", server_list, 3);
}

static void rank_table_group_list(void)
{
    table_loop("rank table, group_list", group_list, 3);
}

static ss_status *run_bad_table(void *ctx)
{
    ss_rank_table t;
    ss_status *st = ss_rank_table_parse(ctx, strlen(ctx), WHAT, &t);
    if (!st) ss_rank_table_free(&t);
    return st;
}

static bool never_called(void *ctx)
{
    return false;
}

static void rank_table_bad_order(void)
{
    allocfail_case c = {.name = "rank table with rank ids out of order",
                        .ctx = (void *)bad_rank_order,
                        .run = run_bad_table,
                        .verify = never_called,
                        .error_needle = CJSON_OOM,
                        .expect_error = "entry 1 has rank_id 2"};
    CHECK(allocfail_loop(&c, NULL) == 0);
}

/* ---------------------------------------------------------------- servable.json */

typedef struct {
    const char *text;
    ss_servable_config want, got;
} servable_case;

static ss_status *run_servable(void *ctx)
{
    servable_case *s = ctx;
    return ss_servable_config_parse(s->text, strlen(s->text), WHAT, "matmul", &s->got);
}

static bool verify_servable(void *ctx)
{
    servable_case *s = ctx;
    return memcmp(&s->got, &s->want, sizeof s->want) == 0; /* both zeroed first, then filled */
}

static void servable_config(void)
{
    static servable_case s = {.text = servable}; /* two configs are ~70 KiB: not on the stack */
    CHECK_OK(ss_servable_config_parse(servable, strlen(servable), WHAT, "matmul", &s.want));
    CHECK(s.want.n_methods == 2 && s.want.n_no_batch == 1 && s.want.max_batch_size == 8);
    allocfail_case c = {.name = "servable.json",
                        .ctx = &s,
                        .run = run_servable,
                        .verify = verify_servable,
                        .error_needle = CJSON_OOM};
    long allocs = 0;
    CHECK(allocfail_loop(&c, &allocs) == 0);
    CHECK_MSG(allocs > 0, "servable.json allocated nothing");
}

static void servable_config_bad_method(void)
{
    static servable_case s = {.text = bad_servable};
    allocfail_case c = {.name = "servable.json with a method lacking outputs",
                        .ctx = &s,
                        .run = run_servable,
                        .verify = never_called,
                        .error_needle = CJSON_OOM,
                        .expect_error = "method 'b' needs 'inputs' and 'outputs'"};
    CHECK(allocfail_loop(&c, NULL) == 0);
}

/* ---------------------------------------------------------------- from files */

/* fopen's FILE is allocated too; its failure is reported as the file not opening (ENOMEM). */
#define LOAD_OOM "cannot open|: not a JSON object"

typedef struct {
    char dir[64], table[128];
    ss_rank_table want_table, got_table;
    ss_servable_config want_servable, got_servable;
} files_case;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static ss_status *run_load_table(void *ctx)
{
    files_case *f = ctx;
    return ss_rank_table_load(f->table, &f->got_table);
}

static bool verify_load_table(void *ctx)
{
    files_case *f = ctx;
    bool same = f->got_table.n == f->want_table.n && f->got_table.json &&
                !strcmp(f->got_table.json, f->want_table.json) &&
                !memcmp(f->got_table.ranks, f->want_table.ranks,
                        sizeof f->got_table.ranks[0] * (size_t)f->want_table.n);
    ss_rank_table_free(&f->got_table);
    return same;
}

static ss_status *run_load_servable(void *ctx)
{
    files_case *f = ctx;
    return ss_servable_config_load(f->dir, "matmul", &f->got_servable);
}

static bool verify_load_servable(void *ctx)
{
    files_case *f = ctx;
    return !memcmp(&f->got_servable, &f->want_servable, sizeof f->want_servable);
}

static void loaded_from_files(void)
{
    static files_case f = {.dir = "/tmp/ss_alloc_test_XXXXXX"};
    CHECK(mkdtemp(f.dir) != NULL);
    char sub[128], path[192];
    snprintf(f.table, sizeof f.table, "%s/rank_table.json", f.dir);
    snprintf(sub, sizeof sub, "%s/matmul", f.dir);
    snprintf(path, sizeof path, "%s/servable.json", sub);
    write_file(f.table, group_list);
    CHECK(mkdir(sub, 0700) == 0);
    write_file(path, servable);
    CHECK_OK(ss_rank_table_load(f.table, &f.want_table));
    CHECK_OK(ss_servable_config_load(f.dir, "matmul", &f.want_servable));
    allocfail_case table = {.name = "rank table from a file",
                            .ctx = &f,
                            .run = run_load_table,
                            .verify = verify_load_table,
                            .error_needle = LOAD_OOM};
    allocfail_case config = {.name = "servable.json from a folder",
                             .ctx = &f,
                             .run = run_load_servable,
                             .verify = verify_load_servable,
                             .error_needle = LOAD_OOM};
    CHECK(allocfail_loop(&table, NULL) == 0);
    CHECK(allocfail_loop(&config, NULL) == 0);
    ss_rank_table_free(&f.want_table);
    unlink(path);
    rmdir(sub);
    unlink(f.table);
    rmdir(f.dir);
}

TEST_MAIN(TEST(rank_table_server_list), TEST(rank_table_group_list), TEST(rank_table_bad_order),
          TEST(servable_config), TEST(servable_config_bad_method), TEST(loaded_from_files))
