# runtime ops: the 4-bit-weight GEMM (ops/gemm_q4.c, MatMulNBits bits=4 at accuracy_level 4 or
# --weights int8, any number of rows) — bit for bit the arithmetic it stands for, within
# the activation quantization bound of the exact product, rows independent of each other, NaN rows.
# Without AVX512-VNNI the test reports itself skipped.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_gemm_q4 ${CMAKE_CURRENT_LIST_DIR}/test_ops_gemm_q4.c)
  target_include_directories(test_ops_gemm_q4 PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_gemm_q4 ss_runtime)
  set_tests_properties(test_ops_gemm_q4 PROPERTIES TIMEOUT 300 LABELS runtime SKIP_RETURN_CODE 77)
endif()
