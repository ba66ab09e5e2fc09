#include "core/meminfo.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

uint64_t zg_host_mem_available(void) {
    const char *e = getenv("ZGPT_TEST_HOST_AVAILABLE_BYTES");
    if (e && *e) return strtoull(e, NULL, 10);
    uint64_t kb = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) found = sscanf(line, "MemAvailable: %" SCNu64 " kB", &kb) == 1;
    if (f) fclose(f);
    return found ? kb * 1024 : UINT64_MAX;
}
