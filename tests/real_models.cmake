# real_models_quick: the CI-sized part of the real-model suite (scripts/test-real-models.sh
# --quick): every model that npm packages ship and that shardserve supports must match
# onnxruntime-node's outputs; models marked known_unsupported are listed as skipped.
# The models live in a cache outside git. The test is registered only when that cache already
# holds the oracle and the packages (scripts/test.sh fills it before configuring; by hand:
# scripts/test-real-models.sh --fetch-only --quick): without them it could only be skipped, and
# CTest's totals would count a skipped test as run.
if(DEFINED ENV{SHARDSERVE_REAL_MODELS_CACHE})
  set(ss_real_models_cache $ENV{SHARDSERVE_REAL_MODELS_CACHE})
else()
  set(ss_real_models_cache $ENV{HOME}/.cache/shardserve-real-models)
endif()
file(GLOB ss_real_model_cases ${ss_real_models_cache}/cases/*/case.json)
if(EXISTS ${ss_real_models_cache}/node/node_modules/onnxruntime-node AND ss_real_model_cases)
  add_test(NAME real_models_quick
           COMMAND env SHARDSERVE_REAL_MODELS_CACHE=${ss_real_models_cache}
                   SHARDSERVE=$<TARGET_FILE:shardserve>
                   ${CMAKE_SOURCE_DIR}/scripts/test-real-models.sh --quick --offline)
  set_tests_properties(real_models_quick PROPERTIES TIMEOUT 900)
else()
  message(STATUS "real_models_quick not registered: no real-model cache at ${ss_real_models_cache}"
                 " (scripts/test-real-models.sh --fetch-only --quick fills it)")
endif()
