/* gpu_test_ops_cuda, the embeddings (encoder forward/backward) and the fused classifier. */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- embeddings ----------------------------------------------------------------------------- */

/* Token distributions for the embedding tests: the backward sums each token's rows in chunks of 32
 * sorted rows (runs inside a chunk, crossing one boundary, spanning many chunks, whole chunks). */
enum { TOK_FEW_IDS, TOK_SKEWED, TOK_ONE_ID, TOK_CASES };
static int32_t *dev_tokens_case(zg_backend *be, int n, int kind, int32_t *host) {
    if (kind == TOK_FEW_IDS) return oc_dev_tokens(be, n, 20, host); /* few distinct ids: runs of ~5 */
    for (int i = 0; i < n; i++) {
        uint64_t r = zt_rand_u64(&oc_rng);
        /* skewed: 60% one id (a run over ~20 chunks), 5% another (~2 chunks), the rest spread like text */
        host[i] = kind == TOK_ONE_ID ? 17 : r % 100 < 60 ? 7 : r % 100 < 65 ? 40 : (int32_t)((r >> 8) % 63);
    }
    return oc_dev_tokens_upload(be, host, n);
}

void oc_test_encoder(void) {
    for (int di = 0; di < 3 * TOK_CASES; di++) {
        zg_backend *be = oc_be[di % 3];
        int kind = di / 3;
        zg_dtype dt = be->act_dtype;
        int B = kind == TOK_FEW_IDS ? 3 : 4, T = kind == TOK_FEW_IDS ? 37 : 257, C = 96, Vp = 64, maxT = 300;
        int N = B * T;
        int32_t *tok = malloc(N * 4);
        float *wte = malloc((size_t)Vp * C * 4), *wpe = malloc((size_t)maxT * C * 4);
        int32_t *dtok = dev_tokens_case(be, N, kind, tok);
        void *dwte_ = oc_dev_rand(be, dt, (size_t)Vp * C, 1.f, wte),
             *dwpe_ = oc_dev_rand(be, dt, (size_t)maxT * C, 1.f, wpe);
        void *out = oc_dev_nan(be, dt, (size_t)N * C);
        be->ops->encoder_forward(be, out, dtok, dwte_, dwpe_, B, T, C);
        float *o = oc_dl(be, out, dt, (size_t)N * C);
        double *ref = malloc((size_t)N * C * 8);
        for (int i = 0; i < N; i++)
            for (int c = 0; c < C; c++)
                ref[(size_t)i * C + c] = (double)wte[(size_t)tok[i] * C + c] + wpe[(size_t)(i % T) * C + c];
        oc_check_rel("encoder_forward", dt, o, ref, (size_t)N * C, oc_tol_of(dt));
        /* backward: dwte, dwpe accumulate (start from random values) */
        float *dout = malloc((size_t)N * C * 4);
        void *ddout = oc_dev_rand(be, dt, (size_t)N * C, 1.f, dout);
        float *gte = malloc((size_t)Vp * C * 4), *gpe = malloc((size_t)maxT * C * 4);
        void *dgte = oc_dev_rand(be, dt, (size_t)Vp * C, 0.5f, gte),
             *dgpe = oc_dev_rand(be, dt, (size_t)maxT * C, 0.5f, gpe);
        be->ops->encoder_backward(be, dgte, dgpe, ddout, dtok, B, T, C);
        double *rte = malloc((size_t)Vp * C * 8), *rpe = malloc((size_t)maxT * C * 8);
        for (size_t i = 0; i < (size_t)Vp * C; i++) rte[i] = gte[i];
        for (size_t i = 0; i < (size_t)maxT * C; i++) rpe[i] = gpe[i];
        for (int i = 0; i < N; i++)
            for (int c = 0; c < C; c++) {
                rte[(size_t)tok[i] * C + c] += dout[(size_t)i * C + c];
                rpe[(size_t)(i % T) * C + c] += dout[(size_t)i * C + c];
            }
        float *ote = oc_dl(be, dgte, dt, (size_t)Vp * C), *ope = oc_dl(be, dgpe, dt, (size_t)maxT * C);
        static const char *kinds[TOK_CASES] = {"20 ids", "skewed: 60% one id", "one id"};
        char name[96];
        snprintf(name, sizeof name, "encoder_backward dwte (%s, N=%d)", kinds[kind], N);
        oc_check_rel(name, dt, ote, rte, (size_t)Vp * C, oc_tol_of(dt));
        oc_check_rel("encoder_backward dwpe", dt, ope, rpe, (size_t)maxT * C, oc_tol_of(dt));
        /* deterministic: the same inputs give bitwise the same dwte */
        void *dgte2 = oc_dev_rand(be, dt, (size_t)Vp * C, 0.5f, NULL);
        be->ops->upload_f32(be, dgte2, dt, gte, (size_t)Vp * C);
        be->ops->encoder_backward(be, dgte2, dgpe, ddout, dtok, B, T, C);
        float *ote2 = oc_dl(be, dgte2, dt, (size_t)Vp * C);
        ZT_CHECK_MSG(memcmp(ote, ote2, (size_t)Vp * C * 4) == 0, "encoder_backward (%s, %s) not deterministic",
                     kinds[kind], oc_dt_name(dt));
        free(ote2);
        be->ops->dealloc(be, dgte2);
        free(tok);
        free(wte);
        free(wpe);
        free(o);
        free(ref);
        free(dout);
        free(gte);
        free(gpe);
        free(rte);
        free(rpe);
        free(ote);
        free(ope);
        be->ops->dealloc(be, dtok);
        be->ops->dealloc(be, dwte_);
        be->ops->dealloc(be, dwpe_);
        be->ops->dealloc(be, out);
        be->ops->dealloc(be, ddout);
        be->ops->dealloc(be, dgte);
        be->ops->dealloc(be, dgpe);
    }
}

/* ---- classifier ------------------------------------------------------------------------------- */

void oc_test_classifier(void) {
    /* shape 0: small rows (fp16: odd Vp, the scalar path); shape 1: GPT-2's vocabulary (a row is several
     * vectors a thread, and V % 8 = 1 leaves a scalar tail before the padding) */
    for (int shape = 0; shape < 2; shape++)
        for (int di = 0; di < 3; di++) {
            zg_backend *be = oc_be[di];
            zg_dtype dt = be->act_dtype;
            int N = 37, V = di == 2 ? 997 : 1000, Vp = di == 2 ? 1001 : 1024;
            if (shape == 1) N = 5, V = 50257, Vp = 50304;
            size_t n = (size_t)N * Vp;
            float *lg = malloc(n * 4);
            void *dl_ = oc_dev_rand(be, dt, n, 8.f, lg);
            int32_t *tg = malloc(N * 4);
            for (int i = 0; i < N; i++) tg[i] = (i % 7 == 3) ? -1 : (int32_t)(zt_rand_u64(&oc_rng) % V);
            int32_t *dtg = be->ops->alloc(be, N * 4, "targets");
            be->ops->upload(be, dtg, tg, N * 4);
            float *losses = be->ops->alloc(be, N * 4, "losses");
            float nanv[37];
            for (int i = 0; i < N; i++) nanv[i] = NAN;
            be->ops->upload(be, losses, nanv, N * 4);
            float dloss = 1.f / N;
            be->ops->classifier(be, losses, dl_, dtg, N, V, Vp, dloss);
            double *rl = malloc(N * 8), *rg = malloc(n * 8);
            for (int i = 0; i < N; i++) {
                const float *x = lg + (size_t)i * Vp;
                double mx = -1e300, s = 0;
                for (int j = 0; j < V; j++)
                    if (x[j] > mx) mx = x[j];
                for (int j = 0; j < V; j++) s += exp(x[j] - mx);
                double lse = mx + log(s);
                rl[i] = tg[i] < 0 ? 0 : lse - x[tg[i]];
                for (int j = 0; j < Vp; j++)
                    rg[(size_t)i * Vp + j] = (tg[i] < 0 || j >= V) ? 0 : (exp(x[j] - lse) - (j == tg[i])) * dloss;
            }
            float *ol = oc_dl(be, losses, ZG_F32, N), *og = oc_dl(be, dl_, dt, n);
            oc_check_rel("classifier losses", dt, ol, rl, N, dt == ZG_F32 ? 1e-5 : 2e-3);
            oc_check_rel("classifier dlogits", dt, og, rg, n, oc_tol_of(dt));
            size_t badpad = 0;
            for (int i = 0; i < N; i++)
                for (int j = V; j < Vp; j++)
                    if (og[(size_t)i * Vp + j] != 0.f) badpad++;
            ZT_CHECK_MSG(badpad == 0, "classifier: %zu padded gradients not zero", badpad);
            /* dloss = 0: logits unchanged, losses written */
            be->ops->upload_f32(be, dl_, dt, lg, n);
            be->ops->upload(be, losses, nanv, N * 4);
            be->ops->classifier(be, losses, dl_, dtg, N, V, Vp, 0.f);
            float *ol2 = oc_dl(be, losses, ZG_F32, N), *og2 = oc_dl(be, dl_, dt, n);
            oc_check_rel("classifier losses (dloss=0)", dt, ol2, rl, N, dt == ZG_F32 ? 1e-5 : 2e-3);
            ZT_CHECK_MSG(memcmp(og2, lg, n * 4) == 0, "classifier with dloss=0 modified the logits");
            free(ol);
            free(og);
            free(ol2);
            free(og2);
            free(lg);
            free(tg);
            free(rl);
            free(rg);
            be->ops->dealloc(be, dl_);
            be->ops->dealloc(be, dtg);
            be->ops->dealloc(be, losses);
        }
}
