# Hand-built backend-test cases with onnxruntime-node as the oracle (tests/onnx/ort_oracle.js):
# a Python generator writes models and inputs, onnxruntime writes the outputs, and every case must
# load and pass:
# - onnx_contrib_cases: onnxruntime's com.microsoft contrib ops (Gelu family, skip/simplified/embed
#   layer norms, FusedMatMul, MatMulNBits, Attention, MultiHeadAttention, GroupQueryAttention,
#   RotaryEmbedding; FusedConv, FusedGemm, TransposeMatMul, Inverse, CDist, ExpandDims, Trilu, Range),
#   one model per op and attribute combination (tests/onnx/contrib_cases.py);
# - onnx_ort_op_cases: default-domain ops Debian's onnx test data lacks (LpPool, GlobalLpPool,
#   MaxRoiPool; tests/onnx/ort_op_cases.py);
# - onnx_ort_qlinear_cases: the quantized com.microsoft ops of onnxruntime's int8 models
#   (QLinearAdd ... QGemm, DynamicQuantizeMatMul, 16-bit Q/DQ, NhwcMaxPool, QLinearWhere, QAttention,
#   QEmbedLayerNormalization, a QOperator CNN and a quantized BERT layer;
#   tests/onnx/ort_qlinear_cases.py), compared exactly; onnx_ort_qlinear_cases_reference runs
#   them on the float64 reference path (SHARDSERVE_KERNELS=blas) that CPUs without VNNI take;
# - onnx_ort_function_cases: model-local functions inlined at load (torch.onnx's
#   export_modules_as_functions, attributes bound from the caller, nested calls, a call in an If
#   branch; tests/onnx/ort_function_cases.py).
# The oracle is the real-model suite's cached onnxruntime-node (outside git): the tests are
# registered only when that cache holds it (scripts/test-real-models.sh --fetch-only --quick
# fills it), since without it the cases could only be skipped.
if(DEFINED ENV{SHARDSERVE_REAL_MODELS_CACHE})
  set(ss_ort_oracle $ENV{SHARDSERVE_REAL_MODELS_CACHE}/node/node_modules)
else()
  set(ss_ort_oracle $ENV{HOME}/.cache/shardserve-real-models/node/node_modules)
endif()

# ss_ort_case_suite(NAME COUNT): tests/onnx/NAME.py writes the cases into the build folder's NAME
# (with - for _); onnx_NAME needs at least COUNT of them, all passing.
function(ss_ort_case_suite name count)
  string(REPLACE "_" "-" folder ${name})
  set(dir ${CMAKE_BINARY_DIR}/${folder})
  add_test(NAME onnx_${name}_make
           COMMAND ${SS_FIXTURE} ${dir} -- sh -c "${SS_PY} ${SS_TEST_DIR}/onnx/${name}.py ${dir} && node ${SS_TEST_DIR}/onnx/ort_oracle.js ${ss_ort_oracle} ${dir}")
  set_tests_properties(onnx_${name}_make PROPERTIES FIXTURES_SETUP ${name})
  add_test(NAME onnx_${name}
           COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve> ${dir} ${count}
                   --no-skips)
  set_tests_properties(onnx_${name} PROPERTIES FIXTURES_REQUIRED ${name})
endfunction()

if(EXISTS ${ss_ort_oracle}/onnxruntime-node AND EXISTS ${ss_ort_oracle}/onnx-proto)
  ss_ort_case_suite(contrib_cases 70)
  ss_ort_case_suite(ort_op_cases 15)
  ss_ort_case_suite(ort_qlinear_cases 103)
  ss_ort_case_suite(ort_function_cases 8)
  # the quantized products' reference path (exact float64 sums), which CPUs without AVX512-VNNI
  # take, checked here too: SHARDSERVE_KERNELS=blas keeps every op off the VNNI kernel
  add_test(NAME onnx_ort_qlinear_cases_reference
           COMMAND ${SS_TEST_DIR}/onnx/conformance.sh $<TARGET_FILE:shardserve>
                   ${CMAKE_BINARY_DIR}/ort-qlinear-cases 103 --no-skips)
  set_tests_properties(onnx_ort_qlinear_cases_reference PROPERTIES
                       FIXTURES_REQUIRED ort_qlinear_cases ENVIRONMENT SHARDSERVE_KERNELS=blas)
  # the nested-functions model split over 2 ranks and over 2 stages equals onnxruntime's output
  add_test(NAME shard_functions
           COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/shard_functions.py $<TARGET_FILE:shardserve>
                   ${CMAKE_BINARY_DIR}/ort-function-cases/test_torch_nested_functions
                   ${CMAKE_BINARY_DIR}/shard-functions)
  set_tests_properties(shard_functions PROPERTIES FIXTURES_REQUIRED ort_function_cases)
else()
  message(STATUS "onnx_contrib_cases, onnx_ort_op_cases, onnx_ort_qlinear_cases and onnx_ort_function_cases not registered: no onnxruntime-node at"
                 " ${ss_ort_oracle} (scripts/test-real-models.sh --fetch-only --quick installs it)")
endif()

# MatMulNBits on the int8 kernel (accuracy_level 4, --weights int8) against numpy's dequantized
# product, and the float32 path (accuracy_level 0) exact to float32 rounding
add_test(NAME onnx_nbits_int8
         COMMAND ${SS_PY} ${SS_TEST_DIR}/onnx/nbits_int8.py $<TARGET_FILE:shardserve>
                 ${CMAKE_BINARY_DIR}/nbits-int8)
set_tests_properties(onnx_nbits_int8 PROPERTIES TIMEOUT 120)
