# alloc: allocation-failure tests in SQLite's manner (fail the 1st, 2nd, 3rd ... allocation until a
# run completes untouched; every run must succeed or fail cleanly, without a leak or a crash).
# tests/alloc/allocfail.h documents the harness.
#
# ss_add_allocfail_test(name source... [ARGS arg...]): a C test with allocfail.c compiled in. Link
# what it tests with target_link_libraries(name ...). allocfail.c defines malloc & co. and forwards
# to the next definition with dlsym(RTLD_NEXT), so it also works in the -DSS_SANITIZE=ON build
# (there the next definition is ASan's, and LeakSanitizer checks for leaks as well). -fno-builtin:
# else gcc may rewrite the forwarding code into calls of the very functions it defines.
# -fno-sanitize=all: ASan's own start-up may call malloc before its shadow memory exists, and an
# instrumented malloc would then fault on its first memory access.
function(ss_add_allocfail_test name)
  ss_add_c_test(${name} ${SS_TEST_DIR}/alloc/allocfail.c ${ARGN})
  set_source_files_properties(${SS_TEST_DIR}/alloc/allocfail.c PROPERTIES
                              COMPILE_OPTIONS "-fno-builtin;-fno-sanitize=all")
  target_include_directories(${name} PRIVATE ${SS_TEST_DIR}/alloc)
  target_link_libraries(${name} ${CMAKE_DL_LIBS})
  set_tests_properties(${name} PROPERTIES TIMEOUT 300 LABELS alloc)
endfunction()

# The link frame encoder and decoder, on every frame type and on malformed frames.
ss_add_allocfail_test(test_alloc_link_frame ${SS_TEST_DIR}/alloc/test_alloc_link_frame.c)
get_target_property(ss_alloc_link_src ss_link SOURCE_DIR)
target_include_directories(test_alloc_link_frame PRIVATE ${ss_alloc_link_src})
target_link_libraries(test_alloc_link_frame ss_link)

# The rank table (server_list and group_list) and servable.json parsers (only when the worker is
# built at all).
if(TARGET ss_worker)
  ss_add_allocfail_test(test_alloc_config ${SS_TEST_DIR}/alloc/test_alloc_config.c)
  target_link_libraries(test_alloc_config ss_worker)
endif()

# A client's connect + PREDICT + RESULT over a real connection to an in-process echo server on
# 127.0.0.1 (only the client thread's allocations fail).
ss_add_allocfail_test(test_alloc_link_socket ${SS_TEST_DIR}/alloc/test_alloc_link_socket.c)
target_link_libraries(test_alloc_link_socket ss_link)

# A predict request's path through the serving registry, the worker's event loop and a real link
# to a fake agent (this test binary again, in its own process).
if(TARGET ss_worker)
  ss_add_allocfail_test(test_alloc_worker ${SS_TEST_DIR}/alloc/test_alloc_worker.c)
  target_link_libraries(test_alloc_worker ss_worker)
  target_include_directories(test_alloc_worker PRIVATE ${SS_TEST_DIR}/worker)
endif()

# The shard tool (ss_shard_model) on the exporter-shaped MLP over 2 stages and GPT-2-tiny split by
# heads: every run writes the clean run's files byte for byte, or fails with SS_ERR_NOMEM.
if(TARGET shardserve)
  ss_add_allocfail_test(test_alloc_shard ${SS_TEST_DIR}/alloc/test_alloc_shard.c
                        ARGS ${CMAKE_BINARY_DIR}/shard-data)
  target_link_libraries(test_alloc_shard ss_shard)
  # under the environment's kernels (auto): the shard tool plans plan-only sessions, which create
  # no oneDNN primitive (oneDNN 2.6 itself crashes when an allocation fails inside
  # dnnl_primitive_attr_create, seen at one allocation of GPT-2-tiny's when it planned on it)
  set_tests_properties(test_alloc_shard PROPERTIES FIXTURES_REQUIRED shard_data)
endif()

# The serving registry's predict path: requests refused (unknown servable or method) and one
# handed to a backend that answers at once.
ss_add_allocfail_test(test_alloc_serving ${SS_TEST_DIR}/alloc/test_alloc_serving.c)
target_link_libraries(test_alloc_serving ss_serving)

# MindSpore's wire formats: a REST request body and a gRPC PredictRequest decoded, a reply encoded
# to REST JSON and to a PredictReply.
if(TARGET ss_server)
  ss_add_allocfail_test(test_alloc_codecs ${SS_TEST_DIR}/alloc/test_alloc_codecs.c)
  target_link_libraries(test_alloc_codecs ss_server)
  target_include_directories(test_alloc_codecs PRIVATE ${CMAKE_SOURCE_DIR}/src/server)
  target_compile_options(test_alloc_codecs PRIVATE -Wno-missing-braces)
endif()

# The tokenizer: a byte-level BPE tokenizer.json parsed, a text encoded and decoded back.
ss_add_allocfail_test(test_alloc_tokenizer ${SS_TEST_DIR}/alloc/test_alloc_tokenizer.c)
target_link_libraries(test_alloc_tokenizer ss_tokenizer)
target_include_directories(test_alloc_tokenizer PRIVATE ${CMAKE_SOURCE_DIR}/src)

# REST generation: OpenAI's /v1/completions and Triton's generate bodies decoded (ids and text
# prompts, every sampling field, stop strings, streamed or not, malformed bodies) and answered in
# one body or as an event stream (libmicrohttpd's response calls are the test's own).
if(TARGET ss_server)
  ss_add_allocfail_test(test_alloc_gen ${SS_TEST_DIR}/alloc/test_alloc_gen.c)
  target_link_libraries(test_alloc_gen ss_server)
  target_include_directories(test_alloc_gen PRIVATE ${CMAKE_SOURCE_DIR}/src/server
                                                    ${CMAKE_SOURCE_DIR}/src)
endif()
