/* Linked into every executable of the sanitizer build (-DSS_SANITIZE=ON) and nothing else.
 *
 * UBSan there traps in place (-fsanitize-undefined-trap-on-error): a failed check executes ud2
 * and the process gets SIGILL. handle_sigill=1 makes ASan report that signal like a bad access,
 * with the stack down to the trap, and exit non-zero (the innermost line is where the compiler
 * put the trap: another check's of the same function when it merged them). A program not built
 * here (one linking libshardserve-client, say) lacks this: there a failed check dies of SIGILL
 * without a report unless its ASAN_OPTIONS hold handle_sigill=1. It is compiled in, not only
 * set by scripts/asan.sh, so a test that sets ASAN_OPTIONS of its own keeps it: options given in
 * ASAN_OPTIONS are read after these and win one by one. */

const char *__asan_default_options(void);

const char *__asan_default_options(void)
{
    return "handle_sigill=1";
}
