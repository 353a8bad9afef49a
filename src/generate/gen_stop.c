/*
 * gen_stop (gen_stop.h): the earliest complete stop string, else how much text no stop string can
 * still claim. Stop strings are few (OpenAI allows 4) and short: a direct scan is enough.
 */
#include "gen_stop.h"

#include <string.h>

/* Whether text[at..len) is a proper prefix of s (the text ended inside a possible match). */
static bool partial_at(const char *s, size_t sl, const char *text, size_t at, size_t len)
{
    return len - at < sl && memcmp(text + at, s, len - at) == 0;
}

ss_stop_result ss_stop_scan(const char *const *stops, int n, const char *text, size_t len,
                            size_t from)
{
    ss_stop_result r = {.emit = len, .stopped = false, .which = -1};
    size_t longest = 0;
    for (int k = 0; k < n; k++) {
        size_t sl = stops[k] ? strlen(stops[k]) : 0;
        if (sl > longest) longest = sl;
    }
    /* a match ending after `from` starts at most longest - 1 bytes before it */
    size_t start = from >= longest ? from - longest + 1 : 0;
    for (size_t at = start; at < len; at++) {
        for (int k = 0; k < n; k++) {
            size_t sl = stops[k] ? strlen(stops[k]) : 0;
            if (!sl || text[at] != stops[k][0]) continue;
            if (at + sl <= len && memcmp(text + at, stops[k], sl) == 0)
                return (ss_stop_result){.emit = at, .stopped = true, .which = k};
            if (partial_at(stops[k], sl, text, at, len) && at < r.emit) r.emit = at;
        }
    }
    return r;
}
