# link: wire format in memory, real sockets (TCP on 127.0.0.1 and Unix sockets in a temp dir),
# and authentication.
foreach(t test_link_frame test_link_socket test_link_auth test_link_shm test_link_shm_guard)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/${t}.c)
    ss_add_c_test(${t} ${CMAKE_CURRENT_LIST_DIR}/${t}.c)
    target_link_libraries(${t} ss_link)
    set_tests_properties(${t} PROPERTIES TIMEOUT 120 LABELS link)
  endif()
endforeach()

# libFuzzer target for the frame decoder: -DSS_FUZZ=ON with clang. The link sources are compiled
# into it again with coverage instrumentation (ss_link itself stays uninstrumented for the other
# binaries). A 10-second smoke run is registered so CI exercises it.
if(SS_FUZZ)
  get_target_property(ss_link_src ss_link SOURCE_DIR)
  get_target_property(ss_link_bin ss_link BINARY_DIR)
  add_executable(fuzz_link_frame ${CMAKE_CURRENT_LIST_DIR}/test_link_fuzz.c
                 ${ss_link_src}/frame.c ${ss_link_src}/conn.c ${ss_link_src}/auth.c
                 ${ss_link_src}/shm.c ${ss_link_src}/shm_guard.c ${ss_link_bin}/link.pb-c.c)
  add_dependencies(fuzz_link_frame ss_link)
  target_include_directories(fuzz_link_frame PRIVATE ${ss_link_src} ${ss_link_bin})
  target_compile_options(fuzz_link_frame PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_link_frame PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_link_frame ss_core PkgConfig::PROTOBUFC PkgConfig::LIBCRYPTO
                        Threads::Threads rt)
  add_test(NAME fuzz_link_frame_smoke COMMAND fuzz_link_frame -max_total_time=10 -max_len=4096)
  set_tests_properties(fuzz_link_frame_smoke PROPERTIES TIMEOUT 60 LABELS "link;fuzz")
endif()
