/*
 * Handshake proofs for the link: HMAC-SHA256 (OpenSSL libcrypto) over a role label and both
 * sides' fresh 32-byte nonces, compared in constant time. A proof is bound to one connection
 * (the server's nonce) and one direction (the label), so it cannot be replayed or reflected.
 */
#include "link_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

ss_status *link_proof(const void *secret, size_t secret_len, const char *label,
                      const uint8_t server_nonce[LINK_NONCE_BYTES],
                      const uint8_t client_nonce[LINK_NONCE_BYTES], uint8_t out[LINK_PROOF_BYTES])
{
    uint8_t data[64 + 2 * LINK_NONCE_BYTES];
    size_t label_len = strlen(label);
    if (label_len > 64) return ss_errf(SS_ERR_INTERNAL, "proof label too long");
    memcpy(data, label, label_len);
    memcpy(data + label_len, server_nonce, LINK_NONCE_BYTES);
    memcpy(data + label_len + LINK_NONCE_BYTES, client_nonce, LINK_NONCE_BYTES);
    unsigned int out_len = 0;
    if (secret_len > INT32_MAX ||
        !HMAC(EVP_sha256(), secret, (int)secret_len, data, label_len + 2 * LINK_NONCE_BYTES, out,
              &out_len) ||
        out_len != LINK_PROOF_BYTES)
        return ss_errf(SS_ERR_INTERNAL, "HMAC-SHA256 failed");
    return NULL;
}

bool link_proof_equal(const uint8_t a[LINK_PROOF_BYTES], const uint8_t b[LINK_PROOF_BYTES])
{
    return CRYPTO_memcmp(a, b, LINK_PROOF_BYTES) == 0;
}

ss_status *link_random(uint8_t *out, size_t n)
{
    if (n > INT32_MAX || RAND_bytes(out, (int)n) != 1)
        return ss_errf(SS_ERR_INTERNAL, "cannot get %zu random bytes from OpenSSL", n);
    return NULL;
}
