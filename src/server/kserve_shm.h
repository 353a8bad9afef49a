/*
 * kserve_shm (internal to the server module): the system shared-memory extension of the Open
 * Inference Protocol (Triton's). Clients register POSIX shared-memory regions (name -> key,
 * offset, byte_size) and then give inputs and requested outputs by region, offset and size
 * instead of sending their bytes. The regions are one table for the whole process, shared by the
 * REST and gRPC front ends. An input given by region is borrowed in place and a requested output
 * becomes a place in the request (ss_serving_place); the region is also shared with the link
 * (ss_link_shm_share), so a local agent maps it and reads the input / writes the output there
 * itself: the tensor never crosses a socket. A call holds the regions it uses: unregistering one
 * in use only takes it out of the table, and it is unmapped when the last call lets go.
 *
 * Like Triton's --allow-client-shm, this lets a client map any shared-memory object the server's
 * user may open: serve it only to trusted clients.
 */
#ifndef SS_SERVER_KSERVE_SHM_H
#define SS_SERVER_KSERVE_SHM_H

#include "kserve_codec.h"

typedef struct {
    char name[128];
    char key[256];
    uint64_t offset, byte_size;
} ss_kserve_shm_region;

/* Map `key` (a POSIX shm name, "/..."): 400 when the key cannot be opened or is smaller than
 * offset + byte_size, 409-like 400 when the name is taken. */
bool ss_kserve_shm_register(const char *name, const char *key, uint64_t offset, uint64_t byte_size,
                            ss_kserve_error *err);
/* name NULL or "" = every region; 404 for an unknown name. */
bool ss_kserve_shm_unregister(const char *name, ss_kserve_error *err);
/* The registered regions (name NULL or "" = all; 404 for an unknown name); *out malloc'd. */
bool ss_kserve_shm_status(const char *name, ss_kserve_shm_region **out, size_t *n,
                          ss_kserve_error *err);

/* An input given by region: its bytes borrowed in place (in->data, nbytes; the call holds the
 * region). 400 naming the input for an unregistered region or a range past its end. */
bool ss_kserve_shm_input(ss_kserve_call *call, ss_kserve_input *in, const char *region,
                         uint64_t offset, uint64_t byte_size, ss_kserve_error *err);
/* Record a requested output's region (checked now: registered and large enough). */
bool ss_kserve_shm_output(ss_kserve_requested *r, const char *region, uint64_t offset,
                          uint64_t byte_size, ss_kserve_error *err);
/* The outputs requested in shared memory as the request's places (single-instance calls; the call
 * holds their regions). 400 when a region has gone since the output was parsed. */
bool ss_kserve_shm_places(ss_kserve_call *call, ss_predict_request *req, ss_kserve_error *err);
/* A failed reply whose text names the object of a region the call holds (an agent found it too
 * small, or shrunk while it ran): the region is named too, and it is the client's error (400). */
void ss_kserve_shm_explain(const ss_kserve_call *call, ss_kserve_error *err);
/* Let go of the regions the call holds (ss_kserve_call_free). */
void ss_kserve_shm_let_go(ss_kserve_call *call);
/* Copy the outputs requested in shared memory into their regions (marking them o->shm); an
 * output the agent wrote there itself is not copied. */
bool ss_kserve_shm_write_outputs(const ss_kserve_call *call, ss_kserve_output *outs, size_t n,
                                 ss_kserve_error *err);

/* REST: GET /v2/systemsharedmemory[/region/NAME]/status, POST .../region/NAME/register and
 * POST /v2/systemsharedmemory[/region/NAME]/unregister. Status and a malloc'd body. */
void ss_kserve_rest_shm(const char *method, const char *url, const char *body, size_t len,
                        int *status, char **out, size_t *out_len);

#endif
