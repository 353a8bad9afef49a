# runtime ops: reductions (Reduce*, ArgMax/ArgMin), normalizations (Softmax family, Layer/Batch/
# InstanceNormalization, LpNormalization) and convolution/pooling, called through the op table and
# compared with naive reference loops. Their ONNX node cases run through `shardserve onnx-test`.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_reduce ${CMAKE_CURRENT_LIST_DIR}/test_ops_reduce.c)
  target_include_directories(test_ops_reduce PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime)
  target_link_libraries(test_ops_reduce ss_runtime)
  # counts allocations so the test can prove that run never allocates
  target_link_options(test_ops_reduce PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
  set_tests_properties(test_ops_reduce PROPERTIES TIMEOUT 120 LABELS runtime)
endif()
