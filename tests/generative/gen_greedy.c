/*
 * gen_greedy: runs a KV-cache decoder through shardserve's runtime with the greedy token loop
 * (kvloop.c) and compares its tokens with PyTorch's (tests/generative/models.py).
 *
 *   gen_greedy MODEL.onnx PROMPT.npy REF_TOKENS.npy
 *
 * Prints the first mismatch (step, ours, PyTorch's) and exits 1 on any difference; prints the
 * prefill and mean decode-step times on success.
 */
#include "kvloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int fail(ss_status *st, const char *what)
{
    fprintf(stderr, "gen_greedy: %s: %s\n", what, st->msg);
    ss_status_free(st);
    return 1;
}

/* Our tokens against the reference. */
static int compare(const int64_t *ours, const int64_t *ref, int steps)
{
    for (int i = 0; i < steps; i++)
        if (ours[i] != ref[i]) {
            fprintf(stderr, "gen_greedy: token %d differs: ours %lld, PyTorch %lld\n", i,
                    (long long)ours[i], (long long)ref[i]);
            return 1;
        }
    return 0;
}

static int run(ss_session *s, const ss_tensor *prompt, const ss_tensor *ref)
{
    ss_kvloop *l = NULL;
    ss_status *st = ss_kvloop_create(s, &l);
    if (st) return fail(st, "binding the model");
    int steps = (int)ref->dims[0];
    int64_t *ours = calloc((size_t)steps, sizeof *ours);
    double t0 = now_ms(), t1 = 0;
    st = ss_kvloop_step(l, prompt->data, (int)prompt->dims[0], &ours[0]);
    t1 = now_ms();
    for (int i = 1; i < steps && !st; i++) st = ss_kvloop_step(l, &ours[i - 1], 1, &ours[i]);
    double t2 = now_ms();
    int rc = st ? fail(st, "generating") : compare(ours, ref->data, steps);
    ss_session_stats stats;
    ss_session_get_stats(s, &stats);
    if (rc == 0)
        printf("gen_greedy: %d tokens equal PyTorch's; prefill %lld tokens %.2f ms, decode "
               "%.3f ms/token, %d plans\n",
               steps, (long long)prompt->dims[0], t1 - t0, (t2 - t1) / (steps > 1 ? steps - 1 : 1),
               stats.n_plans);
    free(ours);
    ss_kvloop_free(l);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: gen_greedy MODEL.onnx PROMPT.npy REF_TOKENS.npy\n");
        return 2;
    }
    ss_tensor prompt = {0}, ref = {0};
    ss_session *s = NULL;
    ss_status *st = ss_npy_read(argv[2], &prompt);
    if (!st) st = ss_npy_read(argv[3], &ref);
    if (!st && (prompt.dtype != SS_DT_INT64 || prompt.ndim != 1 || ref.dtype != SS_DT_INT64 ||
                ref.ndim != 1 || prompt.dims[0] < 1))
        st = ss_errf(SS_ERR_INVALID, "prompt and reference must be non-empty int64 vectors");
    if (!st) st = ss_session_create(argv[1], &(ss_session_options){0}, &s);
    int rc = st ? fail(st, argv[1]) : run(s, &prompt, &ref);
    ss_session_free(s);
    ss_tensor_free(&prompt);
    ss_tensor_free(&ref);
    return rc;
}
