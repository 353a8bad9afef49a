/*
 * client_internal: what client.c (MindSpore's protocol, the channel, replies) and
 * client_kserve.c (the Open Inference Protocol) share inside libshardserve-client. Nothing here
 * is exported (client.map exports ss_client_* only; these names are cl_*).
 */
#ifndef SS_CLIENT_INTERNAL_H
#define SS_CLIENT_INTERNAL_H

#include "shardserve/client.h"

#include <grpc/slice.h>

typedef struct {
    char *name;
    ss_client_dtype dtype;
    int ndim;
    int64_t *dims;
    uint8_t *data;
    size_t nbytes;
    char *shm_region; /* KServe shared memory: the bytes are region's [shm_offset, + nbytes), data
                         NULL */
    uint64_t shm_offset;
} req_item;

/* An output the caller wants written into a shared-memory region (KServe). */
typedef struct {
    char *name;
    char *shm_region;
    uint64_t shm_offset, shm_size;
} req_output;

typedef struct {
    req_item *items;
    size_t count;
    req_output *outputs;
    size_t n_outputs;
} req_instance;

struct ss_client_request {
    char *servable;
    char *method;
    uint64_t version;
    req_instance *instances;
    size_t count, cap; /* cap: instances allocated (doubling: appends stay linear) */
};

ss_client_error *cl_err(ss_client_errkind kind, int64_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One unary gRPC call on the client's channel with the message `buf` (malloc'd; consumed):
 * *reply is the answer's bytes (unref it), or an SS_CLIENT_ERR_TRANSPORT error with the gRPC
 * status. */
ss_client_error *cl_unary(ss_client *c, const char *method, uint8_t *buf, size_t len,
                          grpc_slice *reply);
/* A reply from a packed PredictReply (how the KServe path hands its outputs over). */
ss_client_error *cl_reply_unpack(const uint8_t *buf, size_t len, ss_client_reply **out);
const char *cl_address(const ss_client *c);
int cl_timeout_ms(const ss_client *c);
ss_client_protocol cl_protocol(const ss_client *c);

/* Add it (owned) to an instance, replacing an item of the same name (client.c). */
ss_client_error *cl_insert_item(ss_client_request *req, size_t instance, req_item *it);
void cl_free_item(req_item *it);
/* The requested shared-memory outputs of an instance (client_kserve.c). */
void cl_free_outputs(req_instance *in);
/* Whether any input or output of the request lies in shared memory (MindSpore cannot say so). */
bool cl_request_uses_shm(const ss_client_request *req);

/* KServe connection pool for REST (client_kserve.c), freed with the client. */
typedef struct cl_pool cl_pool;
cl_pool **cl_pool_of(ss_client *c);
void cl_pool_free(cl_pool *pool);

/* ss_client_infer for the KServe protocols. */
ss_client_error *cl_kserve_infer(ss_client *c, const ss_client_request *req, ss_client_reply **out);

#endif
