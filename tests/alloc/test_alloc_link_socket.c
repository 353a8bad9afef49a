/*
 * A client's whole exchange over a real link connection under allocation failure: connect (with
 * the handshake), send a PREDICT with numeric and string tensors, receive the echo server's
 * RESULT, close. Only the client thread's allocations fail (the server is the shared echo server
 * of the link tests, on 127.0.0.1); each run must end with the exact echo or a clean error. The
 * server thread allocates at the same time, so the block count is not compared: leaks are left to
 * LeakSanitizer in the -DSS_SANITIZE=ON build (the recipe allocfail.h gives for such paths).
 */
#include "allocfail.h"
#include "test_link_util.h"

typedef struct {
    const char *address;
    const ss_link_msg *msg;
    const ss_tensor *const *ts;
    size_t n;
    ss_link_msg got;
} exchange_case;

static ss_status *run_exchange(void *ctx)
{
    exchange_case *e = ctx;
    ss_link_conn *c = NULL;
    ss_status *st = ss_link_connect(e->address, NULL, &c);
    if (!st) st = ss_link_send(c, e->msg, e->ts, e->n);
    if (!st) st = ss_link_recv(c, 10000, &e->got);
    if (c) ss_link_close(c);
    return st;
}

static bool verify_exchange(void *ctx)
{
    exchange_case *e = ctx;
    ss_link_msg want = {.type = SS_LINK_RESULT,
                        .request_id = e->msg->request_id,
                        .message = "echo",
                        .tensor_names = e->msg->tensor_names};
    bool same = tl_msg_matches(&want, e->ts, e->n, &e->got) && e->got.message;
    ss_link_msg_free(&e->got);
    return same;
}

static void predict_round_trip(void)
{
    tl_server *s = tl_server_start("127.0.0.1:0", NULL);
    CHECK(s != NULL);
    if (!s) return;
    int64_t d23[2] = {2, 3};
    ss_tensor f32 = tl_numeric(SS_DT_FLOAT32, 2, d23, 1);
    ss_tensor str = tl_strings(2, (const char *[]){"ab", ""}, (size_t[]){2, 0});
    const ss_tensor *ts[2] = {&f32, &str};
    char *names[2] = {"x", "text"};
    ss_link_msg msg = {
        .type = SS_LINK_PREDICT, .request_id = 42, .return_result = true, .tensor_names = names};
    exchange_case e = {
        .address = ss_link_listener_address(s->listener), .msg = &msg, .ts = ts, .n = 2};
    /* Clear errors that are not SS_ERR_NOMEM: getaddrinfo's EAI_MEMORY ("Memory allocation
     * failure", with code invalid), and RAND_bytes failing while OpenSSL sets itself up (its
     * error queue needs memory too, so nothing says why) */
    allocfail_case c = {.name = "link exchange (client side)",
                        .ctx = &e,
                        .run = run_exchange,
                        .verify = verify_exchange,
                        .flags = ALLOCFAIL_CALLER_ONLY,
                        .skip_live_check = true,
                        .error_needle = "Memory allocation failure|random bytes from OpenSSL"};
    long allocs = 0;
    CHECK(allocfail_loop(&c, &allocs) == 0);
    CHECK_MSG(allocs > 0, "the exchange allocated nothing");
    tl_server_stop(s);
    ss_tensor_free(&f32);
    ss_tensor_free(&str);
}

TEST_MAIN(TEST(predict_round_trip))
