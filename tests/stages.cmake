# Composed servables (servable.json "stages"): the C-plugin example through gRPC and REST, and
# every error path of a C-function stage, with real `shardserve serve` and `shardserve agents`.
add_library(ss_example_classify_plugins MODULE ${CMAKE_SOURCE_DIR}/examples/stages_plugin/classify_plugins.c)
target_include_directories(ss_example_classify_plugins PRIVATE ${CMAKE_SOURCE_DIR}/include)
add_library(ss_test_plugins MODULE ${SS_TEST_DIR}/stages/test_plugins.c)
target_include_directories(ss_test_plugins PRIVATE ${CMAKE_SOURCE_DIR}/include)

set(SS_STAGES_ENV
  "SHARDSERVE=$<TARGET_FILE:shardserve>;SS_EXAMPLE_PLUGINS=$<TARGET_FILE:ss_example_classify_plugins>;SS_TEST_PLUGINS=$<TARGET_FILE:ss_test_plugins>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy=")
add_test(NAME stages_serving COMMAND ${SS_PY} ${SS_TEST_DIR}/stages/test_stages.py)
set_tests_properties(stages_serving PROPERTIES ENVIRONMENT "${SS_STAGES_ENV}" TIMEOUT 600 RESOURCE_LOCK cluster)
add_test(NAME stages_example COMMAND ${CMAKE_SOURCE_DIR}/examples/stages_plugin/run_all.sh)
set_tests_properties(stages_example PROPERTIES ENVIRONMENT "${SS_STAGES_ENV}" TIMEOUT 300 RESOURCE_LOCK cluster)

# Parsing and checking the stages (no process, nothing loaded).
ss_add_c_test(test_serving_stages ${SS_TEST_DIR}/test_serving_stages.c)
target_link_libraries(test_serving_stages ss_worker ss_serving)

# Python-function stages and MindSpore's servable_config.py through the mindspore_serving shim.
add_test(NAME stages_python COMMAND ${SS_PY} ${SS_TEST_DIR}/stages/test_pystages.py)
set_tests_properties(stages_python PROPERTIES ENVIRONMENT "${SS_STAGES_ENV}" TIMEOUT 600 RESOURCE_LOCK cluster)
add_test(NAME stages_shim COMMAND ${SS_PY} ${SS_TEST_DIR}/stages/test_shim.py)
set_tests_properties(stages_shim PROPERTIES ENVIRONMENT "${SS_STAGES_ENV}" TIMEOUT 300)
add_test(NAME stages_python_example COMMAND ${CMAKE_SOURCE_DIR}/examples/add_sub_python/run_all.sh)
set_tests_properties(stages_python_example PROPERTIES ENVIRONMENT "${SS_STAGES_ENV}" TIMEOUT 300 RESOURCE_LOCK cluster)
add_test(NAME stages_classify_example COMMAND ${CMAKE_SOURCE_DIR}/examples/classify_python/run_all.sh)
set_tests_properties(stages_classify_example PROPERTIES ENVIRONMENT "${SS_STAGES_ENV}" TIMEOUT 300 RESOURCE_LOCK cluster)

# Several models per servable (local and distributed) and subgraphs reached by Model.call.
add_test(NAME stages_models COMMAND ${SS_PY} ${SS_TEST_DIR}/stages/test_models.py)
set_tests_properties(stages_models PROPERTIES ENVIRONMENT "${SS_STAGES_ENV}" TIMEOUT 600 RESOURCE_LOCK cluster)
add_test(NAME stages_models_example COMMAND ${CMAKE_SOURCE_DIR}/examples/two_models_python/run_all.sh)
set_tests_properties(stages_models_example PROPERTIES ENVIRONMENT "${SS_STAGES_ENV}" TIMEOUT 300 RESOURCE_LOCK cluster)
