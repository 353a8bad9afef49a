# runtime ops: MatMul and Gemm (ops/matmul.c) and the small-M kernels (ops/gemm_kernel.c), every
# kernel variant forced in turn, against a double-precision reference; run must not allocate.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_matmul ${CMAKE_CURRENT_LIST_DIR}/test_ops_matmul.c)
  target_include_directories(test_ops_matmul PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_matmul ss_runtime)
  # counts allocations so the test can prove that run never allocates
  target_link_options(test_ops_matmul PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
  set_tests_properties(test_ops_matmul PROPERTIES TIMEOUT 300 LABELS runtime)
endif()
