/* The SDPA pattern as cuDNN backend-API operation graphs, and the engine config each plan runs on (see
 * attention_cudnn_graph.h; attention_cudnn.cu runs the plans). The node sequence is the one described at the top of
 * attention_cudnn.cu. Built with cuDNN only. */
#include "backend/cuda/cuda_internal.h"

#ifdef ZGPT_WITH_CUDNN

#include "backend/cuda/attention_cudnn_graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZGC_SDPA_MAX_CFG 16 /* engine configs asked of the heuristics at most */

/* Shapes shared by both graphs. */
typedef struct {
    int64_t qkv_dims[4], q_strides[4];   /* Q, V, dQ, dV (and dK) views of (dq)qkv */
    int64_t kt_dims[4], kt_strides[4];   /* K^T (and V^T) views */
    int64_t o_strides[4];                /* O, dO (B,NH,T,hs) in (B,T,C) */
    int64_t s_dims[4], s_strides[4];     /* (B,NH,T,T) scores, row-major */
    int64_t st_strides[4];               /* the same, transposed view */
    int64_t row_dims[4], row_strides[4]; /* (B,NH,T,1) per-row values */
    cudnnDataType_t io;
} zgc_sdpa_shape;

static void zgc_sdpa_shape_init(zgc_sdpa_shape *s, int B, int T, int NH, int hs, zg_dtype dt) {
    int64_t b = B, t = T, h = NH, d = hs, c = (int64_t)NH * hs;
    int64_t qd[4] = {b, h, t, d}, qs[4] = {3 * c * t, d, 3 * c, 1};
    int64_t kd[4] = {b, h, d, t}, ks[4] = {3 * c * t, d, 1, 3 * c};
    int64_t os[4] = {c * t, d, c, 1};
    int64_t sd[4] = {b, h, t, t}, ss[4] = {h * t * t, t * t, t, 1}, sts[4] = {h * t * t, t * t, 1, t};
    int64_t rd[4] = {b, h, t, 1}, rs[4] = {h * t, t, 1, 1};
    memcpy(s->qkv_dims, qd, sizeof(qd)), memcpy(s->q_strides, qs, sizeof(qs));
    memcpy(s->kt_dims, kd, sizeof(kd)), memcpy(s->kt_strides, ks, sizeof(ks));
    memcpy(s->o_strides, os, sizeof(os));
    memcpy(s->s_dims, sd, sizeof(sd)), memcpy(s->s_strides, ss, sizeof(ss)), memcpy(s->st_strides, sts, sizeof(sts));
    memcpy(s->row_dims, rd, sizeof(rd)), memcpy(s->row_strides, rs, sizeof(rs));
    s->io = dt == ZG_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
}

/* masked = (row index >= column index) ? x : -inf, on a (B,NH,T,T) score tensor. */
static int zgc_sdpa_causal_mask(zgc_gb *g, const zgc_sdpa_shape *s, cudnnBackendDescriptor_t x,
                                cudnnBackendDescriptor_t neginf, cudnnBackendDescriptor_t *masked) {
    cudnnBackendDescriptor_t row, col, keep;
    const int64_t *d = s->s_dims, *st = s->s_strides;
    if (zgc_gb_pw_new(g, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, d, st, x, NULL, NULL, 2, &row) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, d, st, x, NULL, NULL, 3, &col) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, d, st, row, col, NULL, -1, &keep) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, d, st, x, neginf, keep, -1, masked))
        return -1;
    return 0;
}

static int zgc_sdpa_graph_fwd(zgc_gb *g, const zgc_sdpa_shape *s) {
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t q, kt, v, o, stats, scale, neginf;
    cudnnBackendDescriptor_t sc, sc1, sm, mx, sub, e, z, lz, p;
    const int64_t *sd = s->s_dims, *ss = s->s_strides, *rd = s->row_dims, *rs = s->row_strides;
    if (zgc_gb_tensor(g, ZGC_UID_Q, s->io, s->qkv_dims, s->q_strides, 0, &q) ||
        zgc_gb_tensor(g, ZGC_UID_K, s->io, s->kt_dims, s->kt_strides, 0, &kt) ||
        zgc_gb_tensor(g, ZGC_UID_V, s->io, s->qkv_dims, s->q_strides, 0, &v) ||
        zgc_gb_tensor(g, ZGC_UID_O, s->io, s->qkv_dims, s->o_strides, 0, &o) ||
        zgc_gb_tensor(g, ZGC_UID_STATS, f32, rd, rs, 0, &stats) || zgc_gb_scalar(g, ZGC_UID_SCALE, &scale) ||
        zgc_gb_scalar(g, ZGC_UID_NEGINF, &neginf))
        return -1;
    if (zgc_gb_mm_new(g, q, kt, sd, ss, &sc) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_MUL, f32, sd, ss, sc, scale, NULL, -1, &sc1) ||
        zgc_sdpa_causal_mask(g, s, sc1, neginf, &sm) || zgc_gb_tensor(g, 0, f32, rd, rs, 0, &mx) ||
        zgc_gb_reduction(g, CUDNN_REDUCE_TENSOR_MAX, sm, mx) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_SUB, f32, sd, ss, sm, mx, NULL, -1, &sub) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_EXP, f32, sd, ss, sub, NULL, NULL, -1, &e) ||
        zgc_gb_tensor(g, 0, f32, rd, rs, 0, &z) || zgc_gb_reduction(g, CUDNN_REDUCE_TENSOR_ADD, e, z) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_LOG, f32, rd, rs, z, NULL, NULL, -1, &lz) ||
        zgc_gb_pointwise(g, CUDNN_POINTWISE_ADD, f32, mx, lz, NULL, stats, -1) ||
        /* the probabilities enter the second product in the I/O type */
        zgc_gb_pw_new(g, CUDNN_POINTWISE_DIV, s->io, sd, ss, e, z, NULL, -1, &p) || zgc_gb_matmul(g, p, v, o))
        return -1;
    return 0;
}

static int zgc_sdpa_graph_bwd(zgc_gb *g, const zgc_sdpa_shape *s) {
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t q, kt, vt, o, dout, stats, dq, dk, dv, scale, neginf, one, dsum;
    cudnnBackendDescriptor_t dod, dodr, sc, sc1, sc2, sm, p, pt, dp, u, w, ds, dst, kr;
    const int64_t *sd = s->s_dims, *ss = s->s_strides, *rd = s->row_dims, *rs = s->row_strides;
    /* dO * O laid out like dO (b, s, h, d order) */
    int64_t t = s->qkv_dims[2], h = s->qkv_dims[1], d = s->qkv_dims[3];
    int64_t prod_strides[4] = {t * h * d, d, h * d, 1};
    /* K viewed back as (B,NH,T,hs) for dQ = dS K */
    int64_t kr_dims[4] = {s->kt_dims[0], s->kt_dims[1], s->kt_dims[3], s->kt_dims[2]};
    int64_t kr_strides[4] = {s->kt_strides[0], s->kt_strides[1], s->kt_strides[3], s->kt_strides[2]};
    if (zgc_gb_tensor(g, ZGC_UID_Q, s->io, s->qkv_dims, s->q_strides, 0, &q) ||
        zgc_gb_tensor(g, ZGC_UID_K, s->io, s->kt_dims, s->kt_strides, 0, &kt) ||
        zgc_gb_tensor(g, ZGC_UID_V, s->io, s->kt_dims, s->kt_strides, 0, &vt) ||
        zgc_gb_tensor(g, ZGC_UID_O, s->io, s->qkv_dims, s->o_strides, 0, &o) ||
        zgc_gb_tensor(g, ZGC_UID_DO, s->io, s->qkv_dims, s->o_strides, 0, &dout) ||
        zgc_gb_tensor(g, ZGC_UID_STATS, f32, rd, rs, 0, &stats) ||
        zgc_gb_tensor(g, ZGC_UID_DQ, s->io, s->qkv_dims, s->q_strides, 0, &dq) ||
        zgc_gb_tensor(g, ZGC_UID_DK, s->io, s->qkv_dims, s->q_strides, 0, &dk) ||
        zgc_gb_tensor(g, ZGC_UID_DV, s->io, s->qkv_dims, s->q_strides, 0, &dv) ||
        zgc_gb_tensor(g, ZGC_UID_DSUM, f32, rd, rs, 0, &dsum) || zgc_gb_scalar(g, ZGC_UID_SCALE, &scale) ||
        zgc_gb_scalar(g, ZGC_UID_NEGINF, &neginf) || zgc_gb_scalar(g, ZGC_UID_ONE, &one))
        return -1;
    /* Dsum = rowsum(dO * O), written to memory (the workspace) */
    if (zgc_gb_pw_new(g, CUDNN_POINTWISE_MUL, f32, s->qkv_dims, prod_strides, dout, o, NULL, -1, &dod) ||
        zgc_gb_tensor(g, 0, f32, rd, rs, 0, &dodr) || zgc_gb_reduction(g, CUDNN_REDUCE_TENSOR_ADD, dod, dodr) ||
        zgc_gb_pointwise(g, CUDNN_POINTWISE_MUL, f32, dodr, one, NULL, dsum, -1))
        return -1;
    /* P = exp(Q K^T * scale - stats), causal */
    if (zgc_gb_mm_new(g, q, kt, sd, ss, &sc) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_MUL, f32, sd, ss, sc, scale, NULL, -1, &sc1) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_SUB, f32, sd, ss, sc1, stats, NULL, -1, &sc2) ||
        zgc_sdpa_causal_mask(g, s, sc2, neginf, &sm) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_EXP, f32, sd, ss, sm, NULL, NULL, -1, &p))
        return -1;
    /* dV = P^T dO */
    if (zgc_gb_tensor(g, 0, s->io, sd, s->st_strides, 0, &pt) || zgc_gb_reshape(g, p, pt) ||
        zgc_gb_matmul(g, pt, dout, dv))
        return -1;
    /* dS = P * (dO V^T - Dsum) * scale */
    if (zgc_gb_mm_new(g, dout, vt, sd, ss, &dp) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_SUB, f32, sd, ss, dp, dsum, NULL, -1, &u) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_MUL, f32, sd, ss, u, p, NULL, -1, &w) ||
        zgc_gb_pw_new(g, CUDNN_POINTWISE_MUL, f32, sd, ss, w, scale, NULL, -1, &ds))
        return -1;
    /* dK = dS^T Q; dQ = dS K (straight into dQ: no fp32 accumulator, no atomics) */
    if (zgc_gb_tensor(g, 0, s->io, sd, s->st_strides, 0, &dst) || zgc_gb_reshape(g, ds, dst) ||
        zgc_gb_matmul(g, dst, q, dk) || zgc_gb_tensor(g, 0, f32, kr_dims, kr_strides, 0, &kr) ||
        zgc_gb_reshape(g, kt, kr) || zgc_gb_matmul(g, ds, kr, dq))
        return -1;
    return 0;
}

/* An engine config's engine (global index) and knob choices (type, value; at most max), through temporary descriptors
 * (the graph's zgc_gb has a fixed budget). The number of knobs read; *engine_idx -1 where unreadable. */
#define ZGC_SDPA_MAX_KNOBS 24 /* knob choices read from an engine config */
static int zgc_sdpa_cfg_knobs(cudnnBackendDescriptor_t cfg, int64_t *engine_idx, int64_t *types, int64_t *values,
                              int max) {
    cudnnBackendDescriptor_t engine = NULL, knobs[ZGC_SDPA_MAX_KNOBS];
    int64_t n = 0, one = 0;
    int made = 0, out = 0;
    *engine_idx = -1;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine) == CUDNN_STATUS_SUCCESS) {
        if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &one,
                                     &engine) == CUDNN_STATUS_SUCCESS)
            (void)cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &one,
                                           engine_idx);
        cudnnBackendDestroyDescriptor(engine);
    }
    for (; made < ZGC_SDPA_MAX_KNOBS; made++)
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR, &knobs[made]) != CUDNN_STATUS_SUCCESS)
            break;
    if (made == ZGC_SDPA_MAX_KNOBS &&
        cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                 ZGC_SDPA_MAX_KNOBS, &n, knobs) == CUDNN_STATUS_SUCCESS)
        for (int64_t k = 0; k < n && k < ZGC_SDPA_MAX_KNOBS && out < max; k++) {
            cudnnBackendKnobType_t type = CUDNN_KNOB_TYPE_COUNTS;
            int64_t value = 0;
            if (cudnnBackendGetAttribute(knobs[k], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &one,
                                         &type) != CUDNN_STATUS_SUCCESS ||
                cudnnBackendGetAttribute(knobs[k], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &one,
                                         &value) != CUDNN_STATUS_SUCCESS)
                continue;
            types[out] = (int64_t)type, values[out] = value, out++;
        }
    for (int k = 0; k < made; k++) cudnnBackendDestroyDescriptor(knobs[k]);
    return out;
}

/* Engine configs taken before the heuristics' order wherever the heuristics offer them (on a GPU of that compute
 * capability major; the engine's global index and one knob choice name the config). The single source of truth for
 * zgpt's own choice; each entry with its measurement. A run's choice depends only on what the heuristics offer, never
 * on a timing, so every run of a checkpoint gets the same engine (bitwise resume). */
static const struct {
    int bwd, cc_major;
    int64_t engine, knob_type, knob_value;
} k_sdpa_prefer[] = {
    /* forward, Hopper: the fused kernel's 64x128 tiles (KERNEL_CFG 7, the first choice of PyTorch 2.11's cuDNN) over
     * cuDNN 9.19's first, the 64x256 tiles (KERNEL_CFG 32): 0.158 against 0.175 ms at XL B=16 back to back, 0.091
     * against 0.095 at 124M (H100; PERFORMANCE.md v0.25, v0.30) */
    {0, 9, 2, CUDNN_KNOB_TYPE_KERNEL_CFG, 7},
};

static int zgc_sdpa_preferred(int bwd, int cc_major, cudnnBackendDescriptor_t cfg) {
    int64_t idx, types[ZGC_SDPA_MAX_KNOBS], values[ZGC_SDPA_MAX_KNOBS];
    int n = -1;
    for (size_t e = 0; e < sizeof(k_sdpa_prefer) / sizeof(k_sdpa_prefer[0]); e++) {
        if (k_sdpa_prefer[e].bwd != bwd || k_sdpa_prefer[e].cc_major != cc_major) continue;
        if (n < 0) n = zgc_sdpa_cfg_knobs(cfg, &idx, types, values, ZGC_SDPA_MAX_KNOBS);
        if (idx != k_sdpa_prefer[e].engine) continue;
        for (int k = 0; k < n; k++)
            if (types[k] == k_sdpa_prefer[e].knob_type && values[k] == k_sdpa_prefer[e].knob_value) return 1;
    }
    return 0;
}

/* ZGPT_SDPA_LIST (the engine survey): one stderr line per engine config the heuristics offer, in their order: its
 * engine's global index and knob choices (type=value, cudnnBackendKnobType_t numbers), and whether k_sdpa_prefer
 * names it. */
static void zgc_sdpa_cfg_print(int bwd, cudnnBackendHeurMode_t mode, int64_t i, cudnnBackendDescriptor_t cfg,
                               int preferred) {
    int64_t idx, types[ZGC_SDPA_MAX_KNOBS], values[ZGC_SDPA_MAX_KNOBS];
    int n = zgc_sdpa_cfg_knobs(cfg, &idx, types, values, ZGC_SDPA_MAX_KNOBS), len = 0;
    char line[400];
    line[0] = '\0';
    for (int k = 0; k < n && len < (int)sizeof(line) - 48; k++)
        len +=
            snprintf(line + len, sizeof(line) - (size_t)len, " %lld=%lld", (long long)types[k], (long long)values[k]);
    fprintf(stderr, "zgpt: cuDNN SDPA %s, heuristics mode %d, config %lld: engine %lld, knobs%s%s\n",
            bwd ? "backward" : "forward", (int)mode, (long long)i, (long long)idx, n ? line : " (none)",
            preferred ? " (zgpt's preferred config)" : "");
}

/* One heuristics query (mode) over a finalized operation graph: the first of its engine configs that is not
 * NONDETERMINISTIC and whose plan finalizes, past the first `skip` such (ZGPT_SDPA_SKIP, A/B runs). skip < 0 (the
 * default): a config of k_sdpa_prefer for this direction and cc_major first where the heuristics offer one, else
 * the first. 0 with the plan, -1 with the reason in `last`. */
static int zgc_sdpa_plan_try(zgc_gb *g, cudnnHandle_t handle, cudnnBackendDescriptor_t graph, int bwd, int cc_major,
                             cudnnBackendHeurMode_t mode, int skip, cudnnBackendDescriptor_t *plan_out, int64_t *ws_out,
                             char *last, size_t last_len) {
    cudnnBackendDescriptor_t heur, cfgs[ZGC_SDPA_MAX_CFG];
    int64_t n_cfg = 0;
    int list = getenv("ZGPT_SDPA_LIST") != NULL;
    if (zgc_gb_new(g, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur)) return -1;
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(heur));
    for (int i = 0; i < ZGC_SDPA_MAX_CFG; i++)
        if (zgc_gb_new(g, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[i])) return -1;
    ZG_CUDNN_CHECK(g, cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                               ZGC_SDPA_MAX_CFG, &n_cfg, cfgs));
    if (n_cfg > ZGC_SDPA_MAX_CFG) n_cfg = ZGC_SDPA_MAX_CFG;
    snprintf(last, last_len, "heuristics mode %d: no engine config", (int)mode);
    /* the order tried: the configs k_sdpa_prefer names (skip < 0 only), then the rest in the heuristics' order */
    int64_t order[ZGC_SDPA_MAX_CFG];
    int preferred[ZGC_SDPA_MAX_CFG], n_order = 0;
    for (int64_t i = 0; i < n_cfg; i++) {
        preferred[i] = skip < 0 && zgc_sdpa_preferred(bwd, cc_major, cfgs[i]);
        if (list) zgc_sdpa_cfg_print(bwd, mode, i, cfgs[i], preferred[i]);
    }
    for (int first = 1; first >= 0; first--)
        for (int64_t i = 0; i < n_cfg; i++)
            if (preferred[i] == first) order[n_order++] = i;
    for (int o = 0; o < n_order; o++) {
        int64_t i = order[o];
        cudnnBackendDescriptor_t engine, plan;
        cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
        int64_t n_engine = 0, n_notes = 0, ws = 0;
        int nondet = 0;
        if (zgc_gb_new(g, CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine)) return -1;
        cudnnStatus_t st = cudnnBackendGetAttribute(cfgs[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                                    1, &n_engine, &engine);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                          CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n_notes, notes);
        if (st != CUDNN_STATUS_SUCCESS) { /* determinism unknown: not taken */
            snprintf(last, last_len, "mode %d config %lld: numerical notes not readable: %s", (int)mode, (long long)i,
                     cudnnGetErrorString(st));
            continue;
        }
        for (int64_t k = 0; k < n_notes && k < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; k++)
            if (notes[k] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) nondet = 1;
        if (nondet) {
            snprintf(last, last_len, "mode %d config %lld is nondeterministic (skipped)", (int)mode, (long long)i);
            continue;
        }
        if (zgc_gb_new(g, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan)) return -1;
        ZG_CUDNN_CHECK(g,
                       cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
        ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]));
        st = cudnnBackendFinalize(plan);
        if (st != CUDNN_STATUS_SUCCESS) {
            snprintf(last, last_len, "%s:%d: cudnnBackendFinalize(plan) failed for mode %d config %lld: %s", __FILE__,
                     __LINE__, (int)mode, (long long)i, cudnnGetErrorString(st));
            continue;
        }
        ZG_CUDNN_CHECK(g, cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                                   &n_engine, &ws));
        if (skip-- > 0) {
            snprintf(last, last_len, "mode %d config %lld skipped (ZGPT_SDPA_SKIP)", (int)mode, (long long)i);
            continue;
        }
        if (list)
            fprintf(stderr, "zgpt: cuDNN SDPA %s, heuristics mode %d: config %lld taken (workspace %lld B)\n",
                    bwd ? "backward" : "forward", (int)mode, (long long)i, (long long)ws);
        *plan_out = plan;
        *ws_out = ws;
        return 0;
    }
    return -1;
}

/* Operation graph -> heuristics mode A (ranked by expected speed), else the fallback list -> a plan. The engine
 * survey's A/B knobs (benchmarks only; a run's choice must not depend on them): zgc_sdpa_env. */
int zgc_sdpa_plan_build(zgc_gb *g, cudnnHandle_t handle, int bwd, int cc_major, cudnnBackendDescriptor_t *plan_out,
                        int64_t *ws_out) {
    cudnnBackendDescriptor_t graph;
    if (zgc_gb_new(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph)) return -1;
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                               g->n_ops, g->ops));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(graph));
    int mode_b = 0, skip = 0;
    (void)zgc_sdpa_env(bwd, &mode_b, &skip); /* checked when the backend was created */
    cudnnBackendHeurMode_t modes[2] = {mode_b ? CUDNN_HEUR_MODE_B : CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    char last[2][200];
    for (int m = 0; m < 2; m++) {
        g->err[0] = '\0';
        if (zgc_sdpa_plan_try(g, handle, graph, bwd, cc_major, modes[m], m == 0 ? skip : -1, plan_out, ws_out, last[m],
                              sizeof(last[m])) == 0)
            return 0;
        if (g->err[0] != '\0') snprintf(last[m], sizeof(last[m]), "%.199s", g->err); /* a checked call failed */
    }
    snprintf(g->err, sizeof(g->err), "no usable cuDNN engine: %.140s; %.140s", last[0], last[1]);
    return -1;
}

int zgc_sdpa_graph_build(zgc_gb *g, int B, int T, int NH, int hs, zg_dtype dt, int bwd) {
    zgc_sdpa_shape shape;
    zgc_sdpa_shape_init(&shape, B, T, NH, hs, dt);
    return bwd ? zgc_sdpa_graph_bwd(g, &shape) : zgc_sdpa_graph_fwd(g, &shape);
}

#endif /* ZGPT_WITH_CUDNN */
