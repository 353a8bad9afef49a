/*
 * A fake agent for the worker's tests: this test executable started again with
 * `--fake-agent MODE ADDRESS`, so its allocations, signals and death are its own process's. It
 * registers one rank serving y = -x for x float32[FAKE_AGENT_N] and then, by MODE:
 *   echo    answers every PREDICT and heartbeat; registers again when the worker drops it
 *   silent  answers heartbeats, never a PREDICT (a hung model); does not come back once dropped
 *   mute    reads frames and answers nothing at all (a hung process that still holds its socket);
 *           does not come back once dropped
 * It exits when the worker says EXIT or its parent is gone.
 */
#ifndef SS_TEST_FAKE_AGENT_H
#define SS_TEST_FAKE_AGENT_H

#include "shardserve/link.h"

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FAKE_AGENT_N 4

extern char **environ;

static ss_status *fake_agent_session(const char *mode, const char *address)
{
    ss_link_conn *c = NULL;
    ss_status *st = ss_link_connect_retry(address, NULL, 30000, 20, &c);
    if (st) return st;
    ss_link_spec in = {.name = "x", .dtype = SS_DT_FLOAT32, .ndim = 1, .dims = {FAKE_AGENT_N}};
    ss_link_spec out = {.name = "y", .dtype = SS_DT_FLOAT32, .ndim = 1, .dims = {FAKE_AGENT_N}};
    ss_link_msg reg = {.type = SS_LINK_REGISTER,
                       .rank_size = 1,
                       .stage_size = 1,
                       .pid = getpid(),
                       .batch_size = 1,
                       .inputs = &in,
                       .n_inputs = 1,
                       .outputs = &out,
                       .n_outputs = 1,
                       .address = "fake agent"};
    st = ss_link_send(c, &reg, NULL, 0);
    bool mute = !strcmp(mode, "mute"), silent = !strcmp(mode, "silent");
    while (!st) {
        ss_link_msg m = {0};
        st = ss_link_recv(c, -1, &m);
        if (st) break;
        if (m.type == SS_LINK_REGISTER_ACK && !m.accepted) {
            st = ss_errf(SS_ERR_UNAVAILABLE, "rejected: %s", m.message ? m.message : "");
        } else if (m.type == SS_LINK_EXIT) {
            ss_link_msg_free(&m);
            ss_link_close(c);
            exit(0);
        } else if (m.type == SS_LINK_HEARTBEAT && !mute) {
            ss_link_msg ack = {.type = SS_LINK_HEARTBEAT_ACK, .seq = m.seq, .sent_ns = m.sent_ns};
            st = ss_link_send(c, &ack, NULL, 0);
        } else if (m.type == SS_LINK_PREDICT && m.n_tensors == 1 && !mute && !silent) {
            ss_tensor *x = &m.tensors[0];
            for (int64_t i = 0; i < ss_tensor_numel(x); i++)
                ((float *)x->data)[i] = -((float *)x->data)[i];
            const ss_tensor *outs[1] = {x};
            char *names[1] = {"y"};
            ss_link_msg res = {
                .type = SS_LINK_RESULT, .request_id = m.request_id, .tensor_names = names};
            st = ss_link_send(c, &res, outs, m.return_result ? 1 : 0);
        }
        ss_link_msg_free(&m);
    }
    ss_link_close(c);
    return st;
}

/* main() of the fake agent: an echo agent comes back whenever the worker drops it, as a launcher
 * would start it again; the hung kinds stay gone, so what the worker sees next is predictable. */
static int fake_agent_main(const char *mode, const char *address)
{
    for (;;) {
        ss_status_free(fake_agent_session(mode, address));
        if (strcmp(mode, "echo") != 0) return 0;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        if (getppid() == 1) return 0; /* the test is gone */
    }
}

/* Start this executable as a fake agent; its pid, or -1. */
static pid_t fake_agent_spawn(const char *mode, const char *address)
{
    char *argv[] = {"/proc/self/exe", "--fake-agent", (char *)mode, (char *)address, NULL};
    pid_t pid = -1;
    return posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ) == 0 ? pid : -1;
}

/* A servable folder (NAME/servable.json: one rank, method predict x -> y, no batch dim) and a
 * one-rank rank table under dir (made by the caller with mkdtemp). */
static void fake_agent_servable(const char *dir, const char *name, char *table, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/%s/servable.json", dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("{\"distributed\": {\"rank_size\": 1, \"stage_size\": 1, \"with_batch_dim\": false},"
              " \"methods\": [{\"name\": \"predict\", \"inputs\": [\"x\"], \"outputs\": [\"y\"]}]}",
              f);
        fclose(f);
    }
    snprintf(table, cap, "%s/rank_table.json", dir);
    f = fopen(table, "w");
    if (f) {
        fputs("{\"version\": \"1.0\", \"server_count\": \"1\", \"status\": \"completed\", "
              "\"server_list\": "
              "[{\"server_id\": \"127.0.0.1\", \"device\": [{\"device_id\": \"0\", \"device_ip\": "
              "\"192.1.27.6\", \"rank_id\": \"0\"}], \"host_nic_ip\": \"reserve\"}]}",
              f);
        fclose(f);
    }
}

#endif
