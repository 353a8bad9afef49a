/*
 * shardserve infer --address A --servable S --method M [--version N] --input NAME=FILE.npy ...
 *                  [--protocol P] [--output-dir DIR] [--timeout-ms MS] [--tls] [--tls-ca F]
 *                  [--tls-cert F --tls-key F]
 * One instance through the C client library (libshardserve-client), outputs printed and
 * optionally written as NAME.npy. --protocol: mindspore (default) or KServe v2's gRPC, REST JSON
 * or REST binary (model SERVABLE.METHOD). --stream: through shardserve.Stream/PredictStream,
 * printing a generate servable's tokens piece by piece, then the whole reply. --shm (KServe,
 * server on this host) puts the inputs in a POSIX shared-memory region registered for the call,
 * and each --output NAME too: only region, offset and size travel. The region is unregistered and
 * removed on every way out (errors and SIGINT/SIGTERM included).
 */
#include "cli.h"
#include "cli_shm.h"
#include "shardserve/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char infer_usage[] =
    "usage: shardserve infer --address HOST:PORT --servable NAME --method NAME [--version N]\n"
    "                        --input NAME=FILE.npy ... [--output-dir DIR] [--timeout-ms MS]\n"
    "                        [--tls] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]\n"
    "                        [--protocol mindspore|kserve|kserve-grpc|kserve-rest|kserve-binary]\n"
    "                        [--stream] [--shm [--output NAME] [--shm-output-size BYTES]]\n"
    "  --protocol  kserve = kserve-grpc: the Open Inference Protocol (model SERVABLE.METHOD);\n"
    "              kserve-rest / kserve-binary: its REST API (JSON / binary tensors), --address\n"
    "              being the REST address\n"
    "  --tls       TLS with gRPC's default roots; --tls-ca FILE: TLS trusting that CA instead\n"
    "  --tls-cert  client certificate and key (PEM), for servers started with "
    "--grpc-verify-client\n"
    "  --stream    shardserve's streaming Predict: pieces (a generate servable's tokens) printed\n"
    "              on one line \"stream: T T ...\" (each once the next message arrives: only\n"
    "              the stream's end tells the last, the whole reply), then the whole reply\n"
    "  --shm       (kserve protocols, server on this host) inputs through a shared-memory region;\n"
    "              --output NAME: that output written into it too, in at most\n"
    "              --shm-output-size BYTES (default: the inputs' bytes, at least 1 MiB)\n";

static const struct {
    ss_dtype ss;
    ss_client_dtype ms;
} dtype_map[] = {
    {SS_DT_BOOL, SS_CLIENT_BOOL},       {SS_DT_INT8, SS_CLIENT_INT8},
    {SS_DT_UINT8, SS_CLIENT_UINT8},     {SS_DT_INT16, SS_CLIENT_INT16},
    {SS_DT_UINT16, SS_CLIENT_UINT16},   {SS_DT_INT32, SS_CLIENT_INT32},
    {SS_DT_UINT32, SS_CLIENT_UINT32},   {SS_DT_INT64, SS_CLIENT_INT64},
    {SS_DT_UINT64, SS_CLIENT_UINT64},   {SS_DT_FLOAT16, SS_CLIENT_FLOAT16},
    {SS_DT_FLOAT32, SS_CLIENT_FLOAT32}, {SS_DT_FLOAT64, SS_CLIENT_FLOAT64},
};

static ss_client_dtype to_ms(ss_dtype dt)
{
    for (size_t i = 0; i < sizeof dtype_map / sizeof dtype_map[0]; i++)
        if (dtype_map[i].ss == dt) return dtype_map[i].ms;
    return SS_CLIENT_UNKNOWN;
}

static ss_dtype from_ms(ss_client_dtype dt)
{
    for (size_t i = 0; i < sizeof dtype_map / sizeof dtype_map[0]; i++)
        if (dtype_map[i].ms == dt) return dtype_map[i].ss;
    return SS_DT_UNDEFINED;
}

static int client_fail(ss_client_error *e)
{
    fprintf(stderr, "shardserve infer: %s error %lld: %s\n", ss_client_errkind_name(e->kind),
            (long long)e->code, e->msg);
    ss_client_error_free(e);
    return 1;
}

static size_t tensor_bytes(const ss_client_tensor *t)
{
    size_t n = ss_client_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->dims[d];
    return n;
}

static int print_outputs(const ss_client_reply *reply, const char *outdir, const cli_shm *shm)
{
    int rc = 0;
    for (size_t k = 0; k < ss_client_reply_output_count(reply, 0); k++) {
        ss_client_tensor t;
        if (!ss_client_reply_output(reply, 0, k, &t)) continue;
        if (t.dtype == SS_CLIENT_STRING || t.dtype == SS_CLIENT_BYTES) {
            size_t len;
            const char *s = ss_client_tensor_string(&t, 0, &len);
            printf("%s: %s \"%.*s\"\n", t.name, ss_client_dtype_name(t.dtype),
                   (int)(len > 200 ? 200 : len), s ? s : "");
            continue;
        }
        const void *in_shm = cli_shm_output(shm, t.name);
        if (in_shm) t.data = in_shm, t.nbytes = tensor_bytes(&t);
        ss_tensor view;
        ss_status *st =
            ss_tensor_borrow(&view, from_ms(t.dtype), t.ndim, t.dims, (void *)t.data, t.nbytes);
        if (st) {
            rc = cli_fail("infer", st);
            continue;
        }
        cli_print_tensor(t.name, &view);
        if (outdir) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s.npy", outdir, t.name);
            st = ss_npy_write(path, &view);
            if (st) rc = cli_fail("infer", st);
        }
    }
    return rc;
}

/* `--stream`: each piece's tokens as it arrives. The last message is the whole reply (printed
 * after the stream like a unary one); a generate servable's holds "finish_reason", a piece never.
 */
static bool print_piece(void *ctx, const ss_client_reply *message)
{
    bool *started = ctx;
    ss_client_tensor t;
    if (ss_client_reply_find(message, 0, "finish_reason", &t)) return true;
    if (!ss_client_reply_find(message, 0, "tokens", &t) || t.dtype != SS_CLIENT_INT64) return true;
    if (!*started) fputs("stream:", stdout);
    *started = true;
    const int64_t *tokens = t.data;
    for (size_t i = 0; i < t.nbytes / sizeof(int64_t); i++)
        printf(" %lld", (long long)tokens[i]);
    fflush(stdout);
    return true;
}

int cli_client_protocol(const char *name)
{
    static const struct {
        const char *name;
        ss_client_protocol protocol;
    } names[] = {{"mindspore", SS_CLIENT_MINDSPORE},
                 {"kserve", SS_CLIENT_KSERVE_GRPC},
                 {"kserve-grpc", SS_CLIENT_KSERVE_GRPC},
                 {"kserve-rest", SS_CLIENT_KSERVE_REST},
                 {"kserve-binary", SS_CLIENT_KSERVE_BINARY}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(names[i].name, name)) return (int)names[i].protocol;
    return -1;
}

/* The inputs read from their files: sent as bytes, or through the region. */
static int add_inputs(ss_client_request *req, size_t inst, char **names, char **files, int n,
                      cli_shm *shm)
{
    ss_tensor t[64] = {0};
    int rc = 0, read = 0;
    size_t total = 0;
    for (; read < n && !rc; read++) {
        ss_status *st = ss_npy_read(files[read], &t[read]);
        if (st) rc = cli_fail("infer", st);
        if (!st) total += t[read].nbytes + 64;
    }
    ss_client_error *e = !rc && shm ? cli_shm_create(shm, "infer", total) : NULL;
    if (e) rc = client_fail(e);
    for (int i = 0; i < n && !rc; i++) {
        e = shm ? cli_shm_input(shm, req, inst, names[i], &t[i], to_ms(t[i].dtype))
                : ss_client_request_set_tensor(req, inst, names[i], to_ms(t[i].dtype), t[i].dims,
                                               t[i].ndim, t[i].data, t[i].nbytes);
        if (e) rc = client_fail(e);
    }
    for (int i = 0; i < read; i++)
        ss_tensor_free(&t[i]);
    return rc;
}

/* Connect, (register the region,) call, print. */
static int call_and_print(const ss_client_options *o, ss_client_request *req, size_t inst,
                          cli_shm *shm, bool stream, const char *outdir)
{
    ss_client *c = NULL;
    ss_client_reply *reply = NULL;
    bool streamed = false;
    ss_client_error *e = ss_client_connect(o, &c);
    int rc = e ? client_fail(e) : 0;
    if (!rc && shm && (e = cli_shm_register(shm, c, req, inst))) rc = client_fail(e);
    if (!rc && stream) {
        e = ss_client_infer_stream(c, req, print_piece, &streamed, &reply);
        if (streamed) putchar('\n');
        if (e) rc = client_fail(e);
    } else if (!rc && (e = ss_client_infer(c, req, &reply))) {
        rc = client_fail(e);
    }
    if (!rc) {
        int64_t code = 0;
        const char *err = ss_client_reply_error(reply, 0, &code);
        if (err) {
            fprintf(stderr, "shardserve infer: the instance failed (code %lld): %s\n",
                    (long long)code, err);
            rc = 1;
        } else {
            rc = print_outputs(reply, outdir, shm);
        }
    }
    if (shm) cli_shm_cleanup(shm, "infer");
    ss_client_reply_free(reply);
    ss_client_close(c);
    return rc;
}

int cmd_infer(int argc, char **argv)
{
    const char *address = NULL, *servable = NULL, *method = NULL, *outdir = NULL;
    char *names[64], *files[64];
    int n = 0;
    long version = 0, timeout_ms = 0, out_size = 0;
    ss_client_ssl_config ssl = {0};
    bool tls = false, stream = false, use_shm = false;
    cli_shm shm = {0};
    int protocol = SS_CLIENT_MINDSPORE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(infer_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--address") && has)
            address = argv[++i];
        else if (!strcmp(a, "--servable") && has)
            servable = argv[++i];
        else if (!strcmp(a, "--method") && has)
            method = argv[++i];
        else if (!strcmp(a, "--output-dir") && has)
            outdir = argv[++i];
        else if (!strcmp(a, "--protocol") && has) {
            if ((protocol = cli_client_protocol(argv[++i])) < 0)
                return cli_fail("infer", ss_errf(SS_ERR_INVALID,
                                                 "--protocol wants mindspore, kserve, kserve-grpc, "
                                                 "kserve-rest or kserve-binary, got '%s'",
                                                 argv[i]));
        } else if (!strcmp(a, "--tls"))
            tls = true;
        else if (!strcmp(a, "--stream"))
            stream = true;
        else if (!strcmp(a, "--tls-ca") && has)
            ssl.custom_ca = argv[++i];
        else if (!strcmp(a, "--tls-cert") && has)
            ssl.certificate = argv[++i];
        else if (!strcmp(a, "--tls-key") && has)
            ssl.private_key = argv[++i];
        else if (!strcmp(a, "--shm"))
            use_shm = true;
        else if (!strcmp(a, "--output") && has && shm.n_outputs < 64)
            shm.outputs[shm.n_outputs++] = argv[++i];
        else if (!strcmp(a, "--shm-output-size") && has) {
            if (!cli_parse_int(argv[++i], 1, 1L << 40, &out_size))
                return cli_fail("infer",
                                ss_errf(SS_ERR_INVALID,
                                        "--shm-output-size wants bytes > 0, got '%s'", argv[i]));
        } else if (!strcmp(a, "--version") && has) {
            if (!cli_parse_int(argv[++i], 0, 1000000000, &version))
                return cli_fail(
                    "infer",
                    ss_errf(SS_ERR_INVALID, "--version wants a number >= 0, got '%s'", argv[i]));
        } else if (!strcmp(a, "--timeout-ms") && has) {
            if (!cli_parse_int(argv[++i], 1, 3600000, &timeout_ms))
                return cli_fail(
                    "infer",
                    ss_errf(SS_ERR_INVALID, "--timeout-ms wants 1..3600000, got '%s'", argv[i]));
        } else if (!strcmp(a, "--input") && has && n < 64) {
            if (!cli_split_kv(argv[++i], &names[n], &files[n]))
                return cli_fail("infer", ss_errf(SS_ERR_INVALID,
                                                 "--input wants NAME=FILE.npy, got '%s'", argv[i]));
            n++;
        } else {
            fprintf(stderr, "shardserve infer: unexpected argument '%s'\n%s", a, infer_usage);
            return 2;
        }
    }
    if (!address || !servable || !method || !n) {
        fputs(infer_usage, stderr);
        return 2;
    }
    if ((use_shm || shm.n_outputs) && (protocol == SS_CLIENT_MINDSPORE || !use_shm))
        return cli_fail("infer",
                        ss_errf(SS_ERR_INVALID, "--shm (and --output) need a kserve --protocol; "
                                                "--output needs --shm"));
    ss_status *made = outdir ? cli_make_output_dir(outdir) : NULL;
    if (made) return cli_fail("infer", made);
    shm.out_size = (size_t)out_size;
    ss_client_request *req = ss_client_request_new(servable, method, (uint64_t)version);
    size_t inst = req ? ss_client_request_add_instance(req) : (size_t)-1;
    if (inst == (size_t)-1) return cli_fail("infer", ss_errf(SS_ERR_NOMEM, "out of memory"));
    int rc = add_inputs(req, inst, names, files, n, use_shm ? &shm : NULL);
    tls = tls || ssl.custom_ca || ssl.certificate || ssl.private_key;
    ss_client_options o = {.address = address,
                           .timeout_ms = (int)timeout_ms,
                           .ssl = tls ? &ssl : NULL,
                           .protocol = (ss_client_protocol)protocol};
    if (!rc)
        rc = call_and_print(&o, req, inst, use_shm ? &shm : NULL, stream, outdir);
    else if (use_shm)
        cli_shm_cleanup(&shm, "infer");
    ss_client_request_free(req);
    return rc;
}
