/* Backend selection ("cpu", "cuda", "auto") and dtype helpers shared by every backend. */
#include "backend/backend.h"

#include "core/error.h"

#include <string.h>
#include <strings.h>

size_t zg_dtype_size(zg_dtype dt) {
    switch (dt) {
    case ZG_F32: return 4;
    case ZG_BF16: return 2;
    case ZG_F16: return 2;
    }
    return 0;
}

const char *zg_dtype_name(zg_dtype dt) {
    switch (dt) {
    case ZG_F32: return "fp32";
    case ZG_BF16: return "bf16";
    case ZG_F16: return "fp16";
    }
    return "unknown";
}

int zg_dtype_parse(const char *s, zg_dtype *out) {
    if (s == NULL) return zg_errorf("precision is missing: use fp32, bf16 or fp16");
    if (strcasecmp(s, "fp32") == 0 || strcasecmp(s, "float32") == 0 || strcasecmp(s, "f32") == 0) {
        *out = ZG_F32;
        return 0;
    }
    if (strcasecmp(s, "bf16") == 0 || strcasecmp(s, "bfloat16") == 0) {
        *out = ZG_BF16;
        return 0;
    }
    if (strcasecmp(s, "fp16") == 0 || strcasecmp(s, "float16") == 0 || strcasecmp(s, "f16") == 0) {
        *out = ZG_F16;
        return 0;
    }
    return zg_errorf("unknown precision '%s': use fp32, bf16 or fp16", s);
}

int zg_backend_cuda_available(void) {
#ifdef ZGPT_WITH_CUDA
    return zg_backend_cuda_device_count() > 0;
#else
    return 0;
#endif
}

int zg_backend_create(zg_backend **out, const zg_backend_config *cfg) {
    *out = NULL;
    const char *dev = cfg->device ? cfg->device : "auto";
    if (strcmp(dev, "cpu") == 0) return zg_backend_cpu_create(out, cfg);
    if (strcmp(dev, "cuda") == 0) {
#ifdef ZGPT_WITH_CUDA
        if (!zg_backend_cuda_available())
            return zg_errorf("device 'cuda' requested but no GPU is visible: use --device cpu or run on a GPU machine");
        return zg_backend_cuda_create(out, cfg);
#else
        return zg_errorf("device 'cuda' requested but this zgpt was built without CUDA: use --device cpu or "
                         "rebuild with nvcc available (-DZGPT_CUDA=ON)");
#endif
    }
    if (strcmp(dev, "auto") == 0) {
#ifdef ZGPT_WITH_CUDA
        if (zg_backend_cuda_available()) return zg_backend_cuda_create(out, cfg);
#endif
        return zg_backend_cpu_create(out, cfg);
    }
    return zg_errorf("unknown device '%s': use cpu, cuda or auto", dev);
}

/* Atomic: the checkpoint snapshot is reserved on a thread of its own while the trainer allocates its
 * other host buffers (src/train/checkpoint.c). */
void *zg_host_block_wrap(zg_backend *be, void *base, size_t bytes, int pinned) {
    uint64_t hdr[2] = {(uint64_t)bytes, (uint64_t)pinned};
    memcpy(base, hdr, sizeof hdr);
    size_t now = __atomic_add_fetch(&be->host_bytes_in_use, bytes, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&be->host_bytes_peak, __ATOMIC_RELAXED);
    while (now > peak &&
           !__atomic_compare_exchange_n(&be->host_bytes_peak, &peak, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return (char *)base + ZG_HOST_HEADER;
}

void *zg_host_block_unwrap(zg_backend *be, void *p, int *pinned, size_t *bytes) {
    char *base = (char *)p - ZG_HOST_HEADER;
    uint64_t hdr[2];
    memcpy(hdr, base, sizeof hdr);
    __atomic_sub_fetch(&be->host_bytes_in_use, (size_t)hdr[0], __ATOMIC_RELAXED);
    *pinned = (int)hdr[1];
    if (bytes) *bytes = (size_t)hdr[0];
    return base;
}

void zg_backend_destroy(zg_backend *be) {
    if (be != NULL && be->ops != NULL && be->ops->destroy != NULL) be->ops->destroy(be);
}

/* ---- scalar dtype conversions ---------------------------------------------------------------- */

void zg_layernorm_backward_check(const void *x, const void *y, const void *b, const float *mean) {
    if (x == NULL && (y == NULL || b == NULL)) ZG_FATAL("layernorm_backward: without x, y and b are required");
    if (x != NULL && mean == NULL) ZG_FATAL("layernorm_backward: with x, mean is required");
}

void zg_layernorm_matmul_compose(zg_backend *be, void *out, void *pre_gelu, void *ln, const void *inp, const void *lnw,
                                 const void *lnb, const void *w, const void *bias, int N, int C, int OC) {
    be->ops->layernorm_forward(be, ln, NULL, NULL, inp, lnw, lnb, N, C);
    be->ops->matmul_forward(be, out, pre_gelu, ln, w, bias, NULL, N, C, OC);
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t zg_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);                           /* nearest even */
    return (uint16_t)((u + rounding) >> 16);
}

float zg_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t zg_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (absu < 0x38800000u) {
        /* subnormal or zero in fp16: value = absu_float * 2^24 rounded to an integer */
        float a = bits_f32(absu);
        float scaled = a * 16777216.0f; /* 2^24; exact */
        uint32_t q = (uint32_t)scaled;
        float rem = scaled - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t mant = absu & 0x7fffffu;
    uint32_t exp = (absu >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* carries into the exponent correctly */
    return (uint16_t)(sign | h);
}

float zg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant / 16777216.0f; /* mant * 2^-24 */
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}
