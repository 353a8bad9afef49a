# comm tests: real processes. shm ranks are forked by the test; mpi ranks are started by mpirun
# inside a private network namespace (tests/test_comm_mpi.sh).
foreach(n 2 8)
  add_test(NAME comm_shm_${n} COMMAND test_comm_shm ${n})
  set_tests_properties(comm_shm_${n} PROPERTIES TIMEOUT 400)
endforeach()
add_executable(test_comm_shm test_comm_shm.c)
target_include_directories(test_comm_shm PRIVATE ${SS_TEST_DIR})
target_link_libraries(test_comm_shm ss_comm)

add_executable(test_comm_fail test_comm_fail.c)
target_include_directories(test_comm_fail PRIVATE ${SS_TEST_DIR})
target_link_libraries(test_comm_fail ss_comm)
add_test(NAME comm_fail COMMAND test_comm_fail)
set_tests_properties(comm_fail PROPERTIES TIMEOUT 120)

if(SS_COMM_HAVE_MPI)
  add_executable(test_comm_mpi test_comm_mpi.c)
  target_include_directories(test_comm_mpi PRIVATE ${SS_TEST_DIR})
  target_link_libraries(test_comm_mpi ss_comm)
  add_test(NAME comm_mpi_np4
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_comm_mpi.sh 4 $<TARGET_FILE:test_comm_mpi>)
  set_tests_properties(comm_mpi_np4 PROPERTIES TIMEOUT 300)
  add_test(NAME comm_mpi_kill
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_comm_mpi_kill.sh $<TARGET_FILE:test_comm_mpi>)
  set_tests_properties(comm_mpi_kill PROPERTIES TIMEOUT 120)
else()
  add_test(NAME comm_mpi_np4 COMMAND sh -c "echo 'Open MPI development files (pkg-config ompi-c) are missing: install libopenmpi-dev openmpi-bin' >&2; exit 1")
endif()

add_executable(test_comm_shm_full test_comm_shm_full.c)
target_include_directories(test_comm_shm_full PRIVATE ${SS_TEST_DIR})
target_link_libraries(test_comm_shm_full ss_comm)
add_test(NAME comm_shm_full COMMAND test_comm_shm_full)
set_tests_properties(comm_shm_full PROPERTIES TIMEOUT 60)
