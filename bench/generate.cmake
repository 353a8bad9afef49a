# The token loop's sampler per sequence per step, against a plain implementation (bench_sample).
if(TARGET ss_generate)
  add_executable(bench_sample ${CMAKE_CURRENT_LIST_DIR}/bench_sample.c)
  target_link_libraries(bench_sample PRIVATE ss_generate ss_core m)
endif()
