# agent: unit tests of what a rank works out before it serves.
# The bound on one run's memory: SHARDSERVE_RANK_RUN_MB parsed strictly, else half the usable
# memory over the host's ranks, and where the value came from.
ss_add_c_test(test_agent_run_bytes ${SS_TEST_DIR}/test_agent_run_bytes.c)
target_link_libraries(test_agent_run_bytes ss_agent)
# The SCHED_BATCH choice (auto, batch, normal, a bad value) and that the threads a child starts
# after ss_child_sched_batch run in it.
ss_add_c_test(test_agent_sched ${SS_TEST_DIR}/test_agent_sched.c)
target_link_libraries(test_agent_sched ss_agent)
