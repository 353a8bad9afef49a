/*
 * serving: the module-neutral data model of one predict call, shared by the client-facing front
 * ends (gRPC, REST) and whoever answers requests (the Distributed Worker, or a test handler).
 *
 * - A request names a servable, a method and a version (0 = latest) and carries instances; an
 *   instance is a list of (name, tensor) items. String and bytes values are SS_DT_STRING tensors
 *   holding exactly one element; `is_bytes` tells MindSpore's MS_BYTES from MS_STRING.
 * - A reply carries one instance of outputs per request instance plus error entries, with
 *   MindSpore Serving's codes and its rules for collapsing per-instance errors
 *   (ss_predict_reply_collapse).
 * - The front ends validate the tensor encoding and the instance count before a request reaches
 *   the handler, so a handler only sees well-formed tensors; checking the input names against a
 *   method's signature needs the signature, so the handler does it with
 *   ss_predict_request_check_inputs, which produces MindSpore's error text.
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
} ss_serving_instance;

typedef struct {
    int64_t code; /* ss_serving_code; 0 = this instance succeeded */
    char *message;
} ss_serving_error;

typedef struct {
    char *servable;
    char *method;
    uint64_t version; /* 0 = the latest version */
    ss_serving_instance *instances;
    size_t count;
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
    /* Optional (NULL: no metadata): a servable's methods with their inputs' and outputs' names,
     * dtypes and shapes as one malloc'd JSON text; version 0 = the latest. *ok is false (and the
     * text a {"error_msg": ...}) when the servable is unknown or not ready. */
    char *(*describe)(void *ctx, const char *servable, uint64_t version, bool *ok);
} ss_predict_handler;

/* Readiness as the health endpoints report it. */
typedef bool (*ss_ready_fn)(void *ctx);

/* ------------------------------------------------------------------ requests and instances */

ss_predict_request *ss_predict_request_new(const char *servable, const char *method,
                                           uint64_t version);
void ss_predict_request_free(ss_predict_request *req);
/* Append an empty instance; returns it (NULL when out of memory). */
ss_serving_instance *ss_predict_request_add_instance(ss_predict_request *req);

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
void ss_predict_reply_free(ss_predict_reply *reply);
/* Bring a reply into MindSpore's canonical shape: all-success lists dropped, a request whose
 * every instance failed with the same code and message collapsed into one entry, failed
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
/* Every instance must carry every input name: NULL if so, else the whole-request error reply
 * "Cannot find input X in instance input , servable S, method M". Extra items are ignored. */
ss_predict_reply *ss_predict_request_check_inputs(const ss_predict_request *req,
                                                  const char *const *input_names, size_t n);

/* Names travel as protobuf strings and JSON keys, both UTF-8 by definition. */
bool ss_serving_utf8_valid(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif
