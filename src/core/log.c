/*
 * Leveled logging to stderr, one line per call, written with a single write() so lines from
 * concurrent threads and processes do not interleave. Each line carries a UTC timestamp, the
 * level, the process tag (e.g. "agent r3") and the pid.
 */
#include "shardserve/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static ss_log_level current_level = SS_LOG_INFO;
static char process_tag[48] = "shardserve";

void ss_log_set_level(ss_log_level level)
{
    current_level = level;
}

void ss_log_init_from_env(void)
{
    const char *v = getenv("SHARDSERVE_LOG");
    if (!v || !*v) return; /* unset or empty: keep the level */
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i <= SS_LOG_OFF; i++)
        if (strcasecmp(v, names[i]) == 0) {
            current_level = (ss_log_level)i;
            return;
        }
    ss_log(SS_LOG_WARN, "ignoring SHARDSERVE_LOG=%s (expected debug, info, warn, error or off)", v);
}

void ss_log_set_tag(const char *tag)
{
    snprintf(process_tag, sizeof process_tag, "%s", tag);
}

/* SS_LOG_OFF is a threshold, not a message level: nothing logged "at OFF" is ever shown. */
bool ss_log_enabled(ss_log_level level)
{
    return (unsigned)level < SS_LOG_OFF && (unsigned)level >= (unsigned)current_level;
}

void ss_log(ss_log_level level, const char *fmt, ...)
{
    if (!ss_log_enabled(level)) return;
    static const char *tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %-5s [%s %d] ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), tags[(unsigned)level < 4 ? level : 3],
                     process_tag, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    if (n < (int)sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof line - 1) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
