/* cli_shm: the --shm option of `shardserve infer` and `bench` (KServe's system shared memory):
 * one POSIX object holding every input, then room for each requested output, registered with
 * the server for the run and unregistered and removed on every way out (SIGINT/SIGTERM too). */
#ifndef SS_CLI_SHM_H
#define SS_CLI_SHM_H

#include "shardserve/client.h"
#include "shardserve/core.h"

typedef struct {
    ss_client_shm *shm;
    ss_client *client; /* where it is registered, NULL before */
    char region[64];
    size_t used; /* bytes handed out so far */
    const char *outputs[64];
    size_t out_offset[64];
    int n_outputs;
    size_t out_size; /* room per output; 0 = the inputs' bytes, at least 1 MiB */
} cli_shm;

/* Make the object "/shardserve-CMD-PID" (also the region's name) for inputs of input_bytes (plus
 * 64 bytes of alignment each) and the outputs. */
ss_client_error *cli_shm_create(cli_shm *s, const char *cmd, size_t input_bytes);
/* Copy t into the object and give it to the request as a region input. */
ss_client_error *cli_shm_input(cli_shm *s, ss_client_request *req, size_t inst, const char *name,
                               const ss_tensor *t, ss_client_dtype dtype);
/* Register the region with c's server and ask for the outputs in it. */
ss_client_error *cli_shm_register(cli_shm *s, ss_client *c, ss_client_request *req, size_t inst);
/* Where output `name` lies in the object (NULL: not asked for there). */
const void *cli_shm_output(const cli_shm *s, const char *name);
/* Unregister (errors printed under `cmd`) and remove the object. */
void cli_shm_cleanup(cli_shm *s, const char *cmd);

#endif
