/* Causal self-attention through cuDNN's fused flash attention (SDPA), built with the cuDNN graph
 * backend API (cudnnBackendCreateDescriptor / SetAttribute / Finalize; no cudnn-frontend).
 *
 * cuDNN 9 recognises the SDPA pattern in an operation graph of matmul, pointwise and reduction nodes
 * and runs it as one fused kernel. The graphs (attention_cudnn_graph.cu) spell that pattern out (the
 * same node sequence cudnn-frontend's "composite" SDPA emits, which is what the fused engines match):
 *   forward:  S = Q K^T * scale; causal mask (row index >= column index, else -inf); M = rowmax(S);
 *             E = exp(S - M); Z = rowsum(E); stats = M + log(Z); O = (E / Z) V
 *   backward: Dsum = rowsum(dO * O); P = exp(Q K^T * scale - stats) (masked); dV = P^T dO;
 *             dS = P * (dO V^T - Dsum) * scale; dK = dS^T Q; dQ = dS K
 * The backward is the form without an fp32 dQ accumulator (dQ written by the matmul itself, the dP
 * workspace form), which is cuDNN's deterministic backward on Hopper; engines whose numerical notes
 * say NONDETERMINISTIC are skipped as well. Bitwise resume needs both.
 *
 * Views into the packed qkv (B,T,3,NH,hs), dims in (b, h, s, d) order, strides in elements:
 *   Q = (B,NH,T,hs) strides (3CT, hs, 3C, 1) at qkv; K^T = (B,NH,hs,T) strides (3CT, hs, 1, 3C) at
 *   qkv + C; V at qkv + 2C like Q; O, dO (B,NH,T,hs) strides (CT, hs, C, 1); dQ/dK/dV like Q, K, V in dqkv.
 *
 * Statistics. The op contract's stats (attention_cuda.cu) are cuDNN's own: per-row natural log-sum-exp of the
 * scaled scores (B,NH,T) fp32, which the graphs write and read as they are (no conversion kernel either way). So
 * either path's forward pairs with either path's backward, and a cuDNN failure in the backward can fall back to
 * our kernels with the same saved state.
 *
 * Plans are built once per (B, T, NH, hs, dtype, direction) and cached with their descriptors; one
 * workspace (the largest plan's, plus the backward's row buffer of D sums) is kept and grown.
 *
 * Fail safe: any failing cuDNN call while building (unsupported graph, no engine, finalize error) or
 * executing, or a workspace that cannot be allocated, prints one line naming the call and status, marks
 * that shape (and direction) as failed, and the caller runs our kernels (so: one line per failing
 * shape, once). ZGPT_ATTENTION=own skips cuDNN, =cudnn asks for it (a build without
 * cuDNN says once that it uses our kernels), =cudnn-fwd uses it for the forward only; unset (or auto) =
 * cuDNN when built with it and the plan builds. */
#include "backend/cuda/cuda_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ZGPT_ATTENTION: which implementation the attention ops use (read at every call, so a benchmark can
 * switch between them in one process). */
/* cudnn-fwd: cuDNN's forward with zgpt's backward (for when cuDNN's deterministic backward is the slower) */
typedef enum { ZGC_ATT_AUTO = 0, ZGC_ATT_CUDNN = 1, ZGC_ATT_OWN = 2, ZGC_ATT_CUDNN_FWD = 3 } zgc_att_path;

static zgc_att_path zgc_att_path_env(void) {
    const char *v = getenv("ZGPT_ATTENTION");
    if (v == NULL || *v == '\0' || strcmp(v, "auto") == 0) return ZGC_ATT_AUTO;
    if (strcmp(v, "cudnn") == 0) return ZGC_ATT_CUDNN;
    if (strcmp(v, "own") == 0) return ZGC_ATT_OWN;
    if (strcmp(v, "cudnn-fwd") == 0) return ZGC_ATT_CUDNN_FWD;
    return (zgc_att_path)-1;
}

#ifndef ZGPT_WITH_CUDNN

struct zgc_cudnn_att {
    int noted;
};

extern "C" long zg_backend_cuda_cudnn_attention_calls(zg_backend *be) {
    (void)be;
    return 0;
}

extern "C" long zg_backend_cuda_cudnn_attention_lent_calls(zg_backend *be) {
    (void)be;
    return 0;
}

extern "C" long zg_backend_cuda_cudnn_attention_dq_calls(zg_backend *be) {
    (void)be;
    return 0;
}

static int zgc_att_cudnn_wanted(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    zgc_att_path p = zgc_att_path_env();
    if (p == ZGC_ATT_CUDNN || p == ZGC_ATT_CUDNN_FWD || p == (zgc_att_path)-1) {
        if (im->att_cudnn == NULL) im->att_cudnn = (zgc_cudnn_att *)zg_calloc(1, sizeof(zgc_cudnn_att));
        if (!im->att_cudnn->noted) {
            im->att_cudnn->noted = 1;
            zg_note("%s", p != (zgc_att_path)-1 ? "ZGPT_ATTENTION=cudnn: this build has no cuDNN (CMake found none, or "
                                                  "ZGPT_CUDNN=OFF); attention runs zgpt's own kernels"
                                                : "ZGPT_ATTENTION: unknown value (use cudnn, cudnn-fwd, own or auto); "
                                                  "attention runs zgpt's own kernels");
        }
    }
    return 0;
}

int zgc_attention_cudnn_forward(zg_backend *be, void *out, float *stats, const void *qkv, int B, int T, int C, int NH) {
    (void)out, (void)stats, (void)qkv, (void)B, (void)T, (void)C, (void)NH;
    return zgc_att_cudnn_wanted(be);
}

int zgc_attention_cudnn_backward(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                                 const float *stats, int B, int T, int C, int NH) {
    (void)dqkv, (void)dout, (void)qkv, (void)out, (void)stats, (void)B, (void)T, (void)C, (void)NH;
    return zgc_att_cudnn_wanted(be);
}

size_t zgc_attention_cudnn_lend_want(zg_backend *be, int B, int T, int C, int NH) {
    (void)be, (void)B, (void)T, (void)C, (void)NH;
    return 0;
}

void zgc_attention_cudnn_destroy(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    free(im->att_cudnn);
    im->att_cudnn = NULL;
}

#else /* ZGPT_WITH_CUDNN */

#include <cuda.h> /* driver types only: the kernel nodes' names come through cudaGetDriverEntryPointByVersion */
#include <cudnn.h>

#include "backend/cuda/attention_cudnn_graph.h"

#define ZGC_SDPA_PLANS 16
#define ZGC_SDPA_DS_OFFSET 128 /* bytes before dS in the deterministic backward's workspace */
/* The backward's graphs kept (zgc_sdpa_rec): one per layer (each its own buffers), so the table grows to what a
 * step uses (48 at XL) up to this many, least recently used dropped past it */
#define ZGC_SDPA_RECS_MAX 8192

typedef struct {
    int used;
    int B, T, NH, hs, bwd;
    zg_dtype dt;
    int ok; /* 1 plan built, 0 build failed (use our kernels for this shape) */
    /* the backward's dQ: 0 not decided yet, 1 zgpt's causal product (checked against cuDNN's at the first call),
     * -1 cuDNN's own (no separate dQ kernel in the plan, the check failed, or the shape does not fit) */
    int dq_state;
    zgc_gb *g;
    cudnnBackendDescriptor_t plan;
    int64_t ws_bytes;
    unsigned long stamp;
} zgc_sdpa_plan;

struct zgc_cudnn_att {
    cudnnHandle_t handle;
    int handle_state; /* 0 not tried, 1 ready, -1 failed */
    int noted;        /* the unknown-ZGPT_ATTENTION line was printed */
    zgc_sdpa_plan plans[ZGC_SDPA_PLANS];
    unsigned long clock;
    void *ws;
    size_t ws_bytes;
    long calls;      /* forward + backward calls cuDNN ran */
    long lent_calls; /* backward calls that ran in the caller's lent memory (ops->scratch_lend) */
    int loan_off;    /* ZGPT_ATT_LOAN=0: the lent memory is not used (a same-call comparison) */
    /* the backward's graphs with zgpt's dQ kernel (zgc_sdpa_rec), one per shape and buffers, least recently
     * used dropped past ZGC_SDPA_RECS_MAX; recorded on a stream of their own. A step asks for them in the same
     * order every time, so a lookup tries the one after the last found (`cursor`) before it searches. */
    struct zgc_sdpa_rec *recs;
    int n_recs, cap_recs, cursor;
    cudaStream_t cap;
    long dq_calls; /* backward calls that ran zgpt's dQ kernel */
};

/* One line per failure; each failure is remembered (the handle, or the plan of that shape and direction),
 * so a line appears once per shape at most, and training (one shape) prints one. */
static void zgc_att_fallback_note(const char *what, int B, int T, int NH, int hs, const char *why) {
    if (B > 0)
        zg_note("cuDNN attention %s (B=%d T=%d NH=%d hs=%d) unavailable, zgpt's kernels run it: %s", what, B, T, NH, hs,
                why);
    else
        zg_note("cuDNN attention %s failed, zgpt's kernels run attention: %s", what, why);
}

static zgc_cudnn_att *zgc_att_state(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    if (im->att_cudnn == NULL) im->att_cudnn = (zgc_cudnn_att *)zg_calloc(1, sizeof(zgc_cudnn_att));
    zgc_cudnn_att *st = im->att_cudnn;
    if (st->handle_state == 0) {
        cudnnStatus_t s = cudnnCreate(&st->handle);
        if (s == CUDNN_STATUS_SUCCESS) s = cudnnSetStream(st->handle, im->stream);
        st->handle_state = s == CUDNN_STATUS_SUCCESS ? 1 : -1;
        const char *loan = getenv("ZGPT_ATT_LOAN");
        st->loan_off = loan != NULL && strcmp(loan, "0") == 0;
        if (s != CUDNN_STATUS_SUCCESS) {
            char why[200];
            snprintf(why, sizeof(why), "cudnnCreate/cudnnSetStream failed: %s", cudnnGetErrorString(s));
            zgc_att_fallback_note("setup", 0, 0, 0, 0, why);
        }
    }
    return st;
}

struct zgc_sdpa_rec;
static void zgc_sdpa_recs_drop(zgc_cudnn_att *st, const zgc_sdpa_plan *p);

/* The cached plan for this shape, built on first use; NULL when cuDNN cannot run it. */
static zgc_sdpa_plan *zgc_sdpa_plan_get(zg_backend *be, zgc_cudnn_att *st, int B, int T, int NH, int hs, int bwd) {
    zg_dtype dt = be->act_dtype;
    zgc_sdpa_plan *slot = NULL;
    for (int i = 0; i < ZGC_SDPA_PLANS; i++) {
        zgc_sdpa_plan *p = &st->plans[i];
        if (p->used && p->B == B && p->T == T && p->NH == NH && p->hs == hs && p->bwd == bwd && p->dt == dt) {
            p->stamp = ++st->clock;
            return p->ok ? p : NULL;
        }
    }
    for (int i = 0; i < ZGC_SDPA_PLANS; i++) /* a free slot, else the least recently used */
        if (slot == NULL || !st->plans[i].used || (slot->used && st->plans[i].stamp < slot->stamp))
            slot = &st->plans[i];
    if (slot->used) {
        zgc_gb_free(slot->g);
        zgc_sdpa_recs_drop(st, slot);
    }
    memset(slot, 0, sizeof(*slot));
    slot->used = 1, slot->B = B, slot->T = T, slot->NH = NH, slot->hs = hs, slot->bwd = bwd, slot->dt = dt;
    slot->stamp = ++st->clock;
    slot->g = (zgc_gb *)zg_calloc(1, sizeof(zgc_gb));
    slot->g->next_uid = ZGC_UID_VIRTUAL;
    int rc = zgc_sdpa_graph_build(slot->g, B, T, NH, hs, dt, bwd);
    if (rc == 0)
        rc = zgc_sdpa_plan_build(slot->g, st->handle, bwd, zgc_get(be)->cc_major, &slot->plan, &slot->ws_bytes);
    if (rc != 0) {
        zgc_att_fallback_note(bwd ? "backward" : "forward", B, T, NH, hs, slot->g->err);
        zgc_gb_free(slot->g);
        slot->g = NULL;
        return NULL; /* remembered as failed (ok = 0) */
    }
    slot->ok = 1;
    return slot;
}

/* The backward's workspace in the caller's lent memory (the model's dead logits: backend.h,
 * scratch_lend) when it holds `bytes` on a 256-byte boundary; NULL otherwise (the own workspace then). */
static void *zgc_sdpa_lent(zg_backend *be, zgc_cudnn_att *st, size_t bytes) {
    zgc_impl *im = zgc_get(be);
    if (st->loan_off || im->loan == NULL || im->loan_bytes < bytes || ((uintptr_t)im->loan & 255) != 0) return NULL;
    st->lent_calls++;
    return im->loan;
}

/* The workspace: the plan's bytes (256-aligned), then what the backward keeps beside it. */
static void *zgc_sdpa_workspace(zg_backend *be, zgc_cudnn_att *st, size_t bytes) {
    if (bytes <= st->ws_bytes && st->ws != NULL) return st->ws;
    if (st->ws != NULL) be->ops->dealloc(be, st->ws);
    st->ws = NULL, st->ws_bytes = 0;
    void *p = be->ops->alloc(be, bytes, "cuDNN attention workspace");
    if (p == NULL) return NULL;
    st->ws = p, st->ws_bytes = bytes;
    return p;
}

static int zgc_sdpa_usable(zg_backend *be, int C, int NH, const void *a, const void *b, const void *c, const void *d) {
    if (be->act_dtype != ZG_BF16 && be->act_dtype != ZG_F16) return 0; /* fp32 stays on our kernels */
    if (NH <= 0 || C % NH != 0) return 0;
    int hs = C / NH;
    if (hs % 8 != 0 || hs > 128) return 0;
    if ((((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) & 15) != 0) return 0;
    return 1;
}

static int zgc_sdpa_wanted(zg_backend *be, int bwd) {
    zgc_att_path p = zgc_att_path_env();
    if (p == ZGC_ATT_OWN || (p == ZGC_ATT_CUDNN_FWD && bwd)) return 0;
    if (p == (zgc_att_path)-1) {
        zgc_cudnn_att *st = zgc_att_state(be);
        if (!st->noted) {
            st->noted = 1;
            zg_note("ZGPT_ATTENTION: unknown value (use cudnn, cudnn-fwd, own or auto); attention runs zgpt's "
                    "own kernels");
        }
        return 0;
    }
    return 1;
}

/* Runs a plan with uids[i] -> ptrs[i]; 0 on success, else a one-line reason in why. */
static int zgc_sdpa_execute(zgc_cudnn_att *st, zgc_sdpa_plan *p, int n, int64_t *uids, void **ptrs, void *ws, char *why,
                            size_t why_len) {
    zgc_gb g;
    g.n = 0, g.n_ops = 0, g.err[0] = '\0';
    cudnnBackendDescriptor_t pack;
    int rc = -1;
    if (zgc_gb_new(&g, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack)) goto cleanup;
    {
        cudnnStatus_t s = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
        if (s == CUDNN_STATUS_SUCCESS)
            s = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
        if (s == CUDNN_STATUS_SUCCESS)
            s = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
        if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(pack);
        if (s != CUDNN_STATUS_SUCCESS) {
            snprintf(g.err, sizeof(g.err), "%s:%d: variant pack: %s", __FILE__, __LINE__, cudnnGetErrorString(s));
            goto cleanup;
        }
        s = cudnnBackendExecute(st->handle, p->plan, pack);
        if (s != CUDNN_STATUS_SUCCESS) {
            snprintf(g.err, sizeof(g.err), "%s:%d: cudnnBackendExecute failed: %s", __FILE__, __LINE__,
                     cudnnGetErrorString(s));
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    if (rc != 0) snprintf(why, why_len, "%s", g.err);
    for (int i = g.n - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(g.d[i]);
    return rc;
}

static size_t zgc_align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* The masked-out score: -inf from cuDNN 9.10 on, the lowest finite float before (what those versions'
 * softmax handles). */
static float zgc_sdpa_mask_value(void) { return cudnnGetVersion() >= 91000 ? -INFINITY : -3.402823466e38f; }

int zgc_attention_cudnn_forward(zg_backend *be, void *out, float *stats, const void *qkv, int B, int T, int C, int NH) {
    if (!zgc_sdpa_wanted(be, 0) || !zgc_sdpa_usable(be, C, NH, out, qkv, qkv, stats)) return 0;
    zgc_cudnn_att *st = zgc_att_state(be);
    if (st->handle_state != 1) return 0;
    int hs = C / NH;
    zgc_sdpa_plan *p = zgc_sdpa_plan_get(be, st, B, T, NH, hs, 0);
    if (p == NULL) return 0;
    void *ws = zgc_sdpa_workspace(be, st, zgc_align256((size_t)p->ws_bytes) + 256);
    if (ws == NULL) {
        zgc_att_fallback_note("forward", B, T, NH, hs, zg_error_message());
        p->ok = 0;
        return 0;
    }
    size_t es = zg_dtype_size(be->act_dtype);
    float scale = 1.f / sqrtf((float)hs), neginf = zgc_sdpa_mask_value();
    int64_t uids[] = {ZGC_UID_Q, ZGC_UID_K, ZGC_UID_V, ZGC_UID_O, ZGC_UID_STATS, ZGC_UID_SCALE, ZGC_UID_NEGINF};
    void *ptrs[] = {(void *)qkv, (char *)qkv + (size_t)C * es, (char *)qkv + 2 * (size_t)C * es, out, stats, &scale,
                    &neginf};
    char why[400];
    if (zgc_sdpa_execute(st, p, (int)(sizeof uids / sizeof uids[0]), uids, ptrs, ws, why, sizeof(why))) {
        zgc_att_fallback_note("forward", B, T, NH, hs, why);
        p->ok = 0;
        return 0;
    }
    st->calls++;
    return 1;
}

/* ---- the backward as a graph with zgpt's dQ kernel -------------------------------------------------------
 *
 * cuDNN's deterministic backward runs, in this order, the D sums, the main kernel (dK, dV, and dS into the
 * workspace) and `matmul_dq`, which reads the whole dS (B,NH,T,T) to compute dQ = dS K: at GPT-2 XL B=16 838 MB,
 * 263 us a layer on an H100 (PERFORMANCE.md v0.26), twice the bytes of the causal half. cuDNN runs a plan whole,
 * so the backward is recorded (captured on a stream of its own, nothing runs), the `matmul_dq` node's kernel is
 * replaced by attention_dq_cuda.cu's, and the graph runs instead of the plan: launched directly, or added as a
 * child node while the compute stream records (the model's step graph), so that a micro-step run op by op and a
 * recorded one run the same kernels and give the same bits. One graph per (shape, buffers), kept.
 *
 * The workspace's layout is cuDNN's, not a documented interface: the first call of each shape runs cuDNN's own
 * graph and then the edited one on the same inputs and compares their dQ (max |difference| <= 2^-6 of max |dQ|,
 * against differences of O(1) for a misread layout); a shape that fails keeps cuDNN's product, with one line. */

typedef struct zgc_sdpa_rec {
    const zgc_sdpa_plan *plan;
    const void *ptr[6]; /* qkv, out, dout, stats, dqkv, workspace */
    unsigned long stamp;
    cudaGraph_t graph; /* edited, kept to be added as a child node */
    cudaGraphExec_t exec;
} zgc_sdpa_rec;

/* a graph and its instance, either NULL */
static void zgc_sdpa_graph_free(cudaGraph_t g, cudaGraphExec_t exec) {
    if (exec != NULL) ZG_CUDA_CHECK(cudaGraphExecDestroy(exec));
    if (g != NULL) ZG_CUDA_CHECK(cudaGraphDestroy(g));
}

static void zgc_sdpa_rec_free(zgc_sdpa_rec *r) {
    zgc_sdpa_graph_free(r->graph, r->exec);
    memset(r, 0, sizeof(*r));
}

/* every record of this plan's graphs (the plan's slot is reused, or its dQ goes back to cuDNN's) */
static void zgc_sdpa_recs_drop(zgc_cudnn_att *st, const zgc_sdpa_plan *p) {
    int k = 0;
    for (int i = 0; i < st->n_recs; i++) {
        if (st->recs[i].plan == p)
            zgc_sdpa_rec_free(&st->recs[i]);
        else
            st->recs[k++] = st->recs[i];
    }
    st->n_recs = k;
}

/* The kernel node named like cuDNN's dQ product (the one node whose name holds "matmul_dq"); NULL when there is
 * not exactly one, or the driver cannot name kernels (why says which). */
static cudaGraphNode_t zgc_sdpa_dq_node(cudaGraph_t g, char *why, size_t why_len) {
    typedef CUresult (*params_fn)(CUgraphNode, CUDA_KERNEL_NODE_PARAMS *);
    typedef CUresult (*fname_fn)(const char **, CUfunction);
    typedef CUresult (*kname_fn)(const char **, CUkernel);
    void *pp = NULL, *pf = NULL, *pk = NULL;
    cudaDriverEntryPointQueryResult q1, q2, q3;
    if (cudaGetDriverEntryPointByVersion("cuGraphKernelNodeGetParams", &pp, 12000, cudaEnableDefault, &q1) !=
            cudaSuccess ||
        cudaGetDriverEntryPointByVersion("cuFuncGetName", &pf, 12030, cudaEnableDefault, &q2) != cudaSuccess ||
        cudaGetDriverEntryPointByVersion("cuKernelGetName", &pk, 12030, cudaEnableDefault, &q3) != cudaSuccess ||
        pp == NULL || pf == NULL || pk == NULL) {
        (void)cudaGetLastError();
        snprintf(why, why_len, "the driver cannot name a graph's kernels (cuFuncGetName needs CUDA 12.3+)");
        return NULL;
    }
    size_t n = 0;
    ZG_CUDA_CHECK(cudaGraphGetNodes(g, NULL, &n));
    cudaGraphNode_t *nodes = (cudaGraphNode_t *)zg_calloc(n > 0 ? n : 1, sizeof(cudaGraphNode_t)), found = NULL;
    ZG_CUDA_CHECK(cudaGraphGetNodes(g, nodes, &n));
    int hits = 0;
    char names[160] = "";
    for (size_t i = 0; i < n; i++) {
        cudaGraphNodeType t;
        ZG_CUDA_CHECK(cudaGraphNodeGetType(nodes[i], &t));
        if (t != cudaGraphNodeTypeKernel) continue;
        CUDA_KERNEL_NODE_PARAMS kp;
        memset(&kp, 0, sizeof kp);
        const char *name = NULL;
        if (((params_fn)pp)((CUgraphNode)nodes[i], &kp) != CUDA_SUCCESS) continue;
        if (kp.func != NULL)
            (void)((fname_fn)pf)(&name, kp.func);
        else if (kp.kern != NULL)
            (void)((kname_fn)pk)(&name, kp.kern);
        if (name == NULL) continue;
        size_t used = strlen(names);
        snprintf(names + used, sizeof(names) - used, "%s%.40s", used ? ", " : "", name);
        if (strstr(name, "matmul_dq") != NULL) hits++, found = nodes[i];
    }
    free(nodes);
    if (hits != 1) {
        snprintf(why, why_len, "%d kernels named matmul_dq in cuDNN's backward (its kernels: %s)", hits, names);
        return NULL;
    }
    return found;
}

/* Records the plan's backward on st->cap. 0 with *g, else -1 with why. */
static int zgc_sdpa_capture(zg_backend *be, zgc_cudnn_att *st, zgc_sdpa_plan *p, int n, int64_t *uids, void **ptrs,
                            void *ws, cudaGraph_t *g, char *why, size_t why_len) {
    zgc_impl *im = zgc_get(be);
    *g = NULL;
    if (st->cap == NULL) ZG_CUDA_CHECK(cudaStreamCreateWithFlags(&st->cap, cudaStreamNonBlocking));
    cudnnStatus_t cs = cudnnSetStream(st->handle, st->cap);
    if (cs != CUDNN_STATUS_SUCCESS) {
        snprintf(why, why_len, "cudnnSetStream failed: %s", cudnnGetErrorString(cs));
        return -1;
    }
    cudaError_t e = cudaStreamBeginCapture(st->cap, cudaStreamCaptureModeRelaxed);
    int rc = e == cudaSuccess ? zgc_sdpa_execute(st, p, n, uids, ptrs, ws, why, why_len) : -1;
    if (e != cudaSuccess)
        snprintf(why, why_len, "cudaStreamBeginCapture failed: %s", cudaGetErrorString(e));
    else {
        cudaError_t e2 = cudaStreamEndCapture(st->cap, g);
        if (rc == 0 && (e2 != cudaSuccess || *g == NULL)) {
            snprintf(why, why_len, "recording cuDNN's backward failed: %s", cudaGetErrorString(e2));
            rc = -1;
        }
    }
    (void)cudaGetLastError();
    cs = cudnnSetStream(st->handle, im->stream); /* every later cuDNN call runs on the compute stream again */
    if (cs != CUDNN_STATUS_SUCCESS)
        zg_fatal_at(__FILE__, __LINE__, "cudnnSetStream failed: %s", cudnnGetErrorString(cs));
    if (rc != 0) {
        zgc_sdpa_graph_free(*g, NULL);
        *g = NULL;
    }
    return rc;
}

/* Runs a record's graph on the compute stream s: launched, or added to the graph the stream is recording. */
static void zgc_sdpa_rec_run(cudaStream_t s, const zgc_sdpa_rec *r) {
    cudaStreamCaptureStatus cs;
    ZG_CUDA_CHECK(cudaStreamIsCapturing(s, &cs));
    if (cs == cudaStreamCaptureStatusNone) {
        ZG_CUDA_CHECK(cudaGraphLaunch(r->exec, s));
        return;
    }
    if (cs != cudaStreamCaptureStatusActive) return; /* a recording already failed: its end says so */
    cudaGraph_t outer;
    const cudaGraphNode_t *deps = NULL;
    const cudaGraphEdgeData *edges = NULL;
    size_t nd = 0;
    ZG_CUDA_CHECK(cudaStreamGetCaptureInfo(s, &cs, NULL, &outer, &deps, &edges, &nd));
    /* (its C++ default constructor is deleted: a union of node kinds) */
    alignas(cudaGraphNodeParams) unsigned char raw[sizeof(cudaGraphNodeParams)];
    memset(raw, 0, sizeof raw);
    cudaGraphNodeParams *np = reinterpret_cast<cudaGraphNodeParams *>(raw);
    np->type = cudaGraphNodeTypeGraph;
    np->graph.graph = r->graph; /* cloned into the node */
    cudaGraphNode_t node;
    ZG_CUDA_CHECK(cudaGraphAddNode(&node, outer, deps, edges, nd, np));
    ZG_CUDA_CHECK(cudaStreamUpdateCaptureDependencies(s, &node, NULL, 1, cudaStreamSetCaptureDependencies));
}

/* The record for these buffers, made (and at the plan's first call checked) when missing; NULL when cuDNN's own
 * plan must run (p->dq_state then -1, said once). The first call of a plan has run the backward already when it
 * returns a record (*ran = 1). */
static zgc_sdpa_rec *zgc_sdpa_rec_get(zg_backend *be, zgc_cudnn_att *st, zgc_sdpa_plan *p, int n, int64_t *uids,
                                      void **ptrs, void *ws, size_t ws_used, void *dqkv, int B, int T, int C, int NH,
                                      int *ran) {
    zgc_impl *im = zgc_get(be);
    size_t es = zg_dtype_size(be->act_dtype);
    const void *key[6] = {ptrs[0], ptrs[3], ptrs[4], ptrs[5], dqkv, ws};
    *ran = 0;
    for (int k = 0; k < st->n_recs; k++) {
        int i = (st->cursor + 1 + k) % st->n_recs;
        if (st->recs[i].plan == p && memcmp(st->recs[i].ptr, key, sizeof key) == 0) {
            st->recs[i].stamp = ++st->clock;
            st->cursor = i;
            return &st->recs[i];
        }
    }
    char why[400] = "";
    cudaGraph_t g = NULL, orig = NULL;
    cudaGraphExec_t exec = NULL, exec_orig = NULL;
    cudaGraphNode_t node;
    cudaStreamCaptureStatus cs;
    ZG_CUDA_CHECK(cudaStreamIsCapturing(im->stream, &cs));
    if (p->dq_state == 0 && cs != cudaStreamCaptureStatusNone) {
        snprintf(why, sizeof why, "its first call came while the step was being recorded, with nothing to check on");
        goto off;
    }
    if (zgc_sdpa_capture(be, st, p, n, uids, ptrs, ws, &g, why, sizeof why)) goto off;
    if ((node = zgc_sdpa_dq_node(g, why, sizeof why)) == NULL) goto off;
    if (p->dq_state == 0) {
        ZG_CUDA_CHECK(cudaGraphClone(&orig, g));
        ZG_CUDA_CHECK(cudaGraphInstantiate(&exec_orig, orig, 0));
    }
    {
        zgc_att_dq a;
        cudaKernelNodeParams kp;
        /* dS starts 128 bytes into the workspace (PERFORMANCE.md v0.27: cuDNN 9's layout, checked below) */
        a.dq = dqkv, a.ds = (const char *)ws + ZGC_SDPA_DS_OFFSET, a.k = (const char *)ptrs[0] + (size_t)C * es;
        a.NH = NH, a.T = T, a.C = C, a.alpha = 1.f;
        zgc_att_dq_node(be, &a, B, &kp);
        cudaError_t e = cudaGraphKernelNodeSetParams(node, &kp);
        if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, g, 0);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            snprintf(why, sizeof why, "replacing cuDNN's dQ kernel in its graph failed: %s", cudaGetErrorString(e));
            goto off;
        }
    }
    if (p->dq_state == 0) {
        /* the check: cuDNN's graph, its dQ kept aside, then the edited one on the same inputs */
        size_t rows = (size_t)B * T, need = rows * C * es;
        /* cuDNN's dQ kept in the rest of lent memory when it holds it (the peak does not move), else allocated */
        int in_loan = ws == im->loan && im->loan_bytes >= ws_used + need;
        void *ref = in_loan ? (char *)ws + ws_used : be->ops->alloc(be, need, "attention dQ check");
        if (ref == NULL) {
            snprintf(why, sizeof why, "no memory for the first call's check (%s)", zg_error_message());
            goto off;
        }
        ZG_CUDA_CHECK(cudaGraphLaunch(exec_orig, im->stream));
        ZG_CUDA_CHECK(
            cudaMemcpy2DAsync(ref, C * es, dqkv, 3 * C * es, C * es, rows, cudaMemcpyDeviceToDevice, im->stream));
        ZG_CUDA_CHECK(cudaGraphLaunch(exec, im->stream));
        float md, mr;
        zgc_att_dq_compare(be, dqkv, 3 * (size_t)C, ref, (size_t)C, (int)rows, C, &md, &mr);
        if (!in_loan) be->ops->dealloc(be, ref);
        *ran = 1;
        if (!(md <= mr * (1.f / 64.f))) {
            snprintf(why, sizeof why,
                     "zgpt's dQ over cuDNN's workspace differs from cuDNN's own (max |difference| %.3g, max |dQ| "
                     "%.3g): this cuDNN lays its workspace out otherwise",
                     md, mr);
            ZG_CUDA_CHECK(cudaGraphLaunch(exec_orig, im->stream)); /* the call's result is cuDNN's */
            goto off;
        }
        p->dq_state = 1;
    }
    zgc_sdpa_graph_free(orig, exec_orig);
    {
        zgc_sdpa_rec *r = NULL;
        if (st->n_recs == st->cap_recs && st->cap_recs < ZGC_SDPA_RECS_MAX) {
            st->cap_recs = st->cap_recs > 0 ? 2 * st->cap_recs : 64;
            st->recs = (zgc_sdpa_rec *)zg_realloc(st->recs, (size_t)st->cap_recs * sizeof(zgc_sdpa_rec));
        }
        if (st->n_recs < st->cap_recs) {
            r = &st->recs[st->n_recs++];
        } else { /* the least recently used */
            r = &st->recs[0];
            for (int i = 1; i < st->n_recs; i++)
                if (st->recs[i].stamp < r->stamp) r = &st->recs[i];
            zgc_sdpa_rec_free(r);
        }
        r->plan = p;
        memcpy(r->ptr, key, sizeof key);
        r->stamp = ++st->clock;
        r->graph = g, r->exec = exec;
        return r;
    }
off:
    zgc_sdpa_graph_free(g, exec);
    zgc_sdpa_graph_free(orig, exec_orig);
    zg_note("cuDNN attention backward (B=%d T=%d NH=%d hs=%d): cuDNN's own dQ product runs (reads all of dS, "
            "not its causal half): %s",
            B, T, NH, C / NH, why);
    p->dq_state = -1;
    zgc_sdpa_recs_drop(st, p);
    return NULL;
}

/* A backward plan's workspace bytes: the plan's own, then the D sums (B*NH*T floats), each 256-aligned. */
static size_t zgc_sdpa_bwd_ws_bytes(const zgc_sdpa_plan *p) {
    return zgc_align256((size_t)p->ws_bytes) + zgc_align256((size_t)p->B * p->NH * p->T * sizeof(float));
}

int zgc_attention_cudnn_backward(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                                 const float *stats, int B, int T, int C, int NH) {
    if (!zgc_sdpa_wanted(be, 1) || !zgc_sdpa_usable(be, C, NH, dqkv, dout, qkv, out) || ((uintptr_t)stats & 15))
        return 0;
    zgc_cudnn_att *st = zgc_att_state(be);
    if (st->handle_state != 1) return 0;
    zgc_impl *im = zgc_get(be);
    int hs = C / NH;
    zgc_sdpa_plan *p = zgc_sdpa_plan_get(be, st, B, T, NH, hs, 1);
    if (p == NULL) return 0;
    size_t wsb = zgc_align256((size_t)p->ws_bytes), per = zgc_sdpa_bwd_ws_bytes(p);
    char *ws = (char *)zgc_sdpa_lent(be, st, per);
    if (ws == NULL) ws = (char *)zgc_sdpa_workspace(be, st, per);
    if (ws == NULL) {
        zgc_att_fallback_note("backward", B, T, NH, hs, zg_error_message());
        p->ok = 0;
        return 0;
    }
    float *dsum = (float *)(ws + wsb);
    size_t es = zg_dtype_size(be->act_dtype), cb = (size_t)C * es;
    float scale = 1.f / sqrtf((float)hs), neginf = zgc_sdpa_mask_value(), one = 1.f;
    int64_t uids[] = {ZGC_UID_Q,  ZGC_UID_K,  ZGC_UID_V,    ZGC_UID_O,     ZGC_UID_DO,     ZGC_UID_STATS, ZGC_UID_DQ,
                      ZGC_UID_DK, ZGC_UID_DV, ZGC_UID_DSUM, ZGC_UID_SCALE, ZGC_UID_NEGINF, ZGC_UID_ONE};
    void *ptrs[] = {(void *)qkv, (char *)qkv + cb,  (char *)qkv + 2 * cb,  (void *)out, (void *)dout, (void *)stats,
                    dqkv,        (char *)dqkv + cb, (char *)dqkv + 2 * cb, dsum,        &scale,       &neginf,
                    &one};
    const int n = (int)(sizeof uids / sizeof uids[0]);
    if (p->dq_state == 0 && !zgc_att_dq_fits(be, T, C, NH)) p->dq_state = -1; /* cuDNN's dQ, silently: by design */
    if (p->dq_state >= 0 && zgc_sdpa_dq_env() == 1) {
        int ran = 0;
        zgc_sdpa_rec *r = zgc_sdpa_rec_get(be, st, p, n, uids, ptrs, ws, per, dqkv, B, T, C, NH, &ran);
        if (r != NULL) {
            if (!ran) zgc_sdpa_rec_run(im->stream, r);
            st->calls++, st->dq_calls++;
            return 1;
        }
        if (ran) {
            st->calls++;
            return 1;
        }
    }
    char why[400];
    if (zgc_sdpa_execute(st, p, n, uids, ptrs, ws, why, sizeof(why))) {
        zgc_att_fallback_note("backward", B, T, NH, hs, why);
        p->ok = 0;
        return 0;
    }
    st->calls++;
    return 1;
}

/* What the backward borrows of the loan at this shape: its workspace (the plan's, then the D sums), and, while
 * the shape's first call still has to check our dQ kernel against cuDNN's, room for cuDNN's dQ beside it (else
 * that check allocates it: a peak above the step's). Builds the backward's plan (cached for the first call). */
size_t zgc_attention_cudnn_lend_want(zg_backend *be, int B, int T, int C, int NH) {
    if (!zgc_sdpa_wanted(be, 1) || !zgc_sdpa_usable(be, C, NH, NULL, NULL, NULL, NULL)) return 0;
    zgc_cudnn_att *st = zgc_att_state(be);
    if (st->handle_state != 1 || st->loan_off) return 0;
    zgc_sdpa_plan *p = zgc_sdpa_plan_get(be, st, B, T, NH, C / NH, 1);
    if (p == NULL) return 0;
    size_t want = zgc_sdpa_bwd_ws_bytes(p);
    if (p->dq_state == 0 && zgc_sdpa_dq_env() == 1 && zgc_att_dq_fits(be, T, C, NH))
        want += (size_t)B * T * C * zg_dtype_size(be->act_dtype);
    return want;
}

extern "C" long zg_backend_cuda_cudnn_attention_calls(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    return im->att_cudnn != NULL ? im->att_cudnn->calls : 0;
}

extern "C" long zg_backend_cuda_cudnn_attention_lent_calls(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    return im->att_cudnn != NULL ? im->att_cudnn->lent_calls : 0;
}

extern "C" long zg_backend_cuda_cudnn_attention_dq_calls(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    return im->att_cudnn != NULL ? im->att_cudnn->dq_calls : 0;
}

void zgc_attention_cudnn_destroy(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    zgc_cudnn_att *st = im->att_cudnn;
    if (st == NULL) return;
    for (int i = 0; i < st->n_recs; i++) zgc_sdpa_rec_free(&st->recs[i]);
    free(st->recs);
    if (st->cap != NULL) ZG_CUDA_CHECK(cudaStreamDestroy(st->cap));
    for (int i = 0; i < ZGC_SDPA_PLANS; i++)
        if (st->plans[i].used) zgc_gb_free(st->plans[i].g);
    if (st->ws != NULL) be->ops->dealloc(be, st->ws);
    if (st->handle_state == 1) cudnnDestroy(st->handle);
    free(st);
    im->att_cudnn = NULL;
}

#endif /* ZGPT_WITH_CUDNN */
