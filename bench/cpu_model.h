/* The CPU's model name from /proc/cpuinfo ("unknown" when it has none), for a bench table's
 * header (the machines change between runs; a table says which one it was measured on). */
#ifndef SS_BENCH_CPU_MODEL_H
#define SS_BENCH_CPU_MODEL_H

#include <stdio.h>
#include <string.h>

static inline void cpu_model_name(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    for (char line[4096]; f && fgets(line, sizeof line, f);)
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(out, cap, "%s", strchr(line, ':') + 2);
            out[strcspn(out, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
}

#endif
