/*
 * test_tls_client: one add/add_common call through libshardserve-client, for tests/test_tls.py.
 *   test_tls_client ADDRESS [--ca FILE] [--cert FILE] [--key FILE] [--plain]
 * Without --plain the channel uses TLS (ss_client_options.ssl), with whichever files are given.
 * Prints "OK" and exits 0 when y == x1 + x2 came back; otherwise prints
 * "ERROR <kind> <code> <message>" (or "WRONG ...") and exits 1. Calls have a 10 s deadline.
 */
#include <stdio.h>
#include <string.h>

#include "shardserve/client.h"

static int fail(ss_client_error *e)
{
    printf("ERROR %s %lld %s\n", ss_client_errkind_name(e->kind), (long long)e->code, e->msg);
    ss_client_error_free(e);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_tls_client ADDRESS [--ca F] [--cert F] [--key F] [--plain]\n");
        return 2;
    }
    ss_client_ssl_config ssl = {0};
    bool plain = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--plain"))
            plain = true;
        else if (!strcmp(argv[i], "--ca") && i + 1 < argc)
            ssl.custom_ca = argv[++i];
        else if (!strcmp(argv[i], "--cert") && i + 1 < argc)
            ssl.certificate = argv[++i];
        else if (!strcmp(argv[i], "--key") && i + 1 < argc)
            ssl.private_key = argv[++i];
        else
            return 2;
    }
    ss_client_options o = {.address = argv[1], .timeout_ms = 10000, .ssl = plain ? NULL : &ssl};
    ss_client *c;
    ss_client_error *e = ss_client_connect(&o, &c);
    if (e) return fail(e);
    ss_client_request *r = ss_client_request_new("add", "add_common", 0);
    size_t i = ss_client_request_add_instance(r);
    const float x1[3] = {1, 2, 3}, x2[3] = {10, 20, 30};
    int64_t dims[1] = {3};
    e = ss_client_request_set_tensor(r, i, "x1", SS_CLIENT_FLOAT32, dims, 1, x1, sizeof x1);
    if (!e) e = ss_client_request_set_tensor(r, i, "x2", SS_CLIENT_FLOAT32, dims, 1, x2, sizeof x2);
    ss_client_reply *reply = NULL;
    if (!e) e = ss_client_infer(c, r, &reply);
    ss_client_request_free(r);
    int rc = 0;
    if (e) {
        rc = fail(e);
    } else {
        ss_client_tensor y;
        const float *v = NULL;
        if (ss_client_reply_find(reply, 0, "y", &y) && y.nbytes == sizeof x1) v = y.data;
        if (v && v[0] == 11 && v[1] == 22 && v[2] == 33) {
            printf("OK\n");
        } else {
            printf("WRONG reply\n");
            rc = 1;
        }
    }
    ss_client_reply_free(reply);
    ss_client_close(c);
    return rc;
}
