/* AdamW over ranges: sharded updates equal the full update, decay only on matrices, matches a scalar
 * reference of torch.optim.AdamW. */
#include "backend/backend.h"
#include "core/error.h"
#include "model/gpt2.h"
#include "train/optimizer.h"
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static zg_backend *g_be;
static gpt2_config g_cfg;
static gpt2_param_table g_tab;

static void fill(float *x, size_t n, uint64_t seed, float scale) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = zt_rand_uniform(&s) * scale;
}

/* Random gradients and two equal copies of random parameters, updated two ways and compared. */
typedef struct {
    float *g, *full, *parts;
} twin_bufs;

static twin_bufs twins_new(size_t n, uint64_t p_seed, uint64_t g_seed) {
    twin_bufs t = {malloc(n * sizeof(float)), malloc(n * sizeof(float)), malloc(n * sizeof(float))};
    fill(t.full, n, p_seed, 0.1f);
    fill(t.g, n, g_seed, 1.0f);
    memcpy(t.parts, t.full, n * sizeof(float));
    return t;
}

static void twins_free(twin_bufs *t) {
    free(t->g);
    free(t->full);
    free(t->parts);
}

static void test_ranges_equal_full(void) {
    size_t n = g_tab.num_params;
    twin_bufs t = twins_new(n, 1, 2);
    float *g = t.g, *full = t.full, *parts = t.parts;
    zg_optimizer_config oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    zg_optimizer o;
    ZT_CHECK(zg_optimizer_init(&o, g_be, &g_tab, 0, n, &oc, ZG_F32, full) == 0);
    for (int s = 0; s < 3; s++) zg_optimizer_step(&o, full, g, 1e-2f, 0.5f);
    zg_optimizer_free(&o);
    /* three ranges with cuts inside tensors (never aligned to the table) */
    size_t cuts[4] = {0, 777, n / 2 + 13, n};
    for (int r = 0; r < 3; r++) {
        zg_optimizer q;
        ZT_CHECK(zg_optimizer_init(&q, g_be, &g_tab, cuts[r], cuts[r + 1], &oc, ZG_F32, parts + cuts[r]) == 0);
        ZT_CHECK(zg_optimizer_count(&q) == cuts[r + 1] - cuts[r]);
        for (int s = 0; s < 3; s++) zg_optimizer_step(&q, parts + cuts[r], g + cuts[r], 1e-2f, 0.5f);
        ZT_CHECK(q.step == 3);
        zg_optimizer_free(&q);
    }
    ZT_CHECK(memcmp(full, parts, n * sizeof(float)) == 0);
    /* an empty range is legal (a rank whose shard is empty) */
    zg_optimizer e;
    ZT_CHECK(zg_optimizer_init(&e, g_be, &g_tab, 5, 5, &oc, ZG_F32, parts) == 0);
    zg_optimizer_step(&e, parts + 5, g + 5, 1e-2f, 1.0f);
    zg_optimizer_free(&e);
    ZT_CHECK(zg_optimizer_init(&e, g_be, &g_tab, 0, n + 1, &oc, ZG_F32, parts) != 0);
    twins_free(&t);
}

/* zg_optimizer_split + step_part over the layer boundaries (ZeRO-2's slot-by-slot update, in the
 * order the forward needs them: embeddings and ln_f first) equals zg_optimizer_step bitwise, on a
 * range that starts and ends inside tensors. */
static void test_parts_equal_step(void) {
    size_t n = g_tab.num_params, b = 333, e = n - 45; /* e: inside the last layer */
    twin_bufs t = twins_new(n, 3, 4);
    float *g = t.g, *full = t.full, *parts = t.parts;
    zg_optimizer_config oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    zg_optimizer o, q;
    ZT_CHECK(zg_optimizer_init(&o, g_be, &g_tab, b, e, &oc, ZG_F32, full + b) == 0);
    ZT_CHECK(zg_optimizer_init(&q, g_be, &g_tab, b, e, &oc, ZG_F32, parts + b) == 0);
    int L = g_cfg.n_layer;
    zg_optimizer_split(&q, g_tab.layer_begin, L + 1);
    for (int s = 0; s < 3; s++) {
        zg_optimizer_step(&o, full + b, g + b, 1e-2f, 0.5f);
        zg_optimizer_step_begin(&q);
        /* ln_f, the embeddings, then the layers, each clipped to the range */
        size_t lo[4 + 8], hi[4 + 8];
        int k = 0;
        lo[k] = g_tab.layer_begin[L], hi[k++] = n;
        lo[k] = 0, hi[k++] = g_tab.layer_begin[0];
        for (int l = 0; l < L; l++) lo[k] = g_tab.layer_begin[l], hi[k++] = g_tab.layer_begin[l + 1];
        for (int i = 0; i < k; i++) {
            size_t x = lo[i] > b ? lo[i] : b, y = hi[i] < e ? hi[i] : e;
            if (x < y) zg_optimizer_step_part(&q, x, y, parts + b, g + b, 1e-2f, 0.5f);
        }
    }
    ZT_CHECK(q.step == 3 && o.step == 3);
    ZT_CHECK(memcmp(full, parts, n * sizeof(float)) == 0);
    ZT_CHECK(memcmp(o.m, q.m, (e - b) * sizeof(float)) == 0 && memcmp(o.v, q.v, (e - b) * sizeof(float)) == 0);
    zg_optimizer_free(&o);
    zg_optimizer_free(&q);
    twins_free(&t);
}

static void test_decay_and_reference(void) {
    size_t n = g_tab.num_params;
    float *p = malloc(n * sizeof(float)), *p_ref = malloc(n * sizeof(float)), *g = calloc(n, sizeof(float));
    fill(p, n, 3, 0.5f);
    memcpy(p_ref, p, n * sizeof(float));
    const gpt2_tensor *w = gpt2_param_table_find(&g_tab, "h.0.attn.c_attn.weight");
    const gpt2_tensor *b = gpt2_param_table_find(&g_tab, "h.0.attn.c_attn.bias");
    const gpt2_tensor *pe = gpt2_param_table_find(&g_tab, "wpe");
    ZT_CHECK(w && b && pe && w->decay && !b->decay && !pe->decay);
    if (!w || !b || !pe) return;
    /* gradient only on one element of the matrix */
    size_t gi = w->offset + 5;
    g[gi] = 0.3f;
    float lr = 1e-2f, wd = 0.1f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    zg_optimizer_config oc = {.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd};
    zg_optimizer o;
    ZT_CHECK(zg_optimizer_init(&o, g_be, &g_tab, 0, n, &oc, ZG_F32, p) == 0);
    double m = 0, v = 0, x = p_ref[gi];
    for (int s = 1; s <= 3; s++) {
        zg_optimizer_step(&o, p, g, lr, 1.0f);
        /* torch.optim.AdamW */
        x -= lr * wd * x;
        m = b1 * m + (1 - b1) * 0.3;
        v = b2 * v + (1 - b2) * 0.09;
        double mh = m / (1 - pow(b1, s)), vh = v / (1 - pow(b2, s));
        x -= lr * mh / (sqrt(vh) + eps);
    }
    ZT_NEAR(p[gi], x, 1e-7, 1e-5);
    /* zero-gradient matrix element: pure decay (1 - lr wd)^3; bias and wpe untouched */
    size_t wj = w->offset + 6;
    ZT_NEAR(p[wj], p_ref[wj] * pow(1 - lr * wd, 3), 1e-7, 1e-5);
    ZT_CHECK(p[b->offset + 1] == p_ref[b->offset + 1]);
    ZT_CHECK(p[pe->offset + 3] == p_ref[pe->offset + 3]);
    zg_optimizer_free(&o);
    free(p);
    free(p_ref);
    free(g);
}

/* DeepSpeed's FusedLamb (csrc/lamb/fused_lamb_cuda_kernel.cu) written out in double per tensor, from
 * the parameter table: moments, u = m / (sqrt(v) + eps) + wd p, the trust ratio ||p|| / ||u|| clamped
 * to [min_coeff, max_coeff] (1 when a norm is 0), step lr sqrt(1 - b2^t) / (1 - b1^t) (lr alone
 * without bias correction). */
static void lamb_reference(double *p, double *m, double *v, const float *g, float gs, int step,
                           const zg_optimizer_config *c) {
    double b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    double step_size = c->no_bias_correction ? c->lr : c->lr * sqrt(1 - pow(b2, step)) / (1 - pow(b1, step));
    for (int t = 0; t < g_tab.n_tensors; t++) {
        const gpt2_tensor *x = &g_tab.tensors[t];
        double wd = x->decay ? c->weight_decay : 0.0, w2 = 0, u2 = 0;
        for (size_t i = x->offset; i < x->offset + x->numel; i++) {
            double gg = (double)g[i] * gs;
            m[i] = b1 * m[i] + (1 - b1) * gg;
            v[i] = b2 * v[i] + (1 - b2) * gg * gg;
            double u = m[i] / (sqrt(v[i]) + eps) + wd * p[i];
            w2 += p[i] * p[i];
            u2 += u * u;
        }
        double coeff = 1.0;
        if (w2 > 0 && u2 > 0) coeff = fmin(fmax(sqrt(w2) / sqrt(u2), c->min_coeff), c->max_coeff);
        for (size_t i = x->offset; i < x->offset + x->numel; i++)
            p[i] -= step_size * coeff * (m[i] / (sqrt(v[i]) + eps) + (x->decay ? c->weight_decay : 0.0) * p[i]);
    }
}

/* The Lamb settings of the tests below (lr large enough that the trust ratio matters). */
static zg_optimizer_config lamb_config(int bias_correction, float min_coeff, float max_coeff) {
    zg_optimizer_config oc = {.lr = 5e-2f,
                              .beta1 = 0.9f,
                              .beta2 = 0.999f,
                              .eps = 1e-6f,
                              .weight_decay = 0.01f,
                              .kind = ZG_OPTIMIZER_LAMB,
                              .no_bias_correction = !bias_correction,
                              .max_coeff = max_coeff,
                              .min_coeff = min_coeff};
    return oc;
}

static void check_lamb(int bias_correction, float min_coeff, float max_coeff) {
    size_t n = g_tab.num_params;
    float *p = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    double *rp = malloc(n * sizeof(double)), *rm = calloc(n, sizeof(double)), *rv = calloc(n, sizeof(double));
    fill(p, n, 11, 0.2f);
    /* one tensor all zero: its trust ratio is 1 (||p|| = 0) */
    const gpt2_tensor *zb = gpt2_param_table_find(&g_tab, "h.1.mlp.c_fc.bias");
    ZT_CHECK(zb != NULL);
    if (zb) memset(p + zb->offset, 0, zb->numel * sizeof(float));
    for (size_t i = 0; i < n; i++) rp[i] = p[i];
    zg_optimizer_config oc = lamb_config(bias_correction, min_coeff, max_coeff);
    zg_optimizer o;
    ZT_CHECK(zg_optimizer_init(&o, g_be, &g_tab, 0, n, &oc, ZG_F32, p) == 0);
    ZT_CHECK(o.n_segs == g_tab.n_tensors); /* one segment per tensor */
    for (int s = 1; s <= 3; s++) {
        fill(g, n, 100 + (uint64_t)s, 1.0f);
        zg_optimizer_step(&o, p, g, oc.lr, 0.5f);
        lamb_reference(rp, rm, rv, g, 0.5f, s, &oc);
    }
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(p[i] - rp[i]) / (fabs(rp[i]) + 1e-3);
        if (d > worst) worst = d;
    }
    ZT_CHECK_MSG(worst < 1e-4, "Lamb vs reference: worst relative difference %g", worst);
    zg_optimizer_free(&o);
    free(p);
    free(g);
    free(rp);
    free(rm);
    free(rv);
}

static void test_lamb(void) {
    check_lamb(1, 0.01f, 10.0f); /* DeepSpeed's defaults: the ratios here (~0.1-0.3) are inside */
    check_lamb(0, 0.01f, 10.0f);
    check_lamb(1, 0.01f, 0.05f); /* the upper clamp binds */
    check_lamb(1, 0.5f, 10.0f);  /* the lower clamp binds */
}

/* bias_correction false (DeepSpeed's FusedAdam): the moments are used as they are. */
static void test_adam_no_bias_correction(void) {
    size_t n = g_tab.num_params;
    float *p = calloc(n, sizeof(float)), *g = calloc(n, sizeof(float));
    const gpt2_tensor *w = gpt2_param_table_find(&g_tab, "h.0.mlp.c_proj.weight");
    ZT_CHECK(w != NULL);
    if (!w) return;
    size_t gi = w->offset + 2;
    p[gi] = 0.4f;
    g[gi] = -0.2f;
    float lr = 1e-2f, wd = 0.1f, b1 = 0.9f, b2 = 0.99f, eps = 1e-8f;
    zg_optimizer_config oc = {
        .lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd, .no_bias_correction = 1};
    zg_optimizer o;
    ZT_CHECK(zg_optimizer_init(&o, g_be, &g_tab, 0, n, &oc, ZG_F32, p) == 0);
    double m = 0, v = 0, x = 0.4;
    for (int s = 1; s <= 3; s++) {
        zg_optimizer_step(&o, p, g, lr, 1.0f);
        x -= lr * wd * x;
        m = b1 * m + (1 - b1) * -0.2;
        v = b2 * v + (1 - b2) * 0.04;
        x -= lr * m / (sqrt(v) + eps);
    }
    ZT_NEAR(p[gi], x, 1e-7, 1e-5);
    zg_optimizer_free(&o);
    free(p);
    free(g);
}

/* ZeRO-Offload's optimizer: the state in host memory, the same update as in backend memory (on the CPU
 * backend both run zg_host_adamw, so the results are bitwise equal), counted as host memory. */
static void test_host_state_equals_backend(void) {
    size_t n = g_tab.num_params;
    twin_bufs t = twins_new(n, 7, 8);
    zg_optimizer_config oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    zg_optimizer o, h;
    size_t host0 = g_be->host_bytes_in_use;
    ZT_CHECK(zg_optimizer_init(&o, g_be, &g_tab, 5, n - 3, &oc, ZG_F32, t.full + 5) == 0);
    ZT_CHECK(zg_optimizer_init_host(&h, g_be, &g_tab, 5, n - 3, &oc, ZG_F32, t.parts + 5, 1) == 0);
    ZT_CHECK(h.host && h.pin && !o.host && !o.pin && !h.master);
    ZT_CHECK(g_be->host_bytes_in_use >= host0 + zg_optimizer_state_bytes(&h));
    for (int s = 0; s < 3; s++) {
        zg_optimizer_step(&o, t.full + 5, t.g + 5, 1e-2f, 0.5f);
        zg_optimizer_step(&h, t.parts + 5, t.g + 5, 1e-2f, 0.5f);
    }
    ZT_CHECK(memcmp(t.full, t.parts, n * sizeof(float)) == 0);
    ZT_CHECK(memcmp(o.m, h.m, (n - 8) * sizeof(float)) == 0 && memcmp(o.v, h.v, (n - 8) * sizeof(float)) == 0);
    zg_optimizer_free(&o);
    zg_optimizer_free(&h);
    ZT_CHECK(g_be->host_bytes_in_use == host0);
    twins_free(&t);
}

/* zg_host_adamw on the offload's dtypes (fp32 master, 16-bit gradients and parameters) against the CUDA
 * kernel's formula written out in fp32 (zgc_adamw_kernel): g = half(grad) * grad_scale; p -= lr wd p;
 * m, v; p -= lr (m / bc1) / (sqrt(v / bc2) + eps); param = round(p). Bitwise: the same fp32 operations
 * in the same order (C11: no FMA contraction), whatever SIMD clone runs. */
static void check_host_adamw(zg_dtype dt) {
    enum { N = 5000 }; /* more than two L1 chunks, not a multiple of one */
    float *master = malloc(N * sizeof(float)), *ref = malloc(N * sizeof(float)), *m = calloc(N, sizeof(float)),
          *v = calloc(N, sizeof(float)), *rm = calloc(N, sizeof(float)), *rv = calloc(N, sizeof(float)),
          *gf = malloc(N * sizeof(float));
    uint16_t *param = malloc(N * sizeof(uint16_t)), *grad = malloc(N * sizeof(uint16_t));
    fill(master, N, 11, 0.5f);
    fill(gf, N, 12, dt == ZG_F16 ? 2.0f : 1.0f);
    memcpy(ref, master, N * sizeof(float));
    for (int i = 0; i < N; i++) grad[i] = dt == ZG_BF16 ? zg_f32_to_bf16(gf[i]) : zg_f32_to_f16(gf[i]);
    zg_segment segs[2] = {{0, 1234, 0.1f}, {1234, N - 1234, 0.0f}};
    float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, gs = 0.25f;
    for (int step = 1; step <= 3; step++) {
        zg_adamw_args a = {.param = param,
                           .master = master,
                           .grad = grad,
                           .m = m,
                           .v = v,
                           .segs = segs,
                           .n_segs = 2,
                           .lr = lr,
                           .beta1 = b1,
                           .beta2 = b2,
                           .eps = eps,
                           .step = step,
                           .grad_scale = gs};
        zg_host_adamw(&a, dt, dt);
        float bc1 = (float)(1.0 - pow(b1, step)), bc2 = (float)(1.0 - pow(b2, step));
        for (int s = 0; s < 2; s++) {
            float decay = lr * segs[s].weight_decay;
            for (size_t i = segs[s].offset; i < segs[s].offset + segs[s].count; i++) {
                float g = (dt == ZG_BF16 ? zg_bf16_to_f32(grad[i]) : zg_f16_to_f32(grad[i])) * gs;
                float p = ref[i] - decay * ref[i];
                rm[i] = b1 * rm[i] + (1.0f - b1) * g;
                rv[i] = b2 * rv[i] + (1.0f - b2) * g * g;
                ref[i] = p - lr * (rm[i] / bc1) / (sqrtf(rv[i] / bc2) + eps);
            }
        }
    }
    int same = memcmp(master, ref, N * sizeof(float)) == 0 && memcmp(m, rm, N * sizeof(float)) == 0 &&
               memcmp(v, rv, N * sizeof(float)) == 0;
    ZT_CHECK(same);
    int rounded = 1;
    for (int i = 0; i < N; i++)
        rounded &= param[i] == (dt == ZG_BF16 ? zg_f32_to_bf16(master[i]) : zg_f32_to_f16(master[i]));
    ZT_CHECK(rounded);
    free(master), free(ref), free(m), free(v), free(rm), free(rv), free(gf), free(param), free(grad);
}

static void test_host_adamw_bf16(void) { check_host_adamw(ZG_BF16); }
static void test_host_adamw_fp16(void) { check_host_adamw(ZG_F16); }

/* Lamb over ZeRO shards of host state (ZeRO-Offload on several ranks): shards cut inside tensors, one
 * of them inside a single tensor. The cut tensors' partial sums added across the "ranks"
 * (zg_optimizer_lamb_partial / _lamb_totals) give the whole-range update within fp32 summation order
 * (the sums add in another order); without the totals each shard's trust ratio would be its part's,
 * which the gradients below (10x larger on wte's first half) make visibly different. */
static void run_lamb_shards(int exchange, float *p, const float *g, int steps, const zg_optimizer_config *oc) {
    size_t n = g_tab.num_params;
    const gpt2_tensor *wte = gpt2_param_table_find(&g_tab, "wte"),
                      *fc = gpt2_param_table_find(&g_tab, "h.0.mlp.c_fc.weight");
    size_t cut[5] = {0, wte->offset + wte->numel / 2, wte->offset + wte->numel * 3 / 4, fc->offset + fc->numel / 3, n};
    zg_optimizer o[4];
    for (int r = 0; r < 4; r++)
        ZT_CHECK(zg_optimizer_init_host(&o[r], g_be, &g_tab, cut[r], cut[r + 1], oc, ZG_F32, p + cut[r], 0) == 0);
    ZT_CHECK(zg_optimizer_lamb_cuts(&o[0]) && zg_optimizer_lamb_cuts(&o[1]) && zg_optimizer_lamb_cuts(&o[3]));
    ZT_CHECK(o[1].cut_tensor[0] == 0 && o[1].cut_tensor[1] == -1); /* inside wte: one cut tensor */
    double *sums = malloc(2 * (size_t)g_tab.n_tensors * sizeof *sums);
    for (int s = 1; s <= steps; s++) {
        memset(sums, 0, 2 * (size_t)g_tab.n_tensors * sizeof *sums);
        for (int r = 0; r < 4; r++) {
            zg_optimizer_step_begin(&o[r]);
            if (exchange) zg_optimizer_lamb_partial(&o[r], p + cut[r], g + cut[r], 0.5f, sums);
        }
        for (int r = 0; r < 4; r++) {
            if (exchange) zg_optimizer_lamb_totals(&o[r], sums);
            zg_optimizer_step_part(&o[r], cut[r], cut[r + 1], p + cut[r], g + cut[r], oc->lr, 0.5f);
        }
    }
    for (int r = 0; r < 4; r++) zg_optimizer_free(&o[r]);
    free(sums);
}

static void test_lamb_host_shards(void) {
    size_t n = g_tab.num_params;
    const gpt2_tensor *wte = gpt2_param_table_find(&g_tab, "wte");
    float *p0 = malloc(n * sizeof(float)), *full = malloc(n * sizeof(float)), *sh = malloc(n * sizeof(float)),
          *loc = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    fill(p0, n, 21, 0.2f);
    fill(g, n, 22, 1.0f);
    for (size_t i = wte->offset; i < wte->offset + wte->numel / 2; i++) g[i] *= 10.0f;
    memcpy(full, p0, n * sizeof(float));
    memcpy(sh, p0, n * sizeof(float));
    memcpy(loc, p0, n * sizeof(float));
    zg_optimizer_config oc = lamb_config(1, 0.0f, 10.0f);
    zg_optimizer f;
    ZT_CHECK(zg_optimizer_init_host(&f, g_be, &g_tab, 0, n, &oc, ZG_F32, full, 0) == 0);
    ZT_CHECK(!zg_optimizer_lamb_cuts(&f));
    for (int s = 0; s < 3; s++) zg_optimizer_step(&f, full, g, oc.lr, 0.5f);
    zg_optimizer_free(&f);
    run_lamb_shards(1, sh, g, 3, &oc);
    run_lamb_shards(0, loc, g, 3, &oc);
    double worst = 0, worst_loc = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(sh[i] - full[i]) / (fabs(full[i]) + 1e-3), dl = fabs(loc[i] - full[i]) / (fabs(full[i]) + 1e-3);
        worst = d > worst ? d : worst;
        worst_loc = dl > worst_loc ? dl : worst_loc;
    }
    ZT_CHECK_MSG(worst < 1e-6, "Lamb over shards with the cut tensors' sums added vs one range: %g", worst);
    ZT_CHECK_MSG(worst_loc > 1e-3, "the shards' own sums should differ visibly (else this test cannot fail): %g",
                 worst_loc);
    free(p0), free(full), free(sh), free(loc), free(g);
}

/* The host Lamb's sums of squares are per block in fixed lanes, then the blocks in order: the result does
 * not depend on the thread count (ZeRO-Offload's delayed update runs with one core fewer), bitwise; bf16
 * parameters are the master rounded, and bf16 gradients act as their fp32 values. */
static void test_lamb_host_threads(void) {
    enum { N = 3 * 2048 + 777 };
    zg_segment segs[2] = {{0, 5000, 0.1f}, {5000, N - 5000, 0.0f}};
    float *p[3], *m[3], *v[3], *gf = malloc(N * sizeof(float));
    uint16_t *g16 = malloc(N * sizeof(uint16_t)), *p16 = malloc(N * sizeof(uint16_t));
    fill(gf, N, 31, 1.0f);
    for (int i = 0; i < N; i++) {
        g16[i] = zg_f32_to_bf16(gf[i]);
        gf[i] = zg_bf16_to_f32(g16[i]);
    }
    int threads[3] = {1, 3, 2}, max = omp_get_max_threads();
    for (int k = 0; k < 3; k++) {
        p[k] = malloc(N * sizeof(float)), m[k] = calloc(N, sizeof(float)), v[k] = calloc(N, sizeof(float));
        fill(p[k], N, 32, 0.3f);
        omp_set_num_threads(threads[k]);
        for (int step = 1; step <= 2; step++) {
            zg_adamw_args a = {.param = k == 2 ? (void *)p16 : (void *)p[k],
                               .master = k == 2 ? p[k] : NULL,
                               .grad = k == 2 ? (const void *)g16 : (const void *)gf,
                               .m = m[k],
                               .v = v[k],
                               .segs = segs,
                               .n_segs = 2,
                               .lr = 1e-2f,
                               .beta1 = 0.9f,
                               .beta2 = 0.999f,
                               .eps = 1e-6f,
                               .step = step,
                               .grad_scale = 0.5f,
                               .lamb = 1,
                               .max_coeff = 10.0f,
                               .min_coeff = 0.0f};
            zg_host_adamw(&a, k == 2 ? ZG_BF16 : ZG_F32, k == 2 ? ZG_BF16 : ZG_F32);
        }
    }
    omp_set_num_threads(max);
    ZT_CHECK(memcmp(p[0], p[1], N * sizeof(float)) == 0 && memcmp(v[0], v[1], N * sizeof(float)) == 0);
    ZT_CHECK(memcmp(p[0], p[2], N * sizeof(float)) == 0 && memcmp(m[0], m[2], N * sizeof(float)) == 0);
    int rounded = 1;
    for (int i = 0; i < N; i++) rounded &= p16[i] == zg_f32_to_bf16(p[2][i]);
    ZT_CHECK(rounded);
    for (int k = 0; k < 3; k++) free(p[k]), free(m[k]), free(v[k]);
    free(gf), free(g16), free(p16);
}

int main(void) {
    zg_backend_config bc = {"cpu", -1, ZG_F32};
    if (zg_backend_create(&g_be, &bc) != 0) {
        zg_error_print();
        return 1;
    }
    memset(&g_cfg, 0, sizeof g_cfg);
    g_cfg.n_layer = 2;
    g_cfg.n_head = 2;
    g_cfg.n_embd = 16;
    g_cfg.block_size = 8;
    g_cfg.vocab_size = 100;
    if (gpt2_config_validate(&g_cfg) != 0 || gpt2_param_table_init(&g_tab, &g_cfg) != 0) {
        zg_error_print();
        return 1;
    }
    zt_run("ranges_equal_full", test_ranges_equal_full);
    zt_run("parts_equal_step", test_parts_equal_step);
    zt_run("decay_and_reference", test_decay_and_reference);
    zt_run("lamb", test_lamb);
    zt_run("adam_no_bias_correction", test_adam_no_bias_correction);
    zt_run("host_state_equals_backend", test_host_state_equals_backend);
    zt_run("host_adamw_bf16", test_host_adamw_bf16);
    zt_run("host_adamw_fp16", test_host_adamw_fp16);
    zt_run("lamb_host_shards", test_lamb_host_shards);
    zt_run("lamb_host_threads", test_lamb_host_threads);
    gpt2_param_table_free(&g_tab);
    zg_backend_destroy(g_be);
    return zt_finish();
}
