# server + client tests: a real test server (tests/test_server_main.c wired to an in-process test
# handler) on 127.0.0.1, queried over gRPC and REST by Python (grpcio, urllib) and the C client.
add_executable(ss_test_server ${SS_TEST_DIR}/test_server_main.c)
target_link_libraries(ss_test_server ss_server)

ss_add_c_test(test_server_serving ${SS_TEST_DIR}/test_server_serving.c)
target_link_libraries(test_server_serving ss_server)
target_include_directories(test_server_serving PRIVATE ${CMAKE_SOURCE_DIR}/src/server)
target_compile_options(test_server_serving PRIVATE -Wno-missing-braces)

# A KServe request of N batch rows decodes and encodes in O(N): the bytes moving reallocations
# would copy, counted through a wrapped realloc (ASan's allocator always moves; issue 14).
ss_add_c_test(test_server_kserve_rows ${SS_TEST_DIR}/test_server_kserve_rows.c)
target_link_libraries(test_server_kserve_rows ss_server)
target_include_directories(test_server_kserve_rows PRIVATE ${CMAKE_SOURCE_DIR}/src/server)
target_link_options(test_server_kserve_rows PRIVATE -Wl,--wrap=realloc)

# The decoded-size estimate the gRPC server charges before unpacking, against protobuf-c's real
# allocations (a counting allocator and glibc's mallinfo2).
ss_add_c_test(test_server_pb_budget ${SS_TEST_DIR}/test_server_pb_budget.c)
target_link_libraries(test_server_pb_budget ss_server)
target_include_directories(test_server_pb_budget PRIVATE ${CMAKE_SOURCE_DIR}/src/server)
set_tests_properties(test_server_pb_budget PROPERTIES LABELS robustness)

# Python's ms_service_pb2 is generated into the build folder with Debian's protoc.
find_program(SS_PROTOC NAMES protoc REQUIRED)
set(SS_PY_PROTO_OUT ${CMAKE_BINARY_DIR}/python_proto)
add_custom_command(
  OUTPUT ${SS_PY_PROTO_OUT}/ms_service_pb2.py
  COMMAND ${CMAKE_COMMAND} -E make_directory ${SS_PY_PROTO_OUT}
  COMMAND ${SS_PROTOC} --proto_path=${CMAKE_SOURCE_DIR}/proto --python_out=${SS_PY_PROTO_OUT}
          ${CMAKE_SOURCE_DIR}/proto/ms_service.proto
  DEPENDS ${CMAKE_SOURCE_DIR}/proto/ms_service.proto
  COMMENT "protoc --python_out ms_service.proto")
add_custom_command(
  OUTPUT ${SS_PY_PROTO_OUT}/grpc_service_pb2.py
  COMMAND ${CMAKE_COMMAND} -E make_directory ${SS_PY_PROTO_OUT}
  COMMAND ${SS_PROTOC} --proto_path=${CMAKE_SOURCE_DIR}/proto --python_out=${SS_PY_PROTO_OUT}
          ${CMAKE_SOURCE_DIR}/proto/grpc_service.proto
  DEPENDS ${CMAKE_SOURCE_DIR}/proto/grpc_service.proto
  COMMENT "protoc --python_out grpc_service.proto")
add_custom_target(ss_py_proto ALL DEPENDS ${SS_PY_PROTO_OUT}/ms_service_pb2.py
                                          ${SS_PY_PROTO_OUT}/grpc_service_pb2.py)

set(SS_SERVER_TEST_ENV
    "SS_TEST_SERVER=$<TARGET_FILE:ss_test_server>"
    "PYTHONPATH=${SS_PY_PROTO_OUT}:${CMAKE_SOURCE_DIR}/python:${SS_TEST_DIR}"
    "no_proxy=*" "http_proxy=" "https_proxy=")
foreach(t grpc rest bad_input)
  add_test(NAME test_server_${t} COMMAND ${SS_PY} ${SS_TEST_DIR}/test_server_${t}.py)
  set_tests_properties(test_server_${t} PROPERTIES ENVIRONMENT "${SS_SERVER_TEST_ENV}" TIMEOUT 180)
endforeach()
# The Open Inference Protocol (KServe v2) front ends, with clients written from the specification.
foreach(t rest grpc bad_input shm)
  add_test(NAME test_kserve_${t} COMMAND ${SS_PY} ${SS_TEST_DIR}/test_kserve_${t}.py)
  set_tests_properties(test_kserve_${t} PROPERTIES ENVIRONMENT "${SS_SERVER_TEST_ENV}" TIMEOUT 180)
endforeach()
# The project's own KServe clients: the Python KServe class and `shardserve infer --protocol`.
add_test(NAME test_kserve_clients COMMAND ${SS_PY} ${SS_TEST_DIR}/test_kserve_clients.py)
set_tests_properties(test_kserve_clients PROPERTIES
  ENVIRONMENT "${SS_SERVER_TEST_ENV};SHARDSERVE=$<TARGET_FILE:shardserve>" TIMEOUT 180)

# The C client library against the test server.
ss_add_c_test(test_server_client ${SS_TEST_DIR}/test_server_client.c)
target_link_libraries(test_server_client shardserve-client Threads::Threads)
set_tests_properties(test_server_client PROPERTIES
  ENVIRONMENT "SS_TEST_SERVER=$<TARGET_FILE:ss_test_server>;no_proxy=*" TIMEOUT 120)

# libshardserve-client exports only ss_client_*, installs with its header and pkg-config file,
# and a program built from the installed files alone talks to the server.
add_test(NAME test_server_client_install
         COMMAND ${SS_PY} ${SS_TEST_DIR}/test_server_client_install.py)
set_tests_properties(test_server_client_install PROPERTIES
  ENVIRONMENT "${SS_SERVER_TEST_ENV};SS_BUILD_DIR=${CMAKE_BINARY_DIR};SS_CLIENT_LIB=$<TARGET_FILE:shardserve-client>"
  TIMEOUT 180)

# libFuzzer targets for the REST request parser and the gRPC request decoder (-DSS_FUZZ=ON with
# clang). The codec sources are compiled again with coverage instrumentation; 10-second smoke
# runs are registered so CI exercises them.
if(SS_FUZZ)
  pkg_check_modules(SS_FUZZ_CJSON REQUIRED IMPORTED_TARGET libcjson)
  get_target_property(ss_server_src ss_server SOURCE_DIR)
  # gen: structure-aware, a recipe generates large well-formed gRPC and REST requests
  foreach(target rest grpc gen)
    add_executable(fuzz_server_${target} ${SS_TEST_DIR}/test_server_fuzz_${target}.c
                   ${ss_server_src}/grpc_codec.c ${ss_server_src}/pb_budget.c
                   ${ss_server_src}/rest_codec.c ${ss_server_src}/sbuf.c ${ss_server_src}/budget.c
                   ${CMAKE_BINARY_DIR}/proto/ms_service.pb-c.c)
    add_dependencies(fuzz_server_${target} ss_msproto)
    target_include_directories(fuzz_server_${target} PRIVATE ${ss_server_src}
                               ${CMAKE_BINARY_DIR}/proto)
    target_compile_options(fuzz_server_${target} PRIVATE -fsanitize=fuzzer,address,undefined
                           -Wno-missing-braces)
    target_link_options(fuzz_server_${target} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_server_${target} ss_json ss_serving ss_metrics ss_core
                          PkgConfig::SS_FUZZ_CJSON PkgConfig::PROTOBUFC)
    add_test(NAME fuzz_server_${target}_smoke
             COMMAND fuzz_server_${target} -max_total_time=10 -max_len=65536 -timeout=20
                     -rss_limit_mb=2048)
    set_tests_properties(fuzz_server_${target}_smoke PROPERTIES TIMEOUT 60 LABELS "server;fuzz")
  endforeach()
endif()

# libFuzzer targets for the KServe decoders and encoders (-DSS_FUZZ=ON with clang): the REST infer
# decoder over "URL\nHEADER-LENGTH\nBODY" and the gRPC ModelInfer / model RPC decoders over raw
# messages, each echoing what decodes through the reply encoder. 10-second smoke runs for CI.
if(SS_FUZZ)  # PkgConfig::SS_FUZZ_CJSON comes from the block above
  get_target_property(ss_kserve_src ss_server SOURCE_DIR)
  foreach(target rest grpc)
    add_executable(fuzz_kserve_${target} ${SS_TEST_DIR}/test_kserve_fuzz_${target}.c
                   ${ss_kserve_src}/kserve_codec.c ${ss_kserve_src}/kserve_rest.c ${ss_kserve_src}/sbuf.c
                   ${ss_kserve_src}/kserve_grpc.c ${ss_kserve_src}/pb_budget.c ${ss_kserve_src}/budget.c
                   ${ss_kserve_src}/kserve_stats.c ${ss_kserve_src}/kserve_shm.c ${ss_kserve_src}/kserve_pool.c
                   ${ss_kserve_src}/kserve_repo.c)
    target_include_directories(fuzz_kserve_${target} PRIVATE ${ss_kserve_src})
    target_compile_options(fuzz_kserve_${target} PRIVATE -fsanitize=fuzzer,address,undefined
                           -Wno-missing-braces)
    target_link_options(fuzz_kserve_${target} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_kserve_${target} ss_json ss_kserveproto ss_serving ss_link ss_metrics ss_core
                          PkgConfig::SS_FUZZ_CJSON PkgConfig::PROTOBUFC)
    add_test(NAME fuzz_kserve_${target}_smoke
             COMMAND fuzz_kserve_${target} -max_total_time=10 -max_len=65536)
    set_tests_properties(fuzz_kserve_${target}_smoke PROPERTIES TIMEOUT 60 LABELS "server;fuzz")
  endforeach()
endif()

# libFuzzer target for REST generation (-DSS_FUZZ=ON with clang): Triton's generate and OpenAI's
# completions bodies through the decoder, made-up answers through the encoders and the event
# stream (tests/test_rest_gen_fuzz.c). A 10-second smoke run for CI.
if(SS_FUZZ)
  pkg_check_modules(SS_FUZZ_MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
  get_target_property(ss_gen_src ss_server SOURCE_DIR)
  add_executable(fuzz_rest_gen ${SS_TEST_DIR}/test_rest_gen_fuzz.c ${ss_gen_src}/rest_gen.c
                 ${ss_gen_src}/rest_gen_triton.c ${ss_gen_src}/openai.c ${ss_gen_src}/sse.c
                 ${ss_gen_src}/sbuf.c)
  target_include_directories(fuzz_rest_gen PRIVATE ${ss_gen_src} ${SS_TEST_DIR}
                             ${CMAKE_SOURCE_DIR}/src)
  target_compile_options(fuzz_rest_gen PRIVATE -fsanitize=fuzzer,address,undefined
                         -fno-sanitize-recover=undefined)
  target_link_options(fuzz_rest_gen PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_rest_gen ss_serving ss_tokenizer ss_generate ss_core
                        PkgConfig::SS_FUZZ_CJSON PkgConfig::SS_FUZZ_MHD Threads::Threads m)
  add_test(NAME fuzz_rest_gen_smoke
           COMMAND fuzz_rest_gen -max_total_time=10 -max_len=4096 -rss_limit_mb=1024
                   -dict=${SS_TEST_DIR}/robustness/json.dict)
  set_tests_properties(fuzz_rest_gen_smoke PROPERTIES TIMEOUT 60 LABELS "server;fuzz")
endif()
