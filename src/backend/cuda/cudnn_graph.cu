/* The cuDNN backend-API graph builder (cudnn_graph.h). */
#ifdef ZGPT_WITH_CUDNN

#include "backend/cuda/cudnn_graph.h"

#include <stdbool.h>
#include <stdlib.h>

int zgc_gb_new(zgc_gb *g, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *out) {
    if (g->n >= ZGC_GB_MAX_DESC) {
        snprintf(g->err, sizeof(g->err), "%s:%d: more than %d descriptors in one graph", __FILE__, __LINE__,
                 ZGC_GB_MAX_DESC);
        return -1;
    }
    ZG_CUDNN_CHECK(g, cudnnBackendCreateDescriptor(type, out));
    g->d[g->n++] = *out;
    return 0;
}

void zgc_gb_free(zgc_gb *g) {
    if (g == NULL) return;
    /* in reverse creation order: a descriptor is destroyed before those it refers to */
    for (int i = g->n - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(g->d[i]);
    free(g);
}

int zgc_gb_add_op(zgc_gb *g, cudnnBackendDescriptor_t op) {
    if (g->n_ops >= ZGC_GB_MAX_OPS) {
        snprintf(g->err, sizeof(g->err), "%s:%d: more than %d operations in one graph", __FILE__, __LINE__,
                 ZGC_GB_MAX_OPS);
        return -1;
    }
    g->ops[g->n_ops++] = op;
    return 0;
}

/* A 4-d tensor descriptor. uid 0 = a new virtual tensor (intermediate, never in memory). */
int zgc_gb_tensor(zgc_gb *g, int64_t uid, cudnnDataType_t dt, const int64_t dims[4], const int64_t strides[4],
                  int by_value, cudnnBackendDescriptor_t *out) {
    bool is_virtual = (uid == 0), is_by_value = (by_value != 0);
    if (is_virtual) uid = g->next_uid++;
    int64_t align = 16;
    if (zgc_gb_new(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR, out)) return -1;
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(*out, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(*out, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(*out, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(*out, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(*out, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(*out, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual));
    if (is_by_value)
        ZG_CUDNN_CHECK(
            g, cudnnBackendSetAttribute(*out, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &is_by_value));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(*out));
    return 0;
}

/* A fp32 scalar passed by value (its host address goes into the variant pack). */
int zgc_gb_scalar(zgc_gb *g, int64_t uid, cudnnBackendDescriptor_t *out) {
    static const int64_t one[4] = {1, 1, 1, 1};
    return zgc_gb_tensor(g, uid, CUDNN_DATA_FLOAT, one, one, 1, out);
}

/* y = mode(x [, b [, t]]); axis >= 0 for GEN_INDEX. */
int zgc_gb_pointwise(zgc_gb *g, cudnnPointwiseMode_t mode, cudnnDataType_t prec, cudnnBackendDescriptor_t x,
                     cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, int64_t axis) {
    cudnnBackendDescriptor_t pw, op;
    float alpha = 1.f;
    if (zgc_gb_new(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw)) return -1;
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    if (axis >= 0)
        ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(pw));
    if (zgc_gb_new(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, &op)) return -1;
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    if (b != NULL)
        ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC,
                                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    if (t != NULL)
        ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC,
                                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &alpha));
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &alpha));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(op));
    return zgc_gb_add_op(g, op);
}

/* y = reduce(x) over the dimensions where y has extent 1 (fp32). */
int zgc_gb_reduction(zgc_gb *g, cudnnReduceTensorOp_t red, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t rd, op;
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    if (zgc_gb_new(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, &rd)) return -1;
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &red));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(rd));
    if (zgc_gb_new(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, &op)) return -1;
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(op));
    return zgc_gb_add_op(g, op);
}

/* c = a @ b (batched over the first two dimensions), fp32 accumulation. */
int zgc_gb_matmul(zgc_gb *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t md, op;
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    if (zgc_gb_new(g, CUDNN_BACKEND_MATMUL_DESCRIPTOR, &md)) return -1;
    ZG_CUDNN_CHECK(g, cudnnBackendSetAttribute(md, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(md));
    if (zgc_gb_new(g, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, &op)) return -1;
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &md));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(op));
    return zgc_gb_add_op(g, op);
}

/* y = x viewed with y's dims and strides (a transpose, no data movement). */
int zgc_gb_reshape(zgc_gb *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op;
    if (zgc_gb_new(g, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, &op)) return -1;
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    ZG_CUDNN_CHECK(
        g, cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    ZG_CUDNN_CHECK(g, cudnnBackendFinalize(op));
    return zgc_gb_add_op(g, op);
}

/* y = mode(x [, b [, t]]) into a new virtual tensor of type ydt and the given shape; the math in ydt for
 * the index and comparison modes (INT32, BOOLEAN), else in fp32. */
int zgc_gb_pw_new(zgc_gb *g, cudnnPointwiseMode_t mode, cudnnDataType_t ydt, const int64_t dims[4],
                  const int64_t strides[4], cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                  cudnnBackendDescriptor_t t, int64_t axis, cudnnBackendDescriptor_t *y) {
    cudnnDataType_t prec = (ydt == CUDNN_DATA_INT32 || ydt == CUDNN_DATA_BOOLEAN) ? ydt : CUDNN_DATA_FLOAT;
    if (zgc_gb_tensor(g, 0, ydt, dims, strides, 0, y)) return -1;
    return zgc_gb_pointwise(g, mode, prec, x, b, t, *y, axis);
}

/* c = a @ b into a new virtual fp32 tensor of the given shape */
int zgc_gb_mm_new(zgc_gb *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, const int64_t dims[4],
                  const int64_t strides[4], cudnnBackendDescriptor_t *c) {
    if (zgc_gb_tensor(g, 0, CUDNN_DATA_FLOAT, dims, strides, 0, c)) return -1;
    return zgc_gb_matmul(g, a, b, *c);
}

#endif /* ZGPT_WITH_CUDNN */
