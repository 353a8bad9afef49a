/*
 * kserve_codec (internal to the server module): what the Open Inference Protocol's (KServe v2)
 * REST and gRPC codecs share — datatype names, the model-name rule, turning KServe tensors into
 * an ss_predict_request and a reply back into KServe tensors. Pure functions (no sockets).
 *
 * Model names: a servable with one method is KServe model NAME; a servable's method is always
 * also model NAME.METHOD (the only way to reach one of several methods).
 *
 * Batching: a batched method input of per-instance shape S arrives as [N]+S and becomes N
 * instances (each borrowing its row; an input not aligned for its dtype is copied once, whole),
 * their cost charged first (SS_KSERVE_MAX_ROWS_MB); a non-batched input arrives with the model's
 * whole shape and every instance carries it. Outputs
 * are stacked back into [N]+S when the request had a batch dim (or N > 1), else returned whole.
 *
 * BYTES tensors travel between the codecs and this file in the binary extension's layout: per
 * element a 4-byte little-endian length, then the bytes. A serving instance holds one string per
 * tensor, so a BYTES input carries one element per instance.
 */
#ifndef SS_SERVER_KSERVE_CODEC_H
#define SS_SERVER_KSERVE_CODEC_H

#include "budget.h"
#include "shardserve/serving.h"

/* An error as the protocol reports it: an HTTP status (gRPC maps it) and a message. */
typedef struct {
    int status;
    char msg[512];
} ss_kserve_error;

void ss_kserve_fail(ss_kserve_error *e, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* HTTP status -> gRPC status code (400 INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE...). */
int ss_kserve_grpc_status(int http_status);

/* "FP32", "BYTES" (SS_DT_STRING), ...; NULL for dtypes the protocol has no name for. */
const char *ss_kserve_dtype_name(ss_dtype dt);
/* SS_DT_UNDEFINED for an unknown name. */
ss_dtype ss_kserve_dtype_parse(const char *name, size_t len);

typedef struct {
    char *name;
    bool binary;      /* REST: return the tensor in the binary extension */
    bool binary_set;  /* REST: the output's own binary_data was given (it wins, true or false) */
    char *shm_region; /* the shared-memory extension: written there instead (kserve_shm.h) */
    uint64_t shm_offset, shm_byte_size;
} ss_kserve_requested;

/* One call's state, from the resolved model to the encoded reply. */
typedef struct {
    char *model; /* the KServe model name as the client gave it */
    ss_serving_signature *sig;
    const ss_serving_method *method;
    char *id; /* request id to echo, NULL = none */
    ss_kserve_requested *outputs;
    size_t n_outputs;   /* 0 = every output */
    bool binary_output; /* REST: binary_data_output */
    bool batched;       /* the inputs carried a batch dim */
    size_t instances;
    void **owned; /* buffers instance tensors borrow from, freed with the call */
    size_t n_owned, cap_owned;
    void **shm_held; /* shared-memory regions the call uses (kserve_shm.h), let go with it */
    size_t n_shm_held;
    void **pooled; /* pool buffers its outputs are placed in (kserve_pool.h) */
    size_t n_pooled;
    bool agents_done; /* the reply succeeded: no rank writes into those buffers any more */
    void *wire;       /* the decoded message tensors may borrow from, and how to free it */
    void (*wire_free)(void *);
    size_t rows_held; /* the batch rows' cost, taken from the process's row budget */
} ss_kserve_call;

ss_kserve_call *ss_kserve_call_new(void);
void ss_kserve_call_free(ss_kserve_call *call);
/* Keep a malloc'd buffer until the call is freed (frees it and returns false when out of
 * memory). */
bool ss_kserve_call_own(ss_kserve_call *call, void *buf);

/* Parse a version text ("" or NULL = latest = 0). */
bool ss_kserve_parse_version(const char *text, size_t len, uint64_t *version);
/* Resolve a model name (rule above) at a version through handler.describe: fills call->model,
 * sig, method. Returns false with a 404 (unknown), 503 (not ready) error. */
bool ss_kserve_resolve(const ss_predict_handler *h, const char *model, uint64_t version,
                       ss_kserve_call *call, ss_kserve_error *err);

/* One decoded input; `data` stays valid for the call's lifetime. */
typedef struct {
    const char *name;
    ss_dtype dtype;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    const uint8_t *data;
    size_t nbytes;
} ss_kserve_input;

/* Elements of a shape, or -1 when it overflows. */
int64_t ss_kserve_numel(int ndim, const int64_t *dims);
/* Check BYTES data (length-prefixed elements) holds exactly `count` elements. */
bool ss_kserve_bytes_check(const uint8_t *data, size_t len, int64_t count);

/* A known input's datatype against the method's (unknown names pass: checked later). */
bool ss_kserve_check_dtype(const ss_kserve_call *call, const char *name, ss_dtype dtype,
                           ss_kserve_error *err);
/* A batched request's rows take their share of the rows budget (budget.h) until the call is
 * freed: 413 past it alone, 503 beside other requests' rows. */

/* Check the inputs against the call's method (names, datatypes, shapes, batch sizes, the rows'
 * cost) and build the request. 400 errors name the input. */
bool ss_kserve_build_request(ss_kserve_call *call, const ss_kserve_input *in, size_t n,
                             ss_predict_request **out, ss_kserve_error *err);
/* Check requested output names against the method (400 for unknown ones). */
bool ss_kserve_check_outputs(const ss_kserve_call *call, ss_kserve_error *err);

/* One reply tensor; data points into the reply or into the call. */
typedef struct {
    const char *name;
    ss_dtype dtype;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    const uint8_t *data;
    size_t nbytes;
    bool binary;
    const ss_kserve_requested *shm; /* written into this request's region: no data sent */
} ss_kserve_output;

/* The reply (after ss_predict_reply_finish) as KServe tensors, or an error (failed instances
 * become a whole-request error: INVALID_INPUTS 400, unavailable 503, others 500). *out is
 * malloc'd; the reply and the call must outlive it. */
bool ss_kserve_collect_outputs(ss_kserve_call *call, const ss_predict_reply *reply,
                               ss_kserve_output **out, size_t *n, ss_kserve_error *err);

#endif
