/* The sanitizer build checks itself (registered only with -DSS_SANITIZE=ON, tests/sanitizer.cmake):
 * a signed overflow, on a value the compiler cannot see, must stop this program with ASan's report
 * of UBSan's trap naming a line of this file (CMakeLists.txt, src/core/sanitizer_defaults.c; gcc
 * merges main's traps into one, so the line need not be the overflow's).
 * Without UBSan it prints the wrapped sum; with UBSan but no handle_sigill it dies of SIGILL
 * without a word. Either way the test's pass pattern is missing and it fails. */
#include <stdio.h>
#include <stdlib.h>

static int add(int a, int b)
{
    return a + b;
}

int main(int argc, char **argv)
{
    int x = argc > 1 ? atoi(argv[1]) : 0;
    printf("%d\n", add(x, 2147483647));
    return 0;
}
