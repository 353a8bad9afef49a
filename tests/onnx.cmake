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
set(SS_NODE_CONFORMANCE_PASSED 843)
add_test(NAME onnx_node_conformance
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 /usr/share/libonnx-testdata/data/node ${SS_NODE_CONFORMANCE_PASSED})

# Exporter-shaped fixtures (MLP, MNIST CNN, BERT-tiny, GPT-2-tiny at opsets 14 and 17).
add_test(NAME onnx_export_fixtures_make
         COMMAND ${SS_PY} ${SS_TEST_DIR}/fixtures/onnx_export_families.py --fixtures ${CMAKE_BINARY_DIR}/export-fixtures)
set_tests_properties(onnx_export_fixtures_make PROPERTIES FIXTURES_SETUP export_fixtures)
add_test(NAME onnx_export_fixtures
         COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/export-fixtures 8 --no-skips)
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
