# Element-wise fusion at plan time (src/runtime/ops/fusion.c, session.c: fuse_plan): the models of
# tests/onnx/fusion_cases.py fused and unfused give the same outputs; the planner fuses exactly
# what it should; a fused run allocates nothing.
if(TARGET ss_runtime)
  add_test(NAME runtime_fusion_cases_make
           COMMAND ${SS_FIXTURE} ${CMAKE_BINARY_DIR}/fusion_cases --
                   ${SS_PY} ${SS_TEST_DIR}/onnx/fusion_cases.py ${CMAKE_BINARY_DIR}/fusion_cases)
  set_tests_properties(runtime_fusion_cases_make PROPERTIES FIXTURES_SETUP fusion_cases
                       LABELS runtime)
  ss_add_c_test(test_runtime_fusion ${CMAKE_CURRENT_LIST_DIR}/test_runtime_fusion.c
                ARGS ${CMAKE_BINARY_DIR}/fusion_cases)
  target_include_directories(test_runtime_fusion PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime)
  target_link_libraries(test_runtime_fusion ss_runtime)
  target_link_options(test_runtime_fusion PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                      -Wl,--wrap=realloc)
  set_tests_properties(test_runtime_fusion PROPERTIES FIXTURES_REQUIRED fusion_cases
                       LABELS runtime)
endif()
