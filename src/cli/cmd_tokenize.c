/*
 * shardserve tokenize --tokenizer FILE [--no-special | --decode [--stream] [--skip-special]] TEXT|-
 * Encode text (an argument, or stdin with "-") to token ids printed on one line (with the
 * post-processor's special tokens, a Llama-3 BOS, unless --no-special), or with
 * --decode turn ids (separated by spaces, commas or newlines) back into text, printed as is.
 * --stream decodes through the incremental detokenizer, one id at a time, as a server streams.
 */
#include "cli.h"
#include "shardserve/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLI_TOKENIZE_MAX_STDIN ((size_t)1 << 30)

typedef struct {
    const char *tokenizer, *input;
    bool decode, stream, skip_special, no_special;
} tokenize_args;

static ss_status *read_stdin(char **data, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap) break;
        char *grown = cap < CLI_TOKENIZE_MAX_STDIN ? realloc(buf, cap * 2) : NULL;
        if (!grown) {
            free(buf);
            return ss_errf(SS_ERR_LIMIT, "stdin is larger than %zu bytes", CLI_TOKENIZE_MAX_STDIN);
        }
        buf = grown, cap *= 2;
    }
    if (!buf) return ss_errf(SS_ERR_NOMEM, "no memory to read stdin");
    buf[n] = 0; /* n < cap: the loop ends on a short read */
    *data = buf;
    *len = n;
    return NULL;
}

static ss_status *parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 64;
    *n = 0;
    *ids = malloc(cap * sizeof **ids);
    while (*ids) {
        while (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t' || *s == '\r')
            s++;
        if (!*s) return NULL;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < INT32_MIN || v > INT32_MAX)
            return ss_errf(SS_ERR_INVALID, "token id %zu ('%.20s') is not an integer", *n, s);
        if (*n == cap) {
            int32_t *grown = realloc(*ids, 2 * cap * sizeof *grown);
            if (!grown) break;
            *ids = grown, cap *= 2;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    return ss_errf(SS_ERR_NOMEM, "no memory for %zu token ids", *n);
}

static ss_status *print_encoded(ss_tokenizer *tk, const tokenize_args *a, const char *text,
                                size_t len)
{
    int32_t *ids;
    size_t n;
    ss_status *st = ss_tokenizer_encode(tk, text, len, !a->no_special, &ids, &n);
    if (st) return st;
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
    return NULL;
}

static ss_status *print_streamed(const ss_tokenizer *tk, const int32_t *ids, size_t n, bool skip)
{
    ss_tokenizer_stream *s;
    ss_status *st = ss_tokenizer_stream_new(tk, skip, &s);
    const char *piece;
    size_t len;
    for (size_t i = 0; !st && i < n; i++) {
        st = ss_tokenizer_stream_push(s, ids[i], &piece, &len);
        if (!st) fwrite(piece, 1, len, stdout);
    }
    if (!st) st = ss_tokenizer_stream_finish(s, &piece, &len);
    if (!st) fwrite(piece, 1, len, stdout);
    ss_tokenizer_stream_free(s);
    return st;
}

static ss_status *print_decoded(const ss_tokenizer *tk, const tokenize_args *a, const char *input)
{
    int32_t *ids;
    size_t n;
    ss_status *st = parse_ids(input, &ids, &n);
    if (!st && a->stream) st = print_streamed(tk, ids, n, a->skip_special);
    if (!st && !a->stream) {
        char *text;
        size_t len;
        st = ss_tokenizer_decode(tk, ids, n, a->skip_special, &text, &len);
        if (!st) fwrite(text, 1, len, stdout);
        if (!st) free(text);
    }
    free(ids);
    return st;
}

static int parse_args(int argc, char **argv, tokenize_args *a)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: shardserve tokenize --tokenizer tokenizer.json [--no-special | --decode "
                   "[--stream] [--skip-special]] TEXT|-\n");
            return 0;
        } else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
            a->tokenizer = argv[++i];
        } else if (!strcmp(argv[i], "--decode")) {
            a->decode = true;
        } else if (!strcmp(argv[i], "--stream")) {
            a->stream = true;
        } else if (!strcmp(argv[i], "--no-special")) {
            a->no_special = true;
        } else if (!strcmp(argv[i], "--skip-special")) {
            a->skip_special = true;
        } else if (!a->input) {
            a->input = argv[i];
        } else {
            fprintf(stderr, "shardserve tokenize: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (a->tokenizer && a->input) return -1;
    fprintf(stderr, "shardserve tokenize: needs --tokenizer FILE and TEXT (or - for stdin)\n");
    return 2;
}

int cmd_tokenize(int argc, char **argv)
{
    tokenize_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    char *input = NULL;
    size_t len = strlen(a.input);
    ss_status *st = strcmp(a.input, "-") ? NULL : read_stdin(&input, &len);
    ss_tokenizer *tk = NULL;
    if (!st) st = ss_tokenizer_load(a.tokenizer, &tk);
    const char *text = input ? input : a.input;
    if (!st) st = a.decode ? print_decoded(tk, &a, text) : print_encoded(tk, &a, text, len);
    ss_tokenizer_free(tk);
    free(input);
    return st ? cli_fail("tokenize", st) : 0;
}
