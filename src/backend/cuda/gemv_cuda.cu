/* matmul_forward for a few rows (N <= ZGC_GEMV_MAX_N: one decode step's batch): out (N,OC) =
 * inp (N,C) @ w (OC,C)^T + bias + residual, or pre_gelu = that and out = gelu(pre_gelu).
 * With so few rows the product is a read of the weights; cuBLASLt's tiles leave most SMs idle at
 * these shapes (about 1 TB/s on the H200 at GPT-2 XL's). Two generations of kernels (zgc_gemv_pick in
 * cuda_internal.h chooses; ZGPT_GEMV=cublaslt|v1|simt|v2 for A/B runs):
 *   v1 (v0.11-v0.13): one warp per output column at 1 row, the tensor-core form below from 2 rows;
 *   v2 (v0.14): one tensor-core kernel for 1..8 rows, sized for the whole GPU and for PDL (below).
 * All of them add the bias and the residual in fp32 and round once (as cuBLASLt's epilogue does with
 * beta = 1), reduce in a fixed order (the same inputs give the same bits), and are launched with PDL
 * (zgc_launch): weights are no earlier kernel's output, so their first loads (and L2 prefetches) are
 * issued before the wait for the previous kernel; only the input rows, the residual and the outputs
 * wait.
 *
 * v1's warp per column: its lanes stream w's row o with 16-byte loads (consecutive lanes, consecutive
 * vectors: whole 512-byte lines per warp load), each weight vector is used against all N input rows
 * (read through L1, where the few rows stay), and the lanes' fp32 partial sums meet in a fixed shuffle
 * tree. Grid: OC / 8 blocks of 8 warps (200 blocks at OC = 1600, 6288 for the LM head), no split of C. */
#include "backend/cuda/gemv2.cuh"

/* vectors a lane loads before it uses them (memory-level parallelism) */
#define ZGC_GEMV_UNROLL 8

/* out[i] (and pre_gelu[i]) from the fp32 sum s of output i (bias added): GELU, or + the residual (which
 * may be out: read before the write); rounded once. */
template <typename T>
__device__ __forceinline__ void zgc_gemv_store(T *out, T *pre_gelu, const T *residual, size_t i, float s) {
    if (pre_gelu) {
        pre_gelu[i] = zgc_from_f<T>(s);
        out[i] = zgc_from_f<T>(zgc_gelu(s));
    } else {
        if (residual) s += zgc_to_f(residual[i]);
        out[i] = zgc_from_f<T>(s);
    }
}

/* LN: the input rows are first normalised into shared memory (warp n: row n), while the first weight
 * vectors are already loading; then every warp reads its rows from there. */
template <typename T, bool LN>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS)
    zgc_gemv_kernel(T *out, T *pre_gelu, const T *inp, const T *lnw, const T *lnb, const T *w, const T *bias,
                    const T *residual, int N, int C, int OC) {
    constexpr int E = 16 / sizeof(T);
    extern __shared__ int4 xs_raw[]; /* LN: N rows of C / E vectors */
    zgc_vec<T> *xs = reinterpret_cast<zgc_vec<T> *>(xs_raw);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int o = blockIdx.x * ZGC_GEMV_WARPS + warp;
    int nv = C / E;
    bool active = o < OC;
    const int4 *wr = reinterpret_cast<const int4 *>(w + (size_t)(active ? o : 0) * C);
    int4 raw[ZGC_GEMV_UNROLL] = {};
    /* the first vectors of the row: weights are read once per step, so streamed past L1 */
#pragma unroll
    for (int u = 0; u < ZGC_GEMV_UNROLL; u++) {
        int j = lane + 32 * u;
        if (active && j < nv) raw[u] = __ldcs(wr + j);
    }
    /* the rest of the row into L2 (the first batch covers 32 * UNROLL vectors): weights are no earlier
     * kernel's output, so this and the loads above run before the wait, while the previous kernel ends */
    if (active)
        for (size_t off = (size_t)(32 * ZGC_GEMV_UNROLL + 8 * lane) * 16; off < (size_t)nv * 16; off += 32 * 128)
            zgc_prefetch_l2(reinterpret_cast<const char *>(wr) + off);
    zgc_pdl_wait(); /* inp, residual and out belong to the kernels before */
    zgc_pdl_trigger();
    const zgc_vec<T> *x = reinterpret_cast<const zgc_vec<T> *>(inp);
    if (LN) {
        if (warp < N) zgc_gemv_ln_row<T>(xs + (size_t)warp * nv, inp + (size_t)warp * C, lnw, lnb, C);
        __syncthreads();
        x = xs;
    }
    if (!active) return; /* no barriers below: a whole warp leaves */
    float acc[ZGC_GEMV_MAX_N];
#pragma unroll
    for (int n = 0; n < ZGC_GEMV_MAX_N; n++) acc[n] = 0.0f;
    for (int j0 = lane; j0 < nv; j0 += 32 * ZGC_GEMV_UNROLL) {
        if (j0 != lane) /* the first batch is in raw already */
#pragma unroll
            for (int u = 0; u < ZGC_GEMV_UNROLL; u++) {
                int j = j0 + 32 * u;
                if (j < nv) raw[u] = __ldcs(wr + j);
            }
#pragma unroll
        for (int u = 0; u < ZGC_GEMV_UNROLL; u++) {
            int j = j0 + 32 * u;
            if (j >= nv) break;
            zgc_vec<T> wv;
            memcpy(&wv, &raw[u], sizeof wv);
            float wf[E];
#pragma unroll
            for (int e = 0; e < E; e++) wf[e] = zgc_to_f(wv.v[e]);
#pragma unroll
            for (int n = 0; n < ZGC_GEMV_MAX_N; n++) {
                if (n >= N) break;
                zgc_vec<T> xv = x[(size_t)n * nv + j];
#pragma unroll
                for (int e = 0; e < E; e++) acc[n] = fmaf(wf[e], zgc_to_f(xv.v[e]), acc[n]);
            }
        }
    }
#pragma unroll
    for (int n = 0; n < ZGC_GEMV_MAX_N; n++) acc[n] = zgc_warp_sum(acc[n]); /* every lane: the same sums */
    if (lane != 0) return;
    float b = bias ? zgc_to_f(bias[o]) : 0.0f;
#pragma unroll
    for (int n = 0; n < ZGC_GEMV_MAX_N; n++) {
        if (n >= N) break;
        zgc_gemv_store(out, pre_gelu, residual, (size_t)n * OC + o, acc[n] + b);
    }
}

/* ---- the tensor-core form (16-bit types, 2..8 rows) ---------------------------------------------
 * The warp-per-column kernel above costs, per 16-byte weight vector and lane, N input-vector loads and
 * 8N conversions and FMAs: at 8 rows it is issue-bound (the H200's B=8 step took 7.1 ms with it against
 * cuBLASLt's 3.5). Here mma.sync m16n8k16 does the multiply-adds: its n = 8 is the batch. A block of 8
 * warps owns 16 output columns; the input dimension is cut into chunks of 32 (warp w takes chunks w,
 * w + 8, ...). In a chunk, lane l = 4r + q loads one 16-byte vector (8 consecutive k from 32c + 8q) of
 * weight rows r and r + 8 and of input row r, and the two mma of the chunk take k's 4 words in order:
 * the first mma's k slots (2q, 2q+1, 2q+8, 2q+9) hold k = 32c + 8q + (0, 1, 2, 3), the second's + (4..7).
 * The same lane holds the same k for the weight (A) and the input (B) fragment, and a k slot is the same
 * k in every lane of its column group q, so each mma is an exact 16-deep dot product. No data is
 * shuffled: the loads are the warp-per-column kernel's 16-byte vectors. The 8 warps' fragments meet in
 * shared memory and are added in warp order; bias, GELU, residual as above. Fixed chunks, fixed order: the
 * same inputs give the same bits (not the same bits as the kernel above: another order of sums). */
#define ZGC_GEMV_MMA_COLS 16
#define ZGC_GEMV_MMA_UNROLL 4
template <typename T, bool LN>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS)
    zgc_gemv_mma_kernel(T *out, T *pre_gelu, const T *inp, const T *lnw, const T *lnb, const T *w, const T *bias,
                        const T *residual, int N, int C, int OC) {
    constexpr int E = 16 / sizeof(T);
    extern __shared__ int4 xs_raw[]; /* LN: N rows of C / E vectors */
    __shared__ float red[ZGC_GEMV_WARPS][32][4];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, r = lane / 4, q = lane % 4;
    int o0 = blockIdx.x * ZGC_GEMV_MMA_COLS, nv = C / E, nch = (nv + 3) / 4;
    int oa = o0 + r, ob = o0 + r + 8;
    const int4 *wa = reinterpret_cast<const int4 *>(w + (size_t)(oa < OC ? oa : 0) * C);
    const int4 *wb = reinterpret_cast<const int4 *>(w + (size_t)(ob < OC ? ob : 0) * C);
    int4 ra[ZGC_GEMV_MMA_UNROLL], rb[ZGC_GEMV_MMA_UNROLL];
    const int4 zero = make_int4(0, 0, 0, 0);
    /* the first chunks' weights before the wait: no earlier kernel writes them */
#pragma unroll
    for (int u = 0; u < ZGC_GEMV_MMA_UNROLL; u++) {
        int j = 4 * (warp + ZGC_GEMV_WARPS * u) + q;
        ra[u] = oa < OC && j < nv ? __ldcs(wa + j) : zero;
        rb[u] = ob < OC && j < nv ? __ldcs(wb + j) : zero;
    }
    /* the rest of the block's 16 rows into L2 (16 threads a row, one 128-byte line each per step) */
    {
        int pr = o0 + (int)threadIdx.x % ZGC_GEMV_MMA_COLS;
        const char *row = reinterpret_cast<const char *>(w + (size_t)(pr < OC ? pr : 0) * C);
        size_t first = (size_t)ZGC_GEMV_WARPS * ZGC_GEMV_MMA_UNROLL * 64; /* bytes the first batch covers */
        if (pr < OC)
            for (size_t off = first + (threadIdx.x / ZGC_GEMV_MMA_COLS) * 128; off < (size_t)nv * 16;
                 off += (ZGC_GEMV_THREADS / ZGC_GEMV_MMA_COLS) * 128)
                zgc_prefetch_l2(row + off);
    }
    zgc_pdl_wait(); /* inp, residual and out belong to the kernels before */
    zgc_pdl_trigger();
    const int4 *x = reinterpret_cast<const int4 *>(inp);
    if (LN) {
        zgc_vec<T> *xs = reinterpret_cast<zgc_vec<T> *>(xs_raw);
        if (warp < N) zgc_gemv_ln_row<T>(xs + (size_t)warp * nv, inp + (size_t)warp * C, lnw, lnb, C);
        __syncthreads();
        x = xs_raw;
    }
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int c0 = warp; c0 < nch; c0 += ZGC_GEMV_WARPS * ZGC_GEMV_MMA_UNROLL) {
        if (c0 != warp) /* the first batch is in ra, rb already */
#pragma unroll
            for (int u = 0; u < ZGC_GEMV_MMA_UNROLL; u++) {
                int j = 4 * (c0 + ZGC_GEMV_WARPS * u) + q;
                ra[u] = oa < OC && j < nv ? __ldcs(wa + j) : zero;
                rb[u] = ob < OC && j < nv ? __ldcs(wb + j) : zero;
            }
#pragma unroll
        for (int u = 0; u < ZGC_GEMV_MMA_UNROLL; u++) {
            int c = c0 + ZGC_GEMV_WARPS * u;
            if (c >= nch) break;
            int j = 4 * c + q;
            int4 xv = r < N && j < nv ? x[(size_t)r * nv + j] : zero;
            uint32_t a1[4] = {(uint32_t)ra[u].x, (uint32_t)rb[u].x, (uint32_t)ra[u].y, (uint32_t)rb[u].y};
            uint32_t a2[4] = {(uint32_t)ra[u].z, (uint32_t)rb[u].z, (uint32_t)ra[u].w, (uint32_t)rb[u].w};
            zgc_mma<T>::run(d, a1, (uint32_t)xv.x, (uint32_t)xv.y);
            zgc_mma<T>::run(d, a2, (uint32_t)xv.z, (uint32_t)xv.w);
        }
    }
    /* d: (column o0 + r, rows 2q, 2q + 1) and (column o0 + r + 8, the same rows) */
#pragma unroll
    for (int k = 0; k < 4; k++) red[warp][lane][k] = d[k];
    __syncthreads();
    int t = threadIdx.x;
    if (t >= ZGC_GEMV_MMA_COLS * 8) return; /* no barriers below */
    int ol = t / 8, n = t % 8, o = o0 + ol;
    if (o >= OC || n >= N) return;
    int src = (ol % 8) * 4 + n / 2, k = (ol >= 8 ? 2 : 0) + n % 2;
    float s = 0.0f;
    for (int wi = 0; wi < ZGC_GEMV_WARPS; wi++) s += red[wi][src][k];
    zgc_gemv_store(out, pre_gelu, residual, (size_t)n * OC + o, s + (bias ? zgc_to_f(bias[o]) : 0.0f));
}
/* fp32 has no such mma: the warp-per-column kernel */
template <>
__global__ void zgc_gemv_mma_kernel<float, true>(float *, float *, const float *, const float *, const float *,
                                                 const float *, const float *, const float *, int, int, int) {}
template <>
__global__ void zgc_gemv_mma_kernel<float, false>(float *, float *, const float *, const float *, const float *,
                                                  const float *, const float *, const float *, int, int, int) {}

/* ---- v2 (gemv2.cuh: the design and zgc_gemv2_run): the standalone kernel, waiting for the previous
 * kernel with PDL ---------------------------------------------------------------------------------- */
template <typename T, bool LN, int MINB, int U = ZGC_GEMV2_UNROLL>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS, MINB) zgc_gemv2_kernel(zgc_gemv2_op<T> a) {
    extern __shared__ int4 xs_raw[];
    __shared__ zgc_gemv2_red red;
    zgc_gemv2_run<T, LN, U>(a, (int)blockIdx.x, (int)gridDim.x, xs_raw, red, [] {
        zgc_pdl_wait();
        zgc_pdl_trigger();
    });
}

/* fp32 has no such mma: v1's warp per column runs instead */
#define ZGC_GEMV2_NO_F32(LN, MINB, U)                                                                                  \
    template <> __global__ void zgc_gemv2_kernel<float, LN, MINB, U>(zgc_gemv2_op<float>) {}
ZGC_GEMV2_NO_F32(true, 3, ZGC_GEMV2_UNROLL)
ZGC_GEMV2_NO_F32(false, 3, ZGC_GEMV2_UNROLL)
ZGC_GEMV2_NO_F32(true, 4, ZGC_GEMV2_UNROLL)
ZGC_GEMV2_NO_F32(false, 4, ZGC_GEMV2_UNROLL)
ZGC_GEMV2_NO_F32(true, 2, ZGC_GEMV2_UNROLL_DEEP)
ZGC_GEMV2_NO_F32(false, 2, ZGC_GEMV2_UNROLL_DEEP)
#undef ZGC_GEMV2_NO_F32

/* fp32 has no tensor-core form: v1's warp per column; v2 where its input stage (and, ln, the LayerNorm
 * parameters) fits; else v1 (cuda_internal.h). */
int zgc_gemv_fits(zg_backend *be, const void *inp, const void *w, int N, int C, int OC, bool ln) {
    size_t es = zgc_dtype_bytes(be->act_dtype);
    int kind = zgc_gemv_pick(N, C, OC);
    if (kind < 0)
        ZG_FATAL("ZGPT_GEMV=%s: not a product kernel (cublaslt, v1, simt or v2; unset: the per-shape choice)",
                 getenv("ZGPT_GEMV"));
    if (kind == ZGC_GEMV_CUBLASLT || !(N >= 1 && N <= ZGC_GEMV_MAX_N && OC >= 1 && ((size_t)C * es) % 16 == 0 &&
                                       zgc_gemv_aligned(inp) && zgc_gemv_aligned(w)))
        return ZGC_GEMV_CUBLASLT;
    if (be->act_dtype == ZG_F32) return ZGC_GEMV_V1_SIMT;
    if (kind == ZGC_GEMV_V2 && zgc_gemv2_smem(N, C, es, ln) > ZGC_GEMV2_MAX_SMEM) return ZGC_GEMV_V1;
    return kind;
}

/* ---- ZGPT_GEMV_PROF=1: the decode step's timeline (an A/B aid) ------------------------------------------
 * While a graph records, each v2 launch and each split decode attention launch gets a slot of 4 global
 * timestamps per block (start, wait over, input staged, end; attention: start, wait over, end, end), for
 * ZGC_GEMV_PROF_LAUNCHES launches of up to ZGC_GEMV_PROF_BLOCKS blocks; the replays overwrite them. The
 * report (at the backend's end, on stderr) reads the last replay of each recording: per kind, the time from
 * the dependency's release (the first block past its wait) to the last block's end, the input stage, the
 * blocks' mean work after it, the tail (last end less mean end), the gap from the previous launch's end. */
#define ZGC_GEMV_PROF_LAUNCHES 512
#define ZGC_GEMV_PROF_BLOCKS 4096
int zgc_gemv_prof_env(void) {
    const char *v = getenv("ZGPT_GEMV_PROF");
    if (v == NULL || *v == '\0' || strcmp(v, "0") == 0) return 0;
    return strcmp(v, "1") == 0 ? 1 : -1;
}
unsigned long long *zgc_gemv_prof_slot(zg_backend *be, int N, int C, int OC, unsigned blocks) {
    zgc_impl *im = zgc_get(be);
    if (!im->gemv_prof_on || im->gemv_prof_next >= ZGC_GEMV_PROF_LAUNCHES || blocks > ZGC_GEMV_PROF_BLOCKS) return NULL;
    size_t per = (size_t)ZGC_GEMV_PROF_BLOCKS * 4;
    unsigned long long *buf = (unsigned long long *)zgc_scratch(
        be, ZGC_SCR_GEMV_PROF, (size_t)ZGC_GEMV_PROF_LAUNCHES * per * 8, "decode timeline (ZGPT_GEMV_PROF)");
    int i = im->gemv_prof_next++;
    int meta[4] = {N, C, OC, (int)blocks};
    memcpy(im->gemv_prof_meta[i], meta, sizeof meta);
    return buf + (size_t)i * per;
}
void zgc_gemv_prof_mark(zg_backend *be, int end) {
    zgc_impl *im = zgc_get(be);
    if (zgc_gemv_prof_env() != 1 || im->gemv_prof_nrec >= 8) return;
    if (im->gemv_prof_meta == NULL)
        im->gemv_prof_meta = (int(*)[4])zg_calloc(ZGC_GEMV_PROF_LAUNCHES, sizeof *im->gemv_prof_meta);
    im->gemv_prof_rec[im->gemv_prof_nrec][end] = im->gemv_prof_next;
    im->gemv_prof_on = !end;
    if (end) im->gemv_prof_nrec++;
}
void zgc_gemv_prof_report(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    const unsigned long long *dev = (const unsigned long long *)im->scratch[ZGC_SCR_GEMV_PROF];
    if (im->gemv_prof_meta == NULL || dev == NULL) return;
    size_t per = (size_t)ZGC_GEMV_PROF_BLOCKS * 4;
    unsigned long long *h = (unsigned long long *)zg_malloc(per * 8);
    for (int r = 0; r < im->gemv_prof_nrec; r++) {
        int lo = im->gemv_prof_rec[r][0], hi = im->gemv_prof_rec[r][1];
        if (hi <= lo) continue;
        enum { KINDS = 8 };
        int kc[KINDS][2] = {{0}}, nk = 0, cnt[KINDS] = {0};
        double span[KINDS] = {0}, stage[KINDS] = {0}, body[KINDS] = {0}, tail[KINDS] = {0}, gap[KINDS] = {0},
               early[KINDS] = {0}, bmax[KINDS] = {0};
        double prev_end = 0, first = 0, last = 0, step_ns = 1e30;
        for (int i = lo; i < hi; i++) {
            const int *m = im->gemv_prof_meta[i];
            ZG_CUDA_CHECK(cudaMemcpy(h, dev + (size_t)i * per, per * 8, cudaMemcpyDeviceToHost));
            double smin = 1e300, rel = 1e300, emax = 0, esum = 0, stsum = 0, bsum = 0, bm = 0;
            for (int b = 0; b < m[3]; b++) {
                const unsigned long long *t = h + (size_t)b * 4;
                smin = fmin(smin, (double)t[0]), rel = fmin(rel, (double)t[1]), emax = fmax(emax, (double)t[3]);
                esum += (double)t[3], stsum += (double)(t[2] - t[1]), bsum += (double)(t[3] - t[2]);
                bm = fmax(bm, (double)(t[3] - t[1]));
                for (int k = 1; k < 4; k++)
                    if (t[k] > t[k - 1]) step_ns = fmin(step_ns, (double)(t[k] - t[k - 1]));
            }
            int k = 0;
            while (k < nk && !(kc[k][0] == m[1] && kc[k][1] == m[2])) k++;
            if (k == nk) {
                if (nk == KINDS) continue;
                kc[nk][0] = m[1], kc[nk][1] = m[2], nk++;
            }
            cnt[k]++;
            span[k] += emax - rel, stage[k] += stsum / m[3], body[k] += bsum / m[3], tail[k] += emax - esum / m[3];
            early[k] += rel - smin, bmax[k] += bm;
            if (i > lo) gap[k] += rel - prev_end;
            if (i == lo) first = rel;
            prev_end = last = emax;
        }
        fprintf(stderr,
                "zgpt: decode timeline, recording %d (%d launches, N=%d): %.1f us from the first release to the last "
                "end; timer step >= %.0f ns\n",
                r, hi - lo, im->gemv_prof_meta[lo][0], (last - first) / 1e3, step_ns);
        for (int k = 0; k < nk; k++) {
            char what[48];
            if (kc[k][1] == 0)
                snprintf(what, sizeof what, "attention C=%d", kc[k][0]);
            else
                snprintf(what, sizeof what, "v2 C=%d OC=%d", kc[k][0], kc[k][1]);
            fprintf(stderr,
                    "zgpt:   %s x%d: release to last end %.2f us; input stage %.2f; work after it %.2f (mean block), "
                    "%.2f (longest block from its release); tail %.2f; gap from the previous launch's end %.2f; "
                    "first block waited %.2f\n",
                    what, cnt[k], span[k] / cnt[k] / 1e3, stage[k] / cnt[k] / 1e3, body[k] / cnt[k] / 1e3,
                    bmax[k] / cnt[k] / 1e3, tail[k] / cnt[k] / 1e3, gap[k] / cnt[k] / 1e3, early[k] / cnt[k] / 1e3);
        }
    }
    free(h);
    free(im->gemv_prof_meta);
    im->gemv_prof_meta = NULL;
}

static void zgc_gemv2_launch(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *lnw,
                             const void *lnb, const void *w, const void *bias, const void *residual, int N, int C,
                             int OC) {
    zgc_impl *im = zgc_get(be);
    unsigned groups = (unsigned)((OC + ZGC_GEMV2_COLS - 1) / ZGC_GEMV2_COLS);
    unsigned sms = (unsigned)(im->num_sms > 0 ? im->num_sms : 1);
    int bps = zgc_gemv2_knob("ZGPT_GEMV_GRID", 1, 4, ZGC_GEMV2_BLOCKS_PER_SM);
    int minb = zgc_gemv2_knob("ZGPT_GEMV_MINB", 3, 4, ZGC_GEMV2_MIN_BLOCKS);
    size_t smem = zgc_gemv2_smem(N, C, zgc_dtype_bytes(be->act_dtype), lnw != NULL);
    int pf = zgc_gemv2_knob("ZGPT_GEMV_PREFETCH", 0, 1, 0) ? ZGC_GEMV2_PREFETCH_BYTES : 0;
    /* the deep form (gemv2.cuh) where the grid is at most 2 blocks per SM (ZGPT_GEMV_DEEP=0: nowhere, A/B runs) */
    bool deep = zgc_gemv2_knob("ZGPT_GEMV_DEEP", 0, 1, 1) && groups <= 2u * sms;
    ZGC_DISPATCH(be->act_dtype, T, {
        auto kern = deep        ? (lnw ? zgc_gemv2_kernel<T, true, 2, ZGC_GEMV2_UNROLL_DEEP>
                                       : zgc_gemv2_kernel<T, false, 2, ZGC_GEMV2_UNROLL_DEEP>)
                    : minb == 4 ? (lnw ? zgc_gemv2_kernel<T, true, 4> : zgc_gemv2_kernel<T, false, 4>)
                                : (lnw ? zgc_gemv2_kernel<T, true, 3> : zgc_gemv2_kernel<T, false, 3>);
        if (smem > 48 * 1024 - sizeof(float) * 2 * ZGC_GEMV_WARPS * 32 * 2) /* past the default: opt in */
            ZG_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        /* one wave: no more blocks per SM than it holds at once (large input stages: 2, or 1) */
        int fit = 0;
        ZG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kern, ZGC_GEMV_THREADS, smem));
        if (fit >= 1 && fit < bps) bps = fit;
        unsigned cap = (unsigned)bps * sms;
        unsigned blocks = groups < cap ? groups : cap;
        /* the even deal: as few blocks as take the same most groups each, so that every block has that many
         * (XL: qkv 300 blocks of 2 instead of 396 of which 204 do a second, fc 267 of 3 instead of 396 of
         * which 8 do a third). Fewer blocks leave room beside a running product for the next one's blocks to
         * start their weight loads early (PDL); each product's tail and the gaps between products shrink (v0.24,
         * H100, XL step graph B=1: 2.143 -> 2.076-2.093 ms; B=8 3.093-3.099 -> 3.105-3.109, so not there).
         * Where N <= ZGC_GEMV2_EVEN_MAX_N; ZGPT_GEMV_EVEN=0|1 never / always (A/B runs). The bits do not depend on
         * the grid. */
        if (zgc_gemv2_knob("ZGPT_GEMV_EVEN", 0, 1, N <= ZGC_GEMV2_EVEN_MAX_N)) {
            unsigned most = (groups + blocks - 1) / blocks;
            blocks = (groups + most - 1) / most;
        }
        zgc_gemv2_op<T> a = {(T *)out,
                             (T *)pre_gelu,
                             (const T *)inp,
                             (const T *)lnw,
                             (const T *)lnb,
                             (const T *)w,
                             (const T *)bias,
                             (const T *)residual,
                             N,
                             C,
                             OC,
                             pf,
                             zgc_gemv_prof_slot(be, N, C, OC, blocks)};
        zgc_launch(be, kern, dim3(blocks), dim3(ZGC_GEMV_THREADS), smem, 0, a);
    });
    ZG_CUDA_LAUNCH_CHECK();
}

static void zgc_gemv_launch(zg_backend *be, int kind, void *out, void *pre_gelu, const void *inp, const void *lnw,
                            const void *lnb, const void *w, const void *bias, const void *residual, int N, int C,
                            int OC) {
    if (kind == ZGC_GEMV_V2) {
        zgc_gemv2_launch(be, out, pre_gelu, inp, lnw, lnb, w, bias, residual, N, C, OC);
        return;
    }
    unsigned blocks = (unsigned)((OC + ZGC_GEMV_WARPS - 1) / ZGC_GEMV_WARPS);
    size_t smem = lnw ? (size_t)N * C * zgc_dtype_bytes(be->act_dtype) : 0;
    bool mma = kind == ZGC_GEMV_V1 && N >= 2; /* fp32: zgc_gemv_fits says V1_SIMT */
    if (mma) blocks = (unsigned)((OC + ZGC_GEMV_MMA_COLS - 1) / ZGC_GEMV_MMA_COLS);
    ZGC_DISPATCH(be->act_dtype, T, {
        auto kern = mma ? (lnw ? zgc_gemv_mma_kernel<T, true> : zgc_gemv_mma_kernel<T, false>)
                        : (lnw ? zgc_gemv_kernel<T, true> : zgc_gemv_kernel<T, false>);
        zgc_launch(be, kern, dim3(blocks), dim3(ZGC_GEMV_THREADS), smem, 0, (T *)out, (T *)pre_gelu, (const T *)inp,
                   (const T *)lnw, (const T *)lnb, (const T *)w, (const T *)bias, (const T *)residual, N, C, OC);
    });
    ZG_CUDA_LAUNCH_CHECK();
}

int zgc_gemv_forward(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *w, const void *bias,
                     const void *residual, int N, int C, int OC) {
    int kind = zgc_gemv_fits(be, inp, w, N, C, OC, false);
    if (kind == ZGC_GEMV_CUBLASLT) return 0;
    zgc_gemv_launch(be, kind, out, pre_gelu, inp, NULL, NULL, w, bias, residual, N, C, OC);
    return 1;
}

/* v1: the normalised rows fit the default 48 KiB of shared memory beside the tensor-core form's 4 KiB
 * of fragments (C = 1600: 8 rows in bf16 take 25.6 KB); v2: zgc_gemv_fits checked its stage. The
 * LayerNorm parameters are whole 16-byte vectors (in the parameter dtype, which is the activations'). */
void zgc_layernorm_matmul_forward(zg_backend *be, void *out, void *pre_gelu, void *ln, const void *inp, const void *lnw,
                                  const void *lnb, const void *w, const void *bias, int N, int C, int OC) {
    size_t smem = (size_t)N * C * zgc_dtype_bytes(be->act_dtype);
    int kind = zgc_gemv_fits(be, inp, w, N, C, OC, true);
    if (kind != ZGC_GEMV_CUBLASLT && be->param_dtype == be->act_dtype &&
        (kind == ZGC_GEMV_V2 || smem + 4096 <= 48 * 1024) && zgc_gemv_aligned(lnw) && zgc_gemv_aligned(lnb)) {
        zgc_gemv_launch(be, kind, out, pre_gelu, inp, lnw, lnb, w, bias, NULL, N, C, OC);
        return;
    }
    zg_layernorm_matmul_compose(be, out, pre_gelu, ln, inp, lnw, lnb, w, bias, N, C, OC);
}
