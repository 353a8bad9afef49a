# core: status, logging, dtypes, tensors and .npy I/O. Python generators (numpy/torch as oracles)
# run first as CTest fixtures and write into the build folder; the C tests read what they wrote.
set(SS_CORE_TEST_OUT ${CMAKE_CURRENT_BINARY_DIR}/core)

add_test(NAME test_core_float_oracle
         COMMAND ${SS_FIXTURE} ${SS_CORE_TEST_OUT}/float_oracle.bin --
                 ${SS_PY} ${SS_TEST_DIR}/npy/float_oracle.py ${SS_CORE_TEST_OUT}/float_oracle.bin)
set_tests_properties(test_core_float_oracle PROPERTIES FIXTURES_SETUP core_float_oracle)

add_test(NAME test_core_npy_generate
         COMMAND ${SS_PY} ${SS_TEST_DIR}/npy/gen_npy.py generate ${SS_CORE_TEST_OUT}/npy)
set_tests_properties(test_core_npy_generate PROPERTIES FIXTURES_SETUP core_npy_files)

ss_add_c_test(test_core_status test_core_status.c)
target_link_libraries(test_core_status ss_core)

# The CPUs thread counts derive from: affinity and cgroup quotas (fake cgroup files).
ss_add_c_test(test_core_cpus test_core_cpus.c)
target_link_libraries(test_core_cpus ss_core)

ss_add_c_test(test_core_dtype test_core_dtype.c)
target_link_libraries(test_core_dtype ss_core)
set_tests_properties(test_core_dtype PROPERTIES FIXTURES_REQUIRED core_float_oracle
                     ENVIRONMENT "SS_CORE_FLOAT_ORACLE=${SS_CORE_TEST_OUT}/float_oracle.bin")

ss_add_c_test(test_core_tensor test_core_tensor.c)
target_link_libraries(test_core_tensor ss_core)
# The out-of-memory case asks for a petabyte; under ASan that must fail with NULL, not abort.
set_tests_properties(test_core_tensor PROPERTIES ENVIRONMENT "ASAN_OPTIONS=allocator_may_return_null=1")

# Reads every generated file, writes the good ones back (c_*.npy) for numpy to check.
ss_add_c_test(test_core_npy test_core_npy.c)
target_link_libraries(test_core_npy ss_core)
set_tests_properties(test_core_npy PROPERTIES FIXTURES_REQUIRED core_npy_files
                     FIXTURES_SETUP core_npy_written
                     ENVIRONMENT "SS_CORE_NPY_DIR=${SS_CORE_TEST_OUT}/npy")

add_test(NAME test_core_npy_numpy_reads_c
         COMMAND ${SS_PY} ${SS_TEST_DIR}/npy/gen_npy.py check ${SS_CORE_TEST_OUT}/npy)
set_tests_properties(test_core_npy_numpy_reads_c PROPERTIES
                     FIXTURES_REQUIRED "core_npy_files;core_npy_written")

# libFuzzer target for the npy parser: -DSS_FUZZ=ON with clang. The core sources are compiled into
# it again with coverage instrumentation; the generated good and bad files seed a 10-second smoke
# run (new inputs go to a scratch corpus in the build folder, never into the seeds).
if(SS_FUZZ)
  get_target_property(ss_core_src ss_core SOURCE_DIR)
  get_target_property(ss_core_sources ss_core SOURCES)
  list(TRANSFORM ss_core_sources PREPEND ${ss_core_src}/)
  add_executable(fuzz_core_npy ${CMAKE_CURRENT_LIST_DIR}/test_core_fuzz_npy.c ${ss_core_sources})
  target_compile_options(fuzz_core_npy PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_core_npy PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_core_npy Threads::Threads m)
  file(MAKE_DIRECTORY ${SS_CORE_TEST_OUT}/fuzz_corpus)
  add_test(NAME test_core_npy_fuzz_smoke
           COMMAND fuzz_core_npy -max_total_time=10 -max_len=4096 ${SS_CORE_TEST_OUT}/fuzz_corpus
                   ${SS_CORE_TEST_OUT}/npy)
  set_tests_properties(test_core_npy_fuzz_smoke PROPERTIES TIMEOUT 60 LABELS "core;fuzz"
                       FIXTURES_REQUIRED core_npy_files)
endif()
