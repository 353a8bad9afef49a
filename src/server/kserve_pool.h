/*
 * kserve_pool (internal to the server module): large tensor buffers in shared memory, reused.
 * A KServe REST binary body lands in one (so its tensors reach a local agent by key, never
 * through a socket), and a binary output is placed in one (the agent writes it there, the reply
 * is sent from it). Buffers are POSIX shm objects named /shardserve-kserve-<pid>-<n>, mapped
 * once, shared with the link (ss_link_shm_share) and kept when given back (at most POOL_IDLE of
 * them, POOL_IDLE_BYTES in all), so a steady stream of requests touches no fresh pages and the
 * agents' mappings of them stay valid. Thread-safe.
 */
#ifndef SS_SERVER_KSERVE_POOL_H
#define SS_SERVER_KSERVE_POOL_H

#include "kserve_codec.h"

/* Tensors below this go the ordinary way (malloc'd memory, bytes over the link). */
#define SS_KSERVE_POOL_MIN (1u << 20)

typedef struct ss_kserve_buf ss_kserve_buf;

/* A buffer of at least `bytes`, 64-byte aligned; NULL when none can be made (use malloc). */
ss_kserve_buf *ss_kserve_pool_take(size_t bytes);
uint8_t *ss_kserve_buf_data(const ss_kserve_buf *b);
size_t ss_kserve_buf_cap(const ss_kserve_buf *b);
const char *ss_kserve_buf_key(const ss_kserve_buf *b);
/* Back to the pool (or unmapped and unlinked beyond its bounds). NULL is fine. */
void ss_kserve_pool_give(void *b);
/* Unmapped and unlinked, never reused: an agent may still write into it (a request that timed
 * out or failed); the agent's own mapping keeps the pages until it lets go. NULL is fine. */
void ss_kserve_pool_drop(void *b);

/* Place each output the call returns (single-instance calls; outputs of a static size of at
 * least SS_KSERVE_POOL_MIN not already given a client region) in a pool buffer the call holds:
 * a local agent writes it there and the reply reads it from there. False only when out of
 * memory. */
bool ss_kserve_pool_places(ss_kserve_call *call, ss_predict_request *req, ss_kserve_error *err);

#endif
