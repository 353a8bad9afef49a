# runtime ops, elementwise family (elementwise.c, logic.c, cast.c, broadcast.c): a numpy-oracle
# generator writes tiny ONNX models with expected outputs into the build folder (a CTest
# fixture); the C test runs each through a session and compares.
set(SS_OPS_EW_OUT ${CMAKE_CURRENT_BINARY_DIR}/ops_elementwise)

add_test(NAME test_ops_elementwise_gen
         COMMAND ${SS_FIXTURE} ${SS_OPS_EW_OUT} -- ${SS_PY} ${SS_TEST_DIR}/test_ops_elementwise_gen.py
                 ${SS_OPS_EW_OUT})
set_tests_properties(test_ops_elementwise_gen PROPERTIES FIXTURES_SETUP ops_elementwise_cases)

ss_add_c_test(test_ops_elementwise test_ops_elementwise.c)
target_link_libraries(test_ops_elementwise ss_runtime)
set_tests_properties(test_ops_elementwise PROPERTIES FIXTURES_REQUIRED ops_elementwise_cases
                     ENVIRONMENT "SS_OPS_EW_CASES=${SS_OPS_EW_OUT}")

# Large elementwise plans split over the worker pool: same bytes as one thread.
ss_add_c_test(test_ops_ew_threads test_ops_ew_threads.c)
target_include_directories(test_ops_ew_threads PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                           ${CMAKE_SOURCE_DIR}/src/runtime/ops)
target_link_libraries(test_ops_ew_threads ss_runtime)
set_tests_properties(test_ops_ew_threads PROPERTIES LABELS runtime)
add_test(NAME test_ops_ew_threads_own_pool COMMAND test_ops_ew_threads)
set_tests_properties(test_ops_ew_threads_own_pool PROPERTIES LABELS runtime
                     ENVIRONMENT SHARDSERVE_POOL=own)
