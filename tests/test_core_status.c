/*
 * Status values and logging: ss_errf formats without truncation, ss_status_wrap prefixes context
 * and keeps the code, every code has a name; log levels gate output, SHARDSERVE_LOG sets the level,
 * and each enabled call writes exactly one well-formed line to stderr.
 */
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

static void errf_formats(void)
{
    ss_status *st = ss_errf(SS_ERR_INVALID, "input %s has %d dims", "x", 3);
    CHECK(st != NULL);
    CHECK(st->code == SS_ERR_INVALID);
    CHECK(strcmp(st->msg, "input x has 3 dims") == 0);
    ss_status_free(st);

    st = ss_errf(SS_ERR_IO, "%s", "");
    CHECK(st && st->code == SS_ERR_IO && st->msg[0] == 0);
    ss_status_free(st);

    /* Long messages are kept whole: paths can be PATH_MAX long. */
    char big[10001];
    memset(big, 'p', sizeof big - 1);
    big[sizeof big - 1] = 0;
    st = ss_errf(SS_ERR_LIMIT, "[%s]", big);
    CHECK(strlen(st->msg) == 10002 && st->msg[0] == '[' && st->msg[10001] == ']');
    ss_status_free(st);
    ss_status_free(NULL);
}

static void wrap_prefixes_context(void)
{
    CHECK(ss_status_wrap(NULL, "ignored %d", 1) == NULL);
    ss_status *st = ss_errf(SS_ERR_UNSUPPORTED, "op Foo");
    st = ss_status_wrap(st, "node %s", "n1");
    st = ss_status_wrap(st, "model %s", "m.onnx");
    CHECK(st->code == SS_ERR_UNSUPPORTED);
    CHECK_MSG(strcmp(st->msg, "model m.onnx: node n1: op Foo") == 0, "%s", st->msg);
    ss_status_free(st);

    /* A context longer than any fixed buffer survives intact. */
    char ctx[5000];
    memset(ctx, 'c', sizeof ctx - 1);
    ctx[sizeof ctx - 1] = 0;
    st = ss_status_wrap(ss_errf(SS_ERR_IO, "short read"), "%s", ctx);
    CHECK(st->code == SS_ERR_IO);
    CHECK_MSG(strlen(st->msg) == 4999 + strlen(": short read"), "length %zu", strlen(st->msg));
    CHECK(strcmp(st->msg + 4999, ": short read") == 0);
    ss_status_free(st);

    /* Messages may contain '%' without being reinterpreted as formats when wrapped. */
    st = ss_status_wrap(ss_errf(SS_ERR_INVALID, "100%% of %s", "x"), "ctx");
    CHECK_MSG(strcmp(st->msg, "ctx: 100% of x") == 0, "%s", st->msg);
    ss_status_free(st);
}

static void code_names(void)
{
    static const struct {
        ss_code code;
        const char *name;
    } want[] = {
        {SS_OK, "ok"},
        {SS_ERR_INVALID, "invalid"},
        {SS_ERR_UNSUPPORTED, "unsupported"},
        {SS_ERR_IO, "io"},
        {SS_ERR_NOMEM, "out of memory"},
        {SS_ERR_TIMEOUT, "timeout"},
        {SS_ERR_UNAVAILABLE, "unavailable"},
        {SS_ERR_LIMIT, "limit"},
        {SS_ERR_INTERNAL, "internal"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_MSG(strcmp(ss_code_name(want[i].code), want[i].name) == 0, "code %d is %s",
                  (int)want[i].code, ss_code_name(want[i].code));
    CHECK(strcmp(ss_code_name((ss_code)99), "unknown") == 0);
    CHECK(strcmp(ss_code_name((ss_code)-1), "unknown") == 0);
}

static void levels_gate(void)
{
    for (int lv = SS_LOG_DEBUG; lv <= SS_LOG_OFF; lv++) {
        ss_log_set_level((ss_log_level)lv);
        for (int msg = SS_LOG_DEBUG; msg <= SS_LOG_ERROR; msg++)
            CHECK_MSG(ss_log_enabled((ss_log_level)msg) == (msg >= lv),
                      "level %d: message level %d enabled=%d", lv, msg,
                      ss_log_enabled((ss_log_level)msg));
        /* OFF is a threshold, never a message level. */
        CHECK_MSG(!ss_log_enabled(SS_LOG_OFF), "SS_LOG_OFF enabled at level %d", lv);
    }
    ss_log_set_level(SS_LOG_INFO);
}

/* Runs fn with stderr redirected to a temporary file and returns what it wrote (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/ss_core_status_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return NULL;
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *out = calloc(1, (size_t)len + 1);
    if (out && len > 0 && pread(fd, out, (size_t)len, 0) != len) out[0] = 0;
    close(fd);
    return out;
}

static void env_sets_level(void)
{
    static const struct {
        const char *value;
        ss_log_level level;
    } cases[] = {
        {"debug", SS_LOG_DEBUG}, {"info", SS_LOG_INFO}, {"warn", SS_LOG_WARN},
        {"error", SS_LOG_ERROR}, {"off", SS_LOG_OFF},   {"DEBUG", SS_LOG_DEBUG},
        {"Warn", SS_LOG_WARN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ss_log_set_level(i % 2 ? SS_LOG_ERROR : SS_LOG_DEBUG);
        setenv("SHARDSERVE_LOG", cases[i].value, 1);
        ss_log_init_from_env();
        for (int msg = SS_LOG_DEBUG; msg <= SS_LOG_ERROR; msg++)
            CHECK_MSG(ss_log_enabled((ss_log_level)msg) == (msg >= (int)cases[i].level),
                      "SHARDSERVE_LOG=%s: level %d enabled=%d", cases[i].value, msg,
                      ss_log_enabled((ss_log_level)msg));
    }
    /* Unset or unrecognised: the level stays as it was. */
    ss_log_set_level(SS_LOG_WARN);
    unsetenv("SHARDSERVE_LOG");
    ss_log_init_from_env();
    CHECK(!ss_log_enabled(SS_LOG_INFO) && ss_log_enabled(SS_LOG_WARN));
    setenv("SHARDSERVE_LOG", "verbose", 1);
    char *warning = capture_stderr(ss_log_init_from_env);
    CHECK_MSG(warning && strstr(warning, "SHARDSERVE_LOG=verbose"), "no warning, got \"%s\"",
              warning ? warning : "");
    free(warning);
    CHECK(!ss_log_enabled(SS_LOG_INFO) && ss_log_enabled(SS_LOG_WARN));
    setenv("SHARDSERVE_LOG", "", 1);
    warning = capture_stderr(ss_log_init_from_env);
    CHECK_MSG(warning && !warning[0], "empty SHARDSERVE_LOG warned: \"%s\"", warning);
    free(warning);
    CHECK(!ss_log_enabled(SS_LOG_INFO) && ss_log_enabled(SS_LOG_WARN));
    unsetenv("SHARDSERVE_LOG");
    ss_log_set_level(SS_LOG_INFO);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void log_some_levels(void)
{
    ss_log_set_tag("core-test r7");
    ss_log_set_level(SS_LOG_WARN);
    SS_DEBUG("hidden debug %d", 1);
    SS_INFO("hidden info %d", 2);
    SS_WARN("shown warn %d", 3);
    SS_ERROR("shown error %s", "four");
    ss_log(SS_LOG_OFF, "never at off");
    ss_log_set_level(SS_LOG_OFF);
    SS_ERROR("hidden error when off");
    ss_log_set_level(SS_LOG_INFO);
}

static void log_long_line(void)
{
    static char big[5000];
    memset(big, 'x', sizeof big - 1);
    ss_log(SS_LOG_ERROR, "%s", big);
}

static void log_output(void)
{
    char *out = capture_stderr(log_some_levels);
    CHECK(out != NULL);
    if (!out) return;
    CHECK_MSG(count_lines(out) == 2, "expected 2 lines, got:\n%s", out);
    CHECK(!strstr(out, "hidden") && !strstr(out, "never"));
    const char *warn = strstr(out, "shown warn 3\n"), *err = strstr(out, "shown error four\n");
    CHECK(warn && err && warn < err);
    CHECK(strstr(out, "WARN ") && strstr(out, "ERROR "));
    CHECK(strstr(out, "[core-test r7 "));
    char pid[32];
    snprintf(pid, sizeof pid, " %d] ", (int)getpid());
    CHECK(strstr(out, pid));
    free(out);

    /* An over-long message is cut, still as one newline-terminated line. */
    out = capture_stderr(log_long_line);
    CHECK(out && count_lines(out) == 1 && out[strlen(out) - 1] == '\n' && strlen(out) < 2100);
    free(out);
    ss_log_set_tag("shardserve");
}

enum { LOG_THREADS = 4, LOG_LINES = 400 };

static void *log_lines(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LOG_LINES; i++)
        ss_log(SS_LOG_WARN, "thread %d line %d %s", id, i,
               "................................................................................");
    return NULL;
}

static void log_from_threads(void)
{
    pthread_t th[LOG_THREADS];
    for (int i = 0; i < LOG_THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, log_lines, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < LOG_THREADS; i++)
        pthread_join(th[i], NULL);
}

/* Each call is one write(), so concurrent lines arrive whole, never interleaved. */
static void log_lines_do_not_interleave(void)
{
    char *out = capture_stderr(log_from_threads);
    CHECK(out != NULL);
    if (!out) return;
    int seen[LOG_THREADS] = {0}, bad = 0, lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        int id, n, dots = 0;
        const char *p = strstr(line, "] thread ");
        if (!p || sscanf(p, "] thread %d line %d %n", &id, &n, &dots) != 2 || id < 0 ||
            id >= LOG_THREADS || n != seen[id] || strlen(p + dots) != 80) {
            bad++;
            continue;
        }
        seen[id]++;
    }
    CHECK_MSG(bad == 0 && lines == LOG_THREADS * LOG_LINES, "%d of %d lines malformed", bad, lines);
    free(out);
}

TEST_MAIN(TEST(errf_formats), TEST(wrap_prefixes_context), TEST(code_names), TEST(levels_gate),
          TEST(env_sets_level), TEST(log_output), TEST(log_lines_do_not_interleave))
