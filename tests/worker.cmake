# worker: unit tests of its pure parts (batching) and of the serving registry it publishes to.
ss_add_c_test(test_worker_batch ${SS_TEST_DIR}/test_worker_batch.c)
target_link_libraries(test_worker_batch ss_worker)
target_include_directories(test_worker_batch PRIVATE ${CMAKE_SOURCE_DIR}/src/worker)

ss_add_c_test(test_serving_registry ${SS_TEST_DIR}/test_serving_registry.c)
target_link_libraries(test_serving_registry ss_serving)
