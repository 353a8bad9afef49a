# comm benchmark: collectives vs memcpy, shm vs mpi (bench/run_comm.sh runs the whole table).
add_executable(bench_comm bench_comm.c)
target_link_libraries(bench_comm ss_comm)
if(SS_COMM_HAVE_MPI)
  target_compile_definitions(bench_comm PRIVATE SS_HAVE_MPI=1)
endif()
