# metrics: the registry and its Prometheus text (C, exact text, threads, collectors), a strict
# parser of the exposition format run on a rendered sample, and GET /metrics of a real
# serve + agents after known traffic (tests/test_metrics_serving.py, via tests/serving/cluster.py).
if(TARGET ss_metrics)
  ss_add_c_test(metrics_registry ${SS_TEST_DIR}/test_metrics.c)
  target_link_libraries(metrics_registry PRIVATE ss_metrics)
  add_test(NAME metrics_format COMMAND ${SS_PY} ${SS_TEST_DIR}/test_metrics_format.py $<TARGET_FILE:metrics_registry>)
  add_test(NAME metrics_serving COMMAND ${SS_PY} ${SS_TEST_DIR}/test_metrics_serving.py)
  set_tests_properties(metrics_serving PROPERTIES
    ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy="
    TIMEOUT 300 RESOURCE_LOCK cluster)
endif()
