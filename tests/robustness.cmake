# robustness: bad inputs to the real CLI, load and soak against a real serve + agents, and the
# libFuzzer targets for the ONNX loader, the rank-table parser and the servable-config parser.
# scripts/test.sh runs this suite three ways: normal build, ASan+UBSan build (-DSS_SANITIZE=ON),
# and the fuzz smoke runs in a clang build (-DSS_FUZZ=ON, scripts/fuzz-smoke.sh).
set(SS_ROB_OUT ${CMAKE_CURRENT_BINARY_DIR}/robustness)
set(SS_ROB_ENV "SHARDSERVE=$<TARGET_FILE:shardserve>"
    "PYTHONPATH=${CMAKE_SOURCE_DIR}/python:${SS_TEST_DIR}/serving"
    "SS_SANITIZED=$<BOOL:${SS_SANITIZE}>" "no_proxy=*" "http_proxy=" "https_proxy=")

# Every bad rank table, servable.json, model file, npy file and CLI argument in the table must
# give a non-zero exit with a message naming the input: no signal, no sanitizer report, no hang.
add_test(NAME robustness_bad_inputs COMMAND ${SS_PY} ${SS_TEST_DIR}/robustness/test_bad_inputs.py)
set_tests_properties(robustness_bad_inputs PROPERTIES ENVIRONMENT "${SS_ROB_ENV}" TIMEOUT 600
                     LABELS robustness)

# 64 clients, 20,000 requests (valid and invalid mixed) against serve + 2 agents: no wrong or lost
# reply, flat RSS; in the sanitizer build the server must also exit 0 on SIGTERM with no leak.
add_test(NAME robustness_soak COMMAND ${SS_PY} ${SS_TEST_DIR}/robustness/test_soak.py)
set_tests_properties(robustness_soak PROPERTIES ENVIRONMENT "${SS_ROB_ENV}" TIMEOUT 600
                     RESOURCE_LOCK cluster LABELS "robustness;soak")

# Hostile clients against serve + 1 agent: 80,000-name requests refused in < 100 ms, decode
# budgets for every JSON value kind and protobuf field, /health/live under 1,000 idle connections.
add_test(NAME robustness_hostile COMMAND ${SS_PY} ${SS_TEST_DIR}/robustness/test_hostile.py)
# Alone: its receive deadlines (3 s) and latency bounds under attack do not hold with a neighbour
# taking a core (under the sanitizers an 89 MB message then took over 3 s to arrive).
set_tests_properties(robustness_hostile PROPERTIES ENVIRONMENT "${SS_ROB_ENV}" TIMEOUT 300
                     RUN_SERIAL TRUE LABELS robustness)

# 1,000 stalled gRPC streams (10 connections x 100, each announcing 95 MB): serve's peak RSS stays
# under 400 MB, health and a legitimate client are answered (receive slots, grpc_server.c).
# Alone, as robustness_hostile: its probes' bounds under attack (health 1 s, a legitimate predict
# 2 s; only x2 under the sanitizers) assume the attack and serve have the machine to themselves.
add_test(NAME robustness_stalled_streams
         COMMAND ${SS_PY} ${SS_TEST_DIR}/robustness/test_stalled_streams.py)
set_tests_properties(robustness_stalled_streams PROPERTIES ENVIRONMENT "${SS_ROB_ENV}" TIMEOUT 300
                     RUN_SERIAL TRUE LABELS robustness)

# Requests whose data asks for too much, whole and split over 2 agents: an endless Loop is stopped
# at the request timeout the worker passes on (the next request is answered; split, the group
# restarts), a window over SHARDSERVE_RANK_RUN_MB is refused naming the limit.
add_test(NAME robustness_run_bounds COMMAND ${SS_PY} ${SS_TEST_DIR}/robustness/test_run_bounds.py)
set_tests_properties(robustness_run_bounds PROPERTIES ENVIRONMENT "${SS_ROB_ENV}" TIMEOUT 300
                     RESOURCE_LOCK cluster LABELS robustness)
# The split case under one mpirun (`agents --comm mpi`, loopback only): the endless requests
# restart the job at once and uncounted, a SIGKILLed rank restarts it as a counted failure; a
# garbage shard (78) and mpirun not on PATH (127) stop the launcher at once; a rank alone in its
# job, stopped (SIGSTOP), is killed by the launcher's hang check and the job started again (and a
# SIGTERM while that job ends stops the launcher instead).
if(SS_COMM_HAVE_MPI)
  add_test(NAME robustness_run_bounds_mpi
           COMMAND ${SS_PY} ${SS_TEST_DIR}/robustness/test_run_bounds.py --mpi)
  set_tests_properties(robustness_run_bounds_mpi PROPERTIES ENVIRONMENT "${SS_ROB_ENV}"
                       TIMEOUT 300 RESOURCE_LOCK cluster LABELS robustness)
endif()

# SIGTERM while requests wait on a stopped agent: both get an error and serve exits within
# --shutdown-grace-ms (1 s here) plus a few seconds, not after the 60 s request timeout.
add_test(NAME robustness_shutdown COMMAND ${SS_PY} ${SS_TEST_DIR}/robustness/test_shutdown.py)
set_tests_properties(robustness_shutdown PROPERTIES ENVIRONMENT "${SS_ROB_ENV}" TIMEOUT 120
                     LABELS robustness)

# libFuzzer targets (-DSS_FUZZ=ON with clang). The sources under test are compiled into each target
# again with coverage instrumentation; seed corpora are generated at test time (CTest fixtures) and
# new inputs go to scratch corpora in the build folder, never into the seeds.
if(SS_FUZZ)
  set(ss_rob_fuzz_flags -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
  if(NOT TARGET PkgConfig::SS_ROB_CJSON)
    pkg_check_modules(SS_ROB_CJSON REQUIRED IMPORTED_TARGET libcjson)
  endif()
  get_target_property(ss_onnx_src ss_onnx SOURCE_DIR)
  get_target_property(ss_onnx_bin ss_onnx BINARY_DIR)
  get_target_property(ss_worker_src ss_worker SOURCE_DIR)

  # the whole loader, the graph rewrite (functions inlined, fused ops lowered) included
  add_executable(fuzz_onnx_load ${SS_TEST_DIR}/test_fuzz_onnx.c ${ss_onnx_src}/load.c
                 ${ss_onnx_src}/tensor.c ${ss_onnx_src}/attr.c ${ss_onnx_src}/save.c
                 ${ss_onnx_src}/functions.c ${ss_onnx_src}/lower.c)
  target_link_libraries(fuzz_onnx_load ss_core ss_onnx_proto Threads::Threads m)

  # config.c parses a method's "stages" through the serving module (linked, not instrumented).
  add_executable(fuzz_rank_table ${SS_TEST_DIR}/test_fuzz_rank_table.c ${ss_worker_src}/config.c)
  add_executable(fuzz_servable_config ${SS_TEST_DIR}/test_fuzz_servable_config.c ${ss_worker_src}/config.c)
  foreach(t fuzz_rank_table fuzz_servable_config)
    target_link_libraries(${t} ss_serving ss_core PkgConfig::SS_ROB_CJSON Threads::Threads m)
  endforeach()

  add_test(NAME robustness_fuzz_seeds
           COMMAND ${SS_PY} ${SS_TEST_DIR}/robustness/make_seeds.py ${SS_ROB_OUT}/seeds)
  set_tests_properties(robustness_fuzz_seeds PROPERTIES FIXTURES_SETUP rob_fuzz_seeds)

  set(SS_FUZZ_SMOKE_SECONDS 10 CACHE STRING "seconds each robustness fuzz smoke run takes")
  foreach(t onnx_load rank_table servable_config)
    target_compile_options(fuzz_${t} PRIVATE ${ss_rob_fuzz_flags})
    target_link_options(fuzz_${t} PRIVATE ${ss_rob_fuzz_flags})
    file(MAKE_DIRECTORY ${SS_ROB_OUT}/corpus_${t})
  endforeach()
  add_test(NAME fuzz_onnx_load_smoke
           COMMAND fuzz_onnx_load -max_total_time=${SS_FUZZ_SMOKE_SECONDS} -max_len=8192
                   -rss_limit_mb=1024 ${SS_ROB_OUT}/corpus_onnx_load ${SS_MODELS_DIR})
  set_tests_properties(fuzz_onnx_load_smoke PROPERTIES FIXTURES_REQUIRED test_models)
  foreach(t rank_table servable_config)
    set(seeds ${SS_ROB_OUT}/seeds/rank_table)
    if(t STREQUAL servable_config)
      set(seeds ${SS_ROB_OUT}/seeds/servable)
    endif()
    add_test(NAME fuzz_${t}_smoke
             COMMAND fuzz_${t} -max_total_time=${SS_FUZZ_SMOKE_SECONDS} -max_len=8192
                     -rss_limit_mb=1024 -dict=${SS_TEST_DIR}/robustness/json.dict
                     ${SS_ROB_OUT}/corpus_${t} ${seeds})
    set_tests_properties(fuzz_${t}_smoke PROPERTIES FIXTURES_REQUIRED rob_fuzz_seeds)
  endforeach()
  foreach(t onnx_load rank_table servable_config)
    set_tests_properties(fuzz_${t}_smoke PROPERTIES TIMEOUT 120 LABELS "robustness;fuzz")
  endforeach()
endif()
