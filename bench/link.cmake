# link: tensor round trips over the link vs raw loopback sockets, same run.
if(TARGET ss_link)
  add_executable(bench_link ${CMAKE_CURRENT_LIST_DIR}/bench_link.c)
  target_link_libraries(bench_link ss_link)
endif()
