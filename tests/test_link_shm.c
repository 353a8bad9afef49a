/*
 * Tensors in shared memory on the link: over a local (Unix socket) link a tensor inside memory
 * shared with ss_link_shm_share crosses as its key (the socket carries no payload) and arrives
 * pointing into shared memory; over TCP the same tensor travels as bytes; output places survive
 * a frame round trip (a bad key is refused) and never leave the host (TCP drops them);
 * ss_link_shm_place writes an output into a POSIX shm object and refuses one too small or gone. (A
 * key gone before the receiver maps it fails only that request:
 * tests/serving/test_kserve_shm_agents.py, with a real agent process.)
 */
#include "test_link_util.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define N_FLOATS (1 << 18) /* 1 MiB */

typedef struct {
    char key[64];
    float *map;
    size_t len;
} shm_obj;

static bool shm_make(shm_obj *o, const char *tag)
{
    snprintf(o->key, sizeof o->key, "/ss-test-link-shm-%s-%d", tag, (int)getpid());
    o->len = N_FLOATS * sizeof(float);
    int fd = shm_open(o->key, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)o->len) != 0) return false;
    o->map = mmap(NULL, o->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return o->map != MAP_FAILED;
}

static void shm_destroy(shm_obj *o)
{
    munmap(o->map, o->len);
    shm_unlink(o->key);
}

/* Send one PREDICT whose tensor lies in shared memory; the echo server answers it. */
static void echo_shared(const char *address, bool local)
{
    shm_obj o;
    CHECK(shm_make(&o, local ? "unix" : "tcp"));
    for (int i = 0; i < N_FLOATS; i++)
        o.map[i] = (float)i;
    CHECK_OK(ss_link_shm_share(o.map, o.len, o.key, 0));
    tl_server *s = tl_server_start(address, NULL);
    ss_link_conn *c = NULL;
    if (s) CHECK_OK(ss_link_connect(ss_link_listener_address(s->listener), NULL, &c));
    if (c) {
        int64_t d[1] = {N_FLOATS};
        ss_tensor t;
        CHECK_OK(ss_tensor_borrow(&t, SS_DT_FLOAT32, 1, d, o.map, o.len));
        const ss_tensor *ts[1] = {&t};
        uint64_t sent0, recv0, sent1, recv1;
        ss_link_conn_stats(c, &sent0, &recv0);
        CHECK_OK(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 3}, ts, 1));
        ss_link_msg m;
        CHECK_OK(ss_link_recv(c, 10000, &m));
        ss_link_conn_stats(c, &sent1, &recv1);
        CHECK(m.type == SS_LINK_RESULT && m.n_tensors == 1 && !m.shm_error);
        if (m.n_tensors == 1) {
            CHECK(memcmp(m.tensors[0].data, o.map, o.len) == 0);
            /* local: the answer points into the shared memory; TCP: a copy of its own */
            CHECK((m.tensors[0].data == (void *)o.map) == local);
        }
        if (local)
            CHECK_MSG(sent1 - sent0 < 4096 && recv1 - recv0 < 4096,
                      "a local link moved %llu + %llu bytes", (unsigned long long)(sent1 - sent0),
                      (unsigned long long)(recv1 - recv0));
        else
            CHECK(sent1 - sent0 >= o.len && recv1 - recv0 >= o.len);
        ss_link_msg_free(&m);
        ss_link_close(c);
    }
    tl_server_stop(s);
    ss_link_shm_unshare(o.map);
    shm_destroy(&o);
}

static void a_local_link_sends_the_key_not_the_bytes(void)
{
    char dir[64], addr[128];
    tl_tmpdir(dir, sizeof dir);
    snprintf(addr, sizeof addr, "unix:%s/link.sock", dir);
    echo_shared(addr, true);
    rmdir(dir);
}

static void tcp_sends_the_bytes(void)
{
    setenv("SHARDSERVE_LINK_LOCAL", "0", 1); /* no Unix twin: really TCP */
    echo_shared("127.0.0.1:0", false);
    unsetenv("SHARDSERVE_LINK_LOCAL");
}

static void places_round_trip(void)
{
    ss_link_place places[2] = {{1, "/ss-a", 64, 4096}, {0, "/ss-b", 0, 8}};
    ss_link_msg m = {.type = SS_LINK_PREDICT, .request_id = 5, .places = places, .n_places = 2};
    void *buf = NULL;
    size_t len = 0;
    CHECK_OK(ss_link_encode_frame(&m, NULL, 0, &buf, &len));
    ss_link_msg got;
    CHECK_OK(ss_link_decode_frame(buf, len, NULL, &got, NULL));
    CHECK(got.n_places == 2);
    if (got.n_places == 2) {
        CHECK(got.places[0].output == 1 && !strcmp(got.places[0].key, "/ss-a") &&
              got.places[0].offset == 64 && got.places[0].byte_size == 4096);
        CHECK(got.places[1].output == 0 && !strcmp(got.places[1].key, "/ss-b"));
    }
    ss_link_msg_free(&got);
    free(buf);
    ss_link_place bad = {0, "no-slash", 0, 8};
    m.places = &bad;
    m.n_places = 1;
    CHECK_OK(ss_link_encode_frame(&m, NULL, 0, &buf, &len));
    CHECK_ERR(ss_link_decode_frame(buf, len, NULL, &got, NULL), "not a POSIX shm name");
    free(buf);
}

typedef struct {
    ss_link_listener *l;
    size_t n_places;
    bool got;
} place_peer;

static void *receive_places(void *arg)
{
    place_peer *pp = arg;
    ss_link_conn *c = NULL;
    ss_status *st = ss_link_accept(pp->l, 5000, &c);
    if (!st) st = ss_link_handshake(c);
    ss_link_msg m;
    if (!st) st = ss_link_recv(c, 5000, &m);
    if (!st) {
        pp->got = true;
        pp->n_places = m.n_places;
        ss_link_msg_free(&m);
    }
    ss_status_free(st);
    ss_link_close(c);
    return NULL;
}

/* A key names an object of this host only: a PREDICT over TCP leaves its places out. */
static void places_stay_on_this_host(void)
{
    setenv("SHARDSERVE_LINK_LOCAL", "0", 1);
    place_peer pp = {0};
    CHECK_OK(ss_link_listen("127.0.0.1:0", NULL, &pp.l));
    pthread_t t;
    if (pp.l && pthread_create(&t, NULL, receive_places, &pp) == 0) {
        ss_link_conn *c = NULL;
        CHECK_OK(ss_link_connect(ss_link_listener_address(pp.l), NULL, &c));
        ss_link_place place = {0, "/ss-a", 0, 64};
        ss_link_msg m = {.type = SS_LINK_PREDICT, .places = &place, .n_places = 1};
        if (c) CHECK_OK(ss_link_send(c, &m, NULL, 0));
        pthread_join(t, NULL);
        ss_link_close(c);
        CHECK(pp.got && pp.n_places == 0);
    }
    ss_link_listener_close(pp.l);
    unsetenv("SHARDSERVE_LINK_LOCAL");
}

static void place_writes_into_the_object(void)
{
    shm_obj o;
    CHECK(shm_make(&o, "place"));
    int64_t d[1] = {16};
    ss_tensor t = tl_numeric(SS_DT_FLOAT32, 1, d, 7), out;
    ss_link_place p = {0, o.key, 128, 16 * sizeof(float)};
    CHECK_OK(ss_link_shm_place(&p, &t, &out));
    CHECK(memcmp((char *)o.map + 128, t.data, t.nbytes) == 0);
    CHECK(memcmp(out.data, t.data, t.nbytes) == 0);
    ss_link_shm_release(&out);
    p.byte_size = 8; /* too small for 64 bytes */
    CHECK_ERR(ss_link_shm_place(&p, &t, &out), "does not fit");
    p.byte_size = 64;
    p.key = "/ss-test-link-shm-missing";
    CHECK_ERR(ss_link_shm_place(&p, &t, &out), "cannot open shared memory");
    ss_tensor_free(&t);
    shm_destroy(&o);
}

TEST_MAIN(TEST(a_local_link_sends_the_key_not_the_bytes), TEST(tcp_sends_the_bytes),
          TEST(places_round_trip), TEST(places_stay_on_this_host),
          TEST(place_writes_into_the_object))
