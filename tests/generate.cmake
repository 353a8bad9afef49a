# generate: sampling (greedy, temperature, top-k, top-p, min-p, penalties, seeded draws) against
# the reference definitions, and stop strings over streamed text (tests/test_generate.c).
if(TARGET ss_generate)
  ss_add_c_test(generate_sample ${SS_TEST_DIR}/test_generate.c)
  target_link_libraries(generate_sample PRIVATE ss_generate)
endif()
if(TARGET ss_generate)
  ss_add_c_test(generate_sched ${SS_TEST_DIR}/test_generate_sched.c)
  target_link_libraries(generate_sched PRIVATE ss_generate)
endif()
if(TARGET ss_generate)
  ss_add_c_test(generate_engine ${SS_TEST_DIR}/test_generate_engine.c)
  target_link_libraries(generate_engine PRIVATE ss_generate)
endif()
