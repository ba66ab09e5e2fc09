/* The one monotonic clock of zgpt (step times, timeouts, progress rates). */
#ifndef ZG_CORE_CLOCK_H
#define ZG_CORE_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (never jumps with the wall clock). */
double zg_now_s(void);

#endif
