# TLS tests: certificates made at test time with openssl, ss_test_server with --grpc-tls-* and
# --rest-tls-*, queried by grpcio, shardserve_client, the C client (test_tls_client), Python's
# ssl/urllib, curl and `shardserve infer`; and one `shardserve serve` + agents (tests/serving/cluster.py)
# with both front ends on mutual TLS. Everything on 127.0.0.1.
add_executable(test_tls_client ${SS_TEST_DIR}/test_tls_client.c)
target_link_libraries(test_tls_client shardserve-client)

find_program(SS_OPENSSL openssl REQUIRED)
find_program(SS_CURL curl REQUIRED)
add_test(NAME test_tls COMMAND ${SS_PY} ${SS_TEST_DIR}/test_tls.py)
set_tests_properties(test_tls PROPERTIES TIMEOUT 240 LABELS "server;tls" ENVIRONMENT
  "SS_TEST_SERVER=$<TARGET_FILE:ss_test_server>;SS_TLS_CLIENT=$<TARGET_FILE:test_tls_client>;SS_SHARDSERVE=$<TARGET_FILE:shardserve>;SS_OPENSSL=${SS_OPENSSL};SS_CURL=${SS_CURL};PYTHONPATH=${CMAKE_BINARY_DIR}/python_proto:${CMAKE_SOURCE_DIR}/python:${SS_TEST_DIR};no_proxy=*;http_proxy=;https_proxy=")
