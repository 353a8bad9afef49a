# onnx_contrib_cases: onnxruntime's com.microsoft contrib ops (Gelu family, skip/simplified/embed
# layer norms, FusedMatMul, MatMulNBits, Attention, MultiHeadAttention, GroupQueryAttention,
# RotaryEmbedding), one hand-built model per op and attribute combination
# (tests/onnx/contrib_cases.py), onnxruntime-node as the oracle (tests/onnx/ort_oracle.js); every
# case must load and pass.
# The oracle is the real-model suite's cached onnxruntime-node (outside git): the test is
# registered only when that cache holds it (scripts/test-real-models.sh --fetch-only --quick
# fills it), since without it the cases could only be skipped.
if(DEFINED ENV{SHARDSERVE_REAL_MODELS_CACHE})
  set(ss_contrib_oracle $ENV{SHARDSERVE_REAL_MODELS_CACHE}/node/node_modules)
else()
  set(ss_contrib_oracle $ENV{HOME}/.cache/shardserve-real-models/node/node_modules)
endif()
if(EXISTS ${ss_contrib_oracle}/onnxruntime-node AND EXISTS ${ss_contrib_oracle}/onnx-proto)
  set(ss_contrib_dir ${CMAKE_BINARY_DIR}/contrib-cases)
  add_test(NAME onnx_contrib_cases_make
           COMMAND sh -c "${SS_PY} ${SS_TEST_DIR}/onnx/contrib_cases.py ${ss_contrib_dir} && node ${SS_TEST_DIR}/onnx/ort_oracle.js ${ss_contrib_oracle} ${ss_contrib_dir}")
  set_tests_properties(onnx_contrib_cases_make PROPERTIES FIXTURES_SETUP contrib_cases)
  add_test(NAME onnx_contrib_cases
           COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve> ${ss_contrib_dir}
                   49 --no-skips)
  set_tests_properties(onnx_contrib_cases PROPERTIES FIXTURES_REQUIRED contrib_cases)
else()
  message(STATUS "onnx_contrib_cases not registered: no onnxruntime-node at ${ss_contrib_oracle}"
                 " (scripts/test-real-models.sh --fetch-only --quick installs it)")
endif()
