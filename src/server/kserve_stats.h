/*
 * kserve_stats (internal to the server module): Triton's statistics extension read from the
 * same counters as /metrics (the worker's shardserve_* families), never from bookkeeping of its
 * own. The mapping, and what the counters cannot say:
 *   success.count / fail.count   shardserve_requests_total, outcome ok / any other outcome
 *   success.ns                   shardserve_request_duration_seconds: the time of every request
 *                                the worker answered (the histogram is not split by outcome;
 *                                requests the registry refused never reach it)
 *   fail.ns                      0 (not measured apart)
 *   queue, compute_infer         shardserve_request_{queue,compute}_seconds (count and sum)
 *   execution_count              shardserve_batch_size's count: batches sent to the agents
 *   inference_count              shardserve_batch_size's sum: instances in them
 *                                (both per servable version: shared by its methods)
 *   last_inference               0 (the counters keep no timestamp)
 */
#ifndef SS_SERVER_KSERVE_STATS_H
#define SS_SERVER_KSERVE_STATS_H

#include "kserve_codec.h"

typedef struct {
    uint64_t count, ns;
} ss_kserve_duration;

typedef struct {
    char model[320]; /* the KServe model name to report */
    char servable[256], method[64], version[24];
    uint64_t inference_count, execution_count;
    ss_kserve_duration success, fail, queue, compute_infer;
} ss_kserve_stats;

/*
 * The statistics of a model for GET .../stats and ModelStatistics. An empty `model` means every
 * model the counters know of; `version` "" means every version of the model. Unknown models are
 * a 404, not-ready ones a 503 (as the other model routes). *out is malloc'd (*n may be 0).
 */
bool ss_kserve_stats_collect(const ss_predict_handler *h, const char *model, const char *version,
                             ss_kserve_stats **out, size_t *n, ss_kserve_error *err);

#endif
