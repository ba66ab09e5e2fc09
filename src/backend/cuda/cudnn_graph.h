/* A cuDNN backend-API graph builder (attention_cudnn_graph.cu's SDPA graphs): descriptors created through one zgc_gb,
 * kept with it and destroyed together with zgc_gb_free (in reverse creation order). Each function returns 0, or -1
 * with "file:line: call failed: status" in g->err (the caller falls back to zgpt's kernels). Built with cuDNN only. */
#ifndef ZG_BACKEND_CUDA_CUDNN_GRAPH_H
#define ZG_BACKEND_CUDA_CUDNN_GRAPH_H

#ifdef ZGPT_WITH_CUDNN

#include <cudnn.h>
#include <stdint.h>
#include <stdio.h>

#define ZGC_GB_MAX_DESC 192 /* SDPA's backward graph 69, its plan search up to 18 + 2 per engine config tried */
#define ZGC_GB_MAX_OPS 32

/* The descriptors of one graph, kept alive with its plan (destroyed together). */
typedef struct {
    cudnnBackendDescriptor_t d[ZGC_GB_MAX_DESC];
    int n;
    cudnnBackendDescriptor_t ops[ZGC_GB_MAX_OPS];
    int n_ops;
    int64_t next_uid;
    char err[320];
} zgc_gb;

/* Checked cuDNN call inside a builder function: on failure, records file, line, the call and cuDNN's
 * status string in g->err and returns -1 (the caller falls back to our kernels). */
#define ZG_CUDNN_CHECK(g, call)                                                                                        \
    do {                                                                                                               \
        cudnnStatus_t s_ = (call);                                                                                     \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                                              \
            snprintf((g)->err, sizeof((g)->err), "%s:%d: %s failed: %s", __FILE__, __LINE__, #call,                    \
                     cudnnGetErrorString(s_));                                                                         \
            return -1;                                                                                                 \
        }                                                                                                              \
    } while (0)

/* a new descriptor of the type, kept in g (at most ZGC_GB_MAX_DESC) */
int zgc_gb_new(zgc_gb *g, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *out);
/* g's descriptors, then g (allocated with zg_calloc); NULL is a no-op */
void zgc_gb_free(zgc_gb *g);
/* op, a finalized operation, appended to g's operation list (the graph's, in order; at most ZGC_GB_MAX_OPS) */
int zgc_gb_add_op(zgc_gb *g, cudnnBackendDescriptor_t op);
/* A 4-d tensor descriptor. uid 0 = a new virtual tensor (intermediate, never in memory). */
int zgc_gb_tensor(zgc_gb *g, int64_t uid, cudnnDataType_t dt, const int64_t dims[4], const int64_t strides[4],
                  int by_value, cudnnBackendDescriptor_t *out);
/* A fp32 scalar passed by value (its host address goes into the variant pack). */
int zgc_gb_scalar(zgc_gb *g, int64_t uid, cudnnBackendDescriptor_t *out);
/* y = mode(x [, b [, t]]); axis >= 0 for GEN_INDEX. */
int zgc_gb_pointwise(zgc_gb *g, cudnnPointwiseMode_t mode, cudnnDataType_t prec, cudnnBackendDescriptor_t x,
                     cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, int64_t axis);
/* y = reduce(x) over the dimensions where y has extent 1 (fp32). */
int zgc_gb_reduction(zgc_gb *g, cudnnReduceTensorOp_t red, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y);
/* c = a @ b (batched over the first two dimensions), fp32 accumulation. */
int zgc_gb_matmul(zgc_gb *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c);
/* y = x viewed with y's dims and strides (a transpose, no data movement). */
int zgc_gb_reshape(zgc_gb *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y);
/* y = mode(x [, b [, t]]) into a new virtual tensor of type ydt and the given shape; the math in ydt for
 * the index and comparison modes (INT32, BOOLEAN), else in fp32. */
int zgc_gb_pw_new(zgc_gb *g, cudnnPointwiseMode_t mode, cudnnDataType_t ydt, const int64_t dims[4],
                  const int64_t strides[4], cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                  cudnnBackendDescriptor_t t, int64_t axis, cudnnBackendDescriptor_t *y);
/* c = a @ b into a new virtual fp32 tensor of the given shape */
int zgc_gb_mm_new(zgc_gb *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, const int64_t dims[4],
                  const int64_t strides[4], cudnnBackendDescriptor_t *c);

#endif /* ZGPT_WITH_CUDNN */
#endif
