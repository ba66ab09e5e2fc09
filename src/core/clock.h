/* The one monotonic clock of zgpt (step times, timeouts, progress rates). */
#ifndef ZG_CORE_CLOCK_H
#define ZG_CORE_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (never jumps with the wall clock). */
double zg_now_s(void);

struct timespec;
/* The CLOCK_REALTIME time `ms` milliseconds from now into *ts: the absolute deadline that
 * pthread_cond_timedwait takes (the watchdog threads' polling period). */
void zg_realtime_after_ms(struct timespec *ts, long ms);

#endif
