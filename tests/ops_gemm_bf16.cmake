# runtime ops: the bf16-weight small-M GEMM (ops/gemm_bf16.c) — every ISA variant this CPU runs,
# forced in turn, against a double-precision float32 reference within bf16 tolerance, and a
# MatMul with --weights bf16 at decode shapes taking it.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_gemm_bf16 ${CMAKE_CURRENT_LIST_DIR}/test_ops_gemm_bf16.c)
  target_include_directories(test_ops_gemm_bf16 PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_gemm_bf16 ss_runtime)
  set_tests_properties(test_ops_gemm_bf16 PROPERTIES TIMEOUT 300 LABELS runtime)
endif()
