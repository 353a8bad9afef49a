# Sharding benchmark (bench/run_shard.sh): a model split over 1/2/4/8 local ranks (shm) against
# the unsharded model in one process, interleaved in one run; throughput and peak RSS per rank.
if(TARGET ss_agent)
  add_executable(bench_shard ${CMAKE_CURRENT_LIST_DIR}/bench_shard.c)
  target_link_libraries(bench_shard PRIVATE ss_agent)
endif()
