/* The decode_layers op: a decode step's transformer layers as one persistent kernel (ZGPT_DECODE_LAYERS=3).
 *
 * Why: the per-op path (v0.20-v0.22, H100, GPT-2 XL, B=1) streams the 48 x 4 few-row products' 2.95 GB at
 * ~1.7 TB/s against ~2.8 TB/s that one kernel reaches: DRAM idles at each of the ~240 kernel boundaries a step
 * (the grid's tail, the next one's first loads and its input's round trip), ~1.4 us each. The weights depend
 * on nothing the step computes, so a stream of them need not stop at a boundary.
 *
 * Design: a cooperative grid of one block per SM, all resident: a producer warp streams the block's share of
 * every product's weights through a shared-memory ring (decode_ring.cuh), and 8 consumer warps run per
 * layer five phases with a grid barrier between them:
 *   1. qkv (B,3C) = LN1(x) W_qkv^T + b                     (v2's product from the ring, decode_ring.cuh)
 *   2. split decode attention over the (row, head, chunk) items, two at a time per block (its 128-thread
 *      halves, named barriers 1 and 2), the combine in the last chunk of each (row, head) (decode_attn.cuh)
 *   3. y = x + atty W_proj^T + b
 *   4. fch = LN2(y) W_fc^T + b, fchg = gelu(fch)
 *   5. x = y + fchg W_fcproj^T + b
 * Before each barrier a phase issues what needs nothing from the phase before (the LayerNorm's parameters;
 * the attention chunk's cached K and V rows). Phase 1 of layer 0 does not wait (the encoder's kernel ended
 * before this one started: a cooperative launch, no PDL). The products are v2's chunks, mma and order of sums
 * with the same column groups (a group's sums do not depend on the grid), attention the split kernel's
 * 128-thread groups: the same bits as the per-op kernels, which the op test checks. Values that other blocks
 * wrote in this launch are read through L2 (cp.async.cg, ld.cg), never from L1.
 * It runs where the per-op path would run exactly these kernels (v2 for the four products, split attention
 * with the fused combine, 16-bit types, 16-byte rows, widths a multiple of 8) on sm_90; elsewhere the op
 * returns 0, says why once, and the model issues the per-layer ops.
 * Measured: v0.21's form (=1, =2: 3 or 2 blocks per SM loading their own weights, cooperative_groups'
 * barrier) took 3.445 / 2.765 ms a B=1 step against 2.231 per op, and was removed in v0.22: a grid barrier
 * costs 1.0-1.6 us against 0.6-0.7 us per PDL boundary (bench/decode_barrier.cu). The ring (v0.22): 2.600 ms
 * against 2.274 at B=1, 4.423 against 3.137 at B=8, while its stream alone beats a kernel per product (1.180
 * against 1.334 ms): the consumers set the pace. Off by default. */
#include "backend/cuda/decode_attn.cuh"
#include "backend/cuda/decode_ring.cuh"
#include "backend/cuda/gemv2.cuh"

/* the kernel's arguments; the buffers (B rows each) and tensors in the compute dtype */
struct zgc_dec_layers_args {
    char *p[ZG_DEC_TENSORS]; /* layer 0's tensors; layer l's at p[i] + l * step[i] */
    long long step[ZG_DEC_TENSORS];
    void *x, *y, *qkv, *atty, *fch, *fchg;
    float *accs, *ml; /* split attention's partials, (B*NH, S, hs) and (B*NH, S, 2) */
    unsigned *counts; /* its combine's counters (B*NH), 0 between launches */
    const int32_t *pos;
    int L, B, maxT, C, NH, S;
    float scale;
    int att_bytes;            /* one attention group's shared memory (zgc_dec_layers_att_bytes) */
    unsigned long long *prof; /* ZGPT_DECODE_RING_PROF=1: ZGC_RP_N slots a block, then the launch count; else NULL */
};

/* An attention group's shared memory at base: the K and V rows (kvb bytes), then the scores, q, the p V
 * partials, the reduction slots and the combine's flag. */
static __host__ __device__ inline size_t zgc_dec_layers_att_bytes(int hs, size_t es) {
    size_t floats =
        ZGC_DEC_CHUNK + ZGC_DEC_MAX_HS + (size_t)ZGC_DEC_SPLIT_WARPS * ZGC_DEC_MAX_HS + ZGC_DEC_SPLIT_WARPS + 1;
    return (zgc_dec_kv_bytes(hs, es) + floats * 4 + 15) / 16 * 16;
}
__device__ __forceinline__ zgc_dec_smem zgc_dec_layers_smem(char *base, size_t kvb) {
    float *f = reinterpret_cast<float *>(base + kvb);
    zgc_dec_smem sm;
    sm.kv = base;
    sm.sc = f;
    f += ZGC_DEC_CHUNK;
    sm.qs = f;
    f += ZGC_DEC_MAX_HS;
    sm.part = reinterpret_cast<float(*)[ZGC_DEC_MAX_HS]>(f);
    f += ZGC_DEC_SPLIT_WARPS * ZGC_DEC_MAX_HS;
    sm.red = f;
    f += ZGC_DEC_SPLIT_WARPS;
    sm.last = reinterpret_cast<int *>(f);
    return sm;
}

/* The kernel: the products' weights streamed by each block's producer warp
 * through a ring of shared-memory stages (decode_ring.cuh): one block per SM, 8 consumer warps and the
 * producer; the consumers meet at a counter barrier (sync: the counter and the exit count, 0 between
 * launches); work_bytes of dynamic shared memory for the phases (input rows, LayerNorm parameters, the two
 * attention groups), then the stages. */
template <typename T>
__global__ void __launch_bounds__(ZGC_RING_THREADS, 1)
    zgc_decode_ring_kernel(zgc_dec_layers_args a, unsigned *sync, int stages, int work_bytes) {
    extern __shared__ int4 smem[];
    __shared__ zgc_gemv2_red red;
    __shared__ uint64_t full[ZGC_RING_MAX_STAGES], empty[ZGC_RING_MAX_STAGES];
    const int bid = (int)blockIdx.x, nblk = (int)gridDim.x, B = a.B, C = a.C, NH = a.NH;
    zgc_ring rg = {reinterpret_cast<char *>(smem) + work_bytes, full, empty, stages, 0, 0u};
    const bool rec = a.prof != nullptr && (threadIdx.x == 0 || threadIdx.x == ZGC_RING_CONSUMERS);
    zgc_ring_prof pf = {rec ? a.prof + (size_t)bid * ZGC_RP_N : nullptr, rec ? clock64() : 0, {}};
    const long long tc0 = pf.last;
    const unsigned long long ns0 = rec ? zgc_globaltimer() : 0ull;
    if (threadIdx.x == 0) {
        for (int i = 0; i < stages; i++) {
            zgc_mbar_init(&full[i], 1);               /* the producer's arrival (+ the copies' bytes) */
            zgc_mbar_init(&empty[i], ZGC_GEMV_WARPS); /* each consumer warp's */
        }
        ZGC_SM90_ONLY(asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"));
    }
    __syncthreads(); /* the last block-wide barrier: the producer warp leaves below */
#define ZGC_BUF(name) ((T *)a.name)
    auto P = [&](int l, int i) { return reinterpret_cast<T *>(a.p[i] + (long long)l * a.step[i]); };
    /* the column groups of all the products dealt to the blocks as one sequence: a product's deal starts at the
     * block after the last one's, so the blocks with a product's extra group (fc projection: 200 groups of 102
     * KB over 132 blocks) are not always the same ones; vb(OC): this block's place in the next product's deal
     * (the producer and the consumers each walk it; which block runs a group changes no bit) */
    int rot = 0;
    auto vb = [&](int OC) {
        int v = (bid - rot + nblk) % nblk;
        rot = (rot + OC / ZGC_GEMV2_COLS) % nblk;
        return v;
    };
    if (threadIdx.x >= ZGC_RING_CONSUMERS) {
        if (threadIdx.x == ZGC_RING_CONSUMERS)
            for (int l = 0; l < a.L; l++) {
                zgc_ring_produce<T>(rg, P(l, ZG_DEC_QKVW), C, 3 * C, vb(3 * C), nblk, pf);
                zgc_ring_produce<T>(rg, P(l, ZG_DEC_PROJW), C, C, vb(C), nblk, pf);
                zgc_ring_produce<T>(rg, P(l, ZG_DEC_FCW), C, 4 * C, vb(4 * C), nblk, pf);
                zgc_ring_produce<T>(rg, P(l, ZG_DEC_FCPROJW), 4 * C, C, vb(C), nblk, pf);
            }
        pf.lap(ZGC_RP_ISSUE);
        pf.flush();
        return;
    }
    unsigned nbar = 0;
    auto barrier = [&] {
        pf.lap(ZGC_RP_OTHER);
        zgc_ring_grid_sync(sync, (unsigned)nblk * ++nbar);
        pf.lap(ZGC_RP_BAR);
    };
    for (int l = 0; l < a.L; l++) {
        const zgc_gemv2_op<T> qkv = {ZGC_BUF(qkv),
                                     nullptr,
                                     ZGC_BUF(x),
                                     P(l, ZG_DEC_LN1W),
                                     P(l, ZG_DEC_LN1B),
                                     P(l, ZG_DEC_QKVW),
                                     P(l, ZG_DEC_QKVB),
                                     nullptr,
                                     B,
                                     C,
                                     3 * C,
                                     0};
        zgc_ring_sync(); /* the previous phase's shared memory is free */
        zgc_ring_consume<T, true>(qkv, rg, vb(3 * C), nblk, smem, red, pf, [&] {
            if (l > 0) barrier();
        });
        const zgc_dec_att_op<T> at = {ZGC_BUF(atty),       a.accs, a.ml, a.counts, ZGC_BUF(qkv), P(l, ZG_DEC_KCACHE),
                                      P(l, ZG_DEC_VCACHE), a.maxT, C,    NH,       a.S,          a.scale};
        zgc_ring_sync();
        pf.lap(ZGC_RP_OTHER);
        {
            /* two 128-thread groups per block (the split kernel's block size: its orders of sums), the first
             * item's cached rows staged before the barrier */
            const int t = a.pos[0];
            const int half = (int)threadIdx.x / ZGC_DEC_SPLIT_THREADS;
            const zgc_dec_smem sm = zgc_dec_layers_smem(reinterpret_cast<char *>(smem) + (size_t)half * a.att_bytes,
                                                        zgc_dec_kv_bytes(C / NH, sizeof(T)));
            const int nch = t / ZGC_DEC_CHUNK + 1, items = B * NH * nch, slots = 2 * nblk, slot = 2 * bid + half;
            auto stage = [&](auto g) {
                if (slot < items) zgc_dec_chunk_stage<T, true>(g, at, sm, slot / nch, slot % nch, t);
            };
            auto run = [&](auto g) {
                for (int i = slot; i < items; i += slots) {
                    if (i != slot) zgc_dec_chunk_stage<T, true>(g, at, sm, i / nch, i % nch, t);
                    zgc_dec_chunk_run<T, true, true>(g, at, sm, i / nch, i % nch, t);
                }
            };
            const zgc_dec_part<1> g0 = {0, ZGC_DEC_SPLIT_THREADS};
            const zgc_dec_part<2> g1 = {ZGC_DEC_SPLIT_THREADS, ZGC_DEC_SPLIT_THREADS};
            if (half == 0)
                stage(g0);
            else
                stage(g1);
            pf.lap(ZGC_RP_ATT);
            barrier();
            if (half == 0)
                run(g0);
            else
                run(g1);
            pf.lap(ZGC_RP_ATT);
        }
        const zgc_gemv2_op<T> proj = {ZGC_BUF(y),
                                      nullptr,
                                      ZGC_BUF(atty),
                                      nullptr,
                                      nullptr,
                                      P(l, ZG_DEC_PROJW),
                                      P(l, ZG_DEC_PROJB),
                                      ZGC_BUF(x),
                                      B,
                                      C,
                                      C,
                                      0};
        zgc_ring_sync();
        zgc_ring_consume<T, false>(proj, rg, vb(C), nblk, smem, red, pf, barrier);
        const zgc_gemv2_op<T> fc = {ZGC_BUF(fchg),
                                    ZGC_BUF(fch),
                                    ZGC_BUF(y),
                                    P(l, ZG_DEC_LN2W),
                                    P(l, ZG_DEC_LN2B),
                                    P(l, ZG_DEC_FCW),
                                    P(l, ZG_DEC_FCB),
                                    nullptr,
                                    B,
                                    C,
                                    4 * C,
                                    0};
        zgc_ring_sync();
        zgc_ring_consume<T, true>(fc, rg, vb(4 * C), nblk, smem, red, pf, barrier);
        const zgc_gemv2_op<T> fcp = {
            ZGC_BUF(x), nullptr, ZGC_BUF(fchg), nullptr, nullptr, P(l, ZG_DEC_FCPROJW), P(l, ZG_DEC_FCPROJB),
            ZGC_BUF(y), B,       4 * C,         C,       0};
        zgc_ring_sync();
        zgc_ring_consume<T, false>(fcp, rg, vb(C), nblk, smem, red, pf, barrier);
    }
#undef ZGC_BUF
    if (rec) {
        pf.lap(ZGC_RP_OTHER);
        pf.acc[ZGC_RP_CONS] = clock64() - tc0;
        pf.acc[ZGC_RP_NS] = (long long)(zgc_globaltimer() - ns0);
        pf.flush();
        if (bid == 0) a.prof[(size_t)nblk * ZGC_RP_N]++;
    }
    zgc_ring_exit(sync, sync + 1, (unsigned)nblk);
}

/* 0, after saying once per backend why the layers run per op although ZGPT_DECODE_LAYERS asks for one kernel
 * (an accepted setting acts or says what happens instead) */
static int zgc_dec_layers_decline(zg_backend *be, const char *why) {
    zgc_impl *im = zgc_get(be);
    if (!im->decode_layers_noted)
        fprintf(stderr, "zgpt: note: ZGPT_DECODE_LAYERS=%s: the decode step's layers run a kernel per op here (%s)\n",
                getenv("ZGPT_DECODE_LAYERS"), why);
    im->decode_layers_noted = 1;
    return 0;
}

/* =3: the ring kernel, one block per SM, as many stages as the SM's shared memory holds beside the phases' */
template <typename T> static int zgc_decode_ring_launch(zg_backend *be, const zgc_dec_layers_args &a, size_t work) {
    zgc_impl *im = zgc_get(be);
    auto kern = zgc_decode_ring_kernel<T>;
    work = (work + 127) / 128 * 128;
    cudaFuncAttributes fa;
    ZG_CUDA_CHECK(cudaFuncGetAttributes(&fa, kern));
    int optin = 0;
    ZG_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, im->device));
    long room = (long)optin - (long)fa.sharedSizeBytes - (long)work;
    int stages = room > 0 ? (int)(room / ZGC_RING_STAGE) : 0;
    if (stages > ZGC_RING_MAX_STAGES) stages = ZGC_RING_MAX_STAGES;
    if (stages < 2)
        return zgc_dec_layers_decline(be, "the weight ring's two stages do not fit beside the phases' shared memory");
    size_t smem = work + (size_t)stages * ZGC_RING_STAGE;
    ZG_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int fit = 0;
    ZG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kern, ZGC_RING_THREADS, smem));
    if (fit < 1) return zgc_dec_layers_decline(be, "no block of the ring kernel fits an SM");
    unsigned *sync = (unsigned *)zgc_scratch_zeroed(be, ZGC_SCR_DECODE_SYNC, 2 * sizeof(unsigned), "decode barrier");
    zgc_dec_layers_args pa = a;
    if (zgc_decode_ring_prof_env() == 1) {
        pa.prof = (unsigned long long *)zgc_scratch_zeroed(be, ZGC_SCR_DECODE_PROF,
                                                           ((size_t)im->num_sms * ZGC_RP_N + 1) * 8, "ring profile");
        im->ring_prof_blocks = im->num_sms;
        im->ring_prof_B = a.B;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)im->num_sms);
    cfg.blockDim = dim3(ZGC_RING_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = im->stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative; /* every block resident: the barrier needs them all */
    attr[0].val.cooperative = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, pa, sync, stages, (int)work);
    if (e != cudaSuccess) {
        if (!im->capturing) ZG_CUDA_CHECK(e);
        (void)cudaGetLastError();
    }
    return 1;
}

void zgc_ring_prof_report(zg_backend *be) {
    static const char *const what[ZGC_RP_NS] = {"grid barriers",      "input rows + LayerNorm",
                                                "waiting for weights", "stage products",
                                                "group epilogues",     "attention",
                                                "other",               "consumers in all",
                                                "producer waiting for a free stage", "producer issuing"};
    zgc_impl *im = zgc_get(be);
    unsigned long long *dev = (unsigned long long *)im->scratch[ZGC_SCR_DECODE_PROF];
    int nb = im->ring_prof_blocks;
    if (nb == 0 || dev == NULL || im->capturing) return;
    size_t n = (size_t)nb * ZGC_RP_N + 1;
    unsigned long long *h = (unsigned long long *)malloc(n * 8);
    if (h == NULL) return;
    ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
    ZG_CUDA_CHECK(cudaMemcpy(h, dev, n * 8, cudaMemcpyDeviceToHost));
    unsigned long long launches = h[n - 1];
    if (launches > 0) {
        fprintf(stderr, "zgpt: ring profile, B=%d, %llu launches, us a launch (mean / min / max over %d blocks):",
                im->ring_prof_B, launches, nb);
        for (int k = 0; k < ZGC_RP_NS; k++) {
            double sum = 0.0, mx = 0.0, mn = 1e30;
            for (int b = 0; b < nb; b++) {
                const unsigned long long *s = h + (size_t)b * ZGC_RP_N;
                /* this block's ns per cycle, from its consumers' time in both units */
                double per = s[ZGC_RP_CONS] > 0 ? (double)s[ZGC_RP_NS] / (double)s[ZGC_RP_CONS] : 0.0;
                double us = (double)s[k] * per / 1e3 / (double)launches;
                sum += us;
                mx = us > mx ? us : mx;
                mn = us < mn ? us : mn;
            }
            fprintf(stderr, "%s %s %.1f / %.1f / %.1f", k ? ";" : "", what[k], sum / nb, mn, mx);
        }
        fprintf(stderr, "\n");
    }
    free(h);
    ZG_CUDA_CHECK(cudaMemsetAsync(dev, 0, n * 8, im->stream));
    im->ring_prof_blocks = 0;
}

int zgc_decode_layers(zg_backend *be, const zg_decode_layers *t, int L, void *x, void *y, void *qkv, void *atty,
                      void *fch, void *fchg, const int32_t *pos, int B, int maxT, int C, int NH) {
    int on = zgc_decode_layers_env();
    if (on < 0) /* refused when the backend was made; set since: an A/B run's mistake */
        ZG_FATAL("ZGPT_DECODE_LAYERS=%s: expected 0 or 3 (unset: 0)", getenv("ZGPT_DECODE_LAYERS"));
    if (on == 0) return 0;
    zgc_ring_prof_report(be); /* the launches before this one (a bench's other shape) */
    zgc_impl *im = zgc_get(be);
    size_t es = zgc_dtype_bytes(be->act_dtype);
    /* the kernels the per-op path runs here must be the ones this kernel holds: v2 for the four products
     * (zgc_gemv_fits also checks the rows, sizes and alignments), split attention with the fused combine on
     * 16-byte K and V rows, and no prefetch branch beside it (a cooperative grid takes every SM) */
    if (be->act_dtype == ZG_F32 || be->param_dtype != be->act_dtype)
        return zgc_dec_layers_decline(be, "fp32: no tensor-core few-row product");
    if (L < 1 || B < 1 || NH < 1 || C % NH != 0 || C / NH > ZGC_DEC_MAX_HS || ((size_t)(C / NH) * es) % 16 != 0)
        return zgc_dec_layers_decline(be, "a head size outside 16-byte rows of at most 256 values");
    int hs = C / NH;
    if (zgc_gemv_fits(be, x, t->p[ZG_DEC_QKVW], B, C, 3 * C, true) != ZGC_GEMV_V2 ||
        zgc_gemv_fits(be, atty, t->p[ZG_DEC_PROJW], B, C, C, false) != ZGC_GEMV_V2 ||
        zgc_gemv_fits(be, y, t->p[ZG_DEC_FCW], B, C, 4 * C, true) != ZGC_GEMV_V2 ||
        zgc_gemv_fits(be, fchg, t->p[ZG_DEC_FCPROJW], B, 4 * C, C, false) != ZGC_GEMV_V2)
        return zgc_dec_layers_decline(be, "the products do not all run v2's few-row kernel: more than 8 rows, "
                                          "ZGPT_GEMV or ZGPT_DECODE choose another, or the input stage is too large");
    if (!zgc_decode_split(B * NH, im->num_sms) || zgc_decode_combine() != 1)
        return zgc_dec_layers_decline(be, "decode attention is not split with its combine fused (ZGPT_DECODE, "
                                          "ZGPT_DECODE_COMBINE, or rows x heads fill the GPU twice over)");
    if (zgc_decode_prefetch() != 0)
        return zgc_dec_layers_decline(be, "ZGPT_DECODE_PREFETCH's branch would run beside it");
    /* every layer's tensors on 16-byte boundaries (the vector loads; the LayerNorm's parameters by cp.async) */
    int aligned = zgc_gemv_aligned(qkv) && zgc_gemv_aligned(fch);
    for (int i = 0; i < ZG_DEC_TENSORS; i++) aligned &= zgc_gemv_aligned(t->p[i]) && t->step[i] % 16 == 0;
    if (!aligned) return zgc_dec_layers_decline(be, "a tensor or layer stride off a 16-byte boundary");
    int coop = 0;
    ZG_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, im->device));
    if (!coop) return zgc_dec_layers_decline(be, "the device has no cooperative launch");
    /* shared memory: the largest product stage, or the two attention groups' */
    size_t smem = zgc_gemv2_smem(B, C, es, true), att = zgc_dec_layers_att_bytes(hs, es);
    if (zgc_gemv2_smem(B, 4 * C, es, false) > smem) smem = zgc_gemv2_smem(B, 4 * C, es, false);
    if (2 * att > smem) smem = 2 * att;
    /* split attention's scratch, as zgc_attention_decode_split has it (the same slots) */
    int S = (maxT + ZGC_DEC_CHUNK - 1) / ZGC_DEC_CHUNK;
    float *accs, *ml;
    unsigned *counts;
    zgc_dec_scratch(be, B * NH, S, hs, &accs, &ml, &counts);
    if (im->cc_major < 9) return zgc_dec_layers_decline(be, "the weight ring's bulk copies need sm_90");
    if (C % 8 != 0) return zgc_dec_layers_decline(be, "a width that is not a multiple of 8");
    zgc_dec_layers_args a = {
        {},      {}, x, y, qkv, atty, fch, fchg, accs, ml, counts, pos, L, B, maxT, C, NH, S, 1.0f / sqrtf((float)hs),
        (int)att};
    for (int i = 0; i < ZG_DEC_TENSORS; i++) {
        a.p[i] = (char *)t->p[i];
        a.step[i] = t->step[i];
    }
    if (be->act_dtype == ZG_BF16) return zgc_decode_ring_launch<__nv_bfloat16>(be, a, smem);
    return zgc_decode_ring_launch<__half>(be, a, smem);
}
