/*
 * The shard tool under allocation failure: `shardserve shard`'s ss_shard_model on the exporter-
 * shaped MLP (tensor parallelism within 2 stages) and GPT-2-tiny (attention split by heads, the
 * vocabulary-parallel embedding and LM head), run with the 1st, 2nd, 3rd ... allocation failing.
 * Each run must write exactly the files a clean run writes, byte for byte, or fail with
 * SS_ERR_NOMEM, leaving the output folder's previous split (a clean one) as it was, with nothing
 * leaked and no crash. Before, it crashed (a failed name used in
 * strcmp, a plan's kernel contexts cleared after their allocation failed), leaked, and wrote a
 * group_config.json with fields silently missing when cJSON could not allocate them.
 *
 *   test_alloc_shard FIXTURES_DIR     (the shard_data fixture: DIR/fx/test_<case>/model.onnx)
 */
#define _GNU_SOURCE
#include "allocfail.h"
#include "check.h"
#include "shardserve/shard.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* protobuf-c returns NULL both for bytes that do not decode and when an allocation fails, so an
 * allocation failing inside the model's unpacking surfaces as the loader's decoding error; and a
 * FILE that cannot be allocated makes fopen fail with ENOMEM, reported as the file not opening
 * (strerror's text). Those are accepted besides SS_ERR_NOMEM. */
#define PROTOBUF_OOM "protobuf decoding failed|Cannot allocate memory"

typedef struct {
    ss_shard_options opt;
    char want_dir[256];
} shard_case;

/* Every regular file under dir, relative paths sorted into *names (n of them). */
static int list_files(const char *dir, const char *sub, char names[][128], int cap, int n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    DIR *d = opendir(path);
    if (!d) return n;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        if (e->d_name[0] == '.') continue;
        char rel[256], full[768];
        snprintf(rel, sizeof rel, "%s%s%s", sub, *sub ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", dir, rel);
        struct stat sb;
        if (stat(full, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode))
            n = list_files(dir, rel, names, cap, n);
        else
            snprintf(names[n++], 128, "%s", rel);
    }
    closedir(d);
    return n;
}

/* Compared in 1 MiB reads: thousands of runs each compare every output file, and 4 KiB reads made
 * this test ~1.3 million read calls. Unbuffered: each fread is one read() straight into x or y.
 * Static: 2 MiB is too much for a stack frame, and only the test's own thread calls this. */
static bool same_file(const char *a, const char *b)
{
    static char x[1 << 20], y[1 << 20];
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    if (fa) setvbuf(fa, NULL, _IONBF, 0);
    if (fb) setvbuf(fb, NULL, _IONBF, 0);
    while (same) {
        size_t na = fread(x, 1, sizeof x, fa), nb = fread(y, 1, sizeof y, fb);
        same = na == nb && !memcmp(x, y, na);
        if (na < sizeof x) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static ss_status *run_shard(void *ctx)
{
    return ss_shard_model(&((shard_case *)ctx)->opt);
}

/* The run's output equals the clean run's, file for file (no file missing, none extra). */
static bool verify_shard(void *ctx)
{
    shard_case *s = ctx;
    static char want[64][128], got[64][128];
    int nw = list_files(s->want_dir, "", want, 64, 0);
    int ng = list_files(s->opt.out_dir, "", got, 64, 0);
    bool same = nw > 0 && nw == ng;
    for (int i = 0; same && i < nw; i++) {
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/%s", s->want_dir, want[i]);
        snprintf(b, sizeof b, "%s/%s", s->opt.out_dir, want[i]);
        same = same_file(a, b);
        if (!same) fprintf(stderr, "  %s differs from the clean run's\n", want[i]);
    }
    return same;
}

/* Shards FIXTURES/fx/test_<fixture>/model.onnx over ranks x stages: once clean, then with each
 * allocation failing in turn; tag names the output folders. */
static void shard_under_failures(const char *name, const char *tag, const char *fixture, int ranks,
                                 int stages, bool transient_only, const char *sample_library)
{
    CHECK_MSG(test_argc == 2, "usage: test_alloc_shard FIXTURES_DIR");
    if (test_argc != 2) return;
    char tmp[] = "/tmp/ss-alloc-shard-XXXXXX", model[512], got_dir[300];
    CHECK(mkdtemp(tmp) != NULL);
    snprintf(model, sizeof model, "%s/fx/test_%s/model.onnx", test_argv[1], fixture);
    shard_case s = {
        .opt = {
            .model_path = model, .rank_size = ranks, .stage_size = stages, .mode = SS_SHARD_AUTO}};
    snprintf(s.want_dir, sizeof s.want_dir, "%s/%s-clean", tmp, tag);
    snprintf(got_dir, sizeof got_dir, "%s/%s-runs", tmp, tag);
    s.opt.out_dir = s.want_dir;
    CHECK_OK(ss_shard_model(&s.opt));
    s.opt.out_dir = got_dir; /* holds a complete split from the start: a failed run must keep it */
    CHECK_OK(ss_shard_model(&s.opt));
    allocfail_case c = {.name = name,
                        .ctx = &s,
                        .run = run_shard,
                        .verify = verify_shard,
                        .verify_failed = verify_shard,
                        .error_needle = PROTOBUF_OOM,
                        .transient_only = transient_only,
                        .sample_library = sample_library};
    long allocs = 0;
    CHECK_MSG(allocfail_loop(&c, &allocs) == 0, "%s", name);
    CHECK_MSG(allocs > 0, "%s allocated nothing", name);
    printf("%s: %ld allocations in a clean run, each failed in turn%s\n", name, allocs,
           sample_library ? " but for the unsampled ones above" : "");
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf '%s'", tmp);
    if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", tmp);
}

static void mlp_two_stages(void)
{
    shard_under_failures("MLP, 2 ranks x 2 stages", "mlp", "mlp_op17", 4, 2, false, NULL);
}

static void gpt2_tiny_heads(void)
{
    /* ~9,500 allocations (the MLP's 680 take the persistent mode too, through the same loader
     * and planner): one failure at a time. ~7,000 of them are protobuf-c's own while it unpacks
     * the model, each surfacing as the same failed unpack: only a sample of those fails here
     * (the MLP case fails every one of its own) */
    shard_under_failures("GPT-2-tiny, 2 ranks", "gpt2", "gpt2_tiny_op17", 2, 1, true,
                         "libprotobuf-c");
}

TEST_MAIN(TEST(mlp_two_stages), TEST(gpt2_tiny_heads))
