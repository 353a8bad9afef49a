# Distributed serving end to end: `shardserve serve` + `shardserve agents` as users start them,
# queried by the Python client, the C client (shardserve infer) and REST (tests/serving/).
add_test(NAME serving_end_to_end COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_serving.py)
set_tests_properties(serving_end_to_end PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 600 RUN_SERIAL TRUE)

# The README's main job, the seed example file for file (examples/matmul_distributed/run_all.sh).
add_test(NAME serving_seed_example COMMAND ${CMAKE_SOURCE_DIR}/examples/matmul_distributed/run_all.sh)
set_tests_properties(serving_seed_example PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300 RUN_SERIAL TRUE)

# Failures: an agent SIGKILLed under load, an agent that hangs, the server SIGKILLed and restarted.
add_test(NAME serving_failures COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_failures.py)
set_tests_properties(serving_failures PROPERTIES
  ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy="
  TIMEOUT 300 RUN_SERIAL TRUE)
