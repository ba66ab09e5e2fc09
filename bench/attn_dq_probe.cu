// The attention backward's dQ kernel (src/backend/cuda/attention_dq.cuh) alone, at GPT-2 XL's training shape
// (B=16, NH=25, T=1024, hs=64, bf16), on a synthetic dS in cuDNN 9's workspace layout (lower triangle random,
// NaN above the diagonal: a value read there into a sum shows as NaN). Forms: v0.27's kernel (the tile rearranged
// through shared memory, ldmatrix.trans; kept here as the A/B baseline) and the movmatrix kernel at several
// (warps, stages, heads a group, m-tiles a warp, L2 prefetch hint). Per form: median ms of 20 launches after 5 (CUDA
// events; argv: B, launches), dS's lower-triangle bytes per second, bitwise equality with the first form, and the
// largest error against an fp64 host product over two heads. Then what reading the same bytes costs without the
// product (READ: the kernel's access pattern at several run lengths, with and without its K tiles, and straight
// through) and a device copy of them (PERFORMANCE.md v0.28).
// Build and run on the GPU machine:
//   nvcc -O2 -std=c++17 -arch=sm_90 -Isrc -o /tmp/attn_dq_probe bench/attn_dq_probe.cu && /tmp/attn_dq_probe
#include "backend/cuda/attention_dq.cuh"

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <vector>

#include "probe_check.cuh"

typedef __nv_bfloat16 bf16;

/* (key, query) of element e of the layout within one head */
__host__ __device__ static void probe_ds_pos(size_t e, int T, int *key, int *query) {
    size_t g = e / (16 * (size_t)T), r = e % (16 * (size_t)T);
    int s = (int)(r / 256), l = (int)(r % 256) / 8, v = (int)(r % 8);
    int k = l >> 2, q = l & 3;
    *key = (int)g * 16 + k + ((v >> 1) & 1) * 8;
    *query = s * 16 + 2 * q + (v & 1) + (v >> 2) * 8;
}
__host__ __device__ static float probe_hash(size_t i, uint32_t seed) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed ^ (uint32_t)(i >> 32) * 0x85ebca6bu;
    h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12, h *= 0x297a2d39u, h ^= h >> 15;
    return ((float)(h >> 8) / 16777216.f - 0.5f) * 2.f;
}
__global__ void probe_fill_ds(bf16 *ds, size_t n, int T) {
    size_t per = (size_t)T * T;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int key, query;
        probe_ds_pos(i % per, T, &key, &query);
        ds[i] = __float2bfloat16(key <= query ? 0.05f * probe_hash(i, 17u) : NAN);
    }
}
__global__ void probe_fill(bf16 *p, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16(probe_hash(i, 91u));
}

/* v0.27's form: 4 warps, 3 stages of the raw tile; each thread rearranges its fragment groups into dS^T [key][query]
 * (double-buffered), read back with ldmatrix.trans */
__global__ void __launch_bounds__(128)
    probe_dq_v027(bf16 *dq, const bf16 *ds, const bf16 *k, int NH, int T_len, int C, float alpha) {
    constexpr int HS = 64, LDT = 72, LDK = 72, STAGE = 4096 + 64 * LDK, ST = 3;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sm = reinterpret_cast<bf16 *>(smem), *st_base = sm + ST * STAGE;
    const int mt = (int)(gridDim.x - 1 - blockIdx.x), bh = (int)blockIdx.y, b = bh / NH, h = bh % NH;
    const int warp = (int)threadIdx.x >> 5, lane = (int)threadIdx.x & 31, ntiles = mt + 1;
    const size_t ld = (size_t)3 * C;
    const bf16 *dsh = ds + (size_t)bh * T_len * T_len + (size_t)mt * 4 * 256;
    const bf16 *kb = k + (size_t)b * T_len * ld + (size_t)h * HS;
    auto load = [&](int nt, int stage) {
        bf16 *raw = sm + stage * STAGE, *sk = raw + 4096;
        for (int u = 0; u < 4; u++)
            zgc_cp_async16(&raw[(u * 128 + (int)threadIdx.x) * 8],
                           dsh + (size_t)(nt * 4 + u) * 16 * T_len + (size_t)threadIdx.x * 8);
        for (int i = (int)threadIdx.x; i < 64 * (HS / 8); i += 128) {
            int r = i / (HS / 8), c = (i % (HS / 8)) * 8;
            zgc_cp_async16(&sk[r * LDK + c], kb + (size_t)(nt * 64 + r) * ld + c);
        }
    };
    float acc[HS / 8][4] = {};
    for (int s = 0; s < ST - 1; s++) {
        if (s < ntiles) load(s, s);
        zgc_cp_commit();
    }
    const int frow = warp * 16 + (lane >> 2), fk = lane >> 2, fq = 2 * (lane & 3);
    for (int nt = 0; nt < ntiles; nt++) {
        zgc_cp_wait<ST - 2>();
        const bf16 *raw = sm + (nt % ST) * STAGE;
        bf16 *sT = st_base + (nt & 1) * 64 * LDT;
        for (int u = 0; u < 4; u++) {
            uint4 v = *reinterpret_cast<const uint4 *>(&raw[(u * 128 + (int)threadIdx.x) * 8]);
            int key = u * 16 + fk, q = warp * 16 + fq;
            *reinterpret_cast<uint32_t *>(&sT[key * LDT + q]) = v.x;
            *reinterpret_cast<uint32_t *>(&sT[(key + 8) * LDT + q]) = v.y;
            *reinterpret_cast<uint32_t *>(&sT[key * LDT + q + 8]) = v.z;
            *reinterpret_cast<uint32_t *>(&sT[(key + 8) * LDT + q + 8]) = v.w;
        }
        __syncthreads();
        if (nt + ST - 1 < ntiles) load(nt + ST - 1, (nt + ST - 1) % ST);
        zgc_cp_commit();
        const bf16 *sk = raw + 4096;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            uint32_t a[4];
            zgc_load_a_trans<LDT>(a, sT, warp * 16, kk * 16, lane);
            if (nt == mt) {
                int col = kk * 16 + 2 * (lane & 3);
                a[0] = zgc_dq_causal(a[0], frow, col);
                a[1] = zgc_dq_causal(a[1], frow + 8, col);
                a[2] = zgc_dq_causal(a[2], frow, col + 8);
                a[3] = zgc_dq_causal(a[3], frow + 8, col + 8);
            }
#pragma unroll
            for (int dn = 0; dn < HS / 8; dn += 2) {
                uint32_t bf[4];
                zgc_ldsm_bt_x4<LDK>(bf, sk, kk * 16, dn * 8, lane);
                zgc_mma<bf16>::run(acc[dn], a, bf[0], bf[1]);
                zgc_mma<bf16>::run(acc[dn + 1], a, bf[2], bf[3]);
            }
        }
    }
    zgc_cp_wait<0>();
    bf16 *o = dq + ((size_t)b * T_len + (size_t)mt * 64 + frow) * ld + (size_t)h * HS + 2 * (lane & 3);
    for (int dn = 0; dn < HS / 8; dn++) {
        *reinterpret_cast<uint32_t *>(o + dn * 8) = zgc_mma<bf16>::pack(acc[dn][0] * alpha, acc[dn][1] * alpha);
        *reinterpret_cast<uint32_t *>(o + 8 * ld + dn * 8) =
            zgc_mma<bf16>::pack(acc[dn][2] * alpha, acc[dn][3] * alpha);
    }
}

/* Read-only patterns (no product): dS's causal half as blocks of RUN query sub-tiles read it (RUN x 512 contiguous
 * bytes a key group, key groups 16 T elements apart), STAGES deep, 256 threads; or (RUN 0) the same bytes read
 * straight through. Each block keeps one word so the copies are not dead. */
/* STEP (bits, towards the dQ kernel's own loop): 1 dS's copies before K's, 2 no copy above a sub-tile's diagonal,
 * 4 each thread reads all its copies back (16 bytes each) */
template <int RUN, int STAGES, bool HINT = false, int KMODE = 0, int NTH = 256, int STEP = 0>
__global__ void __launch_bounds__(NTH)
    probe_read(const bf16 *ds, int BNH, int T_len, int group, unsigned *sink, const bf16 *k, int NH, int C) {
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sm = reinterpret_cast<bf16 *>(smem);
    constexpr int CH = 4 * RUN * 32; /* 16-byte chunks a tile (4 key groups) */
    constexpr int KST = 64 * 72;     /* K [64][72] a stage (KMODE 1: cp.async), after dS */
    const int nm = T_len / (16 * RUN), g0 = (int)blockIdx.x / (group * nm) * group, gn = min(group, BNH - g0);
    const int r = (int)blockIdx.x - g0 * nm, mt = nm - 1 - r / gn, bh = g0 + r % gn;
    const int ntiles = (mt + 1) * RUN / 4;
    const bf16 *dsh = ds + (size_t)bh * T_len * T_len + (size_t)mt * RUN * 256;
    const size_t ld = (size_t)3 * C;
    const bf16 *kb = k + (size_t)(bh / NH) * T_len * ld + (size_t)(bh % NH) * 64;
    bf16 *ks = sm + STAGES * CH * 8;
    /* chunk i of a tile: key group i / (RUN 32), 16 bytes o = i % (RUN 32) of the run, in sub-tile mt RUN + o / 32 */
    auto above = [&](int nt, int i) { return (STEP & 2) && nt * 4 + i / (RUN * 32) > mt * RUN + i % (RUN * 32) / 32; };
    auto load_k = [&](int nt, int stage) {
        if (KMODE == 1)
            for (int i = (int)threadIdx.x; i < 512; i += NTH)
                zgc_cp_async16(&ks[stage * KST + (i / 8) * 72 + (i % 8) * 8],
                               kb + (size_t)(nt * 64 + i / 8) * ld + (i % 8) * 8);
    };
    auto load = [&](int nt, int stage) {
        if (!(STEP & 1)) load_k(nt, stage);
        for (int i = (int)threadIdx.x; i < CH; i += NTH) {
            int u = i / (RUN * 32), o = i % (RUN * 32);
            if (above(nt, i)) continue;
            if (HINT)
                zgc_cp_async16_l2(&sm[(stage * CH + i) * 8], dsh + (size_t)(nt * 4 + u) * 16 * T_len + (size_t)o * 8);
            else
                zgc_cp_async16(&sm[(stage * CH + i) * 8], dsh + (size_t)(nt * 4 + u) * 16 * T_len + (size_t)o * 8);
        }
        if (STEP & 1) load_k(nt, stage);
    };
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ntiles) load(s, s);
        zgc_cp_commit();
    }
    unsigned acc = 0;
    for (int nt = 0; nt < ntiles; nt++) {
        zgc_cp_wait<STAGES - 2>();
        __syncthreads();
        if (nt + STAGES - 1 < ntiles) load(nt + STAGES - 1, (nt + STAGES - 1) % STAGES);
        zgc_cp_commit();
        if (STEP & 4) {
            for (int i = (int)threadIdx.x; i < CH; i += NTH)
                if (!above(nt, i)) {
                    uint4 v = *reinterpret_cast<const uint4 *>(&sm[((nt % STAGES) * CH + i) * 8]);
                    acc ^= v.x ^ v.y ^ v.z ^ v.w;
                }
        } else
            acc ^= *reinterpret_cast<const unsigned *>(&sm[((nt % STAGES) * CH + threadIdx.x) * 8]);
        if (KMODE) acc ^= *reinterpret_cast<const unsigned *>(&ks[(nt % STAGES) * KST + (threadIdx.x & 63) * 72]);
    }
    zgc_cp_wait<0>();
    if (acc == 0x12345678u) sink[0] = acc;
}
__global__ void __launch_bounds__(256) probe_read_seq(const uint4 *p, size_t n, unsigned *sink) {
    uint4 a = make_uint4(0, 0, 0, 0);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint4 v = p[i];
        a.x ^= v.x, a.y ^= v.y, a.z ^= v.z, a.w ^= v.w;
    }
    if ((a.x ^ a.y ^ a.z ^ a.w) == 0x12345678u) sink[0] = 1;
}

struct probe_form {
    const char *name;
    void *func;
    int rows, threads;
    size_t smem;
    int group; /* 0: v0.27's kernel and grid */
};
template <int W, int S, int MPW = 1, bool HINT = false> static probe_form probe_new(const char *name, int group) {
    return probe_form{name,
                      (void *)zgc_att_dq_kernel<bf16, 64, W, S, MPW, HINT>,
                      16 * W * MPW,
                      32 * W,
                      zgc_dq_smem_bytes<64, W, S, MPW>(),
                      group};
}

/* the median of `runs` timed calls of launch() after `warm` untimed ones, ms (CUDA events) */
template <typename F> static float probe_median_ms(F launch, int warm, int runs, cudaEvent_t e0, cudaEvent_t e1) {
    std::vector<float> ms;
    for (int it = 0; it < warm + runs; it++) {
        CK(cudaEventRecord(e0));
        launch();
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float t;
        CK(cudaEventElapsedTime(&t, e0, e1));
        if (it >= warm) ms.push_back(t);
    }
    CK(cudaGetLastError());
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

int main(int argc, char **argv) {
    /* argv: B (16), timed launches a form (20; 1 under a profiler: no warm-up then) */
    const int B = argc > 1 ? atoi(argv[1]) : 16, NH = 25, T = 1024, HS = 64, C = NH * HS;
    const int runs = argc > 2 ? atoi(argv[2]) : 20, warm = runs > 1 ? 5 : 0;
    const float alpha = 0.125f;
    size_t nds = (size_t)B * NH * T * T, nqkv = (size_t)B * T * 3 * C;
    bf16 *ds, *qkv, *dq;
    CK(cudaMalloc(&ds, nds * 2));
    CK(cudaMalloc(&qkv, nqkv * 2));
    CK(cudaMalloc(&dq, nqkv * 2));
    probe_fill_ds<<<4096, 256>>>(ds, nds, T);
    probe_fill<<<4096, 256>>>(qkv, nqkv);
    CK(cudaMemset(dq, 0, nqkv * 2));
    CK(cudaDeviceSynchronize());
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    size_t tri = (size_t)B * NH * ((size_t)(T / 16) * (T / 16 + 1) / 2) * 512; /* dS bytes at or below the diagonal */
    printf("device %s, B=%d NH=%d T=%d hs=%d: dS lower triangle %.1f MB\n", prop.name, B, NH, T, HS, tri / 1e6);

    std::vector<probe_form> forms = {
        {"v0.27 (4 warps, 3 stages, smem rearranged)", (void *)probe_dq_v027, 64, 128,
         (size_t)(3 * (4096 + 64 * 72) + 2 * 64 * 72) * 2, 0},
        probe_new<4, 3>("movmatrix 4w 3st group 8", 8),
        probe_new<4, 3>("movmatrix 4w 3st group 1", 1),
        probe_new<4, 4>("movmatrix 4w 4st group 8", 8),
        probe_new<8, 3>("movmatrix 8w 3st group 8", 8),
        probe_new<4, 3, 1, true>("movmatrix 4w 3st group 8 L2 hint", 8),
        probe_new<4, 3, 2>("2 m-tiles a warp, 4w 3st group 8", 8),
        probe_new<8, 2, 2>("2 m-tiles a warp, 8w 2st group 8", 8),
    };
    /* the reference: two heads' dS and K on the host, fp64 */
    const int heads[2] = {0, B * NH - 1};
    std::vector<uint16_t> hds((size_t)T * T), hk((size_t)T * 3 * C);
    std::vector<double> ref[2];
    for (int hi = 0; hi < 2; hi++) {
        int bh = heads[hi], b = bh / NH, h = bh % NH;
        CK(cudaMemcpy(hds.data(), ds + (size_t)bh * T * T, (size_t)T * T * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hk.data(), qkv + (size_t)b * T * 3 * C, (size_t)T * 3 * C * 2, cudaMemcpyDeviceToHost));
        auto f = [](uint16_t v) {
            uint32_t u = (uint32_t)v << 16;
            float x;
            memcpy(&x, &u, 4);
            return (double)x;
        };
        std::vector<double> dsf((size_t)T * T, 0.0);
        for (size_t e = 0; e < (size_t)T * T; e++) {
            int key, query;
            probe_ds_pos(e, T, &key, &query);
            if (key <= query) dsf[(size_t)query * T + key] = f(hds[e]);
        }
        ref[hi].assign((size_t)T * HS, 0.0);
        for (int i = 0; i < T; i++)
            for (int j = 0; j <= i; j++) {
                double s = dsf[(size_t)i * T + j];
                const uint16_t *kr = &hk[(size_t)j * 3 * C + C + (size_t)h * HS];
                for (int d = 0; d < HS; d++) ref[hi][(size_t)i * HS + d] += s * f(kr[d]);
            }
    }
    std::vector<uint16_t> first(nqkv), cur(nqkv);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (size_t fi = 0; fi < forms.size(); fi++) {
        probe_form &p = forms[fi];
        CK(cudaFuncSetAttribute(p.func, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)p.smem));
        int occ = 0;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, p.func, p.threads, p.smem));
        dim3 grid =
            p.group == 0 ? dim3((unsigned)(T / p.rows), (unsigned)(B * NH)) : dim3((unsigned)(T / p.rows * B * NH));
        bf16 *kp = qkv + C;
        int nh = NH, bnh = B * NH, tl = T, cc = C, gr = p.group;
        float al = alpha;
        void *args_old[] = {&dq, &ds, &kp, &nh, &tl, &cc, &al},
             *args[] = {&dq, &ds, &kp, &nh, &bnh, &tl, &cc, &gr, &al};
        CK(cudaMemset(dq, 0, nqkv * 2));
        float med = probe_median_ms(
            [&] { CK(cudaLaunchKernel(p.func, grid, dim3(p.threads), p.group == 0 ? args_old : args, p.smem, 0)); },
            warm, runs, e0, e1);
        CK(cudaMemcpy(fi == 0 ? first.data() : cur.data(), dq, nqkv * 2, cudaMemcpyDeviceToHost));
        size_t diff = 0;
        if (fi > 0)
            for (size_t i = 0; i < nqkv; i++) diff += first[i] != cur[i];
        const std::vector<uint16_t> &got = fi == 0 ? first : cur;
        double me = 0.0, mr = 0.0;
        for (int hi = 0; hi < 2; hi++) {
            int bh = heads[hi], b = bh / NH, h = bh % NH;
            for (int i = 0; i < T; i++)
                for (int d = 0; d < HS; d++) {
                    uint32_t u = (uint32_t)got[((size_t)b * T + i) * 3 * C + (size_t)h * HS + d] << 16;
                    float x;
                    memcpy(&x, &u, 4);
                    double r = alpha * ref[hi][(size_t)i * HS + d];
                    me = std::max(me, std::isnan(x) ? INFINITY : fabs(x - r));
                    mr = std::max(mr, fabs(r));
                }
        }
        printf(
            "FORM %-44s %2d blocks/SM  %.4f ms  %6.0f GB/s of dS  differs from the first in %zu values  max err %.3g "
            "of %.3g\n",
            p.name, occ, med, tri / (med * 1e-3) / 1e9, diff, me, mr);
    }
    /* read-only patterns over dS */
    {
        unsigned *sink;
        CK(cudaMalloc(&sink, 4));
        struct {
            const char *name;
            void *f;
            int run, stages, kmode, nth;
        } rd[] = {
            {"read 2 KB runs (4 sub-tiles), 3 stages", (void *)probe_read<4, 3>, 4, 3, 0, 256},
            {"read 2 KB runs, 3 stages, 128 threads", (void *)probe_read<4, 3, false, 0, 128>, 4, 3, 0, 128},
            {"read 2 KB runs + K cp.async, 3 stages", (void *)probe_read<4, 3, false, 1>, 4, 3, 1, 256},
            {"read 2 KB runs + K cp.async, 128 threads", (void *)probe_read<4, 3, false, 1, 128>, 4, 3, 1, 128},
            {"read 2 KB runs, 3 stages, L2::256B hint", (void *)probe_read<4, 3, true>, 4, 3, 0, 256},
            {"read 4 KB runs (8 sub-tiles), 3 stages", (void *)probe_read<8, 3>, 8, 3, 0, 256},
            {"read 8 KB runs (16 sub-tiles), 3 stages", (void *)probe_read<16, 3>, 16, 3, 0, 256},
            {"read 16 KB runs (32 sub-tiles), 2 stages", (void *)probe_read<32, 2>, 32, 2, 0, 256},
            {"read 4 KB runs + K cp.async, 3 stages", (void *)probe_read<8, 3, false, 1>, 8, 3, 1, 256},
            /* from the read pattern towards the dQ kernel's loop (128 threads, K): which step costs its ~20 us */
            {"+ dS copied before K", (void *)probe_read<4, 3, false, 1, 128, 1>, 4, 3, 1, 128},
            {"+ no copy above the diagonal", (void *)probe_read<4, 3, false, 1, 128, 2>, 4, 3, 1, 128},
            {"+ every copy read back", (void *)probe_read<4, 3, false, 1, 128, 4>, 4, 3, 1, 128},
            {"+ all three (the dQ kernel's loads)", (void *)probe_read<4, 3, false, 1, 128, 7>, 4, 3, 1, 128},
        };
        for (auto &x : rd) {
            size_t smb = (size_t)x.stages * (4 * x.run * 512 + (x.kmode ? 64 * 72 * 2 : 0));
            CK(cudaFuncSetAttribute(x.f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smb));
            int occ = 0;
            CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, x.f, x.nth, smb));
            int bnh = B * NH, tl = T, gr = 8, nh = NH, cc = C;
            bf16 *kp = qkv + C;
            void *args[] = {&ds, &bnh, &tl, &gr, &sink, &kp, &nh, &cc};
            float med = probe_median_ms(
                [&] {
                    CK(cudaLaunchKernel(x.f, dim3((unsigned)(T / (16 * x.run) * B * NH)), dim3(x.nth), args, smb, 0));
                },
                warm, runs, e0, e1);
            printf("READ %-44s %2d blocks/SM  %.4f ms  %6.0f GB/s\n", x.name, occ, med, tri / (med * 1e-3) / 1e9);
        }
        float med = probe_median_ms(
            [&] { probe_read_seq<<<prop.multiProcessorCount * 8, 256>>>((const uint4 *)ds, tri / 16, sink); }, warm,
            runs, e0, e1);
        printf("READ %-44s             %.4f ms  %6.0f GB/s\n", "the same bytes straight through", med,
               tri / (med * 1e-3) / 1e9);
    }
    /* the card's rate for the same bytes: a device copy */
    {
        void *a, *b;
        CK(cudaMalloc(&a, tri));
        CK(cudaMalloc(&b, tri));
        float med = probe_median_ms([&] { CK(cudaMemcpyAsync(b, a, tri, cudaMemcpyDeviceToDevice)); }, 5, 10, e0, e1);
        printf("COPY %.1f MB: %.4f ms, %.0f GB/s (read + write)\n", tri / 1e6, med, 2.0 * tri / (med * 1e-3) / 1e9);
    }
    return 0;
}
