/* gpu_test_ops_cuda: recorded graphs (graph_cuda.cu): a replay, twice, gives bitwise what the ops give run one
 * by one, at GPT-2 XL's shapes (cuBLASLt's products there clear a counter in its workspace before they run). */
#include "ops_cuda.h"

#include <string.h>

/* GPT-2 XL's first forward ops at B=16 (N = 16384 rows): LN1, the qkv product with bias, LN2 (here of the same
 * input), the fc product with GELU; the op before each product is a LayerNorm, as in the model */
typedef struct {
    int N, C, OC, FC;
    void *x, *lw, *lb, *y, *y2, *w1, *b1, *o1, *w2, *b2, *o2, *pre2;
    float *mean, *rstd;
} graph_case;

static void graph_case_run(zg_backend *be, const graph_case *g) {
    const zg_backend_ops *op = be->ops;
    op->layernorm_forward(be, g->y, g->mean, g->rstd, g->x, g->lw, g->lb, g->N, g->C);
    op->matmul_forward(be, g->o1, NULL, g->y, g->w1, g->b1, NULL, g->N, g->C, g->OC);
    op->layernorm_forward(be, g->y2, g->mean, g->rstd, g->x, g->lw, g->lb, g->N, g->C);
    op->matmul_forward(be, g->o2, g->pre2, g->y2, g->w2, g->b2, NULL, g->N, g->C, g->FC);
}

/* the two products' outputs and the GELU input after `run` (1: recorded and replayed), the outputs zeroed first */
static void graph_case_take(zg_backend *be, graph_case *g, int record, float **o1, float **o2, float **pre) {
    zg_dtype dt = be->act_dtype;
    size_t n1 = (size_t)g->N * g->OC, n2 = (size_t)g->N * g->FC;
    be->ops->zero(be, g->o1, n1 * zg_dtype_size(dt));
    be->ops->zero(be, g->o2, n2 * zg_dtype_size(dt));
    be->ops->zero(be, g->pre2, n2 * zg_dtype_size(dt));
    if (record) {
        ZT_CHECK(be->ops->graph_begin(be) == 0);
        graph_case_run(be, g);
        zg_graph *gr = be->ops->graph_end(be);
        ZT_CHECK_MSG(gr != NULL, "recording failed: %s", zg_error_message());
        if (gr) {
            be->ops->graph_launch(be, gr);
            be->ops->graph_launch(be, gr); /* twice: a replay's memsets clear what the one before used */
            be->ops->graph_destroy(be, gr);
        }
    } else {
        graph_case_run(be, g);
    }
    *o1 = oc_dl(be, g->o1, dt, n1);
    *o2 = oc_dl(be, g->o2, dt, n2);
    *pre = oc_dl(be, g->pre2, dt, n2);
}

void oc_test_graph_replay(void) {
    zg_backend *be = oc_be[1]; /* bf16, the training dtype */
    zg_dtype dt = be->act_dtype;
    graph_case g = {.N = 16384, .C = 1600, .OC = 4800, .FC = 6400};
    size_t nc = (size_t)g.N * g.C;
    g.x = oc_dev_rand(be, dt, nc, 2.f, NULL);
    g.lw = oc_dev_rand(be, dt, g.C, 1.f, NULL), g.lb = oc_dev_rand(be, dt, g.C, 0.2f, NULL);
    g.y = oc_dev_rand(be, dt, nc, 0.f, NULL), g.y2 = oc_dev_rand(be, dt, nc, 0.f, NULL);
    g.w1 = oc_dev_rand(be, dt, (size_t)g.OC * g.C, 0.05f, NULL), g.b1 = oc_dev_rand(be, dt, g.OC, 0.1f, NULL);
    g.w2 = oc_dev_rand(be, dt, (size_t)g.FC * g.C, 0.05f, NULL), g.b2 = oc_dev_rand(be, dt, g.FC, 0.1f, NULL);
    g.o1 = oc_dev_rand(be, dt, (size_t)g.N * g.OC, 0.f, NULL);
    g.o2 = oc_dev_rand(be, dt, (size_t)g.N * g.FC, 0.f, NULL);
    g.pre2 = oc_dev_rand(be, dt, (size_t)g.N * g.FC, 0.f, NULL);
    g.mean = be->ops->alloc(be, (size_t)g.N * 4, "mean"), g.rstd = be->ops->alloc(be, (size_t)g.N * 4, "rstd");
    float *ref[3], *got[3];
    graph_case_take(be, &g, 0, &ref[0], &ref[1], &ref[2]);
    graph_case_take(be, &g, 1, &got[0], &got[1], &got[2]);
    size_t len[3] = {(size_t)g.N * g.OC, (size_t)g.N * g.FC, (size_t)g.N * g.FC};
    for (int k = 0; k < 3; k++) {
        ZT_CHECK_MSG(memcmp(ref[k], got[k], len[k] * 4) == 0, "graph replay: %s differs from the ops run one by one",
                     k == 0   ? "the qkv product"
                     : k == 1 ? "the fc product"
                              : "the GELU input");
        free(got[k]);
    }
    for (int k = 0; k < 3; k++) free(ref[k]);
    void *ptrs[] = {g.x, g.lw, g.lb, g.y, g.y2, g.w1, g.b1, g.o1, g.w2, g.b2, g.o2, g.pre2, g.mean, g.rstd};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
}
