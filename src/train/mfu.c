#include "train/mfu.h"

#include <stdio.h>
#include <string.h>
#ifdef ZGPT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

double zg_mfu_flops_per_token(const gpt2_config *cfg, int T) {
    double N = (double)gpt2_param_count_unpadded(cfg);
    return 6.0 * N + 6.0 * cfg->n_layer * (double)T * cfg->n_embd;
}

/* fp32 runs are measured against the same number (they use no tensor cores, so their MFU reads low
 * on purpose). */
double zg_mfu_cuda_peak(int device, char *name, size_t cap) {
    name[0] = '\0';
#ifdef ZGPT_WITH_CUDA
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device < 0 ? 0 : device) != cudaSuccess) return 0;
    snprintf(name, cap, "%s", prop.name);
    static const struct {
        const char *match;
        double tflops;
    } cards[] = {{"H200", 989.0}, {"H100 PCIe", 756.0}, {"H100", 989.0}, {"H800", 989.0},
                 {"A100", 312.0}, {"A800", 312.0},      {"L40S", 362.0}, {"A10", 125.0}};
    for (size_t i = 0; i < sizeof cards / sizeof cards[0]; i++)
        if (strstr(prop.name, cards[i].match)) return cards[i].tflops * 1e12;
#else
    (void)device;
    (void)cap;
#endif
    return 0;
}
