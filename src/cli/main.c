/* shardserve: dispatch to the subcommand. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cmd_agent_rank_mpi(int argc, char **argv); /* cmd_agents.c */

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "run a model (or a sharded model) on .npy inputs"},
    {"onnx-test", cmd_onnx_test, "run ONNX backend test cases and compare outputs"},
    {"shard", cmd_shard, "split a model into per-rank shards"},
    {"serve", cmd_serve, "serve models over gRPC and REST (Main + Distributed Worker)"},
    {"agents", cmd_agents, "start the agents of this host (MindSpore's startup_agents)"},
    {"infer", cmd_infer, "send one request to a server (gRPC, C client library)"},
    {"bench", cmd_bench, "load a server at several concurrency levels (gRPC or REST)"},
    {"tokenize", cmd_tokenize, "text to token ids and back with a tokenizer.json (byte-level BPE)"},
    {"wait-ready", cmd_wait_ready, "wait until a server's /health/ready says ready (for scripts)"},
    {"run-rank", cmd_run_rank, NULL},     /* internal: one rank under mpirun */
    {"agent-rank", cmd_agent_rank, NULL}, /* internal: one agent, started by `agents` */
    {"agent-rank-mpi", cmd_agent_rank_mpi,
     NULL}, /* internal: one agent under mpirun (`agents --comm mpi`) */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: shardserve <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].summary) fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'shardserve <command> --help' describes a command's options.\n");
}

int cli_fail(const char *cmd, ss_status *st)
{
    fprintf(stderr, "shardserve %s: %s\n", cmd, st ? st->msg : "failed");
    ss_status_free(st);
    return 1;
}

bool cli_split_kv(char *arg, char **name, char **value)
{
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg) return false;
    *eq = 0;
    *name = arg;
    *value = eq + 1;
    return true;
}

bool cli_parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

ss_status *cli_make_output_dir(const char *dir)
{
    struct stat sb;
    if (stat(dir, &sb) == 0)
        return S_ISDIR(sb.st_mode)
                   ? NULL
                   : ss_errf(SS_ERR_INVALID, "--output-dir %s is not a folder", dir);
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) return NULL;
    return ss_errf(SS_ERR_IO, "cannot create --output-dir %s: %s", dir, strerror(errno));
}

int main(int argc, char **argv)
{
    ss_log_init_from_env();
    ss_tune_malloc();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "shardserve: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
