/* Private to the CPU backend: its state and the op functions shared between its files. */
#ifndef ZG_BACKEND_CPU_INTERNAL_H
#define ZG_BACKEND_CPU_INTERNAL_H

#include "backend/backend.h"

typedef struct {
    /* Scratch for attention backward (dP / dS, B*NH*T*T floats) and per-thread reductions. */
    float *scratch;
    size_t scratch_floats;
    int blas_threads_saved; /* OpenBLAS thread count before the backend set it to 1 */
} cpu_state;

/* Returns scratch of at least n floats (grown as needed; contents undefined). */
float *cpu_scratch(zg_backend *be, size_t n);

/* model ops (ops_cpu.c) */
void cpu_encoder_forward(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe, int B,
                         int T, int C);
void cpu_encoder_backward(zg_backend *be, void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B, int T,
                          int C);
void cpu_layernorm_forward(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                           const void *b, int N, int C);
void cpu_layernorm_backward(zg_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *x,
                            const void *y, const void *w, const void *b, const float *mean, const float *rstd, int N,
                            int C, void *dsum_in, void *dsum_out);
void cpu_matmul_forward(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *w, const void *bias,
                        const void *residual, int N, int C, int OC);
void cpu_matmul_backward(zg_backend *be, void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                         const void *w, const void *gelu_inp, int N, int C, int OC, int dw_overwrite);
void cpu_gelu_forward(zg_backend *be, void *out, const void *inp, size_t n);
void cpu_residual_forward(zg_backend *be, void *out, const void *a, const void *b, size_t n);
size_t cpu_attention_stats_bytes(zg_backend *be, int B, int T, int NH);
void cpu_attention_forward(zg_backend *be, void *out, void *stats, const void *qkv, int B, int T, int C, int NH);
void cpu_attention_backward(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                            const void *stats, int B, int T, int C, int NH);
void cpu_attention_forward_cached(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, int B, int Tn,
                                  int pos, int maxT, int C, int NH);
void cpu_classifier(zg_backend *be, float *losses, void *logits, const int32_t *targets, int N, int V, int Vp,
                    float dloss);

/* decode-step ops (decode_cpu.c) and the sample op (sample_cpu.c) */
void cpu_encoder_forward_at(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                            const int32_t *pos, int B, int C);
void cpu_attention_decode(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, const int32_t *pos,
                          int B, int maxT, int C, int NH);
void cpu_decode_advance(zg_backend *be, int32_t *seq, int32_t *tokens, int32_t *pos, const int32_t *ids,
                        const int32_t *plen, int B, int maxT);
void cpu_sample(zg_backend *be, int32_t *ids, const void *logits, const zg_sample_row *rows, const int32_t *counter,
                int B, int V, int Vp);

/* optimizer and buffer ops (optim_cpu.c) */
double cpu_sum_squares(zg_backend *be, const void *buf, zg_dtype dt, size_t n);
void cpu_scale(zg_backend *be, void *buf, zg_dtype dt, size_t n, float s);
void cpu_adamw(zg_backend *be, const zg_adamw_args *a);
void cpu_lamb_sums(zg_backend *be, const zg_adamw_args *a, double *sums);
void cpu_cast(zg_backend *be, void *dst, zg_dtype dst_dt, const void *src, zg_dtype src_dt, size_t n);
void cpu_upload_f32(zg_backend *be, void *dst, zg_dtype dt, const float *src_host, size_t n);
void cpu_download_f32(zg_backend *be, float *dst_host, const void *src, zg_dtype dt, size_t n);
/* The host AdamW's 16-bit conversions (optim_cpu.c) per instruction set, exposed for their exhaustive
 * test against zg_f16_to_f32 / zg_f32_to_f16 / zg_f32_to_bf16 on every set the machine has. The AdamW
 * uses zg_host_isa_best(). */
typedef enum { ZG_HOST_ISA_BASE, ZG_HOST_ISA_AVX2, ZG_HOST_ISA_AVX512, ZG_HOST_ISA_COUNT } zg_host_isa;
int zg_host_isa_supported(zg_host_isa isa);
zg_host_isa zg_host_isa_best(void);
/* n fp16 (bf16: 1) values to fp32, and back with round-to-nearest-even. */
void zg_host_widen16(zg_host_isa isa, float *out, const uint16_t *in, size_t n, int bf16);
void zg_host_narrow16(zg_host_isa isa, uint16_t *out, const float *in, size_t n, int bf16);

#endif
