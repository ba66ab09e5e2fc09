#include "core/clock.h"

#include <time.h>

double zg_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC with a valid pointer */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
