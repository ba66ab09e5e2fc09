/* Large host blocks that are quick to page-lock: an anonymous mapping on 2 MiB boundaries, marked for
 * transparent huge pages (MADV_HUGEPAGE) and touched by all cores at once, so that the CUDA backend's
 * cudaHostRegister of it finds every page resident and huge (backend_cuda.cu's host_alloc).
 *
 * Why: cudaHostAlloc allocates, zeroes and locks 4 KiB pages on one thread: 3.71 s for 8 GiB on the
 * H200 host, 9.73 s for a GPT-2 XL checkpoint snapshot; this path measured 0.16 s (touch) + 0.18 s
 * (register) for the same 8 GiB, with the same 55 GB/s copies (docs/PERFORMANCE.md, v0.13). Where the
 * kernel gives no huge pages (THP "never") the hint is ignored and the touch is 4 KiB pages (0.38 s +
 * 0.40 s measured): still parallel. */
#ifndef ZG_BACKEND_HOST_PAGES_H
#define ZG_BACKEND_HOST_PAGES_H

#include <stddef.h>

/* Blocks from this size up take the mapping (below it cudaHostAlloc costs milliseconds, and a mapping
 * rounded up to 2 MiB would waste up to 2 MiB per small staging buffer). */
#define ZG_HOST_PAGES_MIN ((size_t)64 << 20)
#define ZG_HOST_PAGES_ALIGN ((size_t)2 << 20)

/* The mapping's length for a block of `bytes`: rounded up to ZG_HOST_PAGES_ALIGN. */
size_t zg_host_pages_len(size_t bytes);
/* zg_host_pages_len(bytes) of zeroed, resident memory aligned to ZG_HOST_PAGES_ALIGN; NULL with an
 * error (zg_errorf) naming the size when the kernel refuses the mapping. Safe on any thread. */
void *zg_host_pages_map(size_t bytes);
/* Returns a block of zg_host_pages_map(bytes) to the kernel. */
void zg_host_pages_unmap(void *base, size_t bytes);

#endif
