/*
 * serving: the protocol-neutral contract between the client-facing front ends (MindSpore gRPC and
 * REST today; any later codec) and whoever answers requests (the Distributed Worker, or a test
 * handler). Front ends are codecs: they decode a request into an ss_predict_request, hand it to
 * an ss_predict_handler, and encode the ss_predict_reply they get back. Nothing here knows a
 * wire format.
 *
 * - A request names a servable, a method and a version (0 = the latest running one) and carries
 *   instances; an instance is a list of (name, tensor) items. String and bytes values are
 *   SS_DT_STRING tensors holding exactly one element; `is_bytes` tells MindSpore's MS_BYTES from
 *   MS_STRING.
 * - A reply carries one instance of outputs per request instance plus error entries, with
 *   MindSpore Serving's codes and its rules for collapsing per-instance errors
 *   (ss_predict_reply_collapse).
 * - The registry (ss_serving) knows every servable -> version -> method with its input and output
 *   specs and readiness. Its handler resolves a request's version, checks it against the method
 *   with MindSpore's rules and texts (ss_serving_check_instance is the one home of those rules),
 *   and only then gives it to the version's backend. A backend (the worker) therefore only ever
 *   sees requests that fit its published signature.
 *
 * Ownership: everything reachable from a request or reply is heap-owned by it and freed by
 * ss_predict_request_free / ss_predict_reply_free.
 */
#ifndef SHARDSERVE_SERVING_H
#define SHARDSERVE_SERVING_H

#include "shardserve/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* MindSpore Serving's StatusCode values, as they travel in ErrorMsg.error_code. */
typedef enum {
    SS_SERVING_SUCCESS = 0,
    SS_SERVING_FAILED = 1,
    SS_SERVING_INVALID_INPUTS = 2,
    SS_SERVING_SYSTEM_ERROR = 3,
    SS_SERVING_WORKER_UNAVAILABLE = 4,
    SS_SERVING_SERVABLE_UNAVAILABLE = 5,
} ss_serving_code;

typedef struct {
    char *name;
    ss_tensor tensor; /* owned; SS_DT_STRING tensors hold one ss_string */
    bool is_bytes;    /* SS_DT_STRING only: MS_BYTES (true) or MS_STRING (false) */
} ss_serving_item;

typedef struct {
    ss_serving_item *items;
    size_t count;
    size_t cap;
    /* Open-addressing index of items by name (item position + 1, 0 = empty), kept by
     * ss_serving_instance_put so decoding N names costs O(N), not O(N^2). It covers
     * items[0, indexed); items appended by hand after that are searched linearly. */
    uint32_t *index;
    size_t index_cap;
    size_t indexed;
} ss_serving_instance;

typedef struct {
    int64_t code; /* ss_serving_code; 0 = this instance succeeded */
    char *message;
    /* The request input the error is about, when the handler knows one (NULL: none named). A
     * front end whose protocol has a field for it (OpenAI's "param") names it from here. */
    char *input;
} ss_serving_error;

/* An output the client wants written straight into POSIX shared memory (KServe's shared-memory
 * extension): a backend may write it there itself and answer with a tensor in that memory. */
typedef struct {
    char *output; /* the method's output name */
    char *key;    /* POSIX shm name */
    uint64_t offset, byte_size;
} ss_serving_place;

/*
 * Streaming: a backend that produces an instance's outputs a piece at a time (a generate
 * servable's tokens) calls partial(partial_ctx, i, chunk) for each new piece of instance i, from
 * its own thread, before it calls done(). `chunk` holds only what is new since the last call
 * (generate: "tokens", int64 [k]) and is valid only during the call: the front end encodes it
 * there and must not block. done() then carries the whole outputs as usual (generate: every
 * token and "finish_reason"), so a front end that does not stream just leaves partial NULL.
 * Backends that answer in one piece never call it; a streaming front end then sends done()'s
 * reply alone.
 */
typedef void (*ss_predict_partial)(void *partial_ctx, size_t instance,
                                   const ss_serving_instance *chunk);

typedef struct {
    char *servable;
    char *method;
    uint64_t version; /* 0 = the latest version */
    ss_serving_instance *instances;
    size_t count;
    ss_serving_place *places; /* optional, owned; a hint: the front end still checks the reply */
    size_t n_places;
    ss_predict_partial partial; /* optional: see above */
    void *partial_ctx;
    /* generate: put "finish_reason" in the outputs even when the method does not declare it
     * (REST's OpenAI and Triton answers always report one) */
    bool want_finish_reason;
    int cancelled_;        /* only through ss_predict_request_cancel / _cancelled */
    size_t instances_cap_; /* slots allocated in instances (ss_predict_request_add_instance) */
} ss_predict_request;

/*
 * A reply, in one of three shapes (MindSpore's):
 *   error_count == 0                      every instance succeeded, count == request's count;
 *   error_count == 1, count == 0          the whole request failed;
 *   error_count == count == N             mixed: errors[i].code == 0 for a success (outputs in
 *                                         instances[i]), != 0 for a failure (instances[i] empty).
 * A handler may also fill error_count == count with every code 0, or every instance failed:
 * ss_predict_reply_collapse turns any of these into the canonical shape.
 */
typedef struct {
    ss_serving_instance *instances;
    size_t count;
    ss_serving_error *errors;
    size_t error_count;
} ss_predict_reply;

typedef struct ss_serving_signature ss_serving_signature;
typedef struct ss_serving_index_entry ss_serving_index_entry;

/* Called exactly once per request, from any thread, with a reply the callee takes ownership of. */
typedef void (*ss_predict_done)(void *done_ctx, ss_predict_reply *reply);

/*
 * The front ends' only way to get work done. predict() must return promptly (it may call done
 * before returning, or later from another thread). `req` stays valid and unmodified until done()
 * has been called; the front end frees it afterwards.
 */
typedef struct {
    void *ctx;
    void (*predict)(void *ctx, ss_predict_request *req, ss_predict_done done, void *done_ctx);
    /* Optional (NULL: no metadata): a servable version's signature (version 0 = the latest
     * running one). On SS_DESCRIBE_OK *out is a copy the caller frees with
     * ss_serving_signature_free; otherwise `why` says what is wrong. */
    int (*describe)(void *ctx, const char *servable, uint64_t version, ss_serving_signature **out,
                    char *why, size_t why_cap);
    /* Optional (NULL: no model repository): ss_serving_set_loaded and ss_serving_index below. */
    int (*set_loaded)(void *ctx, const char *servable, uint64_t version, bool loaded, char *why,
                      size_t why_cap);
    bool (*index)(void *ctx, ss_serving_index_entry **out, size_t *n);
} ss_predict_handler;

/* describe() results: front ends map them onto their protocol's status (REST: 200/404/503). */
enum { SS_DESCRIBE_OK = 0, SS_DESCRIBE_NOT_FOUND = 1, SS_DESCRIBE_NOT_READY = 2 };

/* Readiness as the health endpoints report it. */
typedef bool (*ss_ready_fn)(void *ctx);

/* ------------------------------------------------------------------ requests and instances */

ss_predict_request *ss_predict_request_new(const char *servable, const char *method,
                                           uint64_t version);
void ss_predict_request_free(ss_predict_request *req);
/* The client went away (a front end saw its connection or stream close before the answer): a
 * backend that works long on a request (generation) polls ss_predict_request_cancelled, stops
 * early and answers done() with an error. Safe from any thread while done() has not been
 * called; done() is still called exactly once. */
void ss_predict_request_cancel(ss_predict_request *req);
bool ss_predict_request_cancelled(const ss_predict_request *req);
/* Append an empty instance; returns it (NULL when out of memory). The array grows by doubling,
 * so N appends cost O(N) however the allocator reallocates. */
ss_serving_instance *ss_predict_request_add_instance(ss_predict_request *req);
/* Room for n instances in all (a caller that knows the count allocates the array once); false
 * when out of memory. */
bool ss_predict_request_reserve(ss_predict_request *req, size_t n);

/* Add an item, taking ownership of *tensor (which is reset to empty). A later item of the same
 * name replaces an earlier one. */
ss_status *ss_serving_instance_put(ss_serving_instance *inst, const char *name, ss_tensor *tensor,
                                   bool is_bytes);
/* Convenience: add a string/bytes scalar (copies the bytes). */
ss_status *ss_serving_instance_put_string(ss_serving_instance *inst, const char *name,
                                          const void *bytes, size_t len, bool is_bytes);
const ss_serving_item *ss_serving_instance_find(const ss_serving_instance *inst, const char *name);
void ss_serving_instance_clear(ss_serving_instance *inst);

/* ------------------------------------------------------------------ replies */

/* A reply with `count` empty instances and no errors. */
ss_predict_reply *ss_predict_reply_new(size_t count);
/* The whole request failed: one error entry, no instances. */
ss_predict_reply *ss_predict_reply_error(int64_t code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Mark instance i failed (allocates the per-instance error list on first use). */
ss_status *ss_predict_reply_fail_instance(ss_predict_reply *reply, size_t i, int64_t code,
                                          const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Name the input instance i's error is about (copied; NULL clears it). False when out of memory
 * or instance i has no error. */
bool ss_predict_reply_blame_input(ss_predict_reply *reply, size_t i, const char *input);
void ss_predict_reply_free(ss_predict_reply *reply);
/* Bring a reply into MindSpore's canonical shape: all-success lists dropped, a request whose
 * every instance failed with the same code and message collapsed into one entry (naming the
 * first one's input), failed
 * instances emptied, empty messages replaced by "Predict failed". */
void ss_predict_reply_collapse(ss_predict_reply *reply);
/* What the front ends do with a handler's reply before encoding it: NULL becomes "Predict
 * failed", the reply is collapsed, and a reply whose instance count does not match the request's
 * becomes a SYSTEM_ERROR naming both counts. Returns the reply to send (the argument is consumed;
 * NULL only when out of memory). */
ss_predict_reply *ss_predict_reply_finish(ss_predict_reply *reply, const ss_predict_request *req);

/* ------------------------------------------------------------------ MindSpore's checks and texts
 */

/* "servable(NAME) method(M)" plus " version(V)" when V > 0, as MindSpore's RequestSpec::Repr. */
const char *ss_serving_spec_str(const ss_predict_request *req, char *buf, size_t cap);
/* Unknown servable/version or method, with MindSpore's text (code INVALID_INPUTS). */
ss_predict_reply *ss_serving_err_unavailable(const ss_predict_request *req, bool method_missing);
/* Extra names are allowed (MindSpore ignores them) but bounded: an instance may carry at most
 * max(SS_SERVING_MIN_NAME_LIMIT, 4 x the method's inputs) names. */
#define SS_SERVING_MIN_NAME_LIMIT 1024
size_t ss_serving_max_names(size_t method_inputs);
/* The name limit of (servable, method, version) for decoders that check it before decoding;
 * ctx is the decoder's ctx. */
typedef size_t (*ss_serving_name_limit_fn)(void *ctx, const char *servable, const char *method,
                                           uint64_t version);

/* Every instance must carry every input name and at most ss_serving_max_names(n) names: NULL if
 * so, else the whole-request error reply ("Cannot find input X in instance input , servable S,
 * method M", or one naming the limit). Extra items are ignored. */
ss_predict_reply *ss_predict_request_check_inputs(const ss_predict_request *req,
                                                  const char *const *input_names, size_t n);

/* Names travel as protobuf strings and JSON keys, both UTF-8 by definition. */
bool ss_serving_utf8_valid(const char *s, size_t len);
/* Whether JSON text holds a "\u0000" escape: cJSON's strings end at NUL, so such a string would
 * arrive cut short (the JSON front ends refuse it and name the way to send NUL bytes). */
bool ss_serving_json_has_nul(const char *text, size_t len);

/* MindSpore's names for tensor types, one table (src/serving/dtypes.c):
 * - its C++ names ("kMSI_Float32"), as its error texts spell them;
 * - its gRPC proto DataType values (MS_BYTES is a string tensor with is_bytes) and the
 *   "proto::MS_FLOAT32" texts its errors print for them (unknown values: MS_UNKNOWN / 0);
 * - its REST object type names ("fp32", "float32", "bytes", ...): the name MindSpore prints for
 *   a dtype is the first of its names. */
const char *ss_serving_ms_dtype_name(ss_dtype dt);
ss_dtype ss_serving_ms_dtype_from_proto(int value, bool *is_bytes);
int ss_serving_ms_dtype_to_proto(ss_dtype dt, bool is_bytes);
const char *ss_serving_ms_proto_dtype_name(int value);
bool ss_serving_ms_rest_type(const char *name, ss_dtype *dt, bool *is_bytes);
const char *ss_serving_ms_rest_type_name(ss_dtype dt, bool is_bytes);

/* ------------------------------------------------------------------ signatures */

/* One input or output of a method as a client sees it: per-instance shape when batched (the
 * model's leading batch dim removed), the model's whole shape otherwise; -1 = any size. */
typedef struct {
    char *name;
    ss_dtype dtype;
    bool batched; /* the model takes this tensor with a batch dim in front */
    int ndim;
    int64_t dims[SS_MAX_DIMS];
} ss_serving_tensor_spec;

typedef struct {
    char *name;
    ss_serving_tensor_spec *inputs, *outputs;
    size_t n_inputs, n_outputs;
} ss_serving_method;

/* What a running servable version accepts and how it is laid out. */
struct ss_serving_signature {
    char *servable;
    uint64_t version;
    ss_serving_method *methods;
    size_t n_methods;
    int batch_size; /* instances per model call */
    bool with_batch_dim;
    int rank_size, stage_size; /* 1/1 for a model that is not distributed */
    int max_context; /* a generative servable: prompt + new tokens at most (0: no limit) */
};

ss_serving_signature *ss_serving_signature_copy(const ss_serving_signature *sig);
void ss_serving_signature_free(ss_serving_signature *sig);
/* Free what a signature owns (for one built on the stack or embedded in a struct). */
void ss_serving_signature_clear(ss_serving_signature *sig);
const ss_serving_method *ss_serving_signature_method(const ss_serving_signature *sig,
                                                     const char *name);

/*
 * MindSpore's per-instance checks of one instance against a method, in MindSpore's order: the
 * byte size first, then the dtype ("Given model input K size N not match the size M defined in
 * model" / "... data type X not match the data type Y defined in model"). An input the model
 * takes whole (not batched) whose byte size is right is reshaped in place to the model's shape,
 * as MindSpore copies the bytes into the model's tensor. Returns false with `why` filled.
 * Input names were checked before (ss_predict_request_check_inputs).
 */
bool ss_serving_check_instance(const ss_serving_method *m, ss_serving_instance *inst, char *why,
                               size_t cap);

/* ------------------------------------------------------------------ the registry */

typedef struct ss_serving ss_serving;
typedef struct ss_serving_entry ss_serving_entry;

/*
 * A servable version's implementation. submit() gets a request that passed every check of the
 * method `method` (an index into the published signature's methods) and a reply with one
 * instance per request instance, some possibly already failed (invalid inputs): the backend
 * fills the others and calls done(done_ctx, reply) exactly once, from any thread. It must return
 * promptly.
 */
typedef struct {
    void *ctx;
    void (*submit)(void *ctx, ss_predict_request *req, size_t method, ss_predict_reply *reply,
                   ss_predict_done done, void *done_ctx);
} ss_serving_backend;

ss_serving *ss_serving_new(void);
/* Every entry must have been removed (its backend stopped) before. NULL is fine. */
void ss_serving_free(ss_serving *s);
/* Declare a servable version (not ready until ss_serving_publish). */
ss_status *ss_serving_add(ss_serving *s, const char *servable, uint64_t version,
                          ss_serving_backend backend, ss_serving_entry **out);
/* Forget an entry: no new request reaches its backend once this returns. */
void ss_serving_remove(ss_serving *s, ss_serving_entry *e);
/* The version is ready with this signature (copied) / no longer ready, and why. Any thread. */
ss_status *ss_serving_publish(ss_serving_entry *e, const ss_serving_signature *sig);
void ss_serving_withdraw(ss_serving_entry *e, const char *why);
/* The handler front ends use: version resolution, MindSpore's checks, then the backend. */
ss_predict_handler ss_serving_handler(ss_serving *s);
/* An ss_serving_name_limit_fn over any handler (ctx: its ss_predict_handler *): the method's limit
 * from describe(), the minimum for an unknown servable or method (refused either way). */
size_t ss_predict_handler_name_limit(void *handler, const char *servable, const char *method,
                                     uint64_t version);
/* Told of every request the registry answers itself (unknown servable or method, missing inputs,
 * not ready): the resolved servable and version ("" and 0 when unknown), the method ("" when
 * unknown) and the code. For metrics; called on the front end's thread. */
typedef void (*ss_serving_reject_fn)(void *ctx, const char *servable, uint64_t version,
                                     const char *method, int64_t code);
void ss_serving_on_reject(ss_serving *s, ss_serving_reject_fn fn, void *ctx);
/* Told of every request a backend answered: the servable, its resolved version, the front end's
 * method (a composed servable's, not the model calls its stages make), the first failure code of
 * the reply (0: every instance ok) and the nanoseconds since the registry handed it over. For
 * metrics; called on the backend's thread, before the front end's done(). */
typedef void (*ss_serving_answer_fn)(void *ctx, const char *servable, uint64_t version,
                                     const char *method, int64_t code, uint64_t ns);
void ss_serving_on_answer(ss_serving *s, ss_serving_answer_fn fn, void *ctx);
/*
 * The model repository (KServe's extension) over the versions serve was started with; starting
 * new agents is not the registry's job. Unload (loaded = false) refuses new requests to the
 * version at once (SERVABLE_UNAVAILABLE, "unloaded") while the ones its backend holds finish
 * (state UNLOADING until they have); load serves it again (READY once its backend is). version 0
 * = every version of the servable. SS_DESCRIBE_NOT_FOUND (why filled) when none matches.
 */
int ss_serving_set_loaded(ss_serving *s, const char *servable, uint64_t version, bool loaded,
                          char *why, size_t cap);
struct ss_serving_index_entry {
    char servable[256];
    uint64_t version;
    const char *state; /* READY, UNAVAILABLE or UNLOADING, as Triton names them */
    char reason[512];  /* why it does not serve ("" when READY) */
    long inflight;     /* requests its backend still holds */
};
/* Every servable version (*out malloc'd); false when out of memory. */
bool ss_serving_index(ss_serving *s, ss_serving_index_entry **out, size_t *n);
/* Readiness as /health/ready reports it: at least one loaded version, and every loaded version
 * ready (unloaded ones do not count). */
bool ss_serving_ready(void *serving);

/* ------------------------------------------------------------------ stage pipelines */

/*
 * A servable whose methods are stage pipelines (servable.json "stages" or "models"; README:
 * composed servables). ss_pipeline_parse reads the methods' stages (*out = NULL when there are
 * none and no "models": the servable is a plain one-model servable). A servable declares one or
 * more models, each with one or more subgraphs; every (model, subgraph) pair is a backend of its
 * own (a worker), serving only its internal method (ss_pipeline_model_method, inputs/outputs
 * ss_pipeline_model_names: none when only Model.call reaches it, and then the worker takes the
 * model's own). ss_serving_set_pipeline puts the pipeline in front of them: the registry
 * publishes the pipeline's methods once every model is ready, and each request runs through its
 * stages (model stages through the workers, C-function stages on the pipeline's stage threads).
 * Errors name the method, the stage (1-based, as MindSpore counts) and the value.
 */
typedef struct ss_pipeline ss_pipeline;
/* `what` names the file (a library path is relative to its folder); `servable` is the servable's
 * name (its model's key when it declares no "models"). Loads nothing. */
ss_status *ss_pipeline_parse(const char *text, size_t len, const char *what, const char *servable,
                             ss_pipeline **out);
size_t ss_pipeline_model_count(const ss_pipeline *p);
/* Backend k's internal method; *decl (optional) its model's position in "models", *subgraph
 * (optional) its subgraph. */
const char *ss_pipeline_model_method(const ss_pipeline *p, size_t model, size_t *decl,
                                     uint32_t *subgraph);
size_t ss_pipeline_model_names(const ss_pipeline *p, size_t model, bool outputs,
                               const char *const **names);
/* Loads the plugins (init), starts the stage threads and takes ownership of p (freed with the
 * entry, or here on failure). `models` holds one backend per pipeline model (NULL: the entry's
 * own backend is the only model's). Call right after ss_serving_add, before any backend
 * publishes; a backend then publishes and withdraws its model with the _model calls below
 * (ss_serving_publish and ss_serving_withdraw are model 0's). */
ss_status *ss_serving_set_pipeline(ss_serving_entry *e, ss_pipeline *p,
                                   const ss_serving_backend *models);
ss_status *ss_serving_publish_model(ss_serving_entry *e, size_t model,
                                    const ss_serving_signature *sig);
void ss_serving_withdraw_model(ss_serving_entry *e, size_t model, const char *why);
/* Stops the stage threads (every request they hold is answered first), fini()s the plugins. */
void ss_pipeline_free(ss_pipeline *p);
/* How long a python_function stage may take before its runner is killed and restarted (the
 * server's request timeout; default 10000 ms). Process-wide: set it before servables start. */
void ss_pystage_set_timeout_ms(long ms);
/* A servable folder with MindSpore's servable_config.py: run it once through the
 * mindspore_serving shim (a python3 child) and return the servable in servable.json's form
 * (malloc'd, NUL-terminated). Errors carry MindSpore's texts. */
ss_status *ss_pyconfig_export(const char *servable_dir, const char *name, char **json, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
