# runtime ops: quantization (quant.c), data-dependent shapes (select.c) and index ops
# (scatter.c), called through the op table as the planner calls them; their ONNX node cases run
# through `shardserve onnx-test` (onnx_node_conformance).
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_quant_select ${CMAKE_CURRENT_LIST_DIR}/test_ops_quant_select.c)
  target_include_directories(test_ops_quant_select PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime)
  target_link_libraries(test_ops_quant_select ss_runtime)
  target_link_options(test_ops_quant_select PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                      -Wl,--wrap=realloc)
  set_tests_properties(test_ops_quant_select PROPERTIES TIMEOUT 60 LABELS runtime)
endif()
