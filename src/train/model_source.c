#include "train/model_source.h"

#include "core/error.h"
#include "core/fileio.h"
#include "hub/hub_cache.h"
#include "hub/hub_download.h"
#include "model/ds_checkpoint.h"
#include "model/hf.h"
#include "model/safetensors_index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *zg_models_dir_for(const char *name) {
    const char *env = getenv("ZGPT_MODELS");
    if (env && *env) return zg_path_join(env, name);
    const char *home = getenv("HOME");
    char *base = zg_path_join(home && *home ? home : ".", ".cache/zgpt/models");
    char *p = zg_path_join(base, name);
    free(base);
    return p;
}

const char *zg_model_hub_repo(const char *spec) {
    const gpt2_named_model *n = gpt2_named_find(spec);
    return n ? n->repo : spec;
}

static int open_hf(zg_model_source *s, const char *path) {
    s->kind = ZG_SRC_HF;
    s->path = zg_strdup(path);
    if (hf_config_load(path, &s->cfg) != 0) return -1;
    return gpt2_config_validate(&s->cfg);
}

/* A named model's folder must hold that model. */
static int check_named_shape(const zg_model_source *s, const char *name, const char *dir) {
    gpt2_config want;
    if (gpt2_config_by_name(name, &want) == 0 &&
        (want.n_layer != s->cfg.n_layer || want.n_embd != s->cfg.n_embd || want.n_head != s->cfg.n_head))
        return zg_errorf("'%s' does not hold %s (it has n_layer=%d n_head=%d n_embd=%d)", dir, name, s->cfg.n_layer,
                         s->cfg.n_head, s->cfg.n_embd);
    return 0;
}

/* A DeepSpeed checkpoint folder (save_checkpoint's: a `latest` file naming the tag folder that holds
 * mp_rank_00_model_states.pt, or ZeRO-3's zero_pp_rank_0_mp_rank_00_model_states.pt): that tag folder (heap), else
 * NULL. zgpt's own out_dir has a `latest` too, naming a
 * folder with a manifest instead. */
char *zg_deepspeed_tag_folder(const char *spec) {
    char *latest = zg_path_join(spec, "latest"), *tag = NULL, *dir = NULL;
    size_t len = 0;
    if (zg_dir_exists(spec) && zg_file_exists(latest) && zg_file_read_all(latest, &tag, &len) == 0) {
        while (len > 0 && (tag[len - 1] == '\n' || tag[len - 1] == '\r' || tag[len - 1] == ' ')) tag[--len] = '\0';
        if (len > 0 && len < 256 && strchr(tag, '/') == NULL && strcmp(tag, "..") != 0) {
            char *d = zg_path_join(spec, tag), *ms = ds_model_states_path(d);
            if (ms != NULL)
                dir = d;
            else
                free(d);
            free(ms);
        }
    }
    zg_error_clear();
    free(tag);
    free(latest);
    return dir;
}

/* A named model or a hub repo id (optionally @revision): the zgpt models folder (named, no revision),
 * the Hugging Face cache (every repo id the model had), then a download unless HF_HUB_OFFLINE. */
static int open_hub(zg_model_source *s, const char *spec, const char *repo, const char *revision, int need_weights) {
    const gpt2_named_model *nm = gpt2_named_find(repo);
    const char *rev = revision ? revision : "main";
    char searched[4096] = "";
    char *snap = NULL;
    int rc = -1;
    snprintf(s->name, sizeof s->name, "%s", spec);
    if (nm && !revision) {
        char *dir = zg_models_dir_for(repo);
        char *st = model_folder_weights(dir, NULL);
        if (st != NULL)
            snap = zg_strdup(dir);
        else
            snprintf(searched, sizeof searched, "%s", dir);
        free(st);
        free(dir);
    }
    const char *from;
    char *cache = zg_hub_cache_dir(&from);
    const char *ids[2] = {nm ? nm->repo : repo, nm ? nm->old_repo : NULL};
    for (int i = 0; i < 2 && !snap && ids[i]; i++)
        zg_hub_cache_find(cache, ids[i], rev, &snap, searched, sizeof searched);
    if (!snap && nm && !need_weights) {
        s->kind = ZG_SRC_NAMED_CONFIG;
        rc = gpt2_config_by_name(repo, &s->cfg);
    } else if (!snap && zg_hub_offline()) {
        rc = zg_errorf("the %s weights are not in %s; HF_HUB_OFFLINE is set, so nothing was downloaded: run 'zgpt "
                       "download %s%s%s' where the hub is reachable",
                       spec, searched, repo, revision ? " --revision " : "", revision ? revision : "");
    } else if (!snap) {
        if (zg_hub_download(cache, ids[0], rev, &snap) != 0) {
            char why[1024];
            snprintf(why, sizeof why, "%s", zg_error_message());
            rc =
                zg_errorf("the %s weights are not in %s, and the download failed: %s (run 'zgpt download %s%s%s' where "
                          "the hub is reachable)",
                          spec, searched, why, repo, revision ? " --revision " : "", revision ? revision : "");
        }
    }
    if (snap) {
        rc = open_hf(s, snap);
        if (rc == 0 && nm) rc = check_named_shape(s, repo, snap);
    }
    free(snap);
    free(cache);
    return rc;
}

/* "org/name@rev" -> repo and revision (NULL when none). 0, or -1 when spec is not of that shape. */
static int split_revision(const char *spec, char *repo, size_t cap, const char **revision) {
    const char *at = strrchr(spec, '@');
    *revision = NULL;
    size_t n = at ? (size_t)(at - spec) : strlen(spec);
    if (n >= cap || (at && !at[1])) return -1;
    memcpy(repo, spec, n);
    repo[n] = '\0';
    if (at) *revision = at + 1;
    return gpt2_named_find(repo) || zg_hub_is_repo_id(repo) ? 0 : -1;
}

int zg_model_source_open(zg_model_source *s, const char *spec, int need_weights) {
    memset(s, 0, sizeof *s);
    int rc;
    char repo[256];
    const char *revision;
    int hub = split_revision(spec, repo, sizeof repo, &revision) == 0;
    char *ds_tag = NULL;
    if (strncmp(spec, "hf:", 3) == 0) {
        rc = open_hf(s, spec + 3);
    } else if (hub && gpt2_named_find(repo)) {
        rc = open_hub(s, spec, repo, revision, need_weights);
    } else if ((ds_tag = zg_deepspeed_tag_folder(spec)) != NULL) {
        rc = open_hf(s, ds_tag);
        s->deepspeed = 1;
    } else if (zg_ckpt_exists(spec)) {
        s->kind = ZG_SRC_CHECKPOINT;
        rc = zg_ckpt_open(&s->ckpt, spec);
        if (rc == 0) {
            s->path = zg_strdup(s->ckpt.dir);
            s->cfg = s->ckpt.cfg;
        }
    } else {
        /* a Hugging Face folder or file, a torch.save file (pytorch_model.bin, nanoGPT's ckpt.pt) or its folder */
        if (hf_path_has_weights(spec))
            rc = open_hf(s, spec);
        else if (hub && !zg_dir_exists(spec) && !zg_file_exists(spec))
            rc = open_hub(s, spec, repo, revision, need_weights);
        else if (zg_dir_exists(spec))
            rc = zg_errorf("'%s' is neither a zgpt checkpoint (no manifest.json or latest) nor a model folder (no "
                           "model.safetensors, model.safetensors.index.json, pytorch_model.bin or ckpt.pt)",
                           spec);
        else {
            char names[GPT2_NAMED_LIST_CAP];
            rc = zg_errorf("model '%s' not found: give a checkpoint folder, an out_dir, hf:PATH, a Hugging Face repo "
                           "id (org/name[@revision]), or one of %s",
                           spec, gpt2_named_list(names, sizeof names));
        }
    }
    free(ds_tag);
    if (rc != 0) zg_model_source_close(s);
    return rc;
}

int zg_model_source_has_weights(const zg_model_source *s) { return s->kind != ZG_SRC_NAMED_CONFIG; }

int zg_model_source_load(const zg_model_source *s, const gpt2_config *cfg, float *params_host, size_t num_params) {
    if (cfg->n_layer != s->cfg.n_layer || cfg->n_head != s->cfg.n_head || cfg->n_embd != s->cfg.n_embd ||
        cfg->vocab_size != s->cfg.vocab_size || cfg->block_size > s->cfg.block_size ||
        (s->kind != ZG_SRC_HF && cfg->block_size != s->cfg.block_size))
        return zg_errorf("internal: model shape requested from '%s' differs from the source",
                         s->path ? s->path : s->name);
    switch (s->kind) {
    case ZG_SRC_CHECKPOINT:
        if (s->ckpt.num_params != num_params)
            return zg_errorf("checkpoint '%s' holds %llu parameters, expected %zu", s->path,
                             (unsigned long long)s->ckpt.num_params, num_params);
        return zg_ckpt_read_model(&s->ckpt, params_host);
    case ZG_SRC_HF: return hf_params_load(s->path, cfg, params_host);
    case ZG_SRC_NAMED_CONFIG: break;
    }
    return zg_errorf("model '%s' has no weights to load", s->name);
}

void zg_model_source_close(zg_model_source *s) {
    if (s->kind == ZG_SRC_CHECKPOINT) zg_ckpt_close(&s->ckpt);
    free(s->path);
    memset(s, 0, sizeof *s);
}

void zg_model_source_describe(const zg_model_source *s, char *buf, size_t cap) {
    switch (s->kind) {
    case ZG_SRC_CHECKPOINT: snprintf(buf, cap, "checkpoint %s", s->path); break;
    case ZG_SRC_HF: snprintf(buf, cap, "%s%shf:%s", s->name, s->name[0] ? " " : "", s->path); break;
    case ZG_SRC_NAMED_CONFIG: snprintf(buf, cap, "%s (config only, random weights)", s->name); break;
    }
}

int zg_model_instantiate(const char *spec, const char *device, const char *dtype, int need_weights, uint64_t seed,
                         zg_backend **be, gpt2_model *m, char *desc, size_t desc_cap) {
    *be = NULL;
    memset(m, 0, sizeof *m);
    const char *dev = device ? device : "auto";
    if (strcmp(dev, "auto") == 0) dev = zg_backend_cuda_available() ? "cuda" : "cpu";
    int cuda = strcmp(dev, "cuda") == 0;
    zg_dtype prec = cuda ? ZG_BF16 : ZG_F32;
    if (dtype && strcmp(dtype, "auto") != 0 && zg_dtype_parse(dtype, &prec) != 0) return zg_error_prefix("--dtype");
    if (!cuda && prec != ZG_F32) { /* said, not silently dropped */
        fprintf(stderr, "note: the CPU backend computes in fp32; --dtype %s applies on CUDA\n", dtype);
        prec = ZG_F32;
    }
    zg_model_source src;
    if (zg_model_source_open(&src, spec, need_weights) != 0) return -1;
    if (desc) zg_model_source_describe(&src, desc, desc_cap);
    zg_backend_config bc = {dev, -1, prec};
    int rc = zg_backend_create(be, &bc);
    if (rc == 0) rc = gpt2_init(m, &src.cfg, *be);
    if (rc == 0) {
        size_t np = m->table.num_params;
        if (zg_model_source_has_weights(&src)) {
            float *host = malloc(np * sizeof(float));
            if (!host) {
                rc = zg_errorf("out of host memory loading %zu parameters", np);
            } else {
                rc = zg_model_source_load(&src, &src.cfg, host, np);
                if (rc == 0) gpt2_params_upload(m, host);
                free(host);
            }
        } else {
            gpt2_init_random(m, seed);
        }
        if (rc != 0) gpt2_free(m);
    }
    zg_model_source_close(&src);
    if (rc != 0) {
        if (*be) zg_backend_destroy(*be);
        *be = NULL;
        memset(m, 0, sizeof *m);
    }
    return rc;
}

void zg_model_release(zg_backend *be, gpt2_model *m) {
    if (m->be) gpt2_free(m);
    if (be) zg_backend_destroy(be);
}
