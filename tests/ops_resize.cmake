# runtime ops: Resize's float32 bilinear path against onnxruntime's rounding (ops/resize.c); the
# ONNX node cases for Resize run through `shardserve onnx-test` (onnx_node_conformance).
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_resize_ort ${CMAKE_CURRENT_LIST_DIR}/test_ops_resize_ort.c)
  target_include_directories(test_ops_resize_ort PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                             ${CMAKE_SOURCE_DIR}/src/runtime/ops)
  target_link_libraries(test_ops_resize_ort ss_runtime)
  set_tests_properties(test_ops_resize_ort PROPERTIES LABELS runtime)
endif()
