/* The arithmetic of the sample op, shared by the CPU (sample_cpu.c) and CUDA (sample_cuda.cu) backends
 * so that both draw the same token from the same logits: the counter-based generator, the total order
 * of the candidates and the integer weights. Everything here is integer arithmetic or correctly rounded
 * IEEE operations (multiply, subtract, fmaf, rintf, ldexpf), which give the same bits on both sides;
 * library exp/log differ in the last bit between glibc and CUDA, so they are not used.
 *
 * The definition (docs/CUDA.md, "sample"), per row b with settings r:
 *  - z_i = float(logit_i) * r.inv_temperature for i < V; greedy rows (inv_temperature 0, or top_k 1)
 *    take the first candidate of the order below, computed on the raw logits.
 *  - order: candidates by P_i = (key(z_i) << 32) | (0xffffffff - i), largest first: larger z first,
 *    ties by the lower id; NaN sorts last. All P_i differ, so "the n first" is one well-defined set.
 *  - weights w_i = weight(z_i - max z) = round-down(e^(z_i - max z) * 2^40), an integer in [0, 2^40]
 *    (the largest is exactly 2^40); probabilities below 2^-40 of the most likely token's are 0.
 *  - top-k keeps the k first (0: all); top-p then keeps the fewest first whose weight reaches
 *    ceil(top_p * W), W the kept weight (integer sums: exact and independent of summation order).
 *  - the draw: u = the first 64 bits of Philox4x32-10 keyed by r.seed at counter (counter, tag, 0, 0);
 *    x = (u * W') >> 64 for the kept weight W'; the token is the first kept id, in id order, where the
 *    running weight exceeds x. */
#ifndef ZG_BACKEND_SAMPLE_MATH_H
#define ZG_BACKEND_SAMPLE_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define ZG_SAMPLE_FN static __host__ __device__ __forceinline__
#else
#define ZG_SAMPLE_FN static inline
#endif

#define ZG_SAMPLE_WEIGHT_BITS 40
#define ZG_SAMPLE_PHILOX_TAG 0x7a677074u /* "zgpt": the second counter word, apart from other uses */

/* z = logit * scale, rounded once: on CUDA an intrinsic that --use_fast_math may not fuse with the
 * subtraction that follows (z - max z) into an FMA, which would round differently from the CPU. */
ZG_SAMPLE_FN float zg_sample_z(float logit, float scale) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(logit, scale);
#else
    return logit * scale;
#endif
}

/* Order-preserving map of a float to uint32 (larger float, larger key); NaN maps to 0 (last). */
ZG_SAMPLE_FN uint32_t zg_sample_key(float z) {
    uint32_t u;
    memcpy(&u, &z, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The candidate's place in the order: larger first. */
ZG_SAMPLE_FN uint64_t zg_sample_rank(float z, int id) {
    return ((uint64_t)zg_sample_key(z) << 32) | (uint64_t)(0xffffffffu - (uint32_t)id);
}

/* floor(e^x * 2^40) for x <= 0 (x > 0 does not occur: x = z - max z), 0 below e^-30 and for NaN.
 * Cody-Waite reduction by ln 2 and a degree-7 Taylor polynomial on |r| <= ln2/2 (relative error
 * about 2e-7, below the float rounding of the logits it comes from). */
ZG_SAMPLE_FN uint64_t zg_sample_weight(float x) {
    if (!(x > -30.0f)) return 0;
    float n = rintf(x * 1.44269504f);
    float r = fmaf(n, -0.693145751953125f, x);
    r = fmaf(n, -1.42860677e-06f, r);
    float p = 1.98412698e-04f; /* 1/7! */
    p = fmaf(p, r, 1.38888889e-03f);
    p = fmaf(p, r, 8.33333333e-03f);
    p = fmaf(p, r, 4.16666667e-02f);
    p = fmaf(p, r, 1.66666667e-01f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    /* n in [-44, 0], so 2^(n+40) p is a normal float (no flush to zero on either side) */
    return (uint64_t)ldexpf(p, (int)n + ZG_SAMPLE_WEIGHT_BITS);
}

/* The top-p threshold: ceil(top_p * W), in [1, W] (W > 0). */
ZG_SAMPLE_FN uint64_t zg_sample_top_p_target(float top_p, uint64_t W) {
    double t = ceil((double)top_p * (double)W);
    uint64_t target = t < 1.0 ? 1 : (t >= (double)W ? W : (uint64_t)t);
    return target;
}

/* One pass of the radix selection both backends run to find a cut: "the fewest first (in the order)
 * whose f reaches target" (f = 1 for top-k, the weight for top-p) is the set {rank >= x} for the largest
 * x with sum{f : rank >= x} >= target, found 4 bits per pass from the top. f[d] and c[d] are the sums
 * of f and the counts of the candidates that share *prefix's digits above shift and have digit d at
 * shift (f unused when counting); *above is the f of the candidates above those. Picks the largest
 * digit whose bins from the top reach the target and adds it to *prefix. Returns 1 when the set
 * {rank >= *prefix} is already the answer's: one candidate left in the bin, or (counting) the whole
 * bin exactly needed; after the last digit the prefix is the boundary's rank itself. */
ZG_SAMPLE_FN int zg_sample_select_step(const uint64_t f[16], const uint32_t c[16], int weighted, uint64_t target,
                                       int shift, uint64_t *above, uint64_t *prefix) {
    uint64_t running = *above, hist = 0;
    uint32_t cnt = 0;
    int dig = 0;
    for (int d = 15; d >= 0; d--) {
        cnt = c[d];
        hist = weighted ? f[d] : cnt;
        dig = d;
        if (running + hist >= target) break;
        running += hist;
    }
    *above = running;
    *prefix |= (uint64_t)dig << shift;
    return cnt == 1 || (!weighted && running + hist == target) || shift == 0;
}

/* 1 when the rank's digit at shift is 15 for every id in [0, V): the bits of ~id above V - 1's highest
 * bit (for GPT-2's 50257 ids, shifts 16-28). zg_sample_select_step would pick digit 15 there (its bin
 * holds every candidate still in the running, whose sums already reached the target) without changing
 * *above or ending the search (a one-candidate bin or an exact count would have ended it a pass
 * earlier), so a selection may set the digit and skip the pass. */
ZG_SAMPLE_FN int zg_sample_digit_fixed(int V, int shift) { return shift < 32 && ((uint32_t)(V - 1) >> shift) == 0; }

/* The nucleus in binned rounds (the cluster kernel's top-p, sample_cuda.cu): a candidate's place is
 * d = key(max z) - key(z) (0 for the most likely; ties share d; larger d later in the order). Each round
 * splits the range of d still open into ZG_SAMPLE_NUCLEUS_BINS bins of 2^shift values each, adds the
 * weights per bin, and keeps the bin where the running weight (in order) reaches the target; it ends
 * at a bin whose candidates all share one d. The fewest first then are the candidates before that d
 * and the first few of its ties in id order (zg_sample_nucleus_take). Zero weights are left out: they
 * never end a cut or a draw. */
#define ZG_SAMPLE_NUCLEUS_BINS 256

/* The largest d of a candidate with a positive weight. w > 0 needs z - max z > -30 (zg_sample_weight),
 * so z > max z - 32, which lies above the float below t = round(max z - 32): key(z) >= key(t). */
ZG_SAMPLE_FN uint32_t zg_sample_nucleus_span(float zmax) { return zg_sample_key(zmax) - zg_sample_key(zmax - 32.0f); }

/* The bin width's shift for a range of span + 1 values of d: (span >> shift) < ZG_SAMPLE_NUCLEUS_BINS. */
ZG_SAMPLE_FN int zg_sample_nucleus_shift(uint32_t span) {
    int s = 0;
    while ((span >> s) >= ZG_SAMPLE_NUCLEUS_BINS) s++;
    return s;
}

/* How many of the crossing d's tied candidates (count of them, group_mass their weights, all equal)
 * the nucleus keeps, in id order: the fewest whose weight reaches need (1 <= need <= group_mass). */
ZG_SAMPLE_FN uint64_t zg_sample_nucleus_take(uint64_t need, uint64_t group_mass, uint64_t count) {
    uint64_t w = group_mass / count;
    return (need + w - 1) / w;
}

ZG_SAMPLE_FN uint32_t zg_philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"): ctr <- the block
 * function of (ctr, key). */
ZG_SAMPLE_FN void zg_philox4x32(uint32_t ctr[4], const uint32_t key[2]) {
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = zg_philox_mulhilo(0xD2511F53u, ctr[0], &hi0);
        uint32_t lo1 = zg_philox_mulhilo(0xCD9E8D57u, ctr[2], &hi1);
        uint32_t n0 = hi1 ^ ctr[1] ^ k0, n2 = hi0 ^ ctr[3] ^ k1;
        ctr[0] = n0;
        ctr[1] = lo1;
        ctr[2] = n2;
        ctr[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

/* 64 random bits for (seed, counter): the first two words of Philox at (counter, tag, 0, 0). */
ZG_SAMPLE_FN uint64_t zg_sample_random(uint64_t seed, uint32_t counter) {
    uint32_t c[4] = {counter, ZG_SAMPLE_PHILOX_TAG, 0, 0}, k[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    zg_philox4x32(c, k);
    return ((uint64_t)c[0] << 32) | c[1];
}

/* (u * W) >> 64: a uniform integer in [0, W). */
ZG_SAMPLE_FN uint64_t zg_sample_scale(uint64_t u, uint64_t W) {
#ifdef __CUDA_ARCH__
    return __umul64hi(u, W);
#else
    __extension__ typedef unsigned __int128 zg_u128;
    return (uint64_t)(((zg_u128)u * W) >> 64);
#endif
}

#endif
