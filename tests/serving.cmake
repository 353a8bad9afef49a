# Distributed serving end to end: `shardserve serve` + `shardserve agents` as users start them,
# queried by the Python client, the C client (shardserve infer) and REST (tests/serving/).
add_test(NAME serving_end_to_end COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_serving.py)
set_tests_properties(serving_end_to_end PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 600 RESOURCE_LOCK cluster)

# The README's main job, the seed example file for file (examples/matmul_distributed/run_all.sh).
add_test(NAME serving_seed_example COMMAND ${CMAKE_SOURCE_DIR}/examples/matmul_distributed/run_all.sh)
set_tests_properties(serving_seed_example PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300 RESOURCE_LOCK cluster)

# Failures: an agent SIGKILLed under load, an agent that hangs, the server SIGKILLed and restarted.
add_test(NAME serving_failures COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_failures.py
                                       -test_killed_launcher_segment_removed)
set_tests_properties(serving_failures PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;SS_SANITIZED=$<BOOL:${SS_SANITIZE}>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300 RESOURCE_LOCK cluster)
# A killed group's /dev/shm segment, removed by the next launcher: alone, as any launcher starting
# meanwhile (another test's) would remove it first.
add_test(NAME serving_stale_segment COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_failures.py
                                            test_killed_launcher_segment_removed)
set_tests_properties(serving_stale_segment PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;SS_SANITIZED=$<BOOL:${SS_SANITIZE}>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 120 RUN_SERIAL TRUE)

# The Open Inference Protocol (KServe v2) end to end: the seed example through KServe REST (JSON,
# binary) and gRPC with clients written from the specification; the batch-dim rule on a real worker.
add_test(NAME serving_kserve COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_kserve_serving.py)
set_tests_properties(serving_kserve PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python:${CMAKE_BINARY_DIR}/python_proto;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300 RESOURCE_LOCK cluster)

# Dynamic non-batch dims served (one shape per batch) and graph inputs sent to the later pipeline
# stages that declare them (tests/serving/test_dynamic_inputs.py).
add_test(NAME serving_dynamic_inputs COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_dynamic_inputs.py)
set_tests_properties(serving_dynamic_inputs PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300)

# KServe's shared-memory extension with real agents: regions reach a local agent over the link by
# key (the tensor never crosses a socket), outputs written by the last rank; the region errors and
# a region unregistered while a request uses it.
add_test(NAME serving_kserve_shm_agents COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_kserve_shm_agents.py)
set_tests_properties(serving_kserve_shm_agents PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_BINARY_DIR}/python_proto;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300 RESOURCE_LOCK cluster)

# A client that shrinks its shared-memory object before or while a request uses it: the request
# fails naming the region or object, serve and the agent survive (no SIGBUS), later requests work.
add_test(NAME serving_kserve_shm_shrink COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_kserve_shm_shrink.py)
set_tests_properties(serving_kserve_shm_shrink PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300 RESOURCE_LOCK cluster)

# The project's clients over KServe's shared memory on the seed servable: `shardserve infer --shm`
# (the C library) over REST JSON, REST binary and gRPC, and the Python KServe class; regions
# cleaned up on success and on failure, unregistered regions and ranges past the end refused.
add_test(NAME serving_kserve_shm_clients COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_kserve_shm_clients.py)
set_tests_properties(serving_kserve_shm_clients PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300 RESOURCE_LOCK cluster)
