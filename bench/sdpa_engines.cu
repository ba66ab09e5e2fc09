// Which cuDNN engine configs the heuristics offer for zgpt's SDPA graphs, without a GPU: cuDNN (9.8+) ranks
// engine configs from a device-properties description in JSON (CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR), so the
// forward and backward graphs of src/backend/cuda/attention_cudnn.cu (included whole: the same builder, the
// same k_sdpa_prefer table) are built here against such a description, and each config the heuristics return
// is printed with its engine, its knob choices and whether the table prefers it. No plan is finalized (that
// needs the device). Run through bench/sdpa_engines.sh, which builds it and puts the CUDA driver stub where
// cuDNN looks for libcuda. What it cannot show: configs offered only with a device present (v0.30: the
// forward's KERNEL_CFG 32, which an H100 ranks first, is missing here; PERFORMANCE.md v0.30).
#include "backend/cuda/attention_cudnn.cu"

static int sdpa_engines_list(cudnnBackendDescriptor_t dp, int cc_major, int bwd, int B, int T, int NH) {
    zgc_gb *g = (zgc_gb *)zg_calloc(1, sizeof(zgc_gb));
    zgc_sdpa_shape s;
    cudnnBackendDescriptor_t graph, cfgs[ZGC_SDPA_MAX_CFG];
    char msg[512];
    int rc = 1;
    g->next_uid = ZGC_UID_VIRTUAL;
    zgc_sdpa_shape_init(&s, B, T, NH, 64, ZG_BF16);
    if ((bwd ? zgc_sdpa_graph_bwd(g, &s) : zgc_sdpa_graph_fwd(g, &s)) != 0 ||
        zgc_gb_new(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph) != 0) {
        fprintf(stderr, "sdpa_engines: graph: %s\n", g->err);
        goto cleanup;
    }
    if (cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g->n_ops,
                                 g->ops) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendFinalize(graph) != CUDNN_STATUS_SUCCESS) {
        cudnnGetLastErrorString(msg, sizeof msg);
        fprintf(stderr, "sdpa_engines: operation graph: %s\n", msg);
        goto cleanup;
    }
    for (int m = 0; m < 2; m++) {
        cudnnBackendHeurMode_t mode = m ? CUDNN_HEUR_MODE_B : CUDNN_HEUR_MODE_A;
        cudnnBackendDescriptor_t heur;
        int64_t n = 0;
        if (zgc_gb_new(g, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur) != 0) goto cleanup;
        for (int i = 0; i < ZGC_SDPA_MAX_CFG; i++)
            if (zgc_gb_new(g, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[i]) != 0) goto cleanup;
        if (cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                     &graph) != CUDNN_STATUS_SUCCESS ||
            cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) !=
                CUDNN_STATUS_SUCCESS ||
            cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dp) !=
                CUDNN_STATUS_SUCCESS ||
            cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS ||
            cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                     ZGC_SDPA_MAX_CFG, &n, cfgs) != CUDNN_STATUS_SUCCESS) {
            cudnnGetLastErrorString(msg, sizeof msg);
            fprintf(stderr, "sdpa_engines: heuristics: %s\n", msg);
            goto cleanup;
        }
        printf("%s B=%d T=%d NH=%d hs=64 bf16, heuristics mode %s: %lld config(s)\n", bwd ? "backward" : "forward", B,
               T, NH, m ? "B" : "A", (long long)n);
        fflush(stdout);
        for (int64_t i = 0; i < n && i < ZGC_SDPA_MAX_CFG; i++)
            zgc_sdpa_cfg_print(bwd, mode, i, cfgs[i], zgc_sdpa_preferred(bwd, cc_major, cfgs[i]));
    }
    rc = 0;
cleanup:
    zgc_gb_free(g);
    return rc;
}

// usage: sdpa_engines DEVICE.json CC_MAJOR B NH [T]
int main(int argc, char **argv) {
    static char json[65536];
    cudnnBackendDescriptor_t dp = NULL;
    size_t n = 0;
    int rc = 1;
    if (argc < 5) {
        fprintf(stderr, "usage: %s DEVICE.json CC_MAJOR B NH [T]\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) {
        fprintf(stderr, "sdpa_engines: cannot open %s\n", argv[1]);
        return 1;
    }
    n = fread(json, 1, sizeof json - 1, f);
    fclose(f);
    int cc = atoi(argv[2]), B = atoi(argv[3]), NH = atoi(argv[4]), T = argc > 5 ? atoi(argv[5]) : 1024;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, &dp) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendSetAttribute(dp, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, (int64_t)n, json) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnBackendFinalize(dp) != CUDNN_STATUS_SUCCESS) {
        char msg[512];
        cudnnGetLastErrorString(msg, sizeof msg);
        fprintf(stderr, "sdpa_engines: %s: not a cuDNN device description: %s\n", argv[1], msg);
        goto cleanup;
    }
    rc = sdpa_engines_list(dp, cc, 0, B, T, NH) || sdpa_engines_list(dp, cc, 1, B, T, NH);
cleanup:
    if (dp != NULL) cudnnBackendDestroyDescriptor(dp);
    return rc;
}
