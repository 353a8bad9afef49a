# The client library on its own: configured with -DSS_BUILD_SERVER=OFF in a fresh folder while
# pkg-config cannot see the server's packages, it builds and links only gRPC core and protobuf-c.
add_test(NAME client_builds_alone COMMAND sh ${SS_TEST_DIR}/test_client_builds_alone.sh ${CMAKE_SOURCE_DIR})
# (not-sanitized: it builds a plain client library of its own, so scripts/asan.sh skips it)
set_tests_properties(client_builds_alone PROPERTIES TIMEOUT 180 LABELS "client;not-sanitized")
