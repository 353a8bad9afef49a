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
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---------------------------------------------------------------- secret files */

/* /tmp/shardserve-<euid>/link-<prefix><key>.<suffix>, the key naming the address: its port, or
 * its path for unix:. */
static ss_status *runtime_path(const char *address, const char *prefix, const char *suffix,
                               char *buf, size_t cap)
{
    char key[200];
    if (strncmp(address, "unix:", 5) == 0) {
        size_t n = 0;
        for (const char *p = address + 5; *p && n < sizeof key - 1; p++)
            key[n++] = (*p == '/' || *p == '.') ? '_' : *p;
        key[n] = 0;
    } else {
        const char *colon = strrchr(address, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || !end || *end || port <= 0 || port > 65535)
            return ss_errf(SS_ERR_INVALID,
                           "distributed address '%s' has no port to name its %s file by", address,
                           suffix);
        snprintf(key, sizeof key, "port-%ld", port);
    }
    int n = snprintf(buf, cap, "/tmp/shardserve-%u/link-%s%s.%s", (unsigned)geteuid(), prefix, key,
                     suffix);
    return n > 0 && (size_t)n < cap ? NULL : ss_errf(SS_ERR_LIMIT, "%s file path too long", suffix);
}

ss_status *ss_link_secret_path(const char *address, char *buf, size_t cap)
{
    return runtime_path(address, "", "secret", buf, cap);
}

/* By network namespace too: serves in two namespaces may listen on the same port number, and
 * an agent that reaches a port through one of its own addresses shares the server's namespace. */
ss_status *link_local_path(const char *address, char *buf, size_t cap)
{
    struct stat sb;
    if (stat("/proc/self/ns/net", &sb) != 0)
        return ss_errf(SS_ERR_UNSUPPORTED, "no /proc/self/ns/net: %s", strerror(errno));
    char prefix[40];
    snprintf(prefix, sizeof prefix, "net-%llu-", (unsigned long long)sb.st_ino);
    return runtime_path(address, prefix, "sock", buf, cap);
}

ss_status *ss_link_secret_generate(char out[65])
{
    uint8_t raw[32];
    ss_status *st = link_random(raw, sizeof raw);
    if (st) return st;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return NULL;
}

/* The folder of a secret file: ours, not a link, and closed to everyone else. */
ss_status *link_private_dir(const char *path, bool create)
{
    char dir[512];
    const char *slash = strrchr(path, '/');
    if (!slash || (size_t)(slash - path) >= sizeof dir)
        return NULL; /* a file in the current folder */
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = 0;
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ss_errf(SS_ERR_IO, "cannot create %s for the link secret: %s", dir, strerror(errno));
    struct stat sb;
    if (lstat(dir, &sb) != 0) return ss_errf(SS_ERR_IO, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode) || sb.st_uid != geteuid() || (sb.st_mode & 077))
        return ss_errf(SS_ERR_INVALID,
                       "%s must be a folder of uid %u that no one else can open (mode 0700), "
                       "not a link: refusing to keep a link secret there",
                       dir, (unsigned)geteuid());
    return NULL;
}

ss_status *ss_link_secret_write(const char *path, const void *secret, size_t len)
{
    ss_status *st = link_private_dir(path, true);
    if (st) return st;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return ss_errf(SS_ERR_IO, "cannot write the link secret %s: %s", path, strerror(errno));
    bool ok = fchmod(fd, 0600) == 0 && write(fd, secret, len) == (ssize_t)len;
    int err = errno;
    if (close(fd) != 0) ok = false;
    if (!ok) {
        unlink(path);
        return ss_errf(SS_ERR_IO, "cannot write the link secret %s: %s", path, strerror(err));
    }
    return NULL;
}

ss_status *ss_link_secret_read(const char *path, char **secret, size_t *len)
{
    *secret = NULL;
    *len = 0;
    void *buf = NULL;
    ss_status *st = ss_read_file(path, &buf, len);
    if (st) return st;
    char *s = buf;
    while (*len && (s[*len - 1] == '\n' || s[*len - 1] == '\r'))
        (*len)--;
    if (*len == 0) {
        free(buf);
        return ss_errf(SS_ERR_INVALID, "secret file %s is empty", path);
    }
    *secret = s;
    return NULL;
}
