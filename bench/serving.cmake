# Serving benchmarks (bench/run_serving.sh -> bench/bench_serving.py, results in bench/RESULTS.md):
# the seed example over gRPC vs the floor, a bare gRPC server answering serve's own reply bytes
# (bench_floor_server), and vs a Python grpcio + numpy server (bench_py_server.py); REST vs gRPC;
# large tensors vs a bare gRPC echo (bench_echo_server) and raw loopback TCP (bench_tcp_echo);
# a 2-stage pipeline vs the same stages back to back; dynamic batching on and off.
if(TARGET shardserve)
  pkg_check_modules(SS_BENCH_GRPC REQUIRED IMPORTED_TARGET grpc)
  add_executable(bench_floor_server ${CMAKE_CURRENT_LIST_DIR}/bench_floor_server.c)
  target_link_libraries(bench_floor_server PRIVATE PkgConfig::SS_BENCH_GRPC Threads::Threads)
  add_executable(bench_echo_server ${CMAKE_CURRENT_LIST_DIR}/bench_echo_server.c)
  target_link_libraries(bench_echo_server PRIVATE PkgConfig::SS_BENCH_GRPC Threads::Threads)
  add_executable(bench_tcp_echo ${CMAKE_CURRENT_LIST_DIR}/bench_tcp_echo.c)
  target_link_libraries(bench_tcp_echo PRIVATE Threads::Threads)
endif()
