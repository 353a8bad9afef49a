# runtime ops that draw random numbers (ops/random.c): ranges, moments and frequencies over many
# draws, dtypes and errors through the op table, and seeded sequences through sessions on models
# of tests/onnx/make_models.py.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_random ${CMAKE_CURRENT_LIST_DIR}/test_ops_random.c
                ARGS ${CMAKE_BINARY_DIR}/test-models)
  target_include_directories(test_ops_random PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime)
  target_link_libraries(test_ops_random ss_runtime)
  set_tests_properties(test_ops_random PROPERTIES FIXTURES_REQUIRED test_models LABELS runtime)
endif()
