# runtime ops: MatMul and Gemm (ops/matmul.c) on every kernel library — oneDNN (ops/onednn.c), the
# small-M kernels (ops/gemm_kernel.c, every variant forced in turn) and OpenBLAS — against a
# double-precision reference; run must not allocate. One ctest per SHARDSERVE_KERNELS value.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_matmul ${CMAKE_CURRENT_LIST_DIR}/test_ops_matmul.c)
  target_include_directories(test_ops_matmul PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_matmul ss_runtime)
  # counts allocations so the test can prove that run never allocates
  target_link_options(test_ops_matmul PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
  set_tests_properties(test_ops_matmul PROPERTIES TIMEOUT 300 LABELS runtime
                       ENVIRONMENT SHARDSERVE_KERNELS=auto)
  foreach(mode onednn own blas)
    add_test(NAME test_ops_matmul_${mode} COMMAND test_ops_matmul)
    set_tests_properties(test_ops_matmul_${mode} PROPERTIES TIMEOUT 300 LABELS runtime
                         ENVIRONMENT SHARDSERVE_KERNELS=${mode})
  endforeach()
  # the own pthread pool (SHARDSERVE_POOL=own) instead of libgomp's team
  add_test(NAME test_ops_matmul_own_pool COMMAND test_ops_matmul)
  set_tests_properties(test_ops_matmul_own_pool PROPERTIES TIMEOUT 300 LABELS runtime
                       ENVIRONMENT "SHARDSERVE_KERNELS=own;SHARDSERVE_POOL=own")
endif()
