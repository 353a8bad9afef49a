/*
 * shardserve shard MODEL.onnx --ranks N [--stages S] [--strategy FILE|auto|none]
 *                  [--input-shape NAME=D0,D1,...] [--kv-pool] --out DIR
 */
#include "cli.h"
#include "shardserve/shard.h"

#include <stdio.h>
#include <string.h>

static const char shard_usage[] =
    "usage: shardserve shard MODEL.onnx --ranks N [--stages S] [--strategy FILE|auto|none]\n"
    "                        [--input-shape NAME=D0,D1,...] [--weights f32|bf16|int8] [--kv-pool]\n"
    "                        --out DIR\n"
    "  --ranks N       total ranks (rank_size); ranks per stage = N / S\n"
    "  --stages S      pipeline stages (stage_size), default 1\n"
    "  --strategy      auto (default): Megatron column/row-parallel MatMul/Gemm pairs;\n"
    "                  FILE: JSON {\"node\": [[a0,a1],[b0,b1]]} in MindSpore's notation;\n"
    "                  none: pipeline stages only\n"
    "  --input-shape   fix an input's dynamic dims (repeatable); named dims may stay dynamic\n"
    "  --weights       bf16: every rank holds its MatMul/Gemm weights as bf16 (f32 accumulation)\n"
    "                  as 'run --weights bf16' (decode on any CPU, more with AVX512-BF16/AMX);\n"
    "                  recorded in each group config (the files keep f32); int8: as 'run "
    "--weights\n"
    "                  int8'\n"
    "  --kv-pool       a KV-cache decoder's attention reads the agents' KV block pool\n"
    "                  (PagedAttention): inputs input_ids, position_ids, seq_ids; no "
    "past/present\n"
    "  --out DIR       DIR/device<r>/ per rank and DIR/manifest.json, moved in when every rank\n"
    "                  is written (from DIR/.shard-partial): a run that fails leaves DIR as it "
    "was\n";

int cmd_shard(int argc, char **argv)
{
    ss_shard_options opt = {.stage_size = 1, .mode = SS_SHARD_AUTO, .progress = true};
    const char *shapes[64];
    long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(shard_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--ranks") && has) {
            if (!cli_parse_int(argv[++i], 1, 4096, &v))
                return cli_fail(
                    "shard", ss_errf(SS_ERR_INVALID, "--ranks wants 1..4096, got '%s'", argv[i]));
            opt.rank_size = (int)v;
        } else if (!strcmp(a, "--stages") && has) {
            if (!cli_parse_int(argv[++i], 1, 4096, &v))
                return cli_fail(
                    "shard", ss_errf(SS_ERR_INVALID, "--stages wants 1..4096, got '%s'", argv[i]));
            opt.stage_size = (int)v;
        } else if (!strcmp(a, "--strategy") && has) {
            const char *s = argv[++i];
            if (!strcmp(s, "auto"))
                opt.mode = SS_SHARD_AUTO;
            else if (!strcmp(s, "none"))
                opt.mode = SS_SHARD_NONE;
            else
                opt.mode = SS_SHARD_FILE, opt.strategy_path = s;
        } else if (!strcmp(a, "--input-shape") && has) {
            if (opt.n_input_shapes == 64)
                return cli_fail("shard", ss_errf(SS_ERR_LIMIT, "too many --input-shape"));
            shapes[opt.n_input_shapes++] = argv[++i];
        } else if (!strcmp(a, "--out") && has) {
            opt.out_dir = argv[++i];
        } else if (!strcmp(a, "--weights") && has) {
            const char *w = argv[++i];
            if (!ss_weights_parse(w, &opt.weights))
                return cli_fail("shard", ss_errf(SS_ERR_INVALID,
                                                 "--weights wants f32, bf16 or int8, got '%s'", w));
        } else if (!strcmp(a, "--kv-pool")) {
            opt.kv_pool = true;
        } else if (!strcmp(a, "--quiet")) {
            opt.progress = false;
        } else if (a[0] == '-' || opt.model_path) {
            fprintf(stderr, "shardserve shard: unexpected argument '%s'\n%s", a, shard_usage);
            return 2;
        } else {
            opt.model_path = a;
        }
    }
    if (!opt.model_path || !opt.out_dir || !opt.rank_size) {
        fputs(shard_usage, stderr);
        return 2;
    }
    opt.input_shapes = shapes;
    ss_status *st = ss_shard_model(&opt);
    if (st) return cli_fail("shard", st);
    printf("wrote %d shards (%d stage%s x %d ranks) to %s\n", opt.rank_size, opt.stage_size,
           opt.stage_size > 1 ? "s" : "", opt.rank_size / opt.stage_size, opt.out_dir);
    return 0;
}
