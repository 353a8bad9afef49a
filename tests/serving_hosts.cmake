# Two hosts (tests/serving/test_two_hosts.py): the server in one network namespace made by the
# test, the 8 ranks of the seed example in two others (4 each), started by ONE
# `shardserve agents --comm mpi` through mpirun; traffic stays inside the test's namespaces.
# Needs root for the namespaces: otherwise it prints the reason and is reported as skipped (77).
if(TARGET shardserve)
  if(SS_COMM_HAVE_MPI)
    add_test(NAME serving_two_hosts COMMAND ${SS_PY} ${SS_TEST_DIR}/serving/test_two_hosts.py)
    set_tests_properties(serving_two_hosts PROPERTIES
      ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;no_proxy=*;http_proxy=;https_proxy="
      TIMEOUT 480 RESOURCE_LOCK cluster SKIP_RETURN_CODE 77)
  else()
    add_test(NAME serving_two_hosts COMMAND sh -c "echo 'the mpi backend is not built (Open MPI development files missing: install libopenmpi-dev openmpi-bin)' >&2; exit 1")
  endif()
endif()
