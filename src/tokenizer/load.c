/* Loading tokenizer.json (Hugging Face tokenizers' serialisation) with cJSON. Everything that
 * would change how text encodes and that this module does not implement is refused with
 * SS_ERR_UNSUPPORTED naming the field; everything malformed with SS_ERR_INVALID naming the field,
 * the merge or the token. After a successful load every merge refers to ids that exist and every
 * byte has an id, so encoding cannot fail on the tokenizer's account. The one normalizer read is
 * NFC (normalize.c). */
#include "tokenizer_internal.h"

#include "json.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* State of one load: the vocab by its byte-level strings, needed to resolve merges only. */
typedef struct {
    ss_tokenizer *tk;
    ss_tok_strmap vocab;
} loader;

static ss_status *bad(const ss_tokenizer *tk, const char *fmt, const char *detail)
{
    return ss_errf(SS_ERR_INVALID, "tokenizer %s: %s%s", tk->what, fmt, detail ? detail : "");
}

static ss_status *unsupported(const ss_tokenizer *tk, const char *field, const char *value)
{
    return ss_errf(SS_ERR_UNSUPPORTED, "tokenizer %s: %s %s is not supported (byte-level BPE only)",
                   tk->what, field, value);
}

/* A field that must be absent, null, false, 0 or "" for this module to encode correctly. */
static ss_status *require_unset(const ss_tokenizer *tk, const cJSON *obj, const char *field,
                                const char *where)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v) || (cJSON_IsNumber(v) && v->valuedouble == 0) ||
        (cJSON_IsString(v) && !v->valuestring[0]))
        return NULL;
    char name[96];
    snprintf(name, sizeof name, "%s.%s", where, field);
    return unsupported(tk, name, "(set)");
}

static bool bool_field(const cJSON *obj, const char *field, bool fallback)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : fallback;
}

static const char *type_of(const cJSON *obj)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static ss_status *read_id(const ss_tokenizer *tk, const cJSON *v, const char *token, int32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= SS_TOK_MAX_ID ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return ss_errf(SS_ERR_INVALID,
                       "tokenizer %s: the id of token '%.64s' is not an integer in "
                       "[0, %d)",
                       tk->what, token, SS_TOK_MAX_ID);
    *id = (int32_t)v->valuedouble;
    return NULL;
}

/* Room for ids up to `id`, growing geometrically: vocabularies list ids in increasing order, and
 * growing by one each time copied the tables once per id (minutes for 150k ids under ASan). */
static ss_status *grow_ids(ss_tokenizer *tk, int32_t id)
{
    if (id < tk->size) return NULL;
    if (id >= tk->id_cap) {
        int32_t cap = tk->id_cap > id / 2 ? 2 * tk->id_cap : id + 1;
        if (cap > SS_TOK_MAX_ID) cap = SS_TOK_MAX_ID;
        uint8_t *flags = realloc(tk->flags, (size_t)cap);
        if (flags) tk->flags = flags;
        const char **piece = realloc(tk->piece, (size_t)cap * sizeof *piece);
        if (piece) tk->piece = piece;
        uint32_t *piece_len = realloc(tk->piece_len, (size_t)cap * sizeof *piece_len);
        if (piece_len) tk->piece_len = piece_len;
        if (!flags || !piece || !piece_len)
            return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for %d ids", tk->what, cap);
        tk->id_cap = cap;
    }
    memset(tk->flags + tk->size, 0, (size_t)(id + 1 - tk->size));
    tk->size = id + 1;
    return NULL;
}

/* The bytes a vocab token decodes to: each character through the byte-level map, or the token's
 * own UTF-8 when a character is not a byte's (as the reference's ByteLevel decoder does). */
static size_t token_bytes(const char *token, size_t len, char *out, bool *byte_level)
{
    const uint8_t *s = (const uint8_t *)token;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i = ss_tok_utf8_next(s, len, i, &cp);
        int b = ss_tok_char_byte(cp);
        if (b < 0) {
            memcpy(out, token, len);
            *byte_level = false;
            return len;
        }
        out[n++] = (char)b;
    }
    *byte_level = true;
    return n;
}

static ss_status *add_vocab_token(loader *ld, const char *token, int32_t id, char *scratch)
{
    ss_tokenizer *tk = ld->tk;
    size_t len = strlen(token);
    if (ss_tok_utf8_check((const uint8_t *)token, len) < len)
        return bad(tk, "a vocab token is not valid UTF-8: ", token);
    ss_status *st = grow_ids(tk, id);
    if (st) return st;
    if (tk->flags[id] & SS_TOK_PRESENT)
        return ss_errf(SS_ERR_INVALID,
                       "tokenizer %s: id %d is given to two vocab tokens (one is "
                       "'%.64s')",
                       tk->what, id, token);
    bool byte_level;
    size_t n = token_bytes(token, len, scratch, &byte_level);
    const char *piece = ss_tok_arena_copy(&tk->arena, scratch, n);
    if (!piece || !ss_tok_strmap_put(&ld->vocab, token, len, id) ||
        (byte_level && !ss_tok_strmap_put(&tk->raw, piece, n, id)))
        return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for the vocab", tk->what);
    tk->flags[id] = SS_TOK_PRESENT;
    tk->piece[id] = piece;
    tk->piece_len[id] = (uint32_t)n;
    size_t covers = len > n ? len : n;
    if (covers > tk->longest_token) tk->longest_token = covers;
    return NULL;
}

static ss_status *load_vocab(loader *ld, const cJSON *vocab)
{
    if (!cJSON_IsObject(vocab)) return bad(ld->tk, "model.vocab is not an object", NULL);
    size_t longest = 0;
    for (const cJSON *v = vocab->child; v; v = v->next) {
        size_t len = strlen(v->string);
        if (len > longest) longest = len;
    }
    char *scratch = malloc(longest + 1);
    if (!scratch) return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory", ld->tk->what);
    ss_status *st = NULL;
    for (const cJSON *v = vocab->child; v && !st; v = v->next) {
        int32_t id = 0;
        st = read_id(ld->tk, v, v->string, &id);
        if (!st) st = add_vocab_token(ld, v->string, id, scratch);
    }
    free(scratch);
    return st;
}

static ss_status *merge_id(loader *ld, size_t rank, const char *token, size_t len, int32_t *id)
{
    *id = ss_tok_strmap_get(&ld->vocab, token, len);
    if (*id >= 0) return NULL;
    return ss_errf(SS_ERR_INVALID, "tokenizer %s: merge %zu: '%.*s' is not in the vocabulary",
                   ld->tk->what, rank, (int)(len > 64 ? 64 : len), token);
}

/* One merge, "a b" or ["a", "b"]: the ids of a, b and of their concatenation. */
static ss_status *add_merge(loader *ld, size_t rank, const cJSON *m, char **joined, size_t *cap)
{
    const char *a, *b;
    size_t alen, blen;
    if (cJSON_IsString(m)) {
        const char *space = strchr(m->valuestring, ' ');
        if (!space || strchr(space + 1, ' ') || space == m->valuestring || !space[1])
            return ss_errf(SS_ERR_INVALID, "tokenizer %s: merge %zu '%.64s' is not \"a b\"",
                           ld->tk->what, rank, m->valuestring);
        a = m->valuestring, alen = (size_t)(space - a), b = space + 1, blen = strlen(b);
    } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
               cJSON_IsString(m->child->next)) {
        a = m->child->valuestring, alen = strlen(a);
        b = m->child->next->valuestring, blen = strlen(b);
    } else {
        return ss_errf(SS_ERR_INVALID,
                       "tokenizer %s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]",
                       ld->tk->what, rank);
    }
    if (alen + blen + 1 > *cap) {
        char *grown = realloc(*joined, alen + blen + 1);
        if (!grown) return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory", ld->tk->what);
        *joined = grown, *cap = alen + blen + 1;
    }
    memcpy(*joined, a, alen);
    memcpy(*joined + alen, b, blen);
    int32_t left = -1, right = -1, merged = -1;
    ss_status *st = merge_id(ld, rank, a, alen, &left);
    if (!st) st = merge_id(ld, rank, b, blen, &right);
    if (!st) st = merge_id(ld, rank, *joined, alen + blen, &merged);
    if (!st && !ss_tok_pairmap_put(&ld->tk->merges, left, right, (int32_t)rank, merged))
        st = ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory for the merges", ld->tk->what);
    return st;
}

static ss_status *load_merges(loader *ld, const cJSON *merges)
{
    if (!cJSON_IsArray(merges)) return bad(ld->tk, "model.merges is not an array", NULL);
    char *joined = NULL;
    size_t cap = 0, rank = 0;
    ss_status *st = NULL;
    for (const cJSON *m = merges->child; m && !st; m = m->next, rank++)
        st = add_merge(ld, rank, m, &joined, &cap);
    free(joined);
    return st;
}

static ss_status *check_model_options(ss_tokenizer *tk, const cJSON *model)
{
    static const char *const unset[] = {"dropout", "continuing_subword_prefix",
                                        "end_of_word_suffix", "byte_fallback"};
    for (size_t i = 0; i < sizeof unset / sizeof unset[0]; i++) {
        ss_status *st = require_unset(tk, model, unset[i], "model");
        if (st) return st;
    }
    tk->ignore_merges = bool_field(model, "ignore_merges", false);
    return NULL;
}

static ss_status *load_model(loader *ld, const cJSON *model)
{
    ss_tokenizer *tk = ld->tk;
    if (!cJSON_IsObject(model)) return bad(tk, "has no \"model\" object", NULL);
    const char *type = type_of(model);
    if (type && strcmp(type, "BPE")) return unsupported(tk, "model.type", type);
    ss_status *st = check_model_options(tk, model);
    if (!st) st = load_vocab(ld, cJSON_GetObjectItemCaseSensitive(model, "vocab"));
    if (!st) st = load_merges(ld, cJSON_GetObjectItemCaseSensitive(model, "merges"));
    if (st) return st;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    tk->unk_id = -1;
    if (cJSON_IsString(unk)) {
        tk->unk_id = ss_tok_strmap_get(&ld->vocab, unk->valuestring, strlen(unk->valuestring));
        if (tk->unk_id < 0)
            return bad(tk, "model.unk_token is not in the vocabulary: ", unk->valuestring);
    }
    for (int b = 0; b < 256; b++) {
        char ch[4];
        size_t n = ss_tok_utf8_put(ss_tok_byte_char((uint8_t)b), ch);
        tk->byte_id[b] = ss_tok_strmap_get(&ld->vocab, ch, n);
        if (tk->byte_id[b] < 0)
            return ss_errf(SS_ERR_UNSUPPORTED,
                           "tokenizer %s: byte 0x%02x has no token (a byte-level "
                           "vocabulary has all 256)",
                           tk->what, b);
    }
    return NULL;
}

/* The split regexes implemented by hand (pretok.c), as tokenizer.json spells them. */
#define SPLIT_GPT2                                                                                 \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define SPLIT_LLAMA3_HEAD "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
#define SPLIT_LLAMA3_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static ss_status *load_split(ss_tokenizer *tk, const cJSON *split)
{
    const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(split, "pattern");
    const cJSON *regex = cJSON_GetObjectItemCaseSensitive(pattern, "Regex");
    const cJSON *behavior = cJSON_GetObjectItemCaseSensitive(split, "behavior");
    if (!cJSON_IsString(regex))
        return unsupported(tk, "pre_tokenizer Split pattern", "(not Regex)");
    if (!cJSON_IsString(behavior) || strcmp(behavior->valuestring, "Isolated") ||
        bool_field(split, "invert", false))
        return unsupported(tk, "pre_tokenizer Split behavior other than Isolated", "");
    const char *r = regex->valuestring;
    if (!strcmp(r, SPLIT_GPT2)) {
        tk->split = SS_TOK_SPLIT_GPT2;
    } else if (!strcmp(r, SPLIT_LLAMA3_HEAD "{1,3}" SPLIT_LLAMA3_TAIL)) {
        tk->split = SS_TOK_SPLIT_LLAMA3, tk->max_digits = 3;
    } else if (!strcmp(r, SPLIT_LLAMA3_HEAD SPLIT_LLAMA3_TAIL)) {
        tk->split = SS_TOK_SPLIT_LLAMA3, tk->max_digits = 1;
    } else {
        return unsupported(tk, "pre_tokenizer Split regex", r);
    }
    return NULL;
}

static bool is_type(const cJSON *obj, const char *type)
{
    return obj && type_of(obj) && !strcmp(type_of(obj), type);
}

static void load_byte_level(ss_tokenizer *tk, const cJSON *byte_level)
{
    tk->add_prefix_space = bool_field(byte_level, "add_prefix_space", false);
    tk->split = bool_field(byte_level, "use_regex", true) ? SS_TOK_SPLIT_GPT2 : SS_TOK_SPLIT_NONE;
}

/* ByteLevel alone (its own regex is GPT-2's), or Sequence [Digits?, Split?, ByteLevel] where a
 * Split leaves ByteLevel without a regex; add_prefix_space only without a Sequence (inside one
 * it would prefix every piece). */
static ss_status *load_pre_tokenizer(ss_tokenizer *tk, const cJSON *pre)
{
    if (is_type(pre, "ByteLevel")) {
        load_byte_level(tk, pre);
        return NULL;
    }
    if (!is_type(pre, "Sequence"))
        return unsupported(tk, "pre_tokenizer", pre && type_of(pre) ? type_of(pre) : "(none)");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    const cJSON *item = cJSON_IsArray(list) ? list->child : NULL, *split = NULL;
    if (is_type(item, "Digits")) {
        tk->digits =
            bool_field(item, "individual_digits", false) ? SS_TOK_DIGITS_EACH : SS_TOK_DIGITS_RUNS;
        item = item->next;
    }
    if (is_type(item, "Split")) split = item, item = item->next;
    if (!is_type(item, "ByteLevel") || item->next || bool_field(item, "add_prefix_space", false) ||
        (split && bool_field(item, "use_regex", true)))
        return unsupported(tk, "pre_tokenizer Sequence",
                           "other than [Digits?, Split?, ByteLevel] "
                           "(without add_prefix_space; without use_regex after a Split)");
    load_byte_level(tk, item);
    return split ? load_split(tk, split) : NULL;
}

/* TemplateProcessing's "single": special tokens before and after the sequence "A". */
static ss_status *load_template(ss_tokenizer *tk, const cJSON *tp)
{
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(tp, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(tp, "special_tokens");
    if (!cJSON_IsArray(single))
        return bad(tk, "post_processor TemplateProcessing has no single", NULL);
    ss_tok_ids *side = &tk->prefix;
    for (const cJSON *item = single->child; item; item = item->next) {
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(item, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(item, "Sequence")) {
            side = &tk->suffix;
            continue;
        }
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(special, "id");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(specials,
                                             cJSON_IsString(name) ? name->valuestring : ""),
            "ids");
        if (!cJSON_IsArray(ids))
            return bad(tk,
                       "post_processor TemplateProcessing names a special token it does not "
                       "define: ",
                       cJSON_IsString(name) ? name->valuestring : "(no id)");
        for (const cJSON *v = ids->child; v; v = v->next) {
            int32_t id = 0;
            ss_status *st = read_id(tk, v, cJSON_IsString(name) ? name->valuestring : "", &id);
            if (st) return st;
            if (!ss_tok_ids_push(side, id))
                return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory", tk->what);
        }
    }
    return NULL;
}

/* ByteLevel (offsets only), TemplateProcessing, or a Sequence of them. */
static ss_status *load_post_processor(ss_tokenizer *tk, const cJSON *post, int depth)
{
    if (!post || cJSON_IsNull(post)) return NULL;
    const char *type = type_of(post);
    if (type && !strcmp(type, "ByteLevel")) return NULL;
    if (type && !strcmp(type, "TemplateProcessing")) return load_template(tk, post);
    if (!type || strcmp(type, "Sequence") || depth > 0)
        return unsupported(tk, "post_processor", type ? type : "(set)");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(post, "processors");
    for (const cJSON *p = cJSON_IsArray(list) ? list->child : NULL; p; p = p->next) {
        ss_status *st = load_post_processor(tk, p, depth + 1);
        if (st) return st;
    }
    return NULL;
}

static ss_status *load_pipeline(ss_tokenizer *tk, const cJSON *root)
{
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    tk->nfc = is_type(norm, "NFC");
    if (norm && !cJSON_IsNull(norm) && !tk->nfc)
        return unsupported(tk, "normalizer", type_of(norm) ? type_of(norm) : "(set)");
    const cJSON *decoder = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!type_of(decoder) || strcmp(type_of(decoder), "ByteLevel"))
        return unsupported(tk, "decoder", type_of(decoder) ? type_of(decoder) : "(none)");
    ss_status *st = load_pre_tokenizer(tk, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
    if (!st)
        st = load_post_processor(tk, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), 0);
    return st;
}

/* The template's ids must exist once the vocab and the added tokens are in. */
static ss_status *check_template_ids(const ss_tokenizer *tk)
{
    const ss_tok_ids *sides[] = {&tk->prefix, &tk->suffix};
    for (size_t s = 0; s < 2; s++)
        for (size_t i = 0; i < sides[s]->len; i++) {
            int32_t id = sides[s]->ids[i];
            if (id >= tk->size || !(tk->flags[id] & SS_TOK_PRESENT))
                return ss_errf(SS_ERR_INVALID,
                               "tokenizer %s: post_processor adds id %d, which is "
                               "not in the vocabulary",
                               tk->what, id);
        }
    return NULL;
}

static ss_status *add_added_token(ss_tokenizer *tk, const cJSON *t, ss_tok_added *out)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(t, "content");
    if (!cJSON_IsString(content) || !content->valuestring[0])
        return bad(tk, "an added token has no content", NULL);
    size_t len = strlen(content->valuestring);
    if (ss_tok_utf8_check((const uint8_t *)content->valuestring, len) < len)
        return bad(tk, "an added token is not valid UTF-8: ", content->valuestring);
    if (bool_field(t, "single_word", false))
        return unsupported(tk, "added token single_word", content->valuestring);
    int32_t id = 0;
    ss_status *st =
        read_id(tk, cJSON_GetObjectItemCaseSensitive(t, "id"), content->valuestring, &id);
    if (!st) st = grow_ids(tk, id);
    if (st) return st;
    const char *copy = ss_tok_arena_copy(&tk->arena, content->valuestring, len);
    if (!copy) return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory", tk->what);
    tk->flags[id] =
        SS_TOK_PRESENT | SS_TOK_ADDED | (bool_field(t, "special", false) ? SS_TOK_SPECIAL : 0);
    tk->piece[id] = copy;
    tk->piece_len[id] = (uint32_t)len;
    bool special = bool_field(t, "special", false);
    *out = (ss_tok_added){copy,
                          (uint32_t)len,
                          id,
                          bool_field(t, "lstrip", false),
                          bool_field(t, "rstrip", false),
                          bool_field(t, "normalized", !special)};
    return NULL;
}

/* By first byte, longest first: the first that matches at a position is the longest. */
static int added_order(const void *pa, const void *pb)
{
    const ss_tok_added *a = pa, *b = pb;
    uint8_t fa = (uint8_t)a->content[0], fb = (uint8_t)b->content[0];
    if (fa != fb) return fa < fb ? -1 : 1;
    return a->len != b->len ? (a->len > b->len ? -1 : 1) : strcmp(a->content, b->content);
}

static ss_status *load_added(ss_tokenizer *tk, const cJSON *added)
{
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return bad(tk, "added_tokens is not an array", NULL);
    size_t n = cJSON_IsArray(added) ? (size_t)cJSON_GetArraySize(added) : 0;
    tk->added = calloc(n ? n : 1, sizeof *tk->added);
    if (!tk->added) return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory", tk->what);
    for (const cJSON *t = n ? added->child : NULL; t; t = t->next) {
        ss_status *st = add_added_token(tk, t, &tk->added[tk->n_added]);
        if (st) return st;
        tk->n_added++;
    }
    qsort(tk->added, tk->n_added, sizeof *tk->added, added_order);
    size_t k = 0;
    for (unsigned b = 0; b <= 256; b++) {
        while (k < tk->n_added && (uint8_t)tk->added[k].content[0] < b)
            k++;
        tk->added_first[b] = (uint32_t)k;
    }
    return NULL;
}

void ss_tokenizer_free(ss_tokenizer *tk)
{
    if (!tk) return;
    free(tk->what);
    free(tk->flags);
    free(tk->piece);
    free(tk->piece_len);
    free(tk->added);
    free(tk->prefix.ids);
    free(tk->suffix.ids);
    ss_tok_strmap_free(&tk->raw);
    ss_tok_pairmap_free(&tk->merges);
    ss_tok_arena_free(&tk->arena);
    pthread_mutex_destroy(&tk->cache_lock);
    ss_tok_strmap_free(&tk->cache);
    ss_tok_arena_free(&tk->cache_keys);
    free(tk->cache_ids.ids);
    free(tk);
}

static ss_status *load_root(ss_tokenizer *tk, const cJSON *root)
{
    if (!cJSON_IsObject(root)) return bad(tk, "is not a JSON object", NULL);
    loader ld = {tk, {0}};
    ss_status *st = load_model(&ld, cJSON_GetObjectItemCaseSensitive(root, "model"));
    ss_tok_strmap_free(&ld.vocab);
    if (!st) st = load_pipeline(tk, root);
    if (!st) st = load_added(tk, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"));
    if (!st) st = check_template_ids(tk);
    return st;
}

ss_status *ss_tokenizer_parse(const char *json, size_t len, const char *what, ss_tokenizer **out)
{
    *out = NULL;
    if (len > SS_TOKENIZER_MAX_JSON_BYTES)
        return ss_errf(SS_ERR_LIMIT, "tokenizer %s: %zu bytes exceeds the limit of %zu", what, len,
                       SS_TOKENIZER_MAX_JSON_BYTES);
    ss_tokenizer *tk = calloc(1, sizeof *tk);
    if (!tk || !(tk->what = strdup(what))) {
        free(tk);
        return ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory", what);
    }
    pthread_mutex_init(&tk->cache_lock, NULL);
    bool oom = false;
    cJSON *root = ss_json_parse(json, len, NULL, &oom);
    const char *err = root ? NULL : cJSON_GetErrorPtr();
    ss_status *st = root  ? load_root(tk, root)
                    : oom ? ss_errf(SS_ERR_NOMEM, "tokenizer %s: no memory to parse its JSON", what)
                          : ss_errf(SS_ERR_INVALID, "tokenizer %s: not valid JSON (near byte %zu)",
                                    what, err && err >= json ? (size_t)(err - json) : (size_t)0);
    cJSON_Delete(root);
    if (st) {
        ss_tokenizer_free(tk);
        return st;
    }
    *out = tk;
    return NULL;
}

ss_status *ss_tokenizer_load(const char *path, ss_tokenizer **out)
{
    *out = NULL;
    void *data;
    size_t len;
    ss_status *st = ss_read_file(path, &data, &len);
    if (st) return ss_status_wrap(st, "tokenizer");
    st = ss_tokenizer_parse(data, len, path, out);
    free(data);
    return st;
}

int32_t ss_tokenizer_vocab_size(const ss_tokenizer *tk)
{
    return tk->size;
}
