# onnx + runtime: loader errors, planner behaviour, conformance against ONNX's own test data, and
# exporter-shaped fixtures with PyTorch as the oracle.
set(SS_MODELS_DIR ${CMAKE_BINARY_DIR}/test-models)
add_test(NAME onnx_make_models COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/make_models.py ${SS_MODELS_DIR})
set_tests_properties(onnx_make_models PROPERTIES FIXTURES_SETUP test_models)

ss_add_c_test(test_onnx_load test_onnx_load.c ARGS ${SS_MODELS_DIR})
target_link_libraries(test_onnx_load PRIVATE ss_onnx)
set_tests_properties(test_onnx_load PROPERTIES FIXTURES_REQUIRED test_models)

ss_add_c_test(test_runtime_plan test_runtime_plan.c ARGS ${SS_MODELS_DIR})
target_link_libraries(test_runtime_plan PRIVATE ss_runtime)
target_link_options(test_runtime_plan PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
set_tests_properties(test_runtime_plan PROPERTIES FIXTURES_REQUIRED test_models)

# Every node case of Debian's libonnx-testdata whose ops we support must pass. The floor is the
# exact count passing today (Debian 12's libonnx-testdata), so a case that stops passing, or stops
# being recognised as supported, fails the gate; raise it when an op is added.
set(SS_NODE_CONFORMANCE_PASSED 892)
add_test(NAME onnx_node_conformance
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 /usr/share/libonnx-testdata/data/node ${SS_NODE_CONFORMANCE_PASSED})

# Exporter-shaped fixtures (MLP, MNIST CNN, BERT-tiny, GPT-2-tiny, a scripted MLP with an If on
# data, taken both ways, at opsets 14 and 17).
add_test(NAME onnx_export_fixtures_make
         COMMAND ${SS_PY} ${SS_TEST_DIR}/fixtures/onnx_export_families.py --fixtures ${CMAKE_BINARY_DIR}/export-fixtures)
set_tests_properties(onnx_export_fixtures_make PROPERTIES FIXTURES_SETUP export_fixtures)
add_test(NAME onnx_export_fixtures
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/export-fixtures 12 --no-skips)
set_tests_properties(onnx_export_fixtures PROPERTIES FIXTURES_REQUIRED export_fixtures)

# run --output-dir escapes output names into file names ('/' and ':' of exporter names).
add_test(NAME onnx_run_output_names
         COMMAND ${SS_TEST_DIR}/onnx/run_output_names.sh $<TARGET_FILE:shardserve> ${SS_PY}
                 ${CMAKE_BINARY_DIR}/run-output-names)

# Opsets 18-21 (newer than Debian's onnx 1.12) and Resize/Upsample at every opset: hand-built
# from the operator specification, numpy as the oracle; every case must load and pass.
add_test(NAME onnx_opset_cases_make
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/opset_cases.py ${CMAKE_BINARY_DIR}/opset-cases)
set_tests_properties(onnx_opset_cases_make PROPERTIES FIXTURES_SETUP opset_cases)
add_test(NAME onnx_opset_cases
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/opset-cases 61 --no-skips)
set_tests_properties(onnx_opset_cases PROPERTIES FIXTURES_REQUIRED opset_cases)

# PyTorch exports with Resize (F.interpolate in every exported mode, opsets 11/13/17, a small
# segmentation net) and If (a branch on a dim, decided at plan time; a branch on data), PyTorch
# as the oracle; every case must load and pass.
add_test(NAME onnx_torch_control_resize_make
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/torch_control_resize.py ${CMAKE_BINARY_DIR}/torch-control-resize)
set_tests_properties(onnx_torch_control_resize_make PROPERTIES FIXTURES_SETUP torch_control_resize)
add_test(NAME onnx_torch_control_resize
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/torch-control-resize 29 --no-skips)
set_tests_properties(onnx_torch_control_resize PROPERTIES FIXTURES_REQUIRED torch_control_resize)

# LSTM/GRU/RNN exported by PyTorch (bidirectional, stacked, linear_before_reset, batch_first with
# dynamic dims, float64) and a scripted loop appending to a list, PyTorch as the oracle.
add_test(NAME onnx_torch_rnn_make
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/torch_rnn.py ${CMAKE_BINARY_DIR}/torch-rnn)
set_tests_properties(onnx_torch_rnn_make PROPERTIES FIXTURES_SETUP torch_rnn)
add_test(NAME onnx_torch_rnn
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/torch-rnn 8 --no-skips)
set_tests_properties(onnx_torch_rnn PROPERTIES FIXTURES_REQUIRED torch_rnn)

# Einsum equations beyond the node cases (attention shapes, three operands, implicit outputs,
# "..." broadcast, trace, integers), numpy.einsum as the oracle.
add_test(NAME onnx_einsum_cases_make
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/einsum_cases.py ${CMAKE_BINARY_DIR}/einsum-cases)
set_tests_properties(onnx_einsum_cases_make PROPERTIES FIXTURES_SETUP einsum_cases)
add_test(NAME onnx_einsum_cases
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/einsum-cases 11 --no-skips)
set_tests_properties(onnx_einsum_cases PROPERTIES FIXTURES_REQUIRED einsum_cases)

# Loop and Scan beyond the node cases (swapping carried values, a while loop reading outer
# values, Scan with reversed directions and non-zero axes), numpy as the oracle.
add_test(NAME onnx_loop_cases_make
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/loop_cases.py ${CMAKE_BINARY_DIR}/loop-cases)
set_tests_properties(onnx_loop_cases_make PROPERTIES FIXTURES_SETUP loop_cases)
add_test(NAME onnx_loop_cases
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/loop-cases 5 --no-skips)
set_tests_properties(onnx_loop_cases PROPERTIES FIXTURES_REQUIRED loop_cases)

# LSTM/GRU/RNN, Scan and Loop allocate nothing once planned (and give the same outputs).
ss_add_c_test(test_runtime_loops test_runtime_loops.c
              ARGS /usr/share/libonnx-testdata/data/node ${CMAKE_BINARY_DIR}/loop-cases)
target_link_libraries(test_runtime_loops PRIVATE ss_runtime)
target_link_options(test_runtime_loops PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc)
set_tests_properties(test_runtime_loops PROPERTIES FIXTURES_REQUIRED loop_cases)

# Bad attributes and inputs of the recurrent, loop, Einsum and signal ops: an error naming the
# node and the problem, never a crash.
add_test(NAME onnx_bad_op_inputs
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/bad_op_inputs.py $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/bad-op-inputs)
