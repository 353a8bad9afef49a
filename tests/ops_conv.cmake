# runtime ops: Conv on oneDNN (ops/conv.c, ops/onednn.c) against the own im2col kernel; run must
# not allocate in our code.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_conv_onednn ${CMAKE_CURRENT_LIST_DIR}/test_ops_conv_onednn.c)
  target_include_directories(test_ops_conv_onednn PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_conv_onednn ss_runtime)
  target_link_options(test_ops_conv_onednn PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                      -Wl,--wrap=realloc)
  set_tests_properties(test_ops_conv_onednn PROPERTIES TIMEOUT 120 LABELS runtime)
endif()

# float16 and bfloat16 Conv/ConvTranspose/pools through float32 copies (ops/common.c): equal to
# the float32 op rounded once (float16 real models, issue 11).
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_conv_half ${CMAKE_CURRENT_LIST_DIR}/test_ops_conv_half.c)
  target_include_directories(test_ops_conv_half PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_conv_half ss_runtime)
  target_link_options(test_ops_conv_half PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                      -Wl,--wrap=realloc)
  set_tests_properties(test_ops_conv_half PROPERTIES LABELS runtime)
endif()

# ConvInteger's im2col + float64 gemm kernel against an exact float64 Conv (quantized real models).
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_conv_quant ${CMAKE_CURRENT_LIST_DIR}/test_ops_conv_quant.c)
  target_include_directories(test_ops_conv_quant PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_conv_quant ss_runtime)
  target_link_options(test_ops_conv_quant PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                      -Wl,--wrap=realloc)
  set_tests_properties(test_ops_conv_quant PROPERTIES LABELS runtime)
endif()

# MaxPool / AveragePool / global pools on every run-time ISA variant (ops/isa.h) against a direct
# per-window reference.
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_pool_isa ${CMAKE_CURRENT_LIST_DIR}/test_ops_pool_isa.c)
  target_include_directories(test_ops_pool_isa PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_pool_isa ss_runtime)
  set_tests_properties(test_ops_pool_isa PROPERTIES LABELS runtime)
endif()
