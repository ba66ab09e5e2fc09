#define _GNU_SOURCE /* MADV_HUGEPAGE */
#include "backend/host_pages.h"

#include "core/error.h"
#include "core/strutil.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

size_t zg_host_pages_len(size_t bytes) {
    if (bytes == 0) bytes = 1;
    return (bytes + ZG_HOST_PAGES_ALIGN - 1) / ZG_HOST_PAGES_ALIGN * ZG_HOST_PAGES_ALIGN;
}

void *zg_host_pages_map(size_t bytes) {
    size_t len = zg_host_pages_len(bytes), over = len + ZG_HOST_PAGES_ALIGN;
    /* one alignment more than asked, then the unaligned head and tail go back: the block starts on a
     * huge-page boundary, so every 2 MiB of it can be one huge page */
    unsigned char *raw = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        char a[32];
        zg_errorf("cannot map %s of host memory: %s", zg_fmt_bytes((double)len, a, sizeof a), strerror(errno));
        return NULL;
    }
    uintptr_t at = ((uintptr_t)raw + ZG_HOST_PAGES_ALIGN - 1) / ZG_HOST_PAGES_ALIGN * ZG_HOST_PAGES_ALIGN;
    unsigned char *base = (unsigned char *)at;
    size_t head = (size_t)(base - raw), tail = over - head - len;
    if (head) (void)munmap(raw, head);
    if (tail) (void)munmap(base + len, tail);
#ifdef MADV_HUGEPAGE
    (void)madvise(base, len, MADV_HUGEPAGE); /* a hint: THP "never" or an old kernel just keeps 4 KiB pages */
#endif
    /* The first touch, on every core: each write faults in (and the kernel zeroes) one page; a huge
     * page's later writes find it present. One thread faults ~2-5 GB/s; the kernel zeroes pages in
     * parallel when the faults come from many threads. */
    long long pages = (long long)(len / 4096);
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < pages; i++) base[(size_t)i * 4096] = 0;
    return base;
}

void zg_host_pages_unmap(void *base, size_t bytes) {
    if (base) (void)munmap(base, zg_host_pages_len(bytes));
}
