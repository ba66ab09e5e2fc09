// The fixed costs under the decode step's persistent kernel (issue 21, v0.22-v0.23; docs/PERFORMANCE.md), with
// no zgpt code: a grid barrier (cooperative_groups, a counter, a two-level counter) against an empty PDL kernel
// boundary, 240 of each; then 2.95 GB streamed as GPT-2 XL's 192 products are (qkv, proj, fc, fcproj bytes per
// layer): a kernel per product with and without PDL, one kernel for all, one persistent kernel with a barrier
// per product, and through a producer warp's shared-memory ring with consumers behind a counter barrier (the
// design of v0.22's ring kernel, removed in v0.23), its stages dealt three ways (ring_walk). Medians of 10
// timed runs after 2, CUDA events.
// Build and run on the GPU machine: nvcc -O3 -arch=sm_90 -std=c++17 -o /tmp/decode_barrier bench/decode_barrier.cu && /tmp/decode_barrier
#include <cooperative_groups.h>
#include <cstdio>
#include <cuda_runtime.h>
#include <algorithm>
#include <vector>
namespace cg = cooperative_groups;
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } } while (0)

__global__ void __launch_bounds__(256) k_cg(int n, float *sink) {
    float acc = 0;
    for (int i = 0; i < n; i++) { acc += threadIdx.x; cg::this_grid().sync(); }
    if (acc < 0) sink[0] = acc;
}
// monotone counter: one arrival per block, spin on an acquire load
__device__ __forceinline__ unsigned ld_acq(const unsigned *p) {
    unsigned v; asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory"); return v;
}
__device__ __forceinline__ void red_rel(unsigned *p, unsigned v) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" :: "l"(p), "r"(v) : "memory");
}
__global__ void __launch_bounds__(256) k_ctr(int n, unsigned *ctr, float *sink) {
    float acc = 0;
    const unsigned nb = gridDim.x;
    for (int i = 0; i < n; i++) {
        acc += threadIdx.x;
        __syncthreads();
        if (threadIdx.x == 0) {
            red_rel(ctr, 1u);
            const unsigned target = (unsigned)(i + 1) * nb;
            while (ld_acq(ctr) < target) {}
        }
        __syncthreads();
    }
    if (acc < 0) sink[0] = acc;
}
// per-SM arrival: the blocks of an SM-group meet in shared... (not possible across blocks); instead a
// two-level tree: blocks arrive on one of 16 sub-counters, the last of each sub-group arrives on the root
__global__ void __launch_bounds__(256) k_tree(int n, unsigned *ctr, float *sink) {
    float acc = 0;
    const unsigned nb = gridDim.x, G = 16;
    const unsigned g = blockIdx.x % G, gsz = nb / G + (g < nb % G ? 1u : 0u);
    unsigned *root = ctr, *sub = ctr + 32 + 32 * g; // separate 128-byte lines
    for (int i = 0; i < n; i++) {
        acc += threadIdx.x;
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned old = atomicAdd(sub, 1u);
            if (old + 1 == (unsigned)(i + 1) * gsz) red_rel(root, 1u);
            const unsigned target = (unsigned)(i + 1) * G;
            while (ld_acq(root) < target) {}
        }
        __syncthreads();
    }
    if (acc < 0) sink[0] = acc;
}
__global__ void __launch_bounds__(256) k_pdl(float *sink) {
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;");
    if (threadIdx.x == 1234) sink[0] = 1;
}
// a kernel that streams bytes/grid of a buffer (the work of a product), with or without PDL
__global__ void __launch_bounds__(256) k_stream(const int4 *w, size_t n16, float *sink, int pdl) {
    if (pdl) asm volatile("griddepcontrol.wait;" ::: "memory");
    int4 acc = {0, 0, 0, 0};
    for (size_t i = blockIdx.x * 256 + threadIdx.x; i < n16; i += (size_t)gridDim.x * 256) {
        int4 v; asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(w + i));
        acc.x ^= v.x; acc.y ^= v.y; acc.z ^= v.z; acc.w ^= v.w;
    }
    if (pdl) asm volatile("griddepcontrol.launch_dependents;");
    if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x7fffffff) sink[0] = 1;
}
// the same streaming as one persistent kernel, a barrier (cg or counter) between the phases
struct sz4 { size_t n16[4]; };
__global__ void __launch_bounds__(256) k_stream_bar(const int4 *w, sz4 sz, int phases, unsigned *ctr, float *sink, int mode) {
    int4 acc = {0, 0, 0, 0};
    const unsigned nb = gridDim.x;
    const int4 *wp = w;
    for (int p = 0; p < phases; p++) {
        const size_t n16 = sz.n16[p % 4];
        if (p) wp += sz.n16[(p - 1) % 4];
        for (size_t i = blockIdx.x * 256 + threadIdx.x; i < n16; i += (size_t)gridDim.x * 256) {
            int4 v; asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(wp + i));
            acc.x ^= v.x; acc.y ^= v.y; acc.z ^= v.z; acc.w ^= v.w;
        }
        if (mode == 0) cg::this_grid().sync();
        else {
            __syncthreads();
            if (threadIdx.x == 0) { red_rel(ctr, 1u); const unsigned t = (unsigned)(p + 1) * nb; while (ld_acq(ctr) < t) {} }
            __syncthreads();
        }
    }
    if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x7fffffff) sink[0] = 1;
}


// Ring experiment: one block per SM; warp 8 streams the block's 16 KB chunks of every phase into a
// shared-memory ring (cp.async.bulk + mbarrier), never waiting for the grid; warps 0-7 consume each
// phase's chunks after a grid barrier (counter, consumers only). Does a continuous weight stream hide
// the barriers?
#define RING_CHUNK 16384
#define RING_STAGE 16896 // decode_ring.cuh's stage: 8 rows x (2 KB + 64 bytes of padding)
__device__ __forceinline__ void mb_init(uint64_t *b, unsigned n) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"((unsigned)__cvta_generic_to_shared(b)), "r"(n) : "memory"); }
__device__ __forceinline__ void mb_expect(uint64_t *b, unsigned tx) { asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"((unsigned)__cvta_generic_to_shared(b)), "r"(tx) : "memory"); }
__device__ __forceinline__ void mb_arrive(uint64_t *b) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"((unsigned)__cvta_generic_to_shared(b)) : "memory"); }
__device__ __forceinline__ void mb_wait(uint64_t *b, unsigned par) {
    unsigned a = (unsigned)__cvta_generic_to_shared(b);
    asm volatile("{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}\n" :: "r"(a), "r"(par) : "memory");
}
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, unsigned bytes, uint64_t *b) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src), "r"(bytes), "r"((unsigned)__cvta_generic_to_shared(b)) : "memory");
}
// mode 0: a phase's bytes as 16 KB chunks dealt round-robin to the blocks (one copy a stage); modes 1 and 2:
// as decode_ring.cuh deals them, groups of 8 weight rows (K values each: C = 1600, fcproj 6400) round-robin,
// a stage one k segment of a group: 1, 8 copies of up to 2 KB (one per row, the ring kernel's); 2, one copy
// of up to 16 KB of the group's contiguous rows (the same groups and bytes in one copy).
struct ring_walk {
    size_t bytes, rowb, units, segs;
    int mode;
    __device__ ring_walk(size_t b, int k, int m) : bytes(b), rowb((size_t)k * 2), mode(m) {
        if (mode == 0) { units = (bytes + RING_CHUNK - 1) / RING_CHUNK; segs = 1; }
        else { units = bytes / (8 * rowb); segs = mode == 1 ? (rowb + 2047) / 2048 : (8 * rowb + RING_CHUNK - 1) / RING_CHUNK; }
    }
    __device__ unsigned stage_bytes(size_t u, size_t sg) const {
        if (mode == 0) return (unsigned)min((size_t)RING_CHUNK, bytes - u * RING_CHUNK);
        if (mode == 1) return 8 * (unsigned)min((size_t)2048, rowb - sg * 2048);
        return (unsigned)min((size_t)RING_CHUNK, 8 * rowb - sg * RING_CHUNK);
    }
};
__global__ void __launch_bounds__(288, 1) k_ring(const char *w, sz4 sz, int phases, int stages, int mode, unsigned *ctr, float *sink) {
    extern __shared__ __align__(128) char ring[];
    __shared__ uint64_t full[16], empty[16];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nb = gridDim.x, bid = blockIdx.x;
    if (threadIdx.x == 0) {
        for (int i = 0; i < stages; i++) { mb_init(&full[i], 1); mb_init(&empty[i], 8); }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (warp == 8) { // producer
        if (lane == 0) {
            const char *base = w; int slot = 0; unsigned ph = 0;
            for (int p = 0; p < phases; p++) {
                const ring_walk wk(sz.n16[p % 4] * 16, p % 4 == 3 ? 6400 : 1600, mode);
                for (size_t u = bid; u < wk.units; u += nb)
                    for (size_t sg = 0; sg < wk.segs; sg++) {
                        const unsigned n = wk.stage_bytes(u, sg);
                        char *st = ring + (size_t)slot * RING_STAGE;
                        mb_wait(&empty[slot], ph ^ 1); // first pass: passes at once (parity of the phase before)
                        mb_expect(&full[slot], n);
                        if (mode == 0) bulk_g2s(st, base + u * RING_CHUNK, n, &full[slot]);
                        else if (mode == 2) bulk_g2s(st, base + u * 8 * wk.rowb + sg * RING_CHUNK, n, &full[slot]);
                        else for (int r = 0; r < 8; r++) bulk_g2s(st + r * 2112, base + (u * 8 + r) * wk.rowb + sg * 2048, n / 8, &full[slot]);
                        if (++slot == stages) { slot = 0; ph ^= 1; }
                    }
                base += wk.bytes;
            }
        }
        return;
    }
    int4 acc = {0, 0, 0, 0};
    int slot = 0; unsigned ph = 0;
    for (int p = 0; p < phases; p++) {
        if (p > 0) { // grid barrier among the consumers
            asm volatile("bar.sync 1, 256;" ::: "memory");
            if (threadIdx.x == 0) { red_rel(ctr, 1u); const unsigned t = (unsigned)p * nb; while (ld_acq(ctr) < t) {} }
            asm volatile("bar.sync 1, 256;" ::: "memory");
        }
        const ring_walk wk(sz.n16[p % 4] * 16, p % 4 == 3 ? 6400 : 1600, mode);
        for (size_t u = bid; u < wk.units; u += nb)
            for (size_t sg = 0; sg < wk.segs; sg++) {
                const unsigned n = wk.stage_bytes(u, sg);
                mb_wait(&full[slot], ph);
                const int4 *src = reinterpret_cast<const int4 *>(ring + (size_t)slot * RING_STAGE);
                for (unsigned i = threadIdx.x; i < n / 16; i += 256) { int4 v = src[i]; acc.x ^= v.x; acc.y ^= v.y; acc.z ^= v.z; acc.w ^= v.w; }
                __syncwarp();
                if (lane == 0) mb_arrive(&empty[slot]);
                if (++slot == stages) { slot = 0; ph ^= 1; }
            }
    }
    if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x7fffffff) sink[0] = 1;
}

static float med(std::vector<float> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }

int main() {
    int dev = 0, sms = 0; CK(cudaGetDevice(&dev)); CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cudaDeviceProp pr; CK(cudaGetDeviceProperties(&pr, dev));
    printf("device %s, %d SMs\n", pr.name, sms);
    float *sink; unsigned *ctr; CK(cudaMalloc(&sink, 4)); CK(cudaMalloc(&ctr, 4096));
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    const int N = 240;
    for (int bps = 1; bps <= 3; bps++) {
        int grid = bps * sms;
        for (int kind = 0; kind < 3; kind++) {
            std::vector<float> t;
            for (int r = 0; r < 12; r++) {
                CK(cudaMemsetAsync(ctr, 0, 4096, s));
                cudaLaunchConfig_t cfg = {}; cfg.gridDim = grid; cfg.blockDim = 256; cfg.stream = s;
                cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeCooperative; at[0].val.cooperative = 1;
                cfg.attrs = at; cfg.numAttrs = 1;
                int n = N;
                CK(cudaEventRecord(e0, s));
                if (kind == 0) CK(cudaLaunchKernelEx(&cfg, k_cg, n, sink));
                else if (kind == 1) CK(cudaLaunchKernelEx(&cfg, k_ctr, n, ctr, sink));
                else CK(cudaLaunchKernelEx(&cfg, k_tree, n, ctr, sink));
                CK(cudaEventRecord(e1, s)); CK(cudaEventSynchronize(e1));
                float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (r >= 2) t.push_back(ms);
            }
            const char *nm[] = {"cg grid.sync", "counter (red.release + ld.acquire)", "two-level counter (16 groups)"};
            printf("barrier  %-36s %d blocks (%d/SM): %.3f us per barrier (%d in %.3f ms)\n", nm[kind], grid, bps, med(t) * 1000 / N, N, med(t));
        }
    }
    // PDL chain of N empty kernels in a graph, grid 1..3 per SM
    for (int bps = 1; bps <= 3; bps++) {
        for (int pdl = 0; pdl < 2; pdl++) {
            cudaGraph_t g; cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
            for (int i = 0; i < N; i++) {
                cudaLaunchConfig_t cfg = {}; cfg.gridDim = bps * sms; cfg.blockDim = 256; cfg.stream = s;
                cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
                cfg.attrs = at; cfg.numAttrs = pdl;
                CK(cudaLaunchKernelEx(&cfg, k_pdl, sink));
            }
            CK(cudaStreamEndCapture(s, &g)); CK(cudaGraphInstantiate(&ge, g, 0));
            std::vector<float> t;
            for (int r = 0; r < 12; r++) {
                CK(cudaEventRecord(e0, s)); CK(cudaGraphLaunch(ge, s)); CK(cudaEventRecord(e1, s)); CK(cudaEventSynchronize(e1));
                float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (r >= 2) t.push_back(ms);
            }
            printf("boundary empty kernels in a graph, %s, %d blocks: %.3f us per kernel\n", pdl ? "PDL" : "no PDL", bps * sms, med(t) * 1000 / N);
            CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(g));
        }
    }
    // streaming: 192 phases over 48 x 4 slices shaped like GPT-2 XL's products (bytes), per-op vs persistent
    const size_t sizes[4] = {15360000, 5120000, 20480000, 20480000};
    size_t total = 0; for (int l = 0; l < 48; l++) for (int k = 0; k < 4; k++) total += sizes[k];
    int4 *w; CK(cudaMalloc(&w, total)); CK(cudaMemset(w, 1, total));
    for (int bps = 2; bps <= 3; bps++) {
        for (int pdl = 0; pdl < 2; pdl++) {
            cudaGraph_t g; cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
            size_t off = 0;
            for (int l = 0; l < 48; l++) for (int k = 0; k < 4; k++) {
                cudaLaunchConfig_t cfg = {}; cfg.gridDim = bps * sms; cfg.blockDim = 256; cfg.stream = s;
                cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
                cfg.attrs = at; cfg.numAttrs = pdl;
                CK(cudaLaunchKernelEx(&cfg, k_stream, (const int4 *)((char *)w + off), sizes[k] / 16, sink, pdl));
                off += sizes[k];
            }
            CK(cudaStreamEndCapture(s, &g)); CK(cudaGraphInstantiate(&ge, g, 0));
            std::vector<float> t;
            for (int r = 0; r < 12; r++) {
                CK(cudaEventRecord(e0, s)); CK(cudaGraphLaunch(ge, s)); CK(cudaEventRecord(e1, s)); CK(cudaEventSynchronize(e1));
                float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (r >= 2) t.push_back(ms);
            }
            printf("stream   192 products' bytes (%.2f GB), kernel per product, %s, %d blocks: %.3f ms (%.0f GB/s)\n", total / 1e9, pdl ? "PDL" : "no PDL", bps * sms, med(t), total / med(t) / 1e6);
            CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(g));
        }
    }
    // one big kernel reading it all: the streaming ceiling
    {
        std::vector<float> t;
        for (int r = 0; r < 12; r++) {
            CK(cudaEventRecord(e0, s)); k_stream<<<3 * sms, 256, 0, s>>>(w, total / 16, sink, 0); CK(cudaEventRecord(e1, s)); CK(cudaEventSynchronize(e1));
            float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (r >= 2) t.push_back(ms);
        }
        printf("stream   all %.2f GB in one kernel: %.3f ms (%.0f GB/s)\n", total / 1e9, med(t), total / med(t) / 1e6);
    }
    // persistent: equal phases of fc's size (20.48 MB) x 144 = 2.95 GB, barrier between
    for (int bps = 2; bps <= 3; bps++) for (int mode = 0; mode < 2; mode++) {
        sz4 sz; for (int k = 0; k < 4; k++) sz.n16[k] = sizes[k] / 16; const int phases = 192;
        std::vector<float> t;
        for (int r = 0; r < 12; r++) {
            CK(cudaMemsetAsync(ctr, 0, 4096, s));
            cudaLaunchConfig_t cfg = {}; cfg.gridDim = bps * sms; cfg.blockDim = 256; cfg.stream = s;
            cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeCooperative; at[0].val.cooperative = 1;
            cfg.attrs = at; cfg.numAttrs = 1;
            CK(cudaEventRecord(e0, s));
            CK(cudaLaunchKernelEx(&cfg, k_stream_bar, (const int4 *)w, sz, phases, ctr, sink, mode));
            CK(cudaEventRecord(e1, s)); CK(cudaEventSynchronize(e1));
            float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (r >= 2) t.push_back(ms);
        }
        printf("stream   the same 192 phases, one persistent kernel, %s barrier, %d blocks: %.3f ms (%.0f GB/s)\n", mode ? "counter" : "cg", bps * sms, med(t), total / med(t) / 1e6);
    }
    // the ring: one block per SM, stages of 16.5 KB, dealt three ways (ring_walk's modes)
    static const char *mname[3] = {"16 KB chunks, one copy a stage", "8-row groups, 8 copies of 2 KB a stage (the ring kernel's)",
                                   "8-row groups, one copy of 16 KB a stage"};
    for (int mode = 0; mode < 3; mode++)
    for (int stages = 4; stages <= 12; stages += 4) {
        sz4 sz; for (int k = 0; k < 4; k++) sz.n16[k] = sizes[k] / 16;
        size_t smem = (size_t)stages * RING_STAGE;
        CK(cudaFuncSetAttribute(k_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        std::vector<float> t;
        for (int r = 0; r < 12; r++) {
            CK(cudaMemsetAsync(ctr, 0, 4096, s));
            cudaLaunchConfig_t cfg = {}; cfg.gridDim = sms; cfg.blockDim = 288; cfg.stream = s; cfg.dynamicSmemBytes = smem;
            cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeCooperative; at[0].val.cooperative = 1;
            cfg.attrs = at; cfg.numAttrs = 1;
            CK(cudaEventRecord(e0, s));
            CK(cudaLaunchKernelEx(&cfg, k_ring, (const char *)w, sz, 192, stages, mode, ctr, sink));
            CK(cudaEventRecord(e1, s)); CK(cudaEventSynchronize(e1));
            float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (r >= 2) t.push_back(ms);
        }
        printf("ring     192 phases, %s, %d stages ahead, consumers behind a counter barrier, %d blocks: %.3f ms (%.0f GB/s)\n", mname[mode], stages, sms, med(t), total / med(t) / 1e6);
    }
    return 0;
}
