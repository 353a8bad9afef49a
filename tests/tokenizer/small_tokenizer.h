/* A small byte-level BPE tokenizer.json for the tokenizer's unit and fuzz tests: the 256 byte
 * tokens (id = byte value), two merges (C3 A9 -> e-acute, "h i" -> "hi", one in each merge form)
 * and two added tokens ("<s>" special; "<x>" with lstrip and rstrip). */
#ifndef SS_TEST_SMALL_TOKENIZER_H
#define SS_TEST_SMALL_TOKENIZER_H

#include "tokenizer/tokenizer_internal.h"

#include <cjson/cJSON.h>

#define ID_E_ACUTE 256 /* merge of bytes C3 A9 */
#define ID_HI 257
#define ID_S 258 /* "<s>", special */
#define ID_X 259 /* "<x>", lstrip + rstrip */
#define N_IDS 260

/* Byte b's token in a byte-level vocabulary (its bytes_to_unicode character). */
static char *byte_token(uint8_t b, char out[8])
{
    out[ss_tok_utf8_put(ss_tok_byte_char(b), out)] = 0;
    return out;
}

static cJSON *small_tokenizer(void)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    char tok[8];
    for (int b = 0; b < 256; b++)
        cJSON_AddNumberToObject(vocab, byte_token((uint8_t)b, tok), b);
    cJSON_AddNumberToObject(vocab, "Ã©", ID_E_ACUTE);
    cJSON_AddNumberToObject(vocab, "hi", ID_HI);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    cJSON_AddItemToArray(merges, cJSON_CreateString("Ã ©"));
    const char *pair[] = {"h", "i"};
    cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
    cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse("{\"type\": \"ByteLevel\"}"));
    cJSON_AddItemToObject(root, "decoder", cJSON_Parse("{\"type\": \"ByteLevel\"}"));
    cJSON_AddItemToObject(root, "added_tokens",
                          cJSON_Parse("[{\"id\": 258, \"content\": \"<s>\", \"special\": true},"
                                      " {\"id\": 259, \"content\": \"<x>\", \"lstrip\": true,"
                                      " \"rstrip\": true}]"));
    return root;
}

#endif
