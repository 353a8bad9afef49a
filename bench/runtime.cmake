# Runtime benchmark driver (bench/run_runtime.sh runs it side by side with onnxruntime-node).
if(TARGET ss_runtime)
  add_executable(bench_runtime ${CMAKE_CURRENT_LIST_DIR}/bench_runtime.c)
  target_link_libraries(bench_runtime PRIVATE ss_runtime ss_core m)
endif()
