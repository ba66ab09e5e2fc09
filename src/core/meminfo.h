/* The host's available memory, as the kernel reports it. */
#ifndef ZG_CORE_MEMINFO_H
#define ZG_CORE_MEMINFO_H

#include <stdint.h>

/* MemAvailable of /proc/meminfo in bytes; UINT64_MAX when it cannot be read (malloc decides then).
 * ZGPT_TEST_HOST_AVAILABLE_BYTES=N stands in for the kernel's figure (tests). Linux overcommits:
 * a malloc of more than this succeeds and the kernel kills the process later, so callers that hold
 * large host buffers ask first. */
uint64_t zg_host_mem_available(void);

#endif
