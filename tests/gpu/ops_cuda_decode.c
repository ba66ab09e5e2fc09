/* gpu_test_ops_cuda, the decode step: PDL changes no bit, the decode ops, decode_advance under a graph, the
 * settings' refusals. */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A decode step of a small GPT-2-shaped model (4 layers, C 768, the GPT-2 vocabulary), as generation
 * records it: encoder at the device position, per layer the fused LayerNorm + qkv product, decode
 * attention, projection + residual, LayerNorm + fc + GELU, fc projection + residual, then ln_f, the LM
 * head, a top-k 50 draw and decode_advance; `steps` replays of one recorded graph (or direct launches)
 * from position 0. Returns the (B,maxT) tokens and the last hidden state (B,C) (bf16 bits as floats). */
static void pdl_decode_run(zg_backend *be, int B, int graph, int steps, int32_t *seq_out, float *x_out) {
    enum { NL = 4, C = 768, NH = 12, V = 50257, Vp = 50304, maxT = 48 };
    const zg_backend_ops *op = be->ops;
    uint64_t rng = 0x1234abcdULL; /* the same weights for every run */
    uint64_t keep = oc_rng;
    oc_rng = rng;
    size_t lw = (size_t)12 * C * C, kvn = (size_t)B * maxT * C;
    void *wts = oc_dev_rand(be, ZG_BF16, NL * lw, 0.03f, NULL),
         *wte = oc_dev_rand(be, ZG_BF16, (size_t)Vp * C, 0.05f, NULL);
    void *wpe = oc_dev_rand(be, ZG_BF16, (size_t)maxT * C, 0.3f, NULL);
    void *kc = oc_dev_rand(be, ZG_BF16, NL * kvn, 1.f, NULL), *vc = oc_dev_rand(be, ZG_BF16, NL * kvn, 1.f, NULL);
    void *gain = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 1.f, NULL),
         *bias = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 0.1f, NULL);
    oc_rng = keep;
    void *x = oc_dev_nan(be, ZG_BF16, (size_t)B * C), *y = oc_dev_nan(be, ZG_BF16, (size_t)B * C),
         *ln = oc_dev_nan(be, ZG_BF16, (size_t)B * C), *qkv = oc_dev_nan(be, ZG_BF16, (size_t)B * 3 * C),
         *att = oc_dev_nan(be, ZG_BF16, (size_t)B * C), *h = oc_dev_nan(be, ZG_BF16, (size_t)B * 4 * C),
         *pre = oc_dev_nan(be, ZG_BF16, (size_t)B * 4 * C), *logits = oc_dev_nan(be, ZG_BF16, (size_t)B * Vp);
    int32_t *seq = calloc((size_t)B * maxT, sizeof(int32_t)), plen[8], pos[2] = {0, 1};
    zg_sample_row rows[8];
    for (int b = 0; b < B; b++) {
        seq[(size_t)b * maxT] = 464 + 97 * b;
        plen[b] = 1 + (b % 3); /* rows 1, 2: prompt tokens kept (0 here) at positions 1, 2 */
        zg_sample_row r = {1.0f / 0.9f, 50, 1.0f, 0, (uint64_t)(77 + b)};
        rows[b] = r;
    }
    int32_t *dseq = op->alloc(be, (size_t)B * maxT * 4, "seq"), *dplen = op->alloc(be, (size_t)B * 4, "plen"),
            *dtok = op->alloc(be, (size_t)B * 4, "tok"), *dpos = op->alloc(be, 8, "pos"),
            *dids = op->alloc(be, (size_t)B * 4, "ids");
    zg_sample_row *drows = op->alloc(be, (size_t)B * sizeof *rows, "rows");
    op->upload(be, dseq, seq, (size_t)B * maxT * 4);
    op->upload(be, dplen, plen, (size_t)B * 4);
    op->upload(be, dpos, pos, sizeof pos);
    op->upload(be, drows, rows, (size_t)B * sizeof *rows);
    for (int b = 0; b < B; b++) op->upload(be, dtok + b, &seq[(size_t)b * maxT], 4);
#define PDL_STEP()                                                                                                     \
    do {                                                                                                               \
        op->encoder_forward_at(be, x, dtok, wte, wpe, dpos, B, C);                                                     \
        for (int l = 0; l < NL; l++) {                                                                                 \
            char *wl = (char *)wts + (size_t)l * lw * 2;                                                               \
            op->layernorm_matmul_forward(be, qkv, NULL, ln, x, gain, bias, wl, bias, B, C, 3 * C);                     \
            op->attention_decode(be, att, qkv, (char *)kc + (size_t)l * kvn * 2, (char *)vc + (size_t)l * kvn * 2,     \
                                 dpos, B, maxT, C, NH);                                                                \
            op->matmul_forward(be, y, NULL, att, wl + (size_t)3 * C * C * 2, bias, x, B, C, C);                        \
            op->layernorm_matmul_forward(be, h, pre, ln, y, gain, bias, wl + (size_t)4 * C * C * 2, bias, B, C,        \
                                         4 * C);                                                                       \
            op->matmul_forward(be, x, NULL, h, wl + (size_t)8 * C * C * 2, bias, y, B, 4 * C, C);                      \
        }                                                                                                              \
        op->layernorm_forward(be, ln, NULL, NULL, x, gain, bias, B, C);                                                \
        op->matmul_forward(be, logits, NULL, ln, wte, NULL, NULL, B, C, Vp);                                           \
        op->sample(be, dids, logits, drows, dpos + 1, B, V, Vp);                                                       \
        op->decode_advance(be, dseq, dtok, dpos, dids, dplen, B, maxT);                                                \
    } while (0)
    PDL_STEP(); /* plans and scratch made outside any recording, as generation does */
    zg_graph *g = NULL;
    if (graph) {
        ZT_CHECK(op->graph_begin(be) == 0);
        PDL_STEP();
        g = op->graph_end(be);
        ZT_CHECK(g != NULL);
    }
    for (int k = 1; k < steps; k++) {
        if (g)
            op->graph_launch(be, g);
        else
            PDL_STEP();
    }
#undef PDL_STEP
    if (g) op->graph_destroy(be, g);
    op->download(be, seq_out, dseq, (size_t)B * maxT * 4);
    be->ops->download_f32(be, x_out, x, ZG_BF16, (size_t)B * C);
    void *ptrs[] = {wts, wte, wpe, kc,     vc,   gain,  bias, x,    y,    ln,   qkv,
                    att, h,   pre, logits, dseq, dplen, dtok, dpos, dids, drows};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) op->dealloc(be, ptrs[k]);
    free(seq);
}

/* PDL (the decode step's kernels starting while the previous one ends) changes no bit: the tokens of 40
 * steps and the last hidden state with ZGPT_PDL=0 and unset, through a recorded graph and through direct
 * launches, at B=1 and B=8, with the kernels generation picks (ZGPT_DECODE unset) and with the new
 * kernels everywhere (ZGPT_DECODE=new: the few-row product at 8 rows) and with v2's few-row products
 * (ZGPT_GEMV=v2: weights loaded and prefetched before the PDL wait); the multi-block sampler and the
 * one-block one give the same tokens too, as does the split attention's combine in a kernel of its own
 * (the counters of the fused combine reused by every replay). */
void oc_test_decode_pdl(void) {
    zg_backend *be = oc_be[1];
    enum { STEPS = 40, maxT = 48, C = 768 };
    static const int Bs[2] = {1, 8};
    static const char *const decs[3] = {NULL, "new", NULL}, *const gemvs[3] = {NULL, NULL, "v2"};
    for (int bi = 0; bi < 2; bi++)
        for (int di = 0; di < 3; di++) {
            int B = Bs[bi];
            if (decs[di])
                setenv("ZGPT_DECODE", decs[di], 1);
            else
                unsetenv("ZGPT_DECODE");
            if (gemvs[di])
                setenv("ZGPT_GEMV", gemvs[di], 1);
            else
                unsetenv("ZGPT_GEMV");
            /* runs: PDL on graph, PDL off graph, PDL on direct, PDL off direct, one-block sampler graph, and
             * the split attention's combine as a kernel of its own (ZGPT_DECODE_COMBINE=kernel) graph */
            enum { RUNS = 6 };
            int32_t *seq[RUNS];
            float *x[RUNS];
            for (int r = 0; r < RUNS; r++) {
                seq[r] = malloc((size_t)B * maxT * 4);
                x[r] = malloc((size_t)B * C * 4);
                setenv("ZGPT_PDL", r == 1 || r == 3 ? "0" : "1", 1);
                setenv("ZGPT_SAMPLE", r == 4 ? "block" : "cluster", 1);
                setenv("ZGPT_DECODE_COMBINE", r == 5 ? "kernel" : "fused", 1);
                pdl_decode_run(be, B, r != 2 && r != 3, STEPS, seq[r], x[r]);
            }
            unsetenv("ZGPT_DECODE_COMBINE");
            static const char *const names[RUNS] = {
                "PDL graph",           "no PDL graph", "PDL direct", "no PDL direct", "one-block sampler graph",
                "combine kernel graph"};
            int moved = 0;
            for (int b = 0; b < B; b++)
                for (int t = 4; t < STEPS; t++) moved += seq[0][(size_t)b * maxT + t] != seq[0][(size_t)b * maxT + 3];
            ZT_CHECK_MSG(moved > 0, "B=%d: the draws never change (the test would not see a difference)", B);
            for (int r = 1; r < RUNS; r++) {
                ZT_CHECK_MSG(memcmp(seq[0], seq[r], (size_t)B * maxT * 4) == 0,
                             "decode B=%d ZGPT_DECODE=%s ZGPT_GEMV=%s: tokens of '%s' differ from '%s'", B,
                             decs[di] ? decs[di] : "(unset)", gemvs[di] ? gemvs[di] : "(unset)", names[r], names[0]);
                ZT_CHECK_MSG(memcmp(x[0], x[r], (size_t)B * C * 4) == 0,
                             "decode B=%d ZGPT_DECODE=%s ZGPT_GEMV=%s: hidden state of '%s' differs from '%s'", B,
                             decs[di] ? decs[di] : "(unset)", gemvs[di] ? gemvs[di] : "(unset)", names[r], names[0]);
            }
            printf("  B=%d ZGPT_DECODE=%s ZGPT_GEMV=%s: %d steps, tokens and hidden state bitwise across PDL on/off, "
                   "graph/direct, both samplers, attention combine fused/kernel\n",
                   B, decs[di] ? decs[di] : "(unset)", gemvs[di] ? gemvs[di] : "(unset)", STEPS);
            for (int r = 0; r < RUNS; r++) free(seq[r]), free(x[r]);
        }
    unsetenv("ZGPT_PDL");
    unsetenv("ZGPT_SAMPLE");
    unsetenv("ZGPT_GEMV");
    setenv("ZGPT_DECODE", "new", 1);
}

/* encoder_forward_at at a position held in device memory against encoder_forward (exact), and
 * attention_decode through the KV-cache case against the fp64 reference. */
void oc_test_decode_ops(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        int B = 3, C = 128, maxT = 40, Vp = 64;
        /* encoder: at position 7 == encoder_forward with wpe from row 7 */
        void *wte = oc_dev_rand(be, dt, (size_t)Vp * C, 1.0f, NULL),
             *wpe = oc_dev_rand(be, dt, (size_t)maxT * C, 1.0f, NULL);
        int32_t tok[3] = {5, 63, 0}, pos[2] = {7, 8};
        int32_t *dtok = be->ops->alloc(be, sizeof tok, "tokens"), *dpos = be->ops->alloc(be, sizeof pos, "pos");
        be->ops->upload(be, dtok, tok, sizeof tok);
        be->ops->upload(be, dpos, pos, sizeof pos);
        void *o1 = oc_dev_nan(be, dt, (size_t)B * C), *o2 = oc_dev_nan(be, dt, (size_t)B * C);
        be->ops->encoder_forward_at(be, o1, dtok, wte, wpe, dpos, B, C);
        be->ops->encoder_forward(be, o2, dtok, wte, (char *)wpe + (size_t)7 * C * (dt == ZG_F32 ? 4 : 2), B, 1, C);
        float *h1 = oc_dl(be, o1, dt, (size_t)B * C), *h2 = oc_dl(be, o2, dt, (size_t)B * C);
        ZT_CHECK_MSG(memcmp(h1, h2, (size_t)B * C * 4) == 0, "encoder_forward_at %s differs from encoder_forward",
                     oc_dt_name(dt));
        free(h1);
        free(h2);
        void *ptrs[] = {wte, wpe, dtok, dpos, o1, o2};
        for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    }
    /* 23 positions: one chunk of the split kernel; 200 (cache 300): four chunks, then a partial one;
     * under ZGPT_DECODE=new, old and auto (unset: the selection generation runs) */
    static const char *const vars[3] = {"new", "old", NULL};
    for (int v = 0; v < 3; v++) {
        if (vars[v])
            setenv("ZGPT_DECODE", vars[v], 1);
        else
            unsetenv("ZGPT_DECODE");
        printf("  ZGPT_DECODE=%s\n", vars[v] ? vars[v] : "(unset)");
        oc_attention_cached_case(1, 23, 40);
        oc_attention_cached_case(1, 200, 300);
        /* GPT-2's whole context (16 chunks a (row, head), most of them past the position) and past it */
        oc_attention_cached_case(1, 300, 1024);
        oc_attention_cached_case(1, 100, 1100);
    }
    setenv("ZGPT_DECODE", "new", 1);
}

/* decode_advance recorded once as a graph and replayed: the position moves on the device, rows keep
 * their prompt tokens until their prompt ends, then take the draws. */
void oc_test_decode_graph(void) {
    zg_backend *be = oc_be[1];
    enum { B = 3, maxT = 8 };
    int32_t seq[B * maxT] = {0}, plen[B] = {1, 4, 2}, ids[B] = {101, 102, 103}, pos[2] = {0, 1};
    for (int b = 0; b < B; b++)
        for (int t = 0; t < plen[b]; t++) seq[b * maxT + t] = 10 * (b + 1) + t;
    int32_t *dseq = be->ops->alloc(be, sizeof seq, "seq"), *dplen = be->ops->alloc(be, sizeof plen, "plen");
    int32_t *dids = be->ops->alloc(be, sizeof ids, "ids"), *dpos = be->ops->alloc(be, sizeof pos, "pos");
    int32_t *dtok = be->ops->alloc(be, sizeof ids, "tokens");
    be->ops->upload(be, dseq, seq, sizeof seq);
    be->ops->upload(be, dplen, plen, sizeof plen);
    be->ops->upload(be, dids, ids, sizeof ids);
    be->ops->upload(be, dpos, pos, sizeof pos);
    ZT_CHECK(be->ops->graph_begin(be) == 0);
    be->ops->decode_advance(be, dseq, dtok, dpos, dids, dplen, B, maxT);
    zg_graph *g = be->ops->graph_end(be);
    ZT_CHECK(g != NULL);
    be->ops->download(be, pos, dpos, sizeof pos);
    ZT_CHECK_MSG(pos[0] == 0, "recording ran the op (pos %d)", pos[0]);
    for (int k = 0; k < 5 && g; k++) be->ops->graph_launch(be, g);
    int32_t tok[B];
    be->ops->download(be, seq, dseq, sizeof seq);
    be->ops->download(be, pos, dpos, sizeof pos);
    be->ops->download(be, tok, dtok, sizeof tok);
    ZT_CHECK(pos[0] == 5 && pos[1] == 6);
    for (int b = 0; b < B; b++) {
        for (int t = 1; t <= 5; t++) {
            int want = t < plen[b] ? 10 * (b + 1) + t : ids[b];
            ZT_CHECK_MSG(seq[b * maxT + t] == want, "row %d position %d: %d, expected %d", b, t, seq[b * maxT + t],
                         want);
        }
        ZT_CHECK(tok[b] == seq[b * maxT + 5]);
    }
    be->ops->graph_destroy(be, g);
    void *ptrs[] = {dseq, dplen, dids, dpos, dtok};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
}

/* zg_backend_cuda_create with var=value set (unset again after): its return code; a backend it made is
 * destroyed; a refusal makes none; the error message stays for the caller */
static int env_create(const char *var, const char *value) {
    setenv(var, value, 1);
    zg_backend *be = NULL;
    zg_backend_config cfg = {"cuda", -1, ZG_BF16};
    int rc = zg_backend_cuda_create(&be, &cfg);
    unsetenv(var);
    ZT_CHECK_MSG(rc == 0 || be == NULL, "%s=%s: refused, but a backend was made", var, value);
    if (be) zg_backend_destroy(be);
    return rc;
}

/* A bad ZGPT_DECODE_PREFETCH, ZGPT_DECODE_COMBINE, ZGPT_LT_WARMUP, ZGPT_DECODE_LAYERS, ZGPT_GEMV_PROF, ZGPT_LN_SUMS,
 * ZGPT_LN, ZGPT_LT_WS or ZGPT_GRAPH_HOIST is refused when the backend is made, in one line naming the value; so are
 * the values of removed forms. */
void oc_test_decode_prefetch_env(void) {
    static const char *const vars[9] = {
        "ZGPT_DECODE_PREFETCH", "ZGPT_DECODE_COMBINE", "ZGPT_LT_WARMUP", "ZGPT_DECODE_LAYERS",
        "ZGPT_GEMV_PROF",       "ZGPT_LN_SUMS",        "ZGPT_LN",        "ZGPT_LT_WS",
        "ZGPT_GRAPH_HOIST"};
    for (int i = 0; i < 9; i++) {
        int rc = env_create(vars[i], "yes");
        ZT_CHECK_MSG(rc != 0, "%s=yes was accepted", vars[i]);
        char want[64];
        snprintf(want, sizeof want, "%s=yes", vars[i]);
        const char *msg = zg_error_message();
        ZT_CHECK_MSG(strstr(msg, want) != NULL && strchr(msg, '\n') == NULL,
                     "the refusal does not name the value in one line: %s", msg);
        zg_error_clear();
    }
    /* the removed forms' values are refused with "removed", not silently run another way; 0 (what runs) is
     * accepted: the persistent decode kernel (ZGPT_DECODE_LAYERS 1, 2: v0.21; 3: v0.22's weight ring) and the
     * L2 prefetch branch (ZGPT_DECODE_PREFETCH 1, 2: v0.14), both removed in v0.23; the attention backward in
     * chunks of batch rows (ZGPT_SDPA_CHUNK: v0.31, removed in v0.33); the memsets moved in recorded graphs
     * (ZGPT_GRAPH_HOIST: v0.38, removed in v0.40) */
    static const char *const gone[10][2] = {{"ZGPT_DECODE_LAYERS", "1"},   {"ZGPT_DECODE_LAYERS", "2"},
                                            {"ZGPT_DECODE_LAYERS", "3"},   {"ZGPT_DECODE_PREFETCH", "1"},
                                            {"ZGPT_DECODE_PREFETCH", "2"}, {"ZGPT_DECODE_PREFETCH", "3"},
                                            {"ZGPT_SDPA_CHUNK", "1"},      {"ZGPT_SDPA_CHUNK", "2x2"},
                                            {"ZGPT_SDPA_CHUNK", "autox2"}, {"ZGPT_GRAPH_HOIST", "1"}};
    for (int i = 0; i < 10; i++) {
        int rc = env_create(gone[i][0], gone[i][1]);
        char want[48];
        snprintf(want, sizeof want, "%s=%s", gone[i][0], gone[i][1]);
        ZT_CHECK_MSG(rc != 0 && strstr(zg_error_message(), want) != NULL &&
                         strstr(zg_error_message(), "removed") != NULL,
                     "%s was accepted, or its refusal does not say it was removed: %s", want, zg_error_message());
        zg_error_clear();
    }
    static const char *const zero_ok[4] = {"ZGPT_DECODE_LAYERS", "ZGPT_DECODE_PREFETCH", "ZGPT_SDPA_CHUNK",
                                           "ZGPT_GRAPH_HOIST"};
    for (int i = 0; i < 4; i++) {
        const char *var = zero_ok[i];
        ZT_CHECK_MSG(env_create(var, "0") == 0, "%s=0 was refused: %s", var, zg_error_message());
        zg_error_clear();
    }
    /* ZGPT_LN_SUMS's two forms are accepted, and ZGPT_LN's two; its removed "deep" (v0.38), "ring" (v0.40), "team"
     * and "team1" (v0.41) are refused */
    for (int i = 0; i < 2; i++) {
        ZT_CHECK_MSG(env_create("ZGPT_LN_SUMS", i ? "separate" : "fused") == 0, "ZGPT_LN_SUMS=%s was refused: %s",
                     i ? "separate" : "fused", zg_error_message());
        zg_error_clear();
    }
    static const char *const ln_forms[2] = {"group", "warp"};
    for (int i = 0; i < 2; i++) {
        ZT_CHECK_MSG(env_create("ZGPT_LN", ln_forms[i]) == 0, "ZGPT_LN=%s was refused: %s", ln_forms[i],
                     zg_error_message());
        zg_error_clear();
    }
    static const char *const ln_removed[4] = {"deep", "ring", "team", "team1"};
    for (int i = 0; i < 4; i++) {
        const char *v = ln_removed[i];
        char want[32];
        snprintf(want, sizeof want, "ZGPT_LN=%s", v);
        ZT_CHECK_MSG(env_create("ZGPT_LN", v) != 0 && strstr(zg_error_message(), want) != NULL,
                     "ZGPT_LN=%s (removed) was not refused by name: '%s'", v, zg_error_message());
        zg_error_clear();
    }
}
