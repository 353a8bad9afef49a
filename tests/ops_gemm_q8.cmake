# runtime ops: the int8-weight small-M GEMM (ops/gemm_q8.c, --weights int8) — bit for bit the int8
# arithmetic it stands for, within the quantization bound of the float32 product, and a MatMul /
# Gemm under the int8 flag taking it. Without AVX512-VNNI only the
# float32 fallback is checked and the test reports itself skipped.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_gemm_q8 ${CMAKE_CURRENT_LIST_DIR}/test_ops_gemm_q8.c)
  target_include_directories(test_ops_gemm_q8 PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_gemm_q8 ss_runtime)
  set_tests_properties(test_ops_gemm_q8 PROPERTIES TIMEOUT 300 LABELS runtime SKIP_RETURN_CODE 77)
endif()
