# tests/fixture-cache.sh, which the fixture generators run through (${SS_FIXTURE}, CMakeLists.txt):
# a kept output is reused only for the same command, sources and SS_ environment.
add_test(NAME fixture_cache COMMAND bash ${SS_TEST_DIR}/test_fixture_cache.sh)
# runs no binary of this build: the sanitizer stage would repeat the normal one exactly
set_tests_properties(fixture_cache PROPERTIES LABELS not-sanitized)
