/*
 * tls: load MindSpore's SSLConfig files for the front ends and check them before gRPC or
 * libmicrohttpd sees them, so a bad file fails start-up with a message naming it (MindSpore's
 * "load private_key from X failed") instead of a bare bind failure. Internal to src/server.
 */
#ifndef SS_SERVER_TLS_H
#define SS_SERVER_TLS_H

#include "shardserve/server.h"

typedef struct {
    char *cert; /* NUL-terminated PEM texts; ca is NULL unless verify_client */
    char *key;
    char *ca;
    bool verify_client;
} ss_tls_pems;

/* Read and check cfg's files: the certificate parses, the key is unencrypted and belongs to it,
 * custom_ca holds at least one certificate, verify_client has a custom_ca. `who` ("gRPC",
 * "RESTful") prefixes the messages. On error *out is left empty. */
ss_status *ss_tls_load(const ss_ssl_config *cfg, const char *who, ss_tls_pems *out);
/* Frees the texts (after wiping the key). */
void ss_tls_pems_free(ss_tls_pems *p);

#endif
