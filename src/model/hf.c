/* Hugging Face GPT-2 import/export (see hf.h). HF's GPT-2 uses Conv1D for every projection, which
 * stores weights (in, out); zgpt stores (out, in) like nn.Linear, so those four weights per layer are
 * transposed in both directions. */
#include "model/hf.h"

#include "core/error.h"
#include "core/fileio.h"
#include "model/ds_checkpoint.h"
#include "model/llmc_model.h"
#include "model/safetensors.h"
#include "model/safetensors_index.h"
#include "model/torch_pickle.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* dst (cols, rows) = src (rows, cols)^T in 32 x 32 tiles, the column tiles shared among the threads: a
 * tile's 32 source rows and 32 destination rows stay in cache and in the TLB. Row by row, every read of a
 * column touched another page (v0.20, GPT-2 XL's 1.47G Conv1D elements, 2-core host, memory faulted in
 * before: the whole load 5.84 s row by row, 3.39 s in tiles). */
static void transpose_f32(float *dst, const float *src, int rows, int cols) {
    enum { TILE = 32 };
    int tiles = (cols + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)cols >= ((size_t)1 << 20))
    for (int ct = 0; ct < tiles; ct++)
        for (int r0 = 0; r0 < rows; r0 += TILE) {
            int c0 = ct * TILE;
            int r1 = r0 + TILE < rows ? r0 + TILE : rows, c1 = c0 + TILE < cols ? c0 + TILE : cols;
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
        }
}

static int is_conv1d_weight(const char *name) {
    static const char *suffixes[] = {"attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                                     "mlp.c_proj.weight"};
    size_t n = strlen(name);
    for (size_t i = 0; i < 4; i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k && strcmp(name + n - k, suffixes[i]) == 0) return 1;
    }
    return 0;
}

/* HF key (without "transformer.") of a zgpt table name: wte -> wte.weight, wpe -> wpe.weight. */
static void hf_key(const char *zname, char *out, size_t cap) {
    if (strcmp(zname, "wte") == 0 || strcmp(zname, "wpe") == 0)
        snprintf(out, cap, "%s.weight", zname);
    else
        snprintf(out, cap, "%s", zname);
}

/* a torch.save file rather than safetensors: a zip archive (torch.save's format), or named like one */
static int is_torch_path(const char *path) {
    static const char *const ext[] = {".bin", ".pt", ".pth", ".ckpt"};
    size_t n = strlen(path);
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t k = strlen(ext[i]);
        if (n > k && strcmp(path + n - k, ext[i]) == 0) return 1;
    }
    return !safetensors_is_index_path(path) && torch_file_is_zip(path);
}

/* Resolves PATH to the weights (model.safetensors, or the index of a sharded checkpoint) and the config.json
 * (NULL when absent). Heap strings. */
static int resolve_paths(const char *path, char **st_path, char **cfg_path) {
    *st_path = *cfg_path = NULL;
    if (zg_dir_exists(path)) {
        /* as transformers looks for them (model_weight_files, whether or not an index's shards are all there: the
         * load names a missing one), then nanoGPT's out_dir and DeepSpeed's tag folder */
        static const char *const more[] = {"ckpt.pt"};
        for (int i = 0; i < MODEL_WEIGHT_FILES + 1 && *st_path == NULL; i++) {
            char *f = zg_path_join(path, i < MODEL_WEIGHT_FILES ? model_weight_files[i] : more[i - MODEL_WEIGHT_FILES]);
            if (zg_file_exists(f))
                *st_path = f;
            else
                free(f);
        }
        int ds = *st_path == NULL && (*st_path = ds_model_states_path(path)) != NULL;
        if (*st_path == NULL) *st_path = llmc_latest_model(path);
        if (*st_path == NULL)
            return zg_errorf(
                "%s: no model weights in the folder (model.safetensors, model.safetensors.index.json and "
                "its shards, pytorch_model.bin or its sharded index, nanoGPT's ckpt.pt, or a DeepSpeed tag "
                "folder's mp_rank_00_model_states.pt or zero_pp_rank_0_mp_rank_00_model_states.pt, or llm.c's "
                "model_<step>.bin with its DONE_<step>): give a Hugging Face GPT-2 folder or a checkpoint file",
                path);
        *cfg_path = zg_path_join(path, "config.json");
        if (!zg_file_exists(*cfg_path)) {
            free(*cfg_path);
            *cfg_path = NULL;
        }
        /* a DeepSpeed tag folder inside a Hugging Face Trainer's checkpoint-N folder, which holds the config */
        if (*cfg_path == NULL && ds) {
            char *up = zg_path_join(path, "../config.json");
            if (zg_file_exists(up))
                *cfg_path = up;
            else
                free(up);
        }
        return 0;
    }
    if (!zg_file_exists(path))
        return zg_errorf("%s: no such file or folder (expected a HF GPT-2 folder, a .safetensors file, a sharded "
                         "checkpoint's model.safetensors.index.json, or a torch.save file: pytorch_model.bin, "
                         "nanoGPT's ckpt.pt)",
                         path);
    *st_path = zg_strdup(path);
    char *dir = zg_path_dir(path);
    char *c = zg_path_join(dir, "config.json");
    free(dir);
    if (zg_file_exists(c))
        *cfg_path = c;
    else
        free(c);
    return 0;
}

/* A model's weights: one safetensors file, or every shard a sharded checkpoint's index names, open together
 * (a tensor name in one file only). path: the file or the index, for messages. */
typedef struct {
    safetensors_file *files;
    int n_files;
    const char *path;
    torch_model_args args; /* a nanoGPT checkpoint's model_args (args.found) */
    int linear;            /* the projections in nn.Linear's (out, in) layout (nanoGPT, torch state dicts of
                              nn.Linear models), not Conv1D's (in, out): from c_attn's shape */
} hf_weights;

static void hf_weights_close(hf_weights *w) {
    for (int i = 0; i < w->n_files; i++) safetensors_close(&w->files[i]);
    free(w->files);
    memset(w, 0, sizeof *w);
}

/* The tensor named exactly `name`, and its file in *owner; NULL when no file has it. */
static const safetensors_tensor *hf_weights_get(const hf_weights *w, const char *name, const safetensors_file **owner) {
    for (int i = 0; i < w->n_files; i++) {
        const safetensors_tensor *t = safetensors_find(&w->files[i], name);
        if (t != NULL) {
            if (owner) *owner = &w->files[i];
            return t;
        }
    }
    return NULL;
}

static void hf_weights_layout(hf_weights *w);

/* Opens path: a .safetensors or torch.save file, or an index (safetensors_is_index_path) and all its shards,
 * checking that each tensor is in the shard the index names and in no other. notes: print what the load will
 * do instead of the expected (the load's open, not the config's). */
static int hf_weights_open(hf_weights *w, const char *path, int notes) {
    memset(w, 0, sizeof *w);
    w->path = path;
    if (!safetensors_is_index_path(path)) {
        w->files = zg_calloc(1, sizeof *w->files);
        if (llmc_file_is_model(path)) { /* llm.c's gpt2_124M.bin, model_<step>.bin */
            if (llmc_model_open(&w->files[0], path, &w->args) != 0) {
                hf_weights_close(w);
                return -1;
            }
            w->n_files = 1;
            hf_weights_layout(w);
            return 0;
        }
        /* a DeepSpeed tag folder's model states with the ranks' optimizer states beside them: the fp32 masters */
        int torch = is_torch_path(path), ds = 1;
        if (torch && ds_checkpoint_has_optim(path)) {
            ds = ds_checkpoint_open(&w->files[0], path, &w->args);
            if (ds == 1 && notes && zg_log_rank() <= 0) /* (every rank loads it: said once) */
                fprintf(stderr,
                        "note: %s: DeepSpeed saved no param_shapes (it does with ZeRO stages 1-3 only), so the fp32 "
                        "master weights in its optimizer states cannot be placed: loading the module's 16-bit "
                        "weights\n",
                        path);
        }
        if (ds < 0 || (ds == 1 && (torch ? torch_state_dict_open(&w->files[0], path, &w->args)
                                         : safetensors_open(&w->files[0], path)) != 0)) {
            hf_weights_close(w);
            return -1;
        }
        w->n_files = 1;
        hf_weights_layout(w);
        return 0;
    }
    safetensors_index ix;
    if (safetensors_index_read(&ix, path) != 0) return -1;
    char *dir = zg_path_dir(path);
    w->files = zg_calloc((size_t)ix.n_shards, sizeof *w->files);
    int rc = 0;
    for (int s = 0; s < ix.n_shards && rc == 0; s++) {
        char *p = zg_path_join(dir, ix.shards[s]);
        if (!zg_file_exists(p))
            rc = zg_errorf("%s: shard '%s' is missing (the index names %d shards: the checkpoint needs all of them)",
                           path, ix.shards[s], ix.n_shards);
        else if ((is_torch_path(p) ? torch_state_dict_open(&w->files[s], p, NULL)
                                   : safetensors_open(&w->files[s], p)) != 0)
            rc = -1;
        else
            w->n_files++;
        free(p);
    }
    for (int i = 0; i < ix.n_names && rc == 0; i++)
        if (safetensors_find(&w->files[ix.shard_of[i]], ix.names[i]) == NULL)
            rc = zg_errorf("%s: tensor '%s' is not in '%s', the shard the index names for it", path, ix.names[i],
                           ix.shards[ix.shard_of[i]]);
    for (int a = 0; a < w->n_files && rc == 0; a++)
        for (int k = 0; k < w->files[a].n_tensors && rc == 0; k++)
            for (int b = a + 1; b < w->n_files && rc == 0; b++)
                if (safetensors_find(&w->files[b], w->files[a].tensors[k].name) != NULL)
                    rc = zg_errorf("%s: tensor '%s' is in two shards ('%s' and '%s')", path,
                                   w->files[a].tensors[k].name, ix.shards[a], ix.shards[b]);
    safetensors_index_free(&ix);
    free(dir);
    if (rc != 0)
        hf_weights_close(w);
    else
        hf_weights_layout(w);
    return rc;
}

int hf_path_has_weights(const char *path) {
    char *st = NULL, *cj = NULL;
    int ok = 0;
    if (zg_dir_exists(path)) {
        ok = resolve_paths(path, &st, &cj) == 0;
    } else if (zg_file_exists(path)) {
        size_t n = strlen(path);
        ok = (n > 12 && strcmp(path + n - 12, ".safetensors") == 0) || safetensors_is_index_path(path) ||
             is_torch_path(path);
    }
    if (!ok) zg_error_clear();
    free(st);
    free(cj);
    return ok;
}

static int json_int(const cJSON *root, const char *key, const char *alt, int *out, const char *file) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (v == NULL && alt) v = cJSON_GetObjectItemCaseSensitive(root, alt);
    if (v == NULL) return zg_errorf("%s: key '%s' is missing: a GPT-2 config.json needs it", file, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 || v->valuedouble > 1e8)
        return zg_errorf("%s: key '%s' must be a positive integer", file, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int config_from_json(const char *file, gpt2_config *cfg) {
    char *text;
    size_t len;
    if (zg_file_read_all(file, &text, &len) != 0) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (root == NULL || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return zg_errorf("%s: not a JSON object", file);
    }
    memset(cfg, 0, sizeof *cfg);
    int rc = 0;
    /* another architecture (GPT-J and GPT-BigCode configs also have n_layer, n_head, n_embd): said first, rather than
     * a key it lacks or weights it names otherwise */
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "gpt2") != 0)
        rc = zg_errorf("%s: model_type '%s' is not GPT-2: zgpt reads GPT-2 models (model_type gpt2)", file,
                       type->valuestring);
    if (rc == 0) rc = json_int(root, "n_layer", NULL, &cfg->n_layer, file);
    if (rc == 0) rc = json_int(root, "n_head", NULL, &cfg->n_head, file);
    if (rc == 0) rc = json_int(root, "n_embd", NULL, &cfg->n_embd, file);
    if (rc == 0) rc = json_int(root, "n_positions", "n_ctx", &cfg->block_size, file);
    if (rc == 0) rc = json_int(root, "vocab_size", NULL, &cfg->vocab_size, file);
    /* Settings zgpt's GPT-2 does not implement: refuse rather than compute something else. */
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
    if (rc == 0 && cJSON_IsString(act) && strcmp(act->valuestring, "gelu_new") != 0 &&
        strcmp(act->valuestring, "gelu_pytorch_tanh") != 0)
        rc = zg_errorf("%s: activation_function '%s' is not supported: zgpt's GPT-2 uses the tanh GELU (gelu_new)",
                       file, act->valuestring);
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_epsilon");
    if (rc == 0 && cJSON_IsNumber(eps) && fabs(eps->valuedouble - 1e-5) > 1e-12)
        rc = zg_errorf("%s: layer_norm_epsilon %g is not supported: zgpt's GPT-2 uses 1e-5", file, eps->valuedouble);
    const cJSON *inner = cJSON_GetObjectItemCaseSensitive(root, "n_inner");
    if (rc == 0 && cJSON_IsNumber(inner) && inner->valuedouble != 4.0 * cfg->n_embd) /* (no cast of any number) */
        rc = zg_errorf("%s: n_inner %g is not supported: zgpt's GPT-2 MLP is 4 x n_embd = %d (set n_inner null)", file,
                       inner->valuedouble, 4 * cfg->n_embd);
    const cJSON *inv = cJSON_GetObjectItemCaseSensitive(root, "scale_attn_by_inverse_layer_idx");
    if (rc == 0 && cJSON_IsTrue(inv))
        rc = zg_errorf("%s: scale_attn_by_inverse_layer_idx true is not supported (set it false)", file);
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(root, "scale_attn_weights");
    if (rc == 0 && cJSON_IsFalse(scale))
        rc = zg_errorf("%s: scale_attn_weights false is not supported: zgpt scales attention scores by 1/sqrt(head "
                       "size)",
                       file);
    const cJSON *cross = cJSON_GetObjectItemCaseSensitive(root, "add_cross_attention");
    if (rc == 0 && cJSON_IsTrue(cross))
        rc = zg_errorf(
            "%s: add_cross_attention true is not supported: zgpt's GPT-2 is a decoder without cross-attention", file);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (rc == 0 && cJSON_IsFalse(tie))
        rc = zg_errorf("%s: tie_word_embeddings false is not supported: zgpt ties the LM head to wte", file);
    cJSON_Delete(root);
    if (rc != 0) return -1;
    if (gpt2_config_validate(cfg) != 0) return zg_error_prefix("%s", file);
    return 0;
}

/* Tensor lookup with and without the "transformer." prefix (its file in *owner). */
static const safetensors_tensor *find_tensor(const hf_weights *w, const char *key, const safetensors_file **owner) {
    char buf[192];
    snprintf(buf, sizeof buf, "transformer.%.160s", key);
    const safetensors_tensor *t = hf_weights_get(w, buf, owner);
    return t ? t : hf_weights_get(w, key, owner);
}

/* Conv1D's (in, out) projections (Hugging Face) or nn.Linear's (out, in) (nanoGPT): told apart by c_attn's
 * shape, (C, 3C) or (3C, C) */
static void hf_weights_layout(hf_weights *w) {
    const safetensors_tensor *t = find_tensor(w, "h.0.attn.c_attn.weight", NULL);
    w->linear = t != NULL && t->ndim == 2 && t->shape[0] == 3 * t->shape[1];
}

/* Without config.json: vocab_size and n_embd from wte, n_positions from wpe, n_layer from the
 * highest h.N present; n_head only for the released GPT-2 shapes (anything else needs config.json:
 * the weights do not say how C is split into heads). */
static int config_from_shapes(const char *file, gpt2_config *cfg) {
    hf_weights w;
    if (hf_weights_open(&w, file, 0) != 0) return -1;
    const safetensors_tensor *wte = find_tensor(&w, "wte.weight", NULL), *wpe = find_tensor(&w, "wpe.weight", NULL);
    int rc = 0;
    if (w.args.found) { /* nanoGPT's ckpt.pt: its model_args (its vocabulary as trained, e.g. padded to 50304) */
        memset(cfg, 0, sizeof *cfg);
        cfg->n_layer = w.args.n_layer;
        cfg->n_head = w.args.n_head;
        cfg->n_embd = w.args.n_embd;
        cfg->block_size = w.args.block_size;
        cfg->vocab_size = w.args.vocab_size;
        if (!w.args.bias && zg_log_rank() <= 0) /* (every rank loads it: said once) */
            fprintf(stderr,
                    "note: %s is a nanoGPT model with bias=False: zgpt's GPT-2 has LayerNorm and Linear biases, "
                    "loaded as 0 (the same function); fine-tuning here trains them\n",
                    file);
        if (gpt2_config_validate(cfg) != 0) rc = zg_error_prefix("%s: model_args", file);
    } else if (wte == NULL || wpe == NULL || wte->ndim != 2 || wpe->ndim != 2) {
        rc = zg_errorf("%s: no config.json beside the file and no 2-D wte.weight/wpe.weight to infer the config "
                       "from: put the model's Hugging Face config.json next to it",
                       file);
    } else {
        memset(cfg, 0, sizeof *cfg);
        cfg->vocab_size = (int)wte->shape[0];
        cfg->n_embd = (int)wte->shape[1];
        cfg->block_size = (int)wpe->shape[0];
        int maxl = -1;
        for (int fi = 0; fi < w.n_files; fi++)
            for (int i = 0; i < w.files[fi].n_tensors; i++) {
                const char *k = w.files[fi].tensors[i].name;
                if (strncmp(k, "transformer.", 12) == 0) k += 12;
                int l;
                if (sscanf(k, "h.%d.", &l) == 1 && l > maxl) maxl = l;
            }
        cfg->n_layer = maxl + 1;
        /* the released checkpoints' shapes only: their head count is known rather than guessed */
        const gpt2_named_model *nm = gpt2_named_by_shape(cfg->n_layer, cfg->n_embd);
        if (nm) cfg->n_head = nm->n_head;
        if (cfg->n_head == 0)
            rc = zg_errorf("%s: no config.json beside the file, and its shape (%d layers of %d channels) is not one of "
                           "the released GPT-2 models, so its number of heads is unknown: put the model's "
                           "config.json next to it",
                           file, cfg->n_layer, cfg->n_embd);
        if (rc == 0 && gpt2_config_validate(cfg) != 0) rc = zg_error_prefix("%s", file);
    }
    hf_weights_close(&w);
    return rc;
}

int hf_config_load(const char *path, gpt2_config *cfg) {
    char *st, *cj;
    if (resolve_paths(path, &st, &cj) != 0) return -1;
    int rc = cj ? config_from_json(cj, cfg) : config_from_shapes(st, cfg);
    free(st);
    free(cj);
    return rc;
}

static void shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The causal-mask buffers older transformers versions saved with the weights. */
static int is_ignored_key(const char *k) { return has_suffix(k, ".attn.bias") || has_suffix(k, ".attn.masked_bias"); }

int hf_params_load(const char *path, const gpt2_config *cfg_in, float *params) {
    gpt2_config cfg = *cfg_in;
    if (gpt2_config_validate(&cfg) != 0) return -1;
    char *st, *cj;
    if (resolve_paths(path, &st, &cj) != 0) return -1;
    free(cj);
    hf_weights w;
    if (hf_weights_open(&w, st, 1) != 0) {
        free(st);
        return -1;
    }
    gpt2_param_table tab;
    if (gpt2_param_table_init(&tab, &cfg) != 0) {
        hf_weights_close(&w);
        free(st);
        return -1;
    }
    int rc = 0;
    int C = cfg.n_embd, V = cfg.vocab_size;
    size_t maxn = 0;
    for (int i = 0; i < tab.n_tensors; i++) maxn = tab.tensors[i].numel > maxn ? tab.tensors[i].numel : maxn;
    float *tmp = zg_malloc(maxn * sizeof(float));
    char key[160], want[64], got[64];
    int used = 0;
    for (int i = 0; i < tab.n_tensors && rc == 0; i++) {
        const gpt2_tensor *x = &tab.tensors[i];
        hf_key(x->name, key, sizeof key);
        const safetensors_file *f = NULL;
        const safetensors_tensor *t = find_tensor(&w, key, &f);
        if (t == NULL && w.args.found && !w.args.bias && x->ndim == 1 && strstr(x->name, ".bias") != NULL) {
            /* nanoGPT's bias=False: no LayerNorm or Linear biases, which is the same function as biases of 0 */
            memset(params + x->offset, 0, x->numel * sizeof(float));
            continue;
        }
        if (t == NULL) {
            rc = zg_errorf("%s: tensor 'transformer.%s' is missing (expected for a GPT-2 with n_layer %d, n_embd %d)",
                           st, key, cfg.n_layer, C);
            break;
        }
        used++;
        int conv = is_conv1d_weight(x->name) && !w.linear;
        int64_t exp[2];
        int endim = x->ndim;
        if (x->ndim == 1) {
            exp[0] = x->shape[0];
        } else if (conv) {
            exp[0] = x->shape[1]; /* (in, out) */
            exp[1] = x->shape[0];
        } else {
            exp[0] = strcmp(x->name, "wte") == 0 ? V : x->shape[0]; /* HF wte is unpadded */
            exp[1] = x->shape[1];
        }
        int same = t->ndim == endim;
        for (int d = 0; same && d < endim; d++) same = t->shape[d] == exp[d];
        /* a shorter block_size than the file's n_positions crops wpe (nanoGPT's crop_block_size) */
        int crop = strcmp(x->name, "wpe") == 0 && t->ndim == 2 && t->shape[1] == exp[1] && t->shape[0] > exp[0];
        if (!same && !crop) {
            shape_str(want, sizeof want, exp, endim);
            shape_str(got, sizeof got, t->shape, t->ndim);
            rc = zg_errorf("%s: tensor '%s' has shape %s, expected %s (config: n_layer %d, n_head %d, n_embd %d, "
                           "n_positions %d, vocab_size %d)",
                           st, t->name, got, want, cfg.n_layer, cfg.n_head, C, cfg.block_size, V);
            break;
        }
        if (crop) {
            /* read the whole (n_positions, C) table, keep the first block_size rows */
            float *full = zg_malloc(t->numel * sizeof(float));
            rc = safetensors_read_f32(f, t, full);
            if (rc == 0) memcpy(tmp, full, x->numel * sizeof(float));
            free(full);
            if (rc != 0) break;
        } else if (safetensors_read_f32(f, t, tmp) != 0) {
            rc = -1;
            break;
        }
        float *dst = params + x->offset;
        if (conv) {
            transpose_f32(dst, tmp, (int)exp[0], (int)exp[1]); /* (in, out) -> (out, in) */
        } else if (strcmp(x->name, "wte") == 0) {
            memcpy(dst, tmp, (size_t)V * C * sizeof(float));
            memset(dst + (size_t)V * C, 0, (x->numel - (size_t)V * C) * sizeof(float)); /* padded rows */
        } else {
            memcpy(dst, tmp, x->numel * sizeof(float));
        }
    }
    /* Every other tensor must be an ignorable buffer or the tied LM head. */
    for (int fi = 0; fi < w.n_files && rc == 0; fi++)
        for (int i = 0; i < w.files[fi].n_tensors && rc == 0; i++) {
            const safetensors_file *f = &w.files[fi];
            const safetensors_tensor *t = &f->tensors[i];
            const char *k = t->name;
            if (strncmp(k, "transformer.", 12) == 0) k += 12;
            if (is_ignored_key(k)) continue;
            if (strcmp(k, "lm_head.weight") == 0) {
                if (t->ndim != 2 || t->shape[0] != V || t->shape[1] != C) {
                    int64_t e[2] = {V, C};
                    shape_str(want, sizeof want, e, 2);
                    shape_str(got, sizeof got, t->shape, t->ndim);
                    rc = zg_errorf("%s: tensor 'lm_head.weight' has shape %s, expected %s", st, got, want);
                    break;
                }
                float *lm = zg_malloc(t->numel * sizeof(float));
                rc = safetensors_read_f32(f, t, lm);
                if (rc == 0 && memcmp(lm, params, t->numel * sizeof(float)) != 0)
                    rc = zg_errorf(
                        "%s: lm_head.weight differs from wte: zgpt ties the LM head to the token embedding and "
                        "cannot load an untied head",
                        st);
                free(lm);
                continue;
            }
            int known = 0;
            for (int j = 0; j < tab.n_tensors && !known; j++) {
                hf_key(tab.tensors[j].name, key, sizeof key);
                known = strcmp(key, k) == 0;
            }
            if (!known)
                rc = zg_errorf("%s: unexpected tensor '%s' (not a GPT-2 parameter for n_layer %d): the file is not a "
                               "GPT2LMHeadModel of this config",
                               st, t->name, cfg.n_layer);
        }
    free(tmp);
    gpt2_param_table_free(&tab);
    hf_weights_close(&w);
    free(st);
    return rc;
}

static int write_config(const char *dir, const gpt2_config *cfg, zg_dtype dtype) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "activation_function", "gelu_new");
    cJSON *arch = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
    cJSON_AddNumberToObject(r, "attn_pdrop", 0.1);
    cJSON_AddNumberToObject(r, "bos_token_id", 50256);
    cJSON_AddNumberToObject(r, "embd_pdrop", 0.1);
    cJSON_AddNumberToObject(r, "eos_token_id", 50256);
    cJSON_AddNumberToObject(r, "initializer_range", 0.02);
    cJSON_AddNumberToObject(r, "layer_norm_epsilon", 1e-5);
    cJSON_AddStringToObject(r, "model_type", "gpt2");
    cJSON_AddNumberToObject(r, "n_ctx", cfg->block_size);
    cJSON_AddNumberToObject(r, "n_embd", cfg->n_embd);
    cJSON_AddNumberToObject(r, "n_head", cfg->n_head);
    cJSON_AddNullToObject(r, "n_inner");
    cJSON_AddNumberToObject(r, "n_layer", cfg->n_layer);
    cJSON_AddNumberToObject(r, "n_positions", cfg->block_size);
    cJSON_AddNumberToObject(r, "resid_pdrop", 0.1);
    cJSON_AddBoolToObject(r, "scale_attn_weights", 1);
    cJSON_AddBoolToObject(r, "scale_attn_by_inverse_layer_idx", 0);
    cJSON_AddBoolToObject(r, "reorder_and_upcast_attn", 0);
    cJSON_AddBoolToObject(r, "tie_word_embeddings", 1);
    const char *tname = dtype == ZG_F32 ? "float32" : dtype == ZG_F16 ? "float16" : "bfloat16";
    cJSON_AddStringToObject(r, "torch_dtype", tname);
    cJSON_AddBoolToObject(r, "use_cache", 1);
    cJSON_AddNumberToObject(r, "vocab_size", cfg->vocab_size);
    char *text = cJSON_Print(r);
    cJSON_Delete(r);
    if (text == NULL) ZG_FATAL("cJSON_Print failed (out of memory)");
    char *path = zg_path_join(dir, "config.json");
    zg_atomic_file af;
    int rc = zg_atomic_open(&af, path);
    if (rc == 0) rc = zg_atomic_write(&af, text, strlen(text));
    if (rc == 0) rc = zg_atomic_write(&af, "\n", 1);
    if (rc == 0)
        rc = zg_atomic_commit(&af, NULL);
    else
        zg_atomic_abort(&af);
    free(text);
    free(path);
    return rc;
}

int hf_export(const char *dir, const gpt2_config *cfg_in, const float *params, zg_dtype dtype) {
    gpt2_config cfg = *cfg_in;
    if (gpt2_config_validate(&cfg) != 0) return -1;
    if (zg_dir_make(dir) != 0) return -1;
    gpt2_param_table tab;
    if (gpt2_param_table_init(&tab, &cfg) != 0) return -1;
    int n = tab.n_tensors;
    safetensors_entry *e = zg_calloc((size_t)n, sizeof *e);
    char **names = zg_calloc((size_t)n, sizeof(char *));
    void **bufs = zg_calloc((size_t)n, sizeof(void *));
    size_t esz = zg_dtype_size(dtype);
    int V = cfg.vocab_size;
    for (int i = 0; i < n; i++) {
        const gpt2_tensor *x = &tab.tensors[i];
        char key[160];
        hf_key(x->name, key, sizeof key);
        names[i] = zg_malloc(strlen(key) + 13);
        snprintf(names[i], strlen(key) + 13, "transformer.%s", key);
        int conv = is_conv1d_weight(x->name);
        size_t numel = x->numel;
        e[i].name = names[i];
        e[i].dtype = dtype;
        e[i].ndim = x->ndim;
        if (x->ndim == 1) {
            e[i].shape[0] = x->shape[0];
        } else if (conv) {
            e[i].shape[0] = x->shape[1];
            e[i].shape[1] = x->shape[0];
        } else {
            e[i].shape[0] = strcmp(x->name, "wte") == 0 ? V : x->shape[0]; /* drop the padded rows */
            e[i].shape[1] = x->shape[1];
            numel = (size_t)e[i].shape[0] * (size_t)e[i].shape[1];
        }
        const float *src = params + x->offset;
        float *tr = NULL;
        if (conv) {
            /* (out, in) -> (in, out) */
            tr = zg_malloc(numel * sizeof(float));
            transpose_f32(tr, src, x->shape[0], x->shape[1]);
            src = tr;
        }
        bufs[i] = zg_malloc(numel * esz);
        for (size_t k = 0; k < numel; k++) {
            if (dtype == ZG_F32)
                ((float *)bufs[i])[k] = src[k];
            else if (dtype == ZG_F16)
                ((uint16_t *)bufs[i])[k] = zg_f32_to_f16(src[k]);
            else
                ((uint16_t *)bufs[i])[k] = zg_f32_to_bf16(src[k]);
        }
        free(tr);
        e[i].data = bufs[i];
    }
    char *path = zg_path_join(dir, "model.safetensors");
    int rc = safetensors_write(path, e, n);
    if (rc == 0) rc = write_config(dir, &cfg, dtype);
    free(path);
    for (int i = 0; i < n; i++) {
        free(names[i]);
        free(bufs[i]);
    }
    free(names);
    free(bufs);
    free(e);
    gpt2_param_table_free(&tab);
    return rc;
}
