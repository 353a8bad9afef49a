/* The shardserve command line: one cmd_<name> per subcommand. This folder only parses
 * arguments and prints; the work is done by the modules. */
#ifndef SS_CLI_H
#define SS_CLI_H

#include "shardserve/core.h"

int cmd_run(int argc, char **argv);
int cmd_onnx_test(int argc, char **argv);
int cmd_shard(int argc, char **argv);
int cmd_run_rank(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_wait_ready(int argc, char **argv);
int cmd_agents(int argc, char **argv);
int cmd_agent_rank(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
void cli_print_tensor(const char *name, const ss_tensor *t);

/* Print "shardserve <cmd>: <message>" to stderr and free the status; returns exit code 1. */
int cli_fail(const char *cmd, ss_status *st);
/* Parse a "NAME=VALUE" argument; returns false if there is no '='. */
bool cli_split_kv(char *arg, char **name, char **value);
/* A --protocol name of the C client (mindspore, kserve, kserve-grpc, kserve-rest, kserve-binary)
 * as its ss_client_protocol value, or -1. */
int cli_client_protocol(const char *name);
/* Strict integer parsing for option values. */
bool cli_parse_int(const char *s, long lo, long hi, long *out);
/* --output-dir DIR: made when it does not exist (its parent must); NULL or an error naming it. */
ss_status *cli_make_output_dir(const char *dir);

#endif
