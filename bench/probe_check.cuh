/* The bench/*_probe.cu programs' checked CUDA runtime call: the call's text and the error, then exit(1). */
#ifndef ZG_BENCH_PROBE_CHECK_CUH
#define ZG_BENCH_PROBE_CHECK_CUH

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                                          \
    do {                                                                                                               \
        cudaError_t e_ = (x);                                                                                          \
        if (e_ != cudaSuccess) {                                                                                       \
            printf("%s: %s\n", #x, cudaGetErrorString(e_));                                                            \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

#endif
