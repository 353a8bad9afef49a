/*
 * tls: read the PEM files of an ss_ssl_config and check them with GnuTLS (already linked for the
 * REST front end): certificate and key parse, the key is not encrypted (there is no way to give a
 * passphrase, as in MindSpore) and matches the certificate, custom_ca holds certificates. gRPC
 * (OpenSSL) and libmicrohttpd then get texts known to be good.
 */
#include "tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PEM_BYTES (1u << 20)

/* The whole file as a NUL-terminated string (PEM is text). */
static ss_status *read_pem(const char *who, const char *what, const char *path, char **out,
                           size_t *len)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ss_errf(SS_ERR_IO, "Serving Error: %s server: load %s from %s failed: %s", who, what,
                       path, strerror(errno));
    char *buf = malloc(MAX_PEM_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_PEM_BYTES + 1, f) : 0;
    bool bad = ferror(f);
    fclose(f);
    if (!buf) return ss_errf(SS_ERR_NOMEM, "out of memory reading %s", path);
    if (bad || n == 0 || n > MAX_PEM_BYTES) {
        free(buf);
        return ss_errf(SS_ERR_INVALID, "Serving Error: %s server: load %s from %s failed: %s", who,
                       what, path,
                       bad ? "read error"
                       : n ? "larger than 1 MiB"
                           : "the file is empty");
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return NULL;
}

static ss_status *check_pair(const char *who, const ss_ssl_config *cfg, ss_tls_pems *p,
                             size_t cert_len, size_t key_len)
{
    gnutls_datum_t cert = {(unsigned char *)p->cert, (unsigned)cert_len};
    gnutls_datum_t key = {(unsigned char *)p->key, (unsigned)key_len};
    gnutls_x509_crt_t crt;
    int rc = gnutls_x509_crt_init(&crt);
    if (rc == 0) {
        rc = gnutls_x509_crt_import(crt, &cert, GNUTLS_X509_FMT_PEM);
        gnutls_x509_crt_deinit(crt);
    }
    if (rc < 0)
        return ss_errf(SS_ERR_INVALID,
                       "Serving Error: %s server: load certificate from %s failed: %s", who,
                       cfg->certificate, gnutls_strerror(rc));
    gnutls_x509_privkey_t pk;
    rc = gnutls_x509_privkey_init(&pk);
    if (rc == 0) {
        rc = gnutls_x509_privkey_import2(pk, &key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN);
        gnutls_x509_privkey_deinit(pk);
    }
    if (rc < 0)
        return ss_errf(SS_ERR_INVALID,
                       "Serving Error: %s server: load private_key from %s failed: %s (an "
                       "unencrypted PEM key is needed)",
                       who, cfg->private_key, gnutls_strerror(rc));
    gnutls_certificate_credentials_t cred;
    rc = gnutls_certificate_allocate_credentials(&cred);
    if (rc == 0) {
        rc = gnutls_certificate_set_x509_key_mem2(cred, &cert, &key, GNUTLS_X509_FMT_PEM, NULL,
                                                  GNUTLS_PKCS_PLAIN);
        gnutls_certificate_free_credentials(cred);
    }
    if (rc < 0)
        return ss_errf(SS_ERR_INVALID,
                       "Serving Error: %s server: private_key %s does not match certificate %s: %s",
                       who, cfg->private_key, cfg->certificate, gnutls_strerror(rc));
    return NULL;
}

static ss_status *check_ca(const char *who, const ss_ssl_config *cfg, ss_tls_pems *p, size_t len)
{
    gnutls_datum_t ca = {(unsigned char *)p->ca, (unsigned)len};
    gnutls_certificate_credentials_t cred;
    int rc = gnutls_certificate_allocate_credentials(&cred);
    if (rc == 0) {
        rc = gnutls_certificate_set_x509_trust_mem(cred, &ca, GNUTLS_X509_FMT_PEM);
        gnutls_certificate_free_credentials(cred);
    }
    if (rc <= 0)
        return ss_errf(SS_ERR_INVALID,
                       "Serving Error: %s server: load custom_ca from %s failed: %s", who,
                       cfg->custom_ca, rc < 0 ? gnutls_strerror(rc) : "no certificate in it");
    return NULL;
}

ss_status *ss_tls_load(const ss_ssl_config *cfg, const char *who, ss_tls_pems *out)
{
    memset(out, 0, sizeof *out);
    if (!cfg->certificate || !cfg->certificate[0] || !cfg->private_key || !cfg->private_key[0])
        return ss_errf(SS_ERR_INVALID,
                       "Serving Error: %s server: SSL needs both certificate and private_key", who);
    if (cfg->verify_client && (!cfg->custom_ca || !cfg->custom_ca[0]))
        return ss_errf(SS_ERR_INVALID,
                       "Serving Error: %s server: verify_client needs custom_ca (the CA that "
                       "signs client certificates)",
                       who);
    size_t cert_len = 0, key_len = 0, ca_len = 0;
    ss_status *st = read_pem(who, "certificate", cfg->certificate, &out->cert, &cert_len);
    if (!st) st = read_pem(who, "private_key", cfg->private_key, &out->key, &key_len);
    if (!st) st = check_pair(who, cfg, out, cert_len, key_len);
    if (!st && cfg->verify_client) {
        st = read_pem(who, "custom_ca", cfg->custom_ca, &out->ca, &ca_len);
        if (!st) st = check_ca(who, cfg, out, ca_len);
    }
    out->verify_client = cfg->verify_client;
    if (st) ss_tls_pems_free(out);
    return st;
}

void ss_tls_pems_free(ss_tls_pems *p)
{
    if (!p) return;
    if (p->key) {
        volatile char *k = p->key;
        for (size_t i = 0; k[i]; i++)
            k[i] = 0;
    }
    free(p->cert);
    free(p->key);
    free(p->ca);
    memset(p, 0, sizeof *p);
}
