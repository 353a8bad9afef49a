/* cli_shm: the --shm option's region (see cli_shm.h). A signal handler removes the object if the
 * command is interrupted (the server lets its mapping go when the region is unregistered). */
#include "cli_shm.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char key_for_signals[80];

static void on_signal(int sig)
{
    if (key_for_signals[0]) shm_unlink(key_for_signals);
    _exit(128 + sig);
}

/* Room for n bytes (64-byte aligned): its offset. */
static size_t take(cli_shm *s, size_t n)
{
    size_t at = (s->used + 63) / 64 * 64;
    s->used = at + n;
    return at;
}

ss_client_error *cli_shm_create(cli_shm *s, const char *cmd, size_t input_bytes)
{
    if (!s->out_size) s->out_size = input_bytes > (1u << 20) ? input_bytes : (1u << 20);
    size_t total = input_bytes + 64 * 64 + (size_t)s->n_outputs * (s->out_size + 64);
    snprintf(s->region, sizeof s->region, "shardserve-%s-%d", cmd, (int)getpid());
    snprintf(key_for_signals, sizeof key_for_signals, "/%s", s->region);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    return ss_client_shm_create(key_for_signals, total, &s->shm);
}

ss_client_error *cli_shm_input(cli_shm *s, ss_client_request *req, size_t inst, const char *name,
                               const ss_tensor *t, ss_client_dtype dtype)
{
    size_t at = take(s, t->nbytes); /* the object was sized for every input */
    memcpy((char *)ss_client_shm_data(s->shm) + at, t->data, t->nbytes);
    return ss_client_request_set_shm_input(req, inst, name, dtype, t->dims, t->ndim, s->region, at,
                                           t->nbytes);
}

ss_client_error *cli_shm_register(cli_shm *s, ss_client *c, ss_client_request *req, size_t inst)
{
    ss_client_error *e = ss_client_shm_register(c, s->region, ss_client_shm_key(s->shm), 0,
                                                ss_client_shm_size(s->shm));
    if (!e) s->client = c;
    for (int i = 0; !e && i < s->n_outputs; i++) {
        s->out_offset[i] = take(s, s->out_size);
        e = ss_client_request_set_shm_output(req, inst, s->outputs[i], s->region, s->out_offset[i],
                                             s->out_size);
    }
    return e;
}

const void *cli_shm_output(const cli_shm *s, const char *name)
{
    for (int i = 0; s && s->shm && i < s->n_outputs; i++)
        if (!strcmp(s->outputs[i], name))
            return (const char *)ss_client_shm_data(s->shm) + s->out_offset[i];
    return NULL;
}

void cli_shm_cleanup(cli_shm *s, const char *cmd)
{
    if (s->client) {
        ss_client_error *e = ss_client_shm_unregister(s->client, s->region);
        if (e) fprintf(stderr, "shardserve %s: unregistering %s: %s\n", cmd, s->region, e->msg);
        ss_client_error_free(e);
        s->client = NULL;
    }
    ss_client_shm_destroy(s->shm);
    s->shm = NULL;
    key_for_signals[0] = 0;
}
