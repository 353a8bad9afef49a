# format: every tracked C file is as clang-format writes it (scripts/check-format.sh).
add_test(NAME clang_format COMMAND ${CMAKE_SOURCE_DIR}/scripts/check-format.sh)
# (not-sanitized: no binary of the build runs, so scripts/asan.sh skips it)
set_tests_properties(clang_format PROPERTIES TIMEOUT 120 LABELS not-sanitized)
