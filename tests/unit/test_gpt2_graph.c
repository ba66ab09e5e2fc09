/* The recorded training passes (src/model/gpt2_graph.c, gpt2_model.record) on a CPU backend that records as
 * CUDA's does: between graph_begin and graph_end the model's ops are kept, not run, and graph_launch runs the
 * kept calls with the arguments they were recorded with. Against the same micro-steps launched op by op:
 * the same gradients and losses bit for bit, with new tokens every micro-step, a ring of deferred losses,
 * a loss scale that changes, zeroed gradients (a backward that writes them, then ones that add), a failed
 * recording, a key that keeps changing and hooks (no recording). */
#include "backend/backend.h"
#include "core/error.h"
#include "model/gpt2.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static zg_backend *BE;

enum { R_ENC_F, R_ENC_B, R_LN_F, R_LN_B, R_MM_F, R_MM_B, R_GELU, R_ATT_F, R_ATT_B, R_ZERO, R_CLS };

/* one kept call: its op and arguments (pointers, then ints) */
typedef struct {
    int op;
    void *p[12];
    int i[6];
    size_t n;
    float f;
} rec_call;

struct zg_graph {
    rec_call *calls;
    int n;
};

static struct {
    zg_backend be;
    zg_backend_ops ops;
    int recording;
    int fail_end; /* graph_end fails (as a capture that hit an unsupported call) */
    rec_call *calls;
    int n, cap;
    long direct, launches, begins;
} REC;

/* runs one call on the CPU backend */
static void rec_run(zg_backend *be, const rec_call *c) {
    const zg_backend_ops *o = BE->ops;
    void *const *p = c->p;
    const int *i = c->i;
    switch (c->op) {
    case R_ENC_F: o->encoder_forward(be, p[0], p[1], p[2], p[3], i[0], i[1], i[2]); break;
    case R_ENC_B: o->encoder_backward(be, p[0], p[1], p[2], p[3], i[0], i[1], i[2]); break;
    case R_LN_F: o->layernorm_forward(be, p[0], p[1], p[2], p[3], p[4], p[5], i[0], i[1]); break;
    case R_LN_B:
        o->layernorm_backward(be, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], i[0], i[1], p[10], p[11]);
        break;
    case R_MM_F: o->matmul_forward(be, p[0], p[1], p[2], p[3], p[4], p[5], i[0], i[1], i[2]); break;
    case R_MM_B: o->matmul_backward(be, p[0], p[1], p[2], p[3], p[4], p[5], p[6], i[0], i[1], i[2], i[3]); break;
    case R_GELU: o->gelu_forward(be, p[0], p[1], c->n); break;
    case R_ATT_F: o->attention_forward(be, p[0], p[1], p[2], i[0], i[1], i[2], i[3]); break;
    case R_ATT_B: o->attention_backward(be, p[0], p[1], p[2], p[3], p[4], i[0], i[1], i[2], i[3]); break;
    case R_ZERO: o->zero(be, p[0], c->n); break;
    case R_CLS: o->classifier(be, p[0], p[1], p[2], i[0], i[1], i[2], c->f); break;
    default: ZT_CHECK_MSG(0, "unknown kept op %d", c->op);
    }
}

/* keeps the call while recording, else runs it */
static void rec_call_op(zg_backend *be, rec_call c) {
    if (!REC.recording) {
        REC.direct++;
        rec_run(be, &c);
        return;
    }
    if (REC.n == REC.cap) {
        REC.cap = REC.cap ? 2 * REC.cap : 64;
        REC.calls = zg_realloc(REC.calls, (size_t)REC.cap * sizeof *REC.calls);
    }
    REC.calls[REC.n++] = c;
}

#define P(x) ((void *)(x))
static void w_enc_f(zg_backend *be, void *out, const int32_t *tok, const void *wte, const void *wpe, int B, int T,
                    int C) {
    rec_call_op(be, (rec_call){R_ENC_F, {out, P(tok), P(wte), P(wpe)}, {B, T, C}, 0, 0});
}
static void w_enc_b(zg_backend *be, void *dwte, void *dwpe, const void *dout, const int32_t *tok, int B, int T, int C) {
    rec_call_op(be, (rec_call){R_ENC_B, {dwte, dwpe, P(dout), P(tok)}, {B, T, C}, 0, 0});
}
static void w_ln_f(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w, const void *b,
                   int N, int C) {
    rec_call_op(be, (rec_call){R_LN_F, {out, mean, rstd, P(inp), P(w), P(b)}, {N, C}, 0, 0});
}
static void w_ln_b(zg_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *x, const void *y,
                   const void *w, const void *b, const float *mean, const float *rstd, int N, int C, void *dsum_in,
                   void *dsum_out) {
    rec_call_op(be, (rec_call){R_LN_B,
                               {dinp, dw, db, P(dout), P(x), P(y), P(w), P(b), P(mean), P(rstd), dsum_in, dsum_out},
                               {N, C},
                               0,
                               0});
}
static void w_mm_f(zg_backend *be, void *out, void *pre, const void *inp, const void *w, const void *bias,
                   const void *res, int N, int C, int OC) {
    rec_call_op(be, (rec_call){R_MM_F, {out, pre, P(inp), P(w), P(bias), P(res)}, {N, C, OC}, 0, 0});
}
static void w_mm_b(zg_backend *be, void *dinp, void *dw, void *dbias, const void *dout, const void *inp, const void *w,
                   const void *gin, int N, int C, int OC, int ow) {
    rec_call_op(be, (rec_call){R_MM_B, {dinp, dw, dbias, P(dout), P(inp), P(w), P(gin)}, {N, C, OC, ow}, 0, 0});
}
static void w_gelu(zg_backend *be, void *out, const void *inp, size_t n) {
    rec_call_op(be, (rec_call){R_GELU, {out, P(inp)}, {0}, n, 0});
}
static void w_att_f(zg_backend *be, void *out, void *stats, const void *qkv, int B, int T, int C, int NH) {
    rec_call_op(be, (rec_call){R_ATT_F, {out, stats, P(qkv)}, {B, T, C, NH}, 0, 0});
}
static void w_att_b(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out, const void *stats,
                    int B, int T, int C, int NH) {
    rec_call_op(be, (rec_call){R_ATT_B, {dqkv, P(dout), P(qkv), P(out), P(stats)}, {B, T, C, NH}, 0, 0});
}
static void w_zero(zg_backend *be, void *p, size_t bytes) { rec_call_op(be, (rec_call){R_ZERO, {p}, {0}, bytes, 0}); }
static void w_cls(zg_backend *be, float *losses, void *logits, const int32_t *tg, int N, int V, int Vp, float dloss) {
    rec_call_op(be, (rec_call){R_CLS, {losses, logits, P(tg)}, {N, V, Vp}, 0, dloss});
}

static int g_begin(zg_backend *be) {
    (void)be;
    ZT_CHECK(!REC.recording);
    REC.recording = 1;
    REC.n = 0;
    REC.begins++;
    return 0;
}
static zg_graph *g_end(zg_backend *be) {
    (void)be;
    REC.recording = 0;
    if (REC.fail_end) {
        zg_errorf("recording the test graph failed (as asked)");
        return NULL;
    }
    zg_graph *g = zg_malloc(sizeof *g);
    g->n = REC.n;
    g->calls = zg_malloc((size_t)(REC.n ? REC.n : 1) * sizeof *g->calls);
    memcpy(g->calls, REC.calls, (size_t)REC.n * sizeof *g->calls);
    return g;
}
static void g_launch(zg_backend *be, zg_graph *g) {
    ZT_CHECK(!REC.recording);
    REC.launches++;
    for (int k = 0; k < g->n; k++) rec_run(be, &g->calls[k]);
}
static void g_destroy(zg_backend *be, zg_graph *g) {
    (void)be;
    if (g == NULL) return;
    free(g->calls);
    free(g);
}

static zg_backend *rec_backend(void) {
    free(REC.calls);
    memset(&REC, 0, sizeof REC);
    REC.be = *BE;
    REC.ops = *BE->ops;
    REC.ops.encoder_forward = w_enc_f;
    REC.ops.encoder_backward = w_enc_b;
    REC.ops.layernorm_forward = w_ln_f;
    REC.ops.layernorm_backward = w_ln_b;
    REC.ops.matmul_forward = w_mm_f;
    REC.ops.matmul_backward = w_mm_b;
    REC.ops.gelu_forward = w_gelu;
    REC.ops.attention_forward = w_att_f;
    REC.ops.attention_backward = w_att_b;
    REC.ops.zero = w_zero;
    REC.ops.classifier = w_cls;
    REC.ops.graph_begin = g_begin;
    REC.ops.graph_end = g_end;
    REC.ops.graph_launch = g_launch;
    REC.ops.graph_destroy = g_destroy;
    REC.be.ops = &REC.ops;
    return &REC.be;
}

enum { B = 2, T = 6 };

/* The run's settings: micro-steps, grad_accum (losses read every accum micro-steps), the loss scale of each
 * micro-step (from micro-step scale_from on, scale2), the targets ignored per micro-step (ignore: micro-step k
 * ignores the first (k / 2) % 5 positions, so five counts of targets come in pairs, in turn), recompute flags,
 * hooks. */
typedef struct {
    int steps, accum, scale_from, ignore, recompute, hooks;
    int zero_grads; /* zero the gradients after each accumulation, as the engine does (two backward recordings) */
    float scale, scale2;
} run_cfg;

static long HOOK_CALLS;
static void hook_before(void *ctx, int l, int bwd) {
    (void)ctx, (void)l, (void)bwd;
    HOOK_CALLS++;
}

/* Trains cfg's micro-steps on `be` with m.record = record; the gradients into g, the losses' sums (one per
 * accumulation) into losses; the recording counters back. */
static void run(zg_backend *be, int record, const run_cfg *cfg, float *g, double *losses, long *records, long *replays,
                int *off) {
    gpt2_config c = {2, 2, 16, 8, 40, 0};
    ZT_CHECK(gpt2_config_validate(&c) == 0);
    gpt2_model m;
    ZT_CHECK(gpt2_init(&m, &c, be) == 0 && gpt2_grads_alloc(&m) == 0);
    gpt2_init_random(&m, 7);
    m.recompute = cfg->recompute;
    m.record = record;
    if (cfg->hooks) {
        m.hooks.before_layer = hook_before;
        m.hooks.ctx = NULL;
    }
    uint64_t r = 99;
    int32_t in[B * T], tg[B * T];
    for (int k = 0; k < cfg->steps; k++) {
        for (int i = 0; i < B * T; i++) { /* new tokens every micro-step: uploaded beside the recording */
            in[i] = (int32_t)(zt_rand_u64(&r) % 40);
            tg[i] = (int32_t)(zt_rand_u64(&r) % 40);
        }
        for (int i = 0; cfg->ignore && i < (k / 2) % 5; i++) tg[i] = -1;
        float scale = k >= cfg->scale_from ? cfg->scale2 : cfg->scale;
        ZT_CHECK_MSG(gpt2_forward_train_deferred(&m, in, tg, B, T, scale) == 0, "forward: %s", zg_error_message());
        gpt2_backward(&m, scale);
        if ((k + 1) % cfg->accum == 0) {
            losses[k / cfg->accum] = gpt2_train_losses_take(&m, NULL);
            if (cfg->zero_grads && k + 1 < cfg->steps) gpt2_zero_grad(&m);
        }
    }
    be->ops->download_f32(be, g, m.grads, ZG_F32, m.table.num_params);
    gpt2_graph_counts(&m, records, replays, off);
    gpt2_free(&m);
}

/* cfg recorded (on the recording backend; fail_end: every recording fails) and op by op (on the CPU backend):
 * bitwise the same */
static void check_same(const run_cfg *cfg, int fail_end, long *records, long *replays, int *off) {
    gpt2_config c = {2, 2, 16, 8, 40, 0};
    ZT_CHECK(gpt2_config_validate(&c) == 0);
    gpt2_param_table t;
    ZT_CHECK(gpt2_param_table_init(&t, &c) == 0);
    size_t n = t.num_params;
    gpt2_param_table_free(&t);
    float *g0 = zg_calloc(n, sizeof(float)), *g1 = zg_calloc(n, sizeof(float));
    double l0[64] = {0}, l1[64] = {0};
    long r0, p0;
    int o0;
    run(BE, 0, cfg, g0, l0, &r0, &p0, &o0);
    zg_backend *rb = rec_backend();
    REC.fail_end = fail_end;
    run(rb, 1, cfg, g1, l1, records, replays, off);
    ZT_CHECK(r0 == 0 && p0 == 0 && o0 == 0);
    ZT_CHECK_MSG(memcmp(g0, g1, n * sizeof(float)) == 0, "recorded gradients differ from the direct ones");
    ZT_CHECK_MSG(memcmp(l0, l1, sizeof l0) == 0, "recorded losses differ: %.9g against %.9g", l1[0], l0[0]);
    free(g0);
    free(g1);
}

static void test_replay_bitwise(void) {
    long rec, rep;
    int off;
    /* one forward key throughout: the first micro-step direct, the second recorded, the rest replayed; the first
     * backward writes the zeroed gradients (its own key), the others add to them */
    run_cfg a = {.steps = 8, .accum = 2, .scale_from = 99, .scale = 0.5f, .scale2 = 0.5f};
    check_same(&a, 0, &rec, &rep, &off);
    ZT_CHECK_MSG(rec == 2 && rep == 11 && !off, "records %ld replays %ld off %d", rec, rep, off);
    ZT_CHECK(REC.begins == 2 && REC.launches == 13);
    /* the forward's ops ran directly once (+ once kept): the rest were replays */
    ZT_CHECK(REC.direct > 0);
    /* a new loss scale from micro-step 5: the forward's key changes (direct, recorded, replayed); the backward
     * (the logits already hold their gradient) keeps its recording */
    run_cfg b = {.steps = 9, .accum = 3, .scale_from = 5, .scale = 0.5f, .scale2 = 0.25f};
    check_same(&b, 0, &rec, &rep, &off);
    ZT_CHECK_MSG(rec == 3 && rep == 11 && !off, "records %ld replays %ld off %d", rec, rep, off);
    /* recompute (GELU + LayerNorm) records its extra ops too */
    run_cfg c = {.steps = 5, .accum = 5, .scale_from = 99, .scale = 1.0f, .recompute = 7};
    check_same(&c, 0, &rec, &rep, &off);
    ZT_CHECK_MSG(rec == 2 && rep == 5 && !off, "records %ld replays %ld off %d", rec, rep, off);
    /* the gradients zeroed after every 3 micro-steps: two backward keys (write, add), both kept and replayed */
    run_cfg d = {.steps = 12, .accum = 3, .scale_from = 99, .scale = 0.5f, .scale2 = 0.5f, .zero_grads = 1};
    check_same(&d, 0, &rec, &rep, &off);
    ZT_CHECK_MSG(rec == 3 && rep == 17 && !off, "records %ld replays %ld off %d", rec, rep, off);
}

static void test_failed_recording(void) {
    long rec, rep;
    int off;
    run_cfg a = {.steps = 6, .accum = 3, .scale_from = 99, .scale = 0.5f, .scale2 = 0.5f};
    check_same(&a, 1, &rec, &rep, &off);
    ZT_CHECK_MSG(rec == 0 && rep == 0 && off == 1, "records %ld replays %ld off %d", rec, rep, off);
    ZT_CHECK(REC.begins == 1 && REC.launches == 0); /* one try, then op by op */
}

static void test_key_keeps_changing(void) {
    long rec, rep;
    int off;
    /* five counts of targets in turn, two micro-steps each: each count runs directly, then is recorded, and is
     * replaced before it comes again; after 8 recordings with too few replays recording turns off */
    run_cfg a = {.steps = 40, .accum = 4, .scale_from = 99, .scale = 0.5f, .scale2 = 0.5f, .ignore = 1};
    check_same(&a, 0, &rec, &rep, &off);
    ZT_CHECK_MSG(off == 1 && rec >= 8, "records %ld replays %ld off %d", rec, rep, off);
}

static void test_hooks_not_recorded(void) {
    long rec, rep;
    int off;
    run_cfg a = {.steps = 4, .accum = 2, .scale_from = 99, .scale = 0.5f, .scale2 = 0.5f, .hooks = 1};
    HOOK_CALLS = 0;
    check_same(&a, 0, &rec, &rep, &off);
    ZT_CHECK(rec == 0 && rep == 0 && !off && REC.begins == 0);
    ZT_CHECK(HOOK_CALLS > 0);
}

int main(void) {
    zg_backend_config cfg = {"cpu", -1, ZG_F32};
    if (zg_backend_create(&BE, &cfg) != 0) {
        zg_error_print();
        return 1;
    }
    zt_run("replay_bitwise", test_replay_bitwise);
    zt_run("failed_recording", test_failed_recording);
    zt_run("key_keeps_changing", test_key_keeps_changing);
    zt_run("hooks_not_recorded", test_hooks_not_recorded);
    free(REC.calls);
    zg_backend_destroy(BE);
    return zt_finish();
}
