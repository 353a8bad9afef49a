/*
 * pyconfig: a servable folder holding MindSpore's servable_config.py instead of servable.json.
 * serve runs `python3 -m shardserve_stages.export DIR NAME` once (the mindspore_serving shim
 * records what the file declares) and reads servable.json's form from its stdout; the worker then
 * parses that text exactly as it parses servable.json. The child is bounded in time and output,
 * and whatever it says on stderr (notices, a traceback) reaches serve's stderr.
 */
#define _GNU_SOURCE
#include "pyrunner.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXPORT_WAIT_MS 120000
#define EXPORT_MAX_BYTES (16u << 20)

/* Everything the child writes to `fd` until it closes it (bounded in time and size). */
static ss_status *read_all(int fd, char **out, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    uint64_t deadline = ss_now_ns() + (uint64_t)EXPORT_WAIT_MS * 1000000ull;
    while (buf) {
        uint64_t now = ss_now_ns();
        struct pollfd pfd = {fd, POLLIN, 0};
        int ready = now < deadline ? poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1)) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) break;
        if (n == cap) {
            char *bigger = cap < EXPORT_MAX_BYTES ? realloc(buf, cap * 2 + 1) : NULL;
            if (!bigger) break;
            buf = bigger;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            buf[n] = 0;
            *out = buf;
            *len = n;
            return NULL;
        }
        n += (size_t)got;
    }
    free(buf);
    return ss_errf(SS_ERR_LIMIT,
                   "the export of servable_config.py did not finish within %d s or %u MiB",
                   EXPORT_WAIT_MS / 1000, EXPORT_MAX_BYTES >> 20);
}

/* {"error": "..."} from the export, or a generic text naming the exit status. */
static ss_status *export_failed(const char *name, const char *text, size_t len, int status)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ss_status *st =
        cJSON_IsString(e)
            ? ss_errf(SS_ERR_INVALID, "servable '%s': %s", name, e->valuestring)
            : ss_errf(SS_ERR_INVALID,
                      "servable '%s': reading servable_config.py failed (the export %s %d; its "
                      "messages are above)",
                      name, WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    cJSON_Delete(j);
    return st;
}

ss_status *ss_pyconfig_export(const char *servable_dir, const char *name, char **json, size_t *len)
{
    *json = NULL;
    *len = 0;
    char **argv = NULL, **envp = NULL;
    const char *args[] = {servable_dir, name};
    int fds[2] = {-1, -1};
    pid_t pid = 0;
    ss_status *st = ss_pyproc_command("shardserve_stages.export", args, 2, &argv, &envp);
    if (!st && pipe2(fds, O_CLOEXEC) != 0)
        st = ss_errf(SS_ERR_IO, "servable '%s': pipe: %s", name, strerror(errno));
    if (!st) st = ss_pyproc_spawn(argv, envp, (const int[]){fds[1]}, (const int[]){1}, 1, &pid);
    ss_pyproc_command_free(argv, envp);
    if (fds[1] >= 0) close(fds[1]);
    char *text = NULL;
    size_t n = 0;
    if (!st) st = read_all(fds[0], &text, &n);
    if (fds[0] >= 0) close(fds[0]);
    int status = 0;
    if (pid > 0) {
        if (st) kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    if (!st && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        st = export_failed(name, text, n, status);
    if (st) {
        free(text);
        return st;
    }
    *json = text;
    *len = n;
    return NULL;
}
