# onnx + runtime: loader errors, planner behaviour, conformance against ONNX's own test data, and
# exporter-shaped fixtures with PyTorch as the oracle.
set(SS_MODELS_DIR ${CMAKE_BINARY_DIR}/test-models)
add_test(NAME onnx_make_models COMMAND ${SS_FIXTURE} ${SS_MODELS_DIR} --
                                        ${SS_PY} ${SS_TEST_DIR}/onnx/make_models.py ${SS_MODELS_DIR})
set_tests_properties(onnx_make_models PROPERTIES FIXTURES_SETUP test_models)

ss_add_c_test(test_onnx_load test_onnx_load.c ARGS ${SS_MODELS_DIR})
target_link_libraries(test_onnx_load PRIVATE ss_onnx)
set_tests_properties(test_onnx_load PROPERTIES FIXTURES_REQUIRED test_models)

ss_add_c_test(test_runtime_plan test_runtime_plan.c ARGS ${SS_MODELS_DIR})
target_link_libraries(test_runtime_plan PRIVATE ss_runtime)
target_include_directories(test_runtime_plan PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime/ops)
target_link_options(test_runtime_plan PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
set_tests_properties(test_runtime_plan PROPERTIES FIXTURES_REQUIRED test_models)

# Every node case of Debian's libonnx-testdata whose ops we support must pass. The floor is the
# exact count passing today (Debian 12's libonnx-testdata), so a case that stops passing, or stops
# being recognised as supported, fails the gate; raise it when an op is added.
set(SS_NODE_CONFORMANCE_PASSED 922)
add_test(NAME onnx_node_conformance
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 /usr/share/libonnx-testdata/data/node ${SS_NODE_CONFORMANCE_PASSED})

# Exporter-shaped fixtures (MLP, MNIST CNN, BERT-tiny, GPT-2-tiny, a scripted MLP with an If on
# data, taken both ways, at opsets 14 and 17).
add_test(NAME onnx_export_fixtures_make
         COMMAND ${SS_FIXTURE} ${CMAKE_BINARY_DIR}/export-fixtures -- ${SS_PY}
                 ${SS_TEST_DIR}/fixtures/onnx_export_families.py --fixtures ${CMAKE_BINARY_DIR}/export-fixtures)
set_tests_properties(onnx_export_fixtures_make PROPERTIES FIXTURES_SETUP export_fixtures)
add_test(NAME onnx_export_fixtures
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/export-fixtures 12 --no-skips)
set_tests_properties(onnx_export_fixtures PROPERTIES FIXTURES_REQUIRED export_fixtures)

# run --output-dir escapes output names into file names ('/' and ':' of exporter names).
add_test(NAME onnx_run_output_names
         COMMAND ${SS_TEST_DIR}/onnx/run_output_names.sh $<TARGET_FILE:shardserve> ${SS_PY}
                 ${CMAKE_BINARY_DIR}/run-output-names)

# onnx-test's --atol, --rtol and --atol-of-max (real models compare with them).
add_test(NAME onnx_test_tolerance
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/onnx_test_tolerance.py $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/onnx-test-tolerance)

# ss_onnx_case_suite(NAME COUNT): tests/onnx/NAME.py writes backend-test folders into the build
# folder's NAME (with - for _) as fixture NAME (test onnx_NAME_make); onnx_NAME then needs
# every one of them to load and pass, and at least COUNT of them.
function(ss_onnx_case_suite name count)
  string(REPLACE "_" "-" folder ${name})
  add_test(NAME onnx_${name}_make
           COMMAND ${SS_FIXTURE} ${CMAKE_BINARY_DIR}/${folder} --
                   ${SS_PY} ${SS_TEST_DIR}/onnx/${name}.py ${CMAKE_BINARY_DIR}/${folder})
  set_tests_properties(onnx_${name}_make PROPERTIES FIXTURES_SETUP ${name})
  add_test(NAME onnx_${name}
           COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                   ${CMAKE_BINARY_DIR}/${folder} ${count} --no-skips)
  set_tests_properties(onnx_${name} PROPERTIES FIXTURES_REQUIRED ${name})
endfunction()

# Opsets 18-21 (newer than Debian's onnx 1.12), Resize/Upsample at every opset and the row-parallel
# ops (Softmax, LayerNormalization, Transpose) split over 2 threads: hand-built
# from the operator specification, numpy as the oracle; every case must load and pass.
ss_onnx_case_suite(opset_cases 67)
# the row-parallel cases split over 2 threads whatever the machine's default
set_tests_properties(onnx_opset_cases PROPERTIES ENVIRONMENT "OPENBLAS_NUM_THREADS=2")

# PyTorch exports with Resize (F.interpolate in every exported mode, opsets 11/13/17, a small
# segmentation net) and If (a branch on a dim, decided at plan time; a branch on data), PyTorch
# as the oracle; every case must load and pass.
ss_onnx_case_suite(torch_control_resize 29)

# LSTM/GRU/RNN exported by PyTorch (bidirectional, stacked, linear_before_reset, batch_first with
# dynamic dims, float64) and a scripted loop appending to a list, PyTorch as the oracle.
ss_onnx_case_suite(torch_rnn 8)

# Einsum equations beyond the node cases (attention shapes, three operands, implicit outputs,
# "..." broadcast, trace, integers), numpy.einsum as the oracle.
ss_onnx_case_suite(einsum_cases 12)

# Sequence ops beyond the node cases (SplitToSequence forms, ConcatFromSequence, Construct/Erase/
# Length/At, sequence graph outputs, a Loop growing a sequence by a data-dependent count), numpy
# as the oracle.
ss_onnx_case_suite(sequence_cases 9)

# Loop and Scan beyond the node cases (swapping carried values, a while loop reading outer
# values, Scan with reversed directions and non-zero axes), numpy as the oracle.
ss_onnx_case_suite(loop_cases 8)

# Edges an op-attribute fuzzer found (the sanitizer build's run is the one that matters): tensors
# with a zero dimension through the row-copying ops, integer reductions that overflow (they wrap),
# GridSample coordinates far outside the image; numpy as the oracle.
ss_onnx_case_suite(edge_cases 19)

# LSTM/GRU/RNN, Scan and Loop allocate nothing once planned (and give the same outputs).
ss_add_c_test(test_runtime_loops test_runtime_loops.c
              ARGS /usr/share/libonnx-testdata/data/node ${CMAKE_BINARY_DIR}/loop-cases)
target_link_libraries(test_runtime_loops PRIVATE ss_runtime)
target_link_options(test_runtime_loops PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
set_tests_properties(test_runtime_loops PROPERTIES FIXTURES_REQUIRED loop_cases)

# Bad attributes and inputs of the recurrent, loop, Einsum and signal ops, and window attributes
# or rois of absurd size (Conv, pooling, ConvTranspose, RoiAlign): an error naming the node and
# the problem, never a crash, a signed overflow or hours of work.
add_test(NAME onnx_bad_op_inputs
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/bad_op_inputs.py $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/bad-op-inputs)
