/*
 * gen_stop: stop strings over streamed text. The text generated so far is scanned for the earliest
 * stop string; while streaming, a tail that could still become one is held back (OpenAI's stop
 * sequences are not part of the output, so no byte of one may be sent before it is ruled out).
 */
#ifndef SS_GENERATE_STOP_H
#define SS_GENERATE_STOP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    size_t emit;  /* text[0..emit) is final: it can be sent */
    bool stopped; /* a stop string begins at emit: the output ends there */
    int which;    /* the stop string found (index into stops), -1 if none */
} ss_stop_result;

/* Scan text[0..len) for stops[0..n) (empty strings ignored). from: bytes already scanned and
 * found free of a complete stop string (a match may still end after it); pass 0 to rescan. */
ss_stop_result ss_stop_scan(const char *const *stops, int n, const char *text, size_t len,
                            size_t from);

#endif
