/*
 * link internals shared by frame.c (wire format, pure functions), conn.c (sockets) and auth.c
 * (handshake proofs). Nothing here is part of the public API.
 */
#ifndef SS_LINK_INTERNAL_H
#define SS_LINK_INTERNAL_H

#include "shardserve/link.h"

/* The Unix socket a TCP listener also answers on, for agents on the same host (see conn.c). */
ss_status *link_local_path(const char *address, char *buf, size_t cap);
/* The folder of path is ours, not a link and closed to everyone else (made 0700 if create). */
ss_status *link_private_dir(const char *path, bool create);

#define LINK_NONCE_BYTES 32
#define LINK_PROOF_BYTES 32
/* Before a peer is authenticated it may only send tiny frames. */
#define LINK_HANDSHAKE_MAX_HEADER 1024

/* The fixed 32-byte frame prefix, little-endian on the wire:
 *   0 magic u32 | 4 version u16 | 6 type u16 | 8 header_len u32 | 12 n_payloads u32 |
 *   16 payload_len u64 | 24 flags u32 (0) | 28 reserved u32 (0) */
typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t header_len;
    uint32_t n_payloads;
    uint64_t payload_len;
    uint32_t flags;
    uint32_t reserved;
} link_prefix;

/* Fields of the handshake frames that ss_link_msg does not carry. */
typedef struct {
    uint8_t nonce[LINK_NONCE_BYTES];
    bool has_nonce;
    uint8_t proof[LINK_PROOF_BYTES];
    bool has_proof;
    bool auth_required; /* HELLO */
} link_handshake;

/* Where payload bytes come from: a socket (conn.c) or a buffer (ss_link_decode_frame). */
typedef struct {
    ss_status *(*read_exact)(void *ctx, void *dst, size_t n);
    void *ctx;
} link_reader;

void link_prefix_put(uint8_t out[SS_LINK_PREFIX_BYTES], const link_prefix *p);
/* Parse and check the prefix against opts (magic, version, type, flags, limits). */
ss_status *link_prefix_parse(const uint8_t in[SS_LINK_PREFIX_BYTES], const ss_link_options *opts,
                             link_prefix *p);
bool link_type_has_tensors(int type);

/* Encode prefix + protobuf header into one malloc'd buffer; tensors are checked and described,
 * not copied. *payload_len gets the number of tensor bytes that must follow. in_shm (n_tensors
 * entries; NULL on a link that is not local) gets which tensors are described by shared-memory
 * key instead (shm.c): their bytes must not follow. */
ss_status *link_pack_header(const ss_link_msg *msg, const link_handshake *hs,
                            const ss_tensor *const *tensors, size_t n_tensors,
                            const ss_link_options *opts, uint8_t **buf, size_t *len,
                            uint64_t *payload_len, bool *in_shm);

/* Decode and check the protobuf header of a frame whose prefix is p. On success msg holds the
 * fields; tensor frames get msg->tensors described (numeric: data NULL, storage NONE; string:
 * element array allocated with lengths set) and *sizes (malloc'd, n_tensors entries) the bytes
 * each tensor takes on the wire. hs may be NULL. On a local link (local) a tensor described by
 * shared-memory key is mapped here (its wire size is 0); elsewhere such a tensor is an error. */
ss_status *link_unpack_header(const link_prefix *p, const uint8_t *hdr, const ss_link_options *opts,
                              ss_link_msg *msg, link_handshake *hs, uint64_t **sizes, bool local);

/* Shared-memory tensors (shm.c). */
#define LINK_SHM_KEY_MAX 256
bool link_shm_key_valid(const char *key);
/* SHARDSERVE_LINK_SHM=0 sends every tensor's bytes, even on a local link. */
bool link_shm_wanted(void);
/* The key and offset of shared memory holding [p, p + n) wholly, if any. */
bool link_shm_find(const void *p, size_t n, char key[LINK_SHM_KEY_MAX], uint64_t *offset);
/* Point t (nbytes set) at key's bytes from offset: this process's shared mapping, a kept mapping
 * m holds (PREDICT) or a mapping of its own (storage MAPPED). */
ss_status *link_shm_map(const char *key, uint64_t offset, ss_tensor *t, ss_link_msg *m);
/* Forget m's output places (a PREDICT from a peer that is not on this host). */
void link_drop_places(ss_link_msg *m);
/* Let go of the kept mappings m holds (ss_link_msg_free). */
void link_shm_let_go(ss_link_msg *m);

/* Read the payload of a described message: into caller storage where tensors[i].data is set,
 * into fresh aligned owned storage otherwise. */
ss_status *link_read_payload(link_reader *r, ss_link_msg *msg, const uint64_t *sizes);

/* HMAC-SHA256(secret, label | server_nonce | client_nonce). */
ss_status *link_proof(const void *secret, size_t secret_len, const char *label,
                      const uint8_t server_nonce[LINK_NONCE_BYTES],
                      const uint8_t client_nonce[LINK_NONCE_BYTES], uint8_t out[LINK_PROOF_BYTES]);
bool link_proof_equal(const uint8_t a[LINK_PROOF_BYTES], const uint8_t b[LINK_PROOF_BYTES]);
ss_status *link_random(uint8_t *out, size_t n);

#endif
