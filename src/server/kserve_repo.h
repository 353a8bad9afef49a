/*
 * kserve_repo (internal to the server module): the Open Inference Protocol's model repository
 * extension (Triton's): the index, and load / unload of a model, over the handler's set_loaded
 * and index (the serving registry: versions serve was started with; see serving.h). A model is a
 * servable: its name, or NAME.METHOD, which names the same servable. Unload answers at once;
 * requests already in flight finish (the index shows UNLOADING until they have) while new ones
 * get 503 "unloaded". Which version: parameter "version" (a number or its text), else all.
 */
#ifndef SS_SERVER_KSERVE_REPO_H
#define SS_SERVER_KSERVE_REPO_H

#include "kserve_codec.h"

/* Load (or unload) `model` at `version` (0 = every version). 501 when the handler has no
 * repository, 404 for an unknown model. */
bool ss_kserve_repo_set_loaded(const ss_predict_handler *h, const char *model, uint64_t version,
                               bool loaded, ss_kserve_error *err);
/* The index (*out malloc'd), only READY versions when ready_only. */
bool ss_kserve_repo_index(const ss_predict_handler *h, bool ready_only,
                          ss_serving_index_entry **out, size_t *n, ss_kserve_error *err);

/* POST /v2/repository/index, /v2/repository/models/NAME/load and .../unload: the status and a
 * malloc'd body (the index's JSON array, "" after load/unload, or {"error"}; NULL when out of
 * memory). */
void ss_kserve_rest_repository(const ss_predict_handler *h, const char *url, const char *body,
                               size_t len, int *status, char **out, size_t *out_len);

#endif
