/*
 * trim: give memory back to the system after a large request. glibc keeps freed heap memory (and
 * raises its mmap threshold after freeing a large block) for reuse, so one burst of 90 MB
 * requests would otherwise pin hundreds of megabytes of RSS for the life of the process.
 */
#ifndef SS_SERVER_TRIM_H
#define SS_SERVER_TRIM_H

#include <stddef.h>

/* Requests at least this large return their memory when done. */
#define SS_SERVER_TRIM_BYTES ((size_t)8 << 20)

/* Call after freeing a request of `bytes` bytes (from any thread): trims the heap when the
 * request was large. */
void ss_server_trim_after(size_t bytes);

#endif
