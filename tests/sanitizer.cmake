# The sanitizer build's own canary: UBSan's trap is on and ASan reports it with its source line.
if(SS_SANITIZE AND SS_UBSAN_TRAP)
  ss_add_c_test(sanitizer_ub_trap sanitizer_ub_trap.c ARGS 1)
  set_tests_properties(sanitizer_ub_trap PROPERTIES
                       PASS_REGULAR_EXPRESSION "SUMMARY: AddressSanitizer: ILL [^ ]*sanitizer_ub_trap\\.c:[0-9]+")
endif()
