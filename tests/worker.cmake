# worker: unit tests of its pure parts (batching) and of the serving registry it publishes to.
ss_add_c_test(test_worker_batch ${SS_TEST_DIR}/test_worker_batch.c)
target_link_libraries(test_worker_batch ss_worker)
target_include_directories(test_worker_batch PRIVATE ${CMAKE_SOURCE_DIR}/src/worker)

ss_add_c_test(test_serving_registry ${SS_TEST_DIR}/test_serving_registry.c)
target_link_libraries(test_serving_registry ss_serving)

# The worker's event loop against fake agents (this test binary again, one process each): request
# timeout, heartbeat silence, a dead agent replaced, the queue limit, stop answering everything.
ss_add_c_test(test_worker_loop ${SS_TEST_DIR}/worker/test_worker_loop.c)
target_link_libraries(test_worker_loop ss_worker)
target_include_directories(test_worker_loop PRIVATE ${SS_TEST_DIR}/worker)
set_tests_properties(test_worker_loop PROPERTIES TIMEOUT 120)
