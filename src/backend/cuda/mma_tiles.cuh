/* ldmatrix loads of mma.sync m16n8k16 fragments from padded shared-memory tiles, and movmatrix's transpose in
 * registers (the attention kernels: attention_cuda.cu, attention_dq.cuh). Tiles are row-major with LD elements a row (HS + 8: 16 bytes
 * past a multiple of 128, so the 8 rows of each 8x8 matrix hit distinct banks). */
#ifndef ZG_BACKEND_CUDA_MMA_TILES_CUH
#define ZG_BACKEND_CUDA_MMA_TILES_CUH

#include "backend/cuda/cuda_internal.h"

/* A fragment (16 x k16) from a row-major shared tile: rows row0.., columns k0... One ldmatrix.x4
 * (matrices: rows 0-7 / 8-15 at k0, then at k0+8, the mma A order) instead of four 32-bit loads:
 * the same registers, a quarter of the shared-memory instructions. Rows are LD = HS+8 elements
 * apart (16 bytes past a multiple of 128), so the 8 rows of each matrix hit distinct banks. */
template <int LD, typename T>
__device__ __forceinline__ void zgc_load_a(uint32_t a[4], const T *tile, int row0, int k0, int lane) {
    uint32_t p = (uint32_t)__cvta_generic_to_shared(&tile[(row0 + (lane & 15)) * LD + k0 + (lane >> 4) * 8]);
    ZGC_SM80_ONLY(asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                               : "r"(p)));
}

/* The same A fragment (16 x k16, rows row0.., columns k0..) from a tile stored transposed: tile[k][row], LD
 * elements a k. ldmatrix.x4.trans: each 8x8 matrix is read as 8 k-rows of 8 row-values and handed out
 * transposed, in the mma A order (rows 0-7 / 8-15 at k0, then at k0+8). */
template <int LD, typename T>
__device__ __forceinline__ void zgc_load_a_trans(uint32_t a[4], const T *tile, int row0, int k0, int lane) {
    uint32_t p = (uint32_t)__cvta_generic_to_shared(
        &tile[(k0 + ((lane >> 4) << 3) + (lane & 7)) * LD + row0 + ((lane >> 3) & 1) * 8]);
    ZGC_SM80_ONLY(asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                               : "r"(p)));
}

/* B fragments of two k16 chunks (kk, kk+1) x n8 tile where B(k, n) = tile[n][k] (k contiguous):
 * ldmatrix.x4 (no transpose), rows n0.., columns k0..k0+31. b[0],b[1]: chunk kk; b[2],b[3]: kk+1. */
template <int LD, typename T>
__device__ __forceinline__ void zgc_ldsm_b_x4(uint32_t b[4], const T *tile, int n0, int k0, int lane) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(&tile[(n0 + (lane & 7)) * LD + k0 + (lane >> 3) * 8]);
    ZGC_SM80_ONLY(asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                               : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                               : "r"(a)));
}
/* B fragments of one k16 chunk x two n8 tiles (n0, n0+8) where B(k, n) = tile[k][n] (n contiguous):
 * ldmatrix.x4.trans, rows k0..k0+15. b[0],b[1]: tile n0; b[2],b[3]: tile n0+8. */
template <int LD, typename T>
__device__ __forceinline__ void zgc_ldsm_bt_x4(uint32_t b[4], const T *tile, int k0, int n0, int lane) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(&tile[(k0 + (lane & 15)) * LD + n0 + (lane >> 4) * 8]);
    ZGC_SM80_ONLY(asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                               : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                               : "r"(a)));
}

/* An 8x8 matrix of 16-bit values held one 32-bit register a lane (lane 4r+c: row r, columns 2c, 2c+1: an mma
 * fragment piece), transposed across the warp in registers (movmatrix, sm_75+): lane 4r+c then holds the
 * transpose's row r, i.e. column r's values 2c, 2c+1 of the input. */
__device__ __forceinline__ uint32_t zgc_movmatrix_t(uint32_t x) {
    uint32_t y = 0;
    ZGC_SM80_ONLY(asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x)));
    return y;
}

#endif
