/*
 * agent: one rank of a sharded model — its group config, its communicator and its runtime session
 * wired together so the collective ops inside the graph reach the communicator.
 *
 * ss_rank_open() reads device{r}/group_config.json (written by `shardserve shard`), joins the
 * communicator (shm: every rank of the group passes the same session name; mpi: ranks come from
 * mpirun), loads the rank's model with the communicator behind its collectives, and plans it.
 * One rank is used by one thread at a time.
 */
#ifndef SHARDSERVE_AGENT_H
#define SHARDSERVE_AGENT_H

#include "shardserve/comm.h"
#include "shardserve/runtime.h"

#define SS_MAX_GROUPS 64

typedef struct {
    int rank, rank_size;
    int stage, stage_size;
    int position, ranks_per_stage;
    char model[256]; /* file name of the rank's model, relative to the config's folder */
    char dir[4096];  /* folder of the config */
    int n_groups;
    char group_names[SS_MAX_GROUPS][64];
    int group_sizes[SS_MAX_GROUPS];
    int *group_ranks[SS_MAX_GROUPS];
    ss_weights weights; /* "weights": "bf16" in the config (shardserve shard --weights bf16) */
} ss_rank_config;

ss_status *ss_rank_config_load(const char *path, ss_rank_config *out);
void ss_rank_config_free(ss_rank_config *cfg);

typedef struct {
    ss_comm_backend backend;
    const char *session;    /* shm segment name shared by the group */
    int timeout_ms;         /* every collective wait; 0 = comm default */
    int join_timeout_ms;    /* waiting for the other ranks to join; 0 = timeout_ms */
    int blas_threads;       /* 0: 1 when several ranks share the host */
    const char *model_path; /* override the config's model file */
    size_t kv_cache_bytes;  /* the KV block pool of a --kv-pool shard (0: the session default) */
    /* what one run may take for its values (ss_session_options.max_run_bytes); 0: ss_rank_run_bytes
     */
    size_t max_run_bytes;
    bool *refused; /* out, optional: the group config or the model itself does not load (bad,
                      unsupported, over a limit), not the communicator or a passing failure */
} ss_rank_options;

/* Whether a failure to load a config or model is about the files themselves (SS_ERR_INVALID,
 * SS_ERR_UNSUPPORTED, SS_ERR_LIMIT): loading them again gives the same error. */
bool ss_rank_load_refused(const ss_status *st);

/* A rank's default bound on one run's memory: SHARDSERVE_RANK_RUN_MB when set (MiB, >= 1; any
 * other value is warned about and ignored), else half the memory the process may use
 * (ss_usable_memory) shared by the ranks on this host (`local_ranks`), so that requests asking for
 * more than the host holds are refused, not met by the OOM killer. *source (optional) says which.
 */
size_t ss_rank_run_bytes(int local_ranks, const char **source);

typedef struct ss_rank ss_rank;

ss_status *ss_rank_open(const char *config_path, const ss_rank_options *opt, ss_rank **out);
void ss_rank_close(ss_rank *r);
const ss_rank_config *ss_rank_get_config(const ss_rank *r);
ss_session *ss_rank_session(ss_rank *r);
ss_comm *ss_rank_comm(ss_rank *r);

/* `shardserve run --shards DIR`: one local process per rank; stage 0 gets `inputs` (by the
 * manifest's input order), the last rank's outputs are printed (and written to out_dir). */
typedef struct {
    const char *shards_dir;
    ss_comm_backend backend;
    int n_inputs;
    const char *const *input_names;
    const char *const *input_files;
    const char *out_dir;
    int timeout_ms;
    const char *self_exe; /* this program, for mpirun */
} ss_run_shards_options;

/* Runs the group and waits for it; returns an error naming the first rank that failed. */
ss_status *ss_run_shards(const ss_run_shards_options *opt);
/* The body of one rank (in a forked child for shm, under mpirun for mpi); rank < 0: from mpirun. */
ss_status *ss_run_shards_rank(const ss_run_shards_options *opt, int rank, const char *session);

/* ------------------------------------------------------------------ serving agents */

/* One agent process: a rank that registers with the Distributed Worker and executes its
 * requests until the worker or the launcher goes away. */
typedef struct {
    const char *worker_address;
    const char *config_path; /* device{r}/group_config.json */
    const char *model_path;  /* NULL: the config's model */
    ss_comm_backend backend;
    const char *session; /* shm: shared by the local ranks */
    int comm_timeout_ms;
    int connect_timeout_ms; /* keep trying to reach the worker this long (default 60000) */
    int worker_silence_ms;  /* no frame from the worker this long = it is gone (default 10000) */
    int threads; /* the rank's compute threads (0: 1); `shardserve agents` gives each local rank
                    its share of the cores (SHARDSERVE_RANK_THREADS) */
    bool with_batch_dim;
    int n_no_batch;
    const char *const *no_batch_inputs;
    const void *secret;
    size_t secret_len;
    bool *shard_refused;    /* out, optional: set when the rank's shard does not load as given (a
                               bad or unsupported model or group config, a limit): starting it
                               again loads the same files, so a launcher should not */
    bool *left_at_deadline; /* out, optional: set when the rank left its group after stopping a
                               request's run at its time limit (SS_AGENT_EXIT_REQUEST) */
} ss_agent_options;

/* The exit status of an agent process whose shard does not load as given (shard_refused): the
 * launcher stops instead of restarting the group (sysexits' EX_CONFIG). */
#define SS_AGENT_EXIT_SHARD 78
/* The exit status of an agent of a multi-rank group that stopped a request's run at its time
 * limit and left the group (the other ranks may be at another point of that run): the group is
 * sound, so a launcher starts it again at once, not counting it as a failure (EX_PROTOCOL). */
#define SS_AGENT_EXIT_REQUEST 76

/* An agent serves a model of at most this many inputs and outputs (the link carries them per
 * request); a bigger model is refused at load, naming the model, the rank and the limit. */
#define SS_AGENT_MAX_INPUTS 64
#define SS_AGENT_MAX_OUTPUTS 64

/* Returns NULL after an orderly end (the worker said the server is stopping, or SIGTERM);
 * SS_ERR_UNAVAILABLE when the worker went away or broke up the group (the agent should be
 * started again: also when it left its group after stopping a request's run at its time limit,
 * which left_at_deadline tells apart); other errors for everything else. */
ss_status *ss_agent_run(const ss_agent_options *opt);

typedef enum {
    SS_RESTART_NEVER = 0,  /* MindSpore's behaviour: one agent gone = the launcher stops */
    SS_RESTART_ON_FAILURE, /* tear the group down and start it again, with backoff */
} ss_restart_policy;

/* `shardserve agents`: MindSpore's startup_agents. Finds the local ranks, checks the model
 * files, starts one agent process per local rank and supervises them. */
typedef struct {
    const char *worker_address;
    int n_models;
    const char *const *model_files;
    int n_configs; /* 0: group_config.json next to each model file */
    const char *const *group_configs;
    int agent_start_port;
    const char *agent_ip; /* with rank_start, or both NULL/-1 */
    int rank_start;
    ss_comm_backend backend;
    int comm_timeout_ms;
    int connect_timeout_ms;
    const char *self_exe;
    const void *secret; /* the launcher's own (GET_META) */
    size_t secret_len;
    const char *secret_file; /* what the agents read theirs from (NULL: no secret); a path, so a
                                restarted group reads the secret a restarted serve made */
    ss_restart_policy restart;
    int max_restarts;         /* tries in a row before giving up (default 5) */
    int backoff_ms;           /* first delay, doubled each try up to 30 s (default 500) */
    int recovered_after_ms;   /* a group registered this long has recovered: a later failure
                                 starts the count and the backoff again (default 10000) */
    int heartbeat_timeout_ms; /* a registered local rank that reads nothing from the worker this
                                 long is hung: its group is killed (default 5000, as serve's) */
} ss_launcher_options;

/* Blocks until the agents exit (0) or one fails (error naming it). */
ss_status *ss_launcher_run(const ss_launcher_options *opt);

#endif
