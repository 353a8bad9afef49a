# runtime ops: shape (Reshape family, Shape, Expand), movement (Transpose, Slice, Gather, Pad ...)
# and generate (Constant, Range ...), called through the op table as the planner calls them.
# The ONNX node cases for these ops run through `shardserve onnx-test` (see the runtime tests).
if(TARGET ss_runtime)
  ss_add_c_test(test_ops_shape ${CMAKE_CURRENT_LIST_DIR}/test_ops_shape.c)
  target_include_directories(test_ops_shape PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime)
  target_link_libraries(test_ops_shape ss_runtime)
  set_tests_properties(test_ops_shape PROPERTIES TIMEOUT 60 LABELS runtime)
endif()
