# link: wire format in memory, real sockets (TCP on 127.0.0.1 and Unix sockets in a temp dir),
# and authentication.
foreach(t test_link_frame test_link_socket test_link_auth)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/${t}.c)
    ss_add_c_test(${t} ${CMAKE_CURRENT_LIST_DIR}/${t}.c)
    target_link_libraries(${t} ss_link)
    set_tests_properties(${t} PROPERTIES TIMEOUT 120 LABELS link)
  endif()
endforeach()
