#include "cli/commands.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <xxhash.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef ZGPT_WITH_CURL
#include <curl/curl.h>
#endif
#ifdef ZGPT_WITH_MPI
#include <mpi.h>
#endif
#ifdef ZGPT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif
#ifdef ZGPT_WITH_CUDNN
#include <cudnn_version.h>
#endif
#ifdef ZGPT_WITH_NCCL
#include <nccl.h>
#endif

#ifndef ZGPT_VERSION
#define ZGPT_VERSION "0.0.0"
#endif

/* From OpenBLAS; declared here so no BLAS header choice leaks into the CLI. */
char *openblas_get_config(void);
int openblas_get_num_threads(void);

void zg_print_version(void) {
    printf("zgpt %s\n", ZGPT_VERSION);
    printf("backends:\n");
#ifdef _OPENMP
    printf("  cpu      fp32, OpenMP %d (max threads %d), BLAS: %s\n", _OPENMP, omp_get_max_threads(),
           openblas_get_config());
#else
    printf("  cpu      fp32, no OpenMP, BLAS: %s\n", openblas_get_config());
#endif
#ifdef ZGPT_WITH_CUDA
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    printf("  cuda     runtime %d.%d (built with %d.%d), archs %s", rt / 1000, (rt % 1000) / 10, CUDART_VERSION / 1000,
           (CUDART_VERSION % 1000) / 10, ZGPT_CUDA_ARCHS);
#ifdef ZGPT_WITH_CUDNN
    printf(", cuDNN %d.%d.%d", CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL);
#else
    printf(", no cuDNN");
#endif
    printf("\n");
#else
    printf("  cuda     not compiled in (build with nvcc available)\n");
#endif
    printf("communicators:\n  single\n");
#ifdef ZGPT_WITH_MPI
    int maj = 0, min = 0, len = 0;
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    MPI_Get_version(&maj, &min);
    /* the library's own name and version ("Open MPI v4.1.4", "MPICH Version: 4.0"), up to its first
     * comma or line end; both calls are allowed before MPI_Init */
    if (MPI_Get_library_version(lib, &len) != MPI_SUCCESS) len = 0;
    lib[len < (int)sizeof lib ? len : (int)sizeof lib - 1] = '\0';
    lib[strcspn(lib, ",\n\t")] = '\0';
    printf("  mpi      MPI %d.%d (%s)\n", maj, min, lib[0] ? lib : ZGPT_MPI_IMPL);
#else
    printf("  mpi      not compiled in\n");
#endif
#ifdef ZGPT_WITH_NCCL
    printf("  nccl     %d.%d.%d\n", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
#elif defined(ZGPT_WITH_CUDA)
    printf("  nccl     not compiled in (--gpus with several GPUs needs it: libnccl-dev)\n");
#endif
#ifdef ZGPT_WITH_CURL
    printf("downloads:\n  libcurl  %s\n", curl_version());
#else
    printf("downloads:\n  libcurl  not compiled in (zgpt download and downloads on a cache miss are off)\n");
#endif
    char pcre[64] = "";
    pcre2_config(PCRE2_CONFIG_VERSION, pcre);
    int jit = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &jit);
    printf("libraries:\n  PCRE2 %s (JIT %s), cJSON %s, xxHash %d.%d.%d\n", pcre, jit ? "yes" : "no", cJSON_Version(),
           XXH_VERSION_MAJOR, XXH_VERSION_MINOR, XXH_VERSION_RELEASE);
}
