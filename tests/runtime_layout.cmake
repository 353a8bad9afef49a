# The layout pass (src/runtime/session.c: layout_plan): the Conv networks of
# tests/onnx/layout_cases.py keep oneDNN's blocked layout between Convs and MaxPools, reorder only
# at the chains' ends, and give the plain path's outputs and numpy's.
if(TARGET ss_runtime)
  add_test(NAME runtime_layout_cases_make
           COMMAND ${SS_FIXTURE} ${CMAKE_BINARY_DIR}/layout_cases --
                   ${SS_PY} ${SS_TEST_DIR}/onnx/layout_cases.py ${CMAKE_BINARY_DIR}/layout_cases)
  set_tests_properties(runtime_layout_cases_make PROPERTIES FIXTURES_SETUP layout_cases
                       LABELS runtime)
  ss_add_c_test(test_runtime_layout ${CMAKE_CURRENT_LIST_DIR}/test_runtime_layout.c
                ARGS ${CMAKE_BINARY_DIR}/layout_cases)
  target_include_directories(test_runtime_layout PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime)
  target_link_libraries(test_runtime_layout ss_runtime)
  target_link_options(test_runtime_layout PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                      -Wl,--wrap=realloc)
  set_tests_properties(test_runtime_layout PROPERTIES FIXTURES_REQUIRED layout_cases
                       LABELS runtime)
  # the same cases on the own pthread pool: its late workers skip a closed task, so a part that
  # does not claim its work (onednn.c's relayouts) leaves pixels unwritten there
  add_test(NAME test_runtime_layout_own_pool COMMAND test_runtime_layout
           ${CMAKE_BINARY_DIR}/layout_cases)
  set_tests_properties(test_runtime_layout_own_pool PROPERTIES FIXTURES_REQUIRED layout_cases
                       LABELS runtime ENVIRONMENT SHARDSERVE_POOL=own)
endif()
