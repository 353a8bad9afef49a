/*
 * kserve_shm (internal to the server module): the system shared-memory extension of the Open
 * Inference Protocol (Triton's). Clients register POSIX shared-memory regions (name -> key,
 * offset, byte_size) and then give inputs and requested outputs by region, offset and size
 * instead of sending their bytes. The regions are one table for the whole process, shared by the
 * REST and gRPC front ends. For now the bytes are copied at serve (inputs into a buffer the call
 * owns, outputs from the reply into the region), under the table's lock, so unregistering a
 * region in use is safe; handing the region to the agents is future work.
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

/* An input given by region: its bytes copied into a buffer the call owns (in->data, nbytes).
 * 400 naming the input for an unregistered region or a range past its end. */
bool ss_kserve_shm_input(ss_kserve_call *call, ss_kserve_input *in, const char *region,
                         uint64_t offset, uint64_t byte_size, ss_kserve_error *err);
/* Record a requested output's region (checked now: registered and large enough). */
bool ss_kserve_shm_output(ss_kserve_requested *r, const char *region, uint64_t offset,
                          uint64_t byte_size, ss_kserve_error *err);
/* Copy the outputs requested in shared memory into their regions (marking them o->shm). */
bool ss_kserve_shm_write_outputs(const ss_kserve_call *call, ss_kserve_output *outs, size_t n,
                                 ss_kserve_error *err);

/* REST: GET /v2/systemsharedmemory[/region/NAME]/status, POST .../region/NAME/register and
 * POST /v2/systemsharedmemory[/region/NAME]/unregister. Status and a malloc'd body. */
void ss_kserve_rest_shm(const char *method, const char *url, const char *body, size_t len,
                        int *status, char **out, size_t *out_len);

#endif
