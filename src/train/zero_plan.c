/* ZeRO memory planning: what a rank holds (prediction for `zgpt plan`, and what the engine holds). */
#include "train/zero_internal.h"
#include "train/zero_offload.h"

#include "core/error.h"
#include "core/meminfo.h"

#include <stdint.h>
#include <string.h>

size_t zero_layer_size_max(const gpt2_param_table *t, int L, size_t *min_out) {
    size_t mx = 0, mn = (size_t)-1;
    for (int l = 0; l < L; l++) {
        size_t k = t->layer_begin[l + 1] - t->layer_begin[l];
        if (k > mx) mx = k;
        if (k < mn) mn = k;
    }
    if (min_out) *min_out = L > 0 ? mn : 0;
    return mx;
}

int zero_table_layers(const gpt2_param_table *t) {
    int maxl = -1;
    for (int i = 0; i < t->n_tensors; i++)
        if (t->tensors[i].layer > maxl) maxl = t->tensors[i].layer;
    return maxl + 1;
}

void zg_zero_opts_fit_model(zg_zero_opts *o, const gpt2_param_table *t) {
    if (o->stage < 2) return;
    int L = zero_table_layers(t);
    if (L == 0) return;
    size_t mx = zero_layer_size_max(t, L, NULL);
    size_t cap = mx > ZG_ZERO_MIN_LAYER_BUCKET ? mx : ZG_ZERO_MIN_LAYER_BUCKET;
    if (o->reduce_bucket_size > cap) o->reduce_bucket_size = cap;
}

int zg_zero_grad_pool_count(const gpt2_param_table *t, const zg_zero_opts *o, int world) {
    int L = zero_table_layers(t);
    size_t mn, mx = zero_layer_size_max(t, L, &mn);
    zg_zero_grad_schedule s;
    zg_zero_grad_schedule_of(t, o, world, &s);
    L -= s.layers; /* the layers with buffers of their own never take one from the pool */
    if (L == 0 || mn == 0) return L;
    size_t in_flight = o->overlap_comm ? MAX_BUCKETS_IN_FLIGHT : 0;
    if (o->reduce_bucket_size > (SIZE_MAX - mx) / (in_flight + 1)) return L; /* buckets beyond any model */
    /* the live range starts at the current layer's first element (a layer boundary) */
    size_t span = mx + (in_flight + 1) * o->reduce_bucket_size - 1;
    size_t k = (span + mn - 1) / mn;
    return k < (size_t)L ? (int)k : L;
}

/* Elements of the embeddings + ln_f groups. */
size_t zero_resident_elems(const gpt2_param_table *t, int L) {
    return t->layer_begin[0] + (t->num_params - t->layer_begin[L]);
}

/* ---- memory ------------------------------------------------------------------------------ */

void zg_zero_plan(size_t n, int world, int rank, const zg_zero_opts *o, zg_dtype pdt, zg_dtype gdt, int device,
                  size_t act_bytes, zg_zero_memory *m) {
    memset(m, 0, sizeof *m);
    size_t b = 0, e = n;
    if (o->stage > 0) zg_zero_shard_range(n, world, rank, &b, &e);
    size_t k = e - b;
    m->params = n * zg_dtype_size(pdt);
    m->grads = n * zg_dtype_size(gdt);
    int shard = o->stage >= 2 && !zg_zero_grads_direct(o, world); /* offload on one rank: the full buffer */
    if (shard) m->grad_shard = k * zg_dtype_size(gdt);
    m->optimizer = k ? k * 4 * (pdt == ZG_F32 ? 2 : 3) : 0;
    m->optimizer_state = m->optimizer;
    if (o->offload_optimizer && o->stage > 0) { /* ZeRO-Offload: the state and the staging on the host */
        m->optimizer = 0;
        m->host = zero_offload_plan_host_bytes(k, pdt, gdt);
        if (o->offload_dpu) m->host += zero_offload_plan_dpu_bytes(k, pdt);
    }
    /* The MPI backend reduces 16-bit data through fp32 scratch: up to the buckets in flight. */
    if (!device && gdt != ZG_F32 && world > 1) {
        size_t bucket = o->reduce_bucket_size < n ? o->reduce_bucket_size : n;
        m->comm += bucket * 4 * (o->stage >= 2 && o->overlap_comm ? MAX_BUCKETS_IN_FLIGHT : 1);
    }
    m->activations = act_bytes;
}

void zg_zero_plan_model(const gpt2_param_table *t, int world, int rank, const zg_zero_opts *o, zg_dtype pdt,
                        zg_dtype gdt, int device, size_t act_bytes, zg_zero_memory *m) {
    size_t n = t->num_params;
    zg_zero_plan(n, world, rank, o, pdt, gdt, device, act_bytes, m);
    int L = zero_table_layers(t);
    size_t lmax = zero_layer_size_max(t, L, NULL), res = zero_resident_elems(t, L);
    if (o->stage >= 2 && !zg_zero_grads_direct(o, world)) {
        zg_zero_grad_schedule s; /* + the persistent buffers of the layers accumulated locally */
        zg_zero_grad_schedule_of(t, o, world, &s);
        m->grads = (res + (size_t)zg_zero_grad_pool_count(t, o, world) * lmax + s.layer_elems) * zg_dtype_size(gdt);
    }
    if (o->stage >= 3) {
        size_t b, e;
        zg_zero_shard_range(n, world, rank, &b, &e);
        size_t k = e - b, shard_dev = o->offload_param ? 0 : k;
        m->params = (shard_dev + res + (L > 0 ? 2 * lmax : 0)) * zg_dtype_size(pdt);
        /* offload_param: the shard on the host; with offload_optimizer it is the parameter staging
         * zero_offload_plan_host_bytes already counts (the host AdamW updates it in place) */
        if (o->offload_param && !o->offload_optimizer) m->host += k * zg_dtype_size(pdt);
    }
}

void zg_zero_memory_held(const zg_zero *z, zg_zero_memory *m) {
    memset(m, 0, sizeof *m);
    /* what is allocated now (outside zg_zero_gather_all's temporary full copy) */
    size_t pe = z->params && z->params != z->param_full ? z->n : 0;
    if (z->param_shard && !z->poff) pe += z->end - z->begin;
    if (z->param_resident) pe += z->resident;
    for (int i = 0; i < 2; i++) pe += z->param_pool[i] ? z->layer_max : 0;
    m->params = pe * esz(z->pdt);
    size_t ge = z->grads ? z->n : 0;
    if (z->grad_resident) ge += z->resident;
    ge += (size_t)z->grad_pool_n * z->layer_max + zero_local_layer_elems(z);
    m->grads = ge * esz(z->gdt);
    m->grad_shard = z->grad_shard ? (z->end - z->begin) * esz(z->gdt) : 0;
    m->optimizer_state = zg_optimizer_state_bytes(&z->opt);
    m->optimizer = z->opt.host ? 0 : m->optimizer_state;
    m->host = zero_offload_host_bytes(z) + (z->off ? 0 : zero_param_offload_host_bytes(z));
    m->comm = z->comm->scratch_peak;
}

size_t zg_zero_memory_total(const zg_zero_memory *m) {
    return m->params + m->grads + m->grad_shard + m->optimizer + m->comm + m->activations;
}

int zg_zero_check_memory(const gpt2_param_table *t, int world, int rank, int local_ranks, const zg_zero_opts *o,
                         zg_dtype pdt, zg_dtype gdt, size_t act_bytes, size_t device_total, size_t host_extra) {
    zg_zero_memory m;
    zg_zero_plan_model(t, world, rank, o, pdt, gdt, device_total > 0, act_bytes, &m);
    const double GiB = 1073741824.0;
    size_t gpu = zg_zero_memory_total(&m);
    if (device_total > 0 && gpu > device_total)
        return zg_errorf(
            "rank %d needs %.2f GiB of GPU memory (params %.2f, grads %.2f, grad shard %.2f, optimizer "
            "%.2f, activations %.2f GiB) but the device has %.2f GiB; use a higher ZeRO stage, more GPUs, "
            "offload_optimizer \"cpu\", offload_param \"cpu\" (stage 3), a smaller micro-batch or activation "
            "recompute",
            rank, gpu / GiB, m.params / GiB, (m.grads + 0.0) / GiB, m.grad_shard / GiB, m.optimizer / GiB,
            m.activations / GiB, device_total / GiB);
    uint64_t avail = zg_host_mem_available();
    double host = (double)m.host * (local_ranks > 0 ? local_ranks : 1) + (double)host_extra;
    int popt = o->offload_optimizer, ppar = o->offload_param && o->stage >= 3;
    if (m.host > 0 && host > (double)avail)
        return zg_errorf("ZeRO-Offload needs %.2f GiB of host memory (%.2f GiB per rank x %d rank%s on this machine: "
                         "%s%s%s; + %.2f GiB of the trainer's fp32 parameters) but only %.2f GiB is available "
                         "(MemAvailable); use more machines, or remove %s",
                         host / GiB, m.host / GiB, local_ranks, local_ranks == 1 ? "" : "s",
                         popt ? "fp32 master, Adam m and v, staging" : "", popt && ppar ? ", " : "",
                         ppar ? "the parameter shard" : "", host_extra / GiB, (double)avail / GiB,
                         popt && ppar ? "offload_optimizer or offload_param"
                         : popt       ? "offload_optimizer"
                                      : "offload_param");
    return 0;
}
