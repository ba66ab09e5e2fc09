/* Optimizer and buffer-wide ops of the CPU backend: AdamW, gradient norm, scaling, dtype casts.
 * The CPU trains in fp32; the casts also handle bf16/fp16 so checkpoints and exports of any dtype
 * can be converted on the host. */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static inline float load_elem(const void *p, zg_dtype dt, size_t i) {
    switch (dt) {
    case ZG_F32: return ((const float *)p)[i];
    case ZG_BF16: return zg_bf16_to_f32(((const uint16_t *)p)[i]);
    case ZG_F16: return zg_f16_to_f32(((const uint16_t *)p)[i]);
    }
    return 0.0f;
}

static inline void store_elem(void *p, zg_dtype dt, size_t i, float v) {
    switch (dt) {
    case ZG_F32: ((float *)p)[i] = v; break;
    case ZG_BF16: ((uint16_t *)p)[i] = zg_f32_to_bf16(v); break;
    case ZG_F16: ((uint16_t *)p)[i] = zg_f32_to_f16(v); break;
    }
}

void cpu_cast(zg_backend *be, void *dst, zg_dtype dst_dt, const void *src, zg_dtype src_dt, size_t n) {
    (void)be;
    zg_host_cast(dst, dst_dt, src, src_dt, n);
}

void zg_host_cast(void *dst, zg_dtype dst_dt, const void *src, zg_dtype src_dt, size_t n) {
    if (dst_dt == src_dt) {
        memmove(dst, src, n * zg_dtype_size(dst_dt));
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) store_elem(dst, dst_dt, i, load_elem(src, src_dt, i));
}

void cpu_upload_f32(zg_backend *be, void *dst, zg_dtype dt, const float *src_host, size_t n) {
    cpu_cast(be, dst, dt, src_host, ZG_F32, n);
}

void cpu_download_f32(zg_backend *be, float *dst_host, const void *src, zg_dtype dt, size_t n) {
    cpu_cast(be, dst_host, ZG_F32, src, dt, n);
}

double cpu_sum_squares(zg_backend *be, const void *buf, zg_dtype dt, size_t n) {
    (void)be;
    double total = 0.0;
    if (dt == ZG_F32) {
        /* fp32 fast path: no per-element dtype switch, so the loop vectorises */
        const float *f = buf;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i++) total += (double)f[i] * f[i];
        return total;
    }
    /* Fixed static partition + OpenMP's reduction: the same thread count gives the same sum. */
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t i = 0; i < n; i++) {
        double v = load_elem(buf, dt, i);
        total += v * v;
    }
    return total;
}

void cpu_scale(zg_backend *be, void *buf, zg_dtype dt, size_t n, float s) {
    (void)be;
    if (dt == ZG_F32) {
        float *f = buf;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) f[i] *= s;
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) store_elem(buf, dt, i, load_elem(buf, dt, i) * s);
}

/* The AdamW update of n fp32 elements (p: the master, or the parameters when they are fp32; g: the
 * gradient already in fp32), in the CUDA kernel's order of operations (zgc_adamw_kernel):
 *   g *= grad_scale;  p -= lr*wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g g;
 *   p -= lr * (m / bc1) / (sqrt(v / bc2) + eps).
 * Compiled for AVX-512, AVX2 and the baseline and picked at run time by the CPU (target_clones). The
 * file is built with -fno-math-errno so sqrtf vectorises (v / bc2 >= 0: errno is never set); C11 mode
 * does not contract into FMAs, so every clone rounds exactly as the scalar code. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void adamw_f32_span(
    float *restrict p, float *restrict mm, float *restrict vv, const float *restrict g, long n, float b1, float b2,
    float gs, float lr, float eps, float decay, float bc1, float bc2) {
    for (long k = 0; k < n; k++) {
        float gg = g[k] * gs;
        float pk = p[k] - decay * p[k];
        float m = b1 * mm[k] + (1.0f - b1) * gg;
        float v = b2 * vv[k] + (1.0f - b2) * gg * gg;
        mm[k] = m;
        vv[k] = v;
        p[k] = pk - lr * (m / bc1) / (sqrtf(v / bc2) + eps);
    }
}

/* Branch-free forms of zg_f32_to_f16 / zg_f16_to_f32 / zg_f32_to_bf16 (src/backend/backend.c) for the
 * 16-bit chunks below: every case is computed and the right one selected, so the loops vectorise (the
 * library functions branch per element, which made the mixed-precision update 4x slower than the fp32
 * one). Same results bit for bit (tests/unit/test_ops_cpu.c checks every fp16 value and the rounding
 * boundaries). */
static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_to_f32_sel(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    float sub = (float)(int32_t)mant / 16777216.0f; /* exp 0: mant * 2^-24 (signed: the conversion vectorises) */
    uint32_t subu = f32_bits(sub) | sign;           /* -v for a set sign (v >= 0) */
    uint32_t inf = sign | 0x7f800000u | (mant << 13);
    uint32_t norm = sign | ((exp + 112u) << 23) | (mant << 13);
    uint32_t is_sub = 0u - (uint32_t)(exp == 0), is_inf = 0u - (uint32_t)(exp == 31); /* all-ones masks */
    return bits_f32((subu & is_sub) | (inf & is_inf) | (norm & ~(is_sub | is_inf)));
}

static inline uint16_t f32_to_f16_sel(float f) {
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u, absu = u & 0x7fffffffu;
    uint32_t is_nan = 0u - (uint32_t)(absu > 0x7f800000u), is_sub = 0u - (uint32_t)(absu < 0x38800000u);
    uint32_t is_inf = (0u - (uint32_t)(absu >= 0x477ff000u)) & ~is_nan; /* >= 65520 rounds to inf */
    /* fp16 subnormal or zero: the significand m (hidden bit included) shifted right by s = 126 - e,
     * nearest even by adding half - 1 + the kept lsb (s clamped to 31; float denormals give 0) */
    uint32_t e = absu >> 23, m = (absu & 0x7fffffu) | (e != 0 ? 0x800000u : 0u);
    uint32_t ec = e < 126u ? e : 126u, sh = 126u - ec;
    sh = sh < 31u ? sh : 31u;
    uint32_t q = (m + ((1u << sh) >> 1) - 1u + ((m >> sh) & 1u)) >> sh;
    /* normal: the exponent rebiased by subtracting from the whole word, nearest even the same way
     * (a carry into the exponent is the correct rounding up) */
    uint32_t x = absu - (112u << 23);
    uint32_t hn = (x + 0xfffu + ((x >> 13) & 1u)) >> 13;
    uint32_t h = (0x7e00u & is_nan) | (0x7c00u & is_inf) | (q & is_sub) | (hn & ~(is_nan | is_inf | is_sub));
    return (uint16_t)(sign | h);
}

static inline uint16_t f32_to_bf16_sel(float f) {
    uint32_t u = f32_bits(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = (u >> 16) | 0x40u;
    uint32_t is_nan = 0u - (uint32_t)((u & 0x7fffffffu) > 0x7f800000u);
    return (uint16_t)((nan & is_nan) | (r & ~is_nan));
}

/* n 16-bit values (dt bf16 or fp16) to fp32 and back, per instruction set. The baseline is the
 * branch-free scalar code above (the compiler vectorises it with SSE2). The AVX2 and AVX-512 forms use
 * the CPU's conversion instructions (F16C vcvtph2ps / vcvtps2ph with round-to-nearest-even; AVX-512F's
 * 16-wide forms): the software conversion is compute-bound (about 20 integer operations per element)
 * and made the mixed-precision update 1.5x slower than the fp32 one on the H200 host. Their results
 * are the scalar code's bit for bit; the instructions differ only on NaNs, fixed up here:
 *  - narrowing keeps the NaN's payload and sign: a NaN input is first replaced by the canonical quiet
 *    NaN of its sign (0x7fc00000), which converts to zg_f32_to_f16's sign | 0x7e00;
 *  - widening sets the quiet bit of a signalling NaN: lanes with exponent 31 take the scalar form
 *    sign | 0x7f800000 | mant << 13 instead.
 * tests/unit/test_ops_cpu.c checks every fp16 value and a sweep of floats on each set the machine
 * has (zg_host_conv_isa). */
static void widen16_base(float *restrict out, const uint16_t *restrict in, long n, int bf16) {
    if (bf16)
        for (long j = 0; j < n; j++) out[j] = bits_f32((uint32_t)in[j] << 16);
    else
        for (long j = 0; j < n; j++) out[j] = f16_to_f32_sel(in[j]);
}

static void narrow16_base(uint16_t *restrict out, const float *restrict in, long n, int bf16) {
    if (bf16)
        for (long j = 0; j < n; j++) out[j] = f32_to_bf16_sel(in[j]);
    else
        for (long j = 0; j < n; j++) out[j] = f32_to_f16_sel(in[j]);
}

#if defined(__x86_64__) || defined(__i386__)
#define ZG_HOST_CONV_X86 1
#include <cpuid.h>
#include <immintrin.h>

/* F16C (the half <-> float conversions) from CPUID leaf 1, ECX bit 29: __builtin_cpu_supports("f16c") is not known
 * to every compiler (clang 14, which the fuzz build uses) */
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

#define AVX2_TARGET __attribute__((target("avx2,f16c")))
#define AVX512_TARGET __attribute__((target("avx512f,avx2,f16c")))

AVX2_TARGET static inline __m256i bf16_round8(__m256i u) { /* f32_to_bf16_sel on 8 lanes (32-bit results) */
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    __m256i is_nan =
        _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(r, nan, is_nan);
}

AVX2_TARGET static void widen16_avx2(float *restrict out, const uint16_t *restrict in, long n, int bf16) {
    long j = 0;
    const __m256i exp_mask = _mm256_set1_epi32(0x7c00);
    for (; j + 8 <= n; j += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(in + j)));
        if (bf16) {
            _mm256_storeu_si256((__m256i *)(out + j), _mm256_slli_epi32(h, 16));
            continue;
        }
        __m256i hw = _mm256_castps_si256(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + j))));
        __m256i special =
            _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x8000)), 16),
                                            _mm256_set1_epi32(0x7f800000)),
                            _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x3ff)), 13));
        __m256i is_special = _mm256_cmpeq_epi32(_mm256_and_si256(h, exp_mask), exp_mask);
        _mm256_storeu_si256((__m256i *)(out + j), _mm256_blendv_epi8(hw, special, is_special));
    }
    widen16_base(out + j, in + j, n - j, bf16);
}

AVX2_TARGET static void narrow16_avx2(uint16_t *restrict out, const float *restrict in, long n, int bf16) {
    long j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 x = _mm256_loadu_ps(in + j);
        if (bf16) {
            __m256i r = bf16_round8(_mm256_castps_si256(x));
            /* 32 -> 16 bits: packus works per 128-bit half, so the two halves are brought together */
            __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
            _mm_storeu_si128((__m128i *)(out + j), _mm256_castsi256_si128(p));
            continue;
        }
        __m256 is_nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
        __m256 canon = _mm256_or_ps(_mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u))),
                                    _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)));
        x = _mm256_blendv_ps(x, canon, is_nan);
        _mm_storeu_si128((__m128i *)(out + j), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    narrow16_base(out + j, in + j, n - j, bf16);
}

AVX512_TARGET static void widen16_avx512(float *restrict out, const uint16_t *restrict in, long n, int bf16) {
    long j = 0;
    const __m512i exp_mask = _mm512_set1_epi32(0x7c00);
    for (; j + 16 <= n; j += 16) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(in + j));
        __m512i h = _mm512_cvtepu16_epi32(raw);
        if (bf16) {
            _mm512_storeu_si512(out + j, _mm512_slli_epi32(h, 16));
            continue;
        }
        __m512i hw = _mm512_castps_si512(_mm512_cvtph_ps(raw));
        __m512i special =
            _mm512_or_si512(_mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(h, _mm512_set1_epi32(0x8000)), 16),
                                            _mm512_set1_epi32(0x7f800000)),
                            _mm512_slli_epi32(_mm512_and_si512(h, _mm512_set1_epi32(0x3ff)), 13));
        __mmask16 is_special = _mm512_cmpeq_epi32_mask(_mm512_and_si512(h, exp_mask), exp_mask);
        _mm512_storeu_si512(out + j, _mm512_mask_blend_epi32(is_special, hw, special));
    }
    widen16_avx2(out + j, in + j, n - j, bf16);
}

AVX512_TARGET static void narrow16_avx512(uint16_t *restrict out, const float *restrict in, long n, int bf16) {
    long j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512i u = _mm512_loadu_si512(in + j);
        __m512i absu = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
        __mmask16 is_nan = _mm512_cmpgt_epi32_mask(absu, _mm512_set1_epi32(0x7f800000));
        if (bf16) {
            __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
            __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
            __m512i nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
            _mm256_storeu_si256((__m256i *)(out + j), _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, r, nan)));
            continue;
        }
        __m512i canon =
            _mm512_or_si512(_mm512_and_si512(u, _mm512_set1_epi32((int)0x80000000u)), _mm512_set1_epi32(0x7fc00000));
        __m512 x = _mm512_castsi512_ps(_mm512_mask_blend_epi32(is_nan, u, canon));
        _mm256_storeu_si256((__m256i *)(out + j), _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    narrow16_avx2(out + j, in + j, n - j, bf16);
}
#endif

typedef struct {
    void (*widen)(float *restrict, const uint16_t *restrict, long, int);
    void (*narrow)(uint16_t *restrict, const float *restrict, long, int);
} conv_fns;

/* The table of conversion forms, indexed by zg_host_isa (single source of truth for the dispatch and
 * the test). */
static const conv_fns CONV_FNS[ZG_HOST_ISA_COUNT] = {
    [ZG_HOST_ISA_BASE] = {widen16_base, narrow16_base},
#ifdef ZG_HOST_CONV_X86
    [ZG_HOST_ISA_AVX2] = {widen16_avx2, narrow16_avx2},
    [ZG_HOST_ISA_AVX512] = {widen16_avx512, narrow16_avx512},
#endif
};

int zg_host_isa_supported(zg_host_isa isa) {
    switch (isa) {
    case ZG_HOST_ISA_BASE: return 1;
#ifdef ZG_HOST_CONV_X86
    case ZG_HOST_ISA_AVX2: return __builtin_cpu_supports("avx2") && cpu_has_f16c();
    case ZG_HOST_ISA_AVX512: return zg_host_isa_supported(ZG_HOST_ISA_AVX2) && __builtin_cpu_supports("avx512f");
#endif
    default: return 0;
    }
}

zg_host_isa zg_host_isa_best(void) {
    for (int i = ZG_HOST_ISA_COUNT - 1; i > 0; i--)
        if (zg_host_isa_supported((zg_host_isa)i)) return (zg_host_isa)i;
    return ZG_HOST_ISA_BASE;
}

void zg_host_widen16(zg_host_isa isa, float *out, const uint16_t *in, size_t n, int bf16) {
    CONV_FNS[isa].widen(out, in, (long)n, bf16);
}

void zg_host_narrow16(zg_host_isa isa, uint16_t *out, const float *in, size_t n, int bf16) {
    CONV_FNS[isa].narrow(out, in, (long)n, bf16);
}

/* One thread's part [i0, i1) of a segment: 16-bit gradients are widened and the updated master is
 * narrowed into the 16-bit parameters a chunk at a time (L1-sized, so each element is read from
 * memory once). */
enum { ADAMW_CHUNK = 2048 };
static void adamw_part(const zg_adamw_args *a, const conv_fns *cv, zg_dtype pdt, zg_dtype gdt, size_t i0, size_t i1,
                       float decay, float bc1, float bc2) {
    float gbuf[ADAMW_CHUNK];
    float *p32 = a->master ? a->master : (float *)a->param;
    for (size_t i = i0; i < i1; i += ADAMW_CHUNK) {
        long k = (long)(i1 - i < ADAMW_CHUNK ? i1 - i : ADAMW_CHUNK);
        const float *g = (const float *)a->grad + i;
        if (gdt != ZG_F32) {
            cv->widen(gbuf, (const uint16_t *)a->grad + i, k, gdt == ZG_BF16);
            g = gbuf;
        }
        adamw_f32_span(p32 + i, a->m + i, a->v + i, g, k, a->beta1, a->beta2, a->grad_scale, a->lr, a->eps, decay, bc1,
                       bc2);
        if (a->master && pdt != ZG_F32)
            cv->narrow((uint16_t *)a->param + i, p32 + i, k, pdt == ZG_BF16);
        else if (a->master)
            memcpy((float *)a->param + i, p32 + i, (size_t)k * sizeof(float));
    }
}

/* ---- Lamb ---------------------------------------------------------------------------------------
 * Two passes per segment (one tensor), as the CUDA kernels: (1) the moments and the sums of p^2 and u^2,
 * (2) p -= step_size * clamp(||p|| / ||u||) * u with u recomputed from the stored moments. The sums are
 * taken per block of LAMB_BLOCK elements (each block in fixed lanes, then the lanes in order) and the
 * blocks added in order, so they do not depend on the thread count: the CPU backend's Lamb, ZeRO-Offload's
 * (every thread) and its delayed update's thread (one core fewer) give the same bits. */
enum { LAMB_BLOCK = ADAMW_CHUNK, LAMB_LANES = 8 };

/* Lamb's update direction u = m / denom + wd * p (backend.h). */
static inline float lamb_dir(float m, float v, float p, float wd, float eps, int eps_inside) {
    return m / (eps_inside ? sqrtf(v + eps) : sqrtf(v) + eps) + wd * p;
}

/* Pass 1 over n fp32 elements (p: the master or the fp32 parameters; g: the fp32 gradient): the moments,
 * and the sums of p^2 and u^2 in LAMB_LANES lanes (element k in lane k % LAMB_LANES), then the lanes in
 * order. No contraction into FMAs in C11 mode: every clone rounds as the scalar code. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void lamb_moments_span(
    const float *restrict p, float *restrict mm, float *restrict vv, const float *restrict g, long n, float b1,
    float b2, float gs, float eps, int eps_inside, float wd, double sums[2]) {
    double w2[LAMB_LANES] = {0}, u2[LAMB_LANES] = {0};
    long k = 0;
    for (; k + LAMB_LANES <= n; k += LAMB_LANES)
        for (int l = 0; l < LAMB_LANES; l++) {
            float gg = g[k + l] * gs;
            float m = b1 * mm[k + l] + (1.0f - b1) * gg;
            float v = b2 * vv[k + l] + (1.0f - b2) * gg * gg;
            mm[k + l] = m;
            vv[k + l] = v;
            float u = lamb_dir(m, v, p[k + l], wd, eps, eps_inside);
            w2[l] += (double)p[k + l] * p[k + l];
            u2[l] += (double)u * u;
        }
    for (int l = 0; k < n; k++, l++) {
        float gg = g[k] * gs;
        float m = b1 * mm[k] + (1.0f - b1) * gg;
        float v = b2 * vv[k] + (1.0f - b2) * gg * gg;
        mm[k] = m;
        vv[k] = v;
        float u = lamb_dir(m, v, p[k], wd, eps, eps_inside);
        w2[l] += (double)p[k] * p[k];
        u2[l] += (double)u * u;
    }
    double sw = 0.0, su = 0.0;
    for (int l = 0; l < LAMB_LANES; l++) {
        sw += w2[l];
        su += u2[l];
    }
    sums[0] = sw;
    sums[1] = su;
}

/* Pass 2 over n fp32 elements: p -= scale * u. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void lamb_apply_span(
    float *restrict p, const float *restrict mm, const float *restrict vv, long n, float eps, int eps_inside, float wd,
    float scale) {
    for (long k = 0; k < n; k++) p[k] -= scale * lamb_dir(mm[k], vv[k], p[k], wd, eps, eps_inside);
}

/* Pass 1 on block [i, i + k) of the range (16-bit gradients widened first). */
static void lamb_moments_block(const zg_adamw_args *a, const conv_fns *cv, zg_dtype gdt, size_t i, long k, float wd,
                               double sums[2]) {
    float gbuf[LAMB_BLOCK];
    const float *g = (const float *)a->grad + i;
    if (gdt != ZG_F32) {
        cv->widen(gbuf, (const uint16_t *)a->grad + i, k, gdt == ZG_BF16);
        g = gbuf;
    }
    const float *p32 = a->master ? a->master : (const float *)a->param;
    lamb_moments_span(p32 + i, a->m + i, a->v + i, g, k, a->beta1, a->beta2, a->grad_scale, a->eps, a->eps_inside_sqrt,
                      wd, sums);
}

/* Pass 2 on block [i, i + k), the updated master narrowed into 16-bit parameters. */
static void lamb_apply_block(const zg_adamw_args *a, const conv_fns *cv, zg_dtype pdt, size_t i, long k, float wd,
                             float scale) {
    float *p32 = a->master ? a->master : (float *)a->param;
    lamb_apply_span(p32 + i, a->m + i, a->v + i, k, a->eps, a->eps_inside_sqrt, wd, scale);
    if (a->master && pdt != ZG_F32)
        cv->narrow((uint16_t *)a->param + i, p32 + i, k, pdt == ZG_BF16);
    else if (a->master)
        memcpy((float *)a->param + i, p32 + i, (size_t)k * sizeof(float));
}

/* The clamped trust ratio from the sums of squares (1 when either norm is 0). */
static double lamb_coeff(const zg_adamw_args *a, double w2, double u2) {
    double wn = sqrt(w2), un = sqrt(u2), c = 1.0;
    if (wn != 0.0 && un != 0.0) {
        c = wn / un;
        if (c > a->max_coeff) c = a->max_coeff;
        if (c < a->min_coeff) c = a->min_coeff;
    }
    return c;
}

static size_t lamb_blocks(const zg_segment *seg) { return (seg->count + LAMB_BLOCK - 1) / LAMB_BLOCK; }

/* Lamb over segments [s0, s1): pass 1 into out (2 per segment: the sums) when out is given, else both
 * passes (segments whose a->lamb_sums are given skip pass 1). One parallel region; the blocks of each
 * segment are shared statically among the threads. */
static void host_lamb(const zg_adamw_args *a, zg_dtype pdt, zg_dtype gdt, int s0, int s1, double *out) {
    const conv_fns *cv = &CONV_FNS[zg_host_isa_best()];
    float bc1 = a->no_bias_correction ? 1.0f : (float)(1.0 - pow((double)a->beta1, (double)a->step));
    float bc2 = a->no_bias_correction ? 1.0f : (float)(1.0 - pow((double)a->beta2, (double)a->step));
    float step_size = a->lr * sqrtf(bc2) / bc1;
    size_t nb_max = 1;
    for (int s = s0; s < s1; s++)
        if (lamb_blocks(&a->segs[s]) > nb_max) nb_max = lamb_blocks(&a->segs[s]);
    double *bs = zg_malloc(2 * nb_max * sizeof *bs), w2 = 0.0, u2 = 0.0;
    float scale = 0.0f;
#pragma omp parallel
    for (int s = s0; s < s1; s++) {
        const zg_segment *seg = &a->segs[s];
        long nb = (long)lamb_blocks(seg);
        float wd = seg->weight_decay;
        int pre = !out && a->lamb_sums && !(a->lamb_sums[2 * s] < 0.0); /* its pass 1 ran (zg_host_lamb_sums) */
        if (!pre) {
#pragma omp for schedule(static)
            for (long b = 0; b < nb; b++) {
                size_t i = seg->offset + (size_t)b * LAMB_BLOCK;
                long k = (long)(seg->offset + seg->count - i < LAMB_BLOCK ? seg->offset + seg->count - i : LAMB_BLOCK);
                lamb_moments_block(a, cv, gdt, i, k, wd, bs + 2 * b);
            }
        }
#pragma omp single
        {
            if (pre) {
                w2 = a->lamb_sums[2 * s];
                u2 = a->lamb_sums[2 * s + 1];
            } else {
                w2 = u2 = 0.0;
                for (long b = 0; b < nb; b++) {
                    w2 += bs[2 * b];
                    u2 += bs[2 * b + 1];
                }
            }
            if (out) {
                out[2 * (s - s0)] = w2;
                out[2 * (s - s0) + 1] = u2;
            }
            scale = step_size * (float)lamb_coeff(a, w2, u2);
        } /* the barrier: every thread sees scale, and bs is free for the next segment (the apply loop ends in
           * one too: scale is rewritten by the next segment) */
        if (!out) {
#pragma omp for schedule(static)
            for (long b = 0; b < nb; b++) {
                size_t i = seg->offset + (size_t)b * LAMB_BLOCK;
                long k = (long)(seg->offset + seg->count - i < LAMB_BLOCK ? seg->offset + seg->count - i : LAMB_BLOCK);
                lamb_apply_block(a, cv, pdt, i, k, wd, scale);
            }
        }
    }
    free(bs);
}

void zg_host_lamb_sums(const zg_adamw_args *a, zg_dtype pdt, zg_dtype gdt, double *sums) {
    int s_end = a->seg_end > 0 ? a->seg_end : a->n_segs;
    host_lamb(a, pdt, gdt, a->seg_begin, s_end, sums);
}

void zg_host_adamw(const zg_adamw_args *a, zg_dtype pdt, zg_dtype gdt) {
    if (a->master == NULL && pdt != ZG_F32)
        ZG_FATAL("adamw: master weights are required when parameters are %s", zg_dtype_name(pdt));
    /* bias corrections in double, rounded once to fp32 (the GPU rounds powf's result: within an ulp) */
    float bc1 = a->no_bias_correction ? 1.0f : (float)(1.0 - pow((double)a->beta1, (double)a->step));
    float bc2 = a->no_bias_correction ? 1.0f : (float)(1.0 - pow((double)a->beta2, (double)a->step));
    int s_end = a->seg_end > 0 ? a->seg_end : a->n_segs;
    if (a->lamb) {
        host_lamb(a, pdt, gdt, a->seg_begin, s_end, NULL);
        return;
    }
    const conv_fns *cv = &CONV_FNS[zg_host_isa_best()];
    /* One parallel region over all the segments (a fork/join per segment cost more than the small
     * segments' work: GPT-2 has 4 per layer). Each thread takes a static share of every segment
     * (elementwise: the result does not depend on the split). */
#pragma omp parallel
    {
        size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        for (int s = a->seg_begin; s < s_end; s++) {
            const zg_segment *seg = &a->segs[s];
            size_t off = seg->offset, cnt = seg->count;
            adamw_part(a, cv, pdt, gdt, off + cnt * t / nt, off + cnt * (t + 1) / nt, a->lr * seg->weight_decay, bc1,
                       bc2);
        }
    }
}

void zg_host_round16(float *x, size_t n, int bf16) {
    const conv_fns *cv = &CONV_FNS[zg_host_isa_best()];
    uint16_t half[ADAMW_CHUNK];
    for (size_t i = 0; i < n; i += ADAMW_CHUNK) {
        long k = (long)(n - i < ADAMW_CHUNK ? n - i : ADAMW_CHUNK);
        cv->narrow(half, x + i, k, bf16);
        cv->widen(x + i, half, k, bf16);
    }
}

void cpu_adamw(zg_backend *be, const zg_adamw_args *a) { zg_host_adamw(a, be->param_dtype, be->grad_dtype); }

void cpu_lamb_sums(zg_backend *be, const zg_adamw_args *a, double *sums) {
    zg_host_lamb_sums(a, be->param_dtype, be->grad_dtype, sums);
}
