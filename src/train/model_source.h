/* Where a model comes from, as users name it in init_from / --model:
 *   a named model (gpt2.h's table: gpt2 ... gpt2-xl, distilgpt2), or a Hugging Face repo id "org/name", each
 *       optionally "@revision": the zgpt models folder $ZGPT_MODELS/<name> or ~/.cache/zgpt/models/<name>
 *       (named models without a revision), then the Hugging Face hub cache (src/hub/hub_cache.h; a
 *       named model under openai-community/<name> and its older id <name>), read in place; when
 *       missing, downloaded into that cache (src/hub/hub_download.h) unless HF_HUB_OFFLINE is set,
 *       or need_weights is 0 for a named model (its config only). A path that exists wins over a
 *       repo id of the same spelling,
 *   "hf:PATH": a Hugging Face folder (config.json + model.safetensors, or a sharded checkpoint's
 *             model.safetensors.index.json and shards), a .safetensors file or such an index,
 *   a zgpt checkpoint folder, or a run's out_dir (its `latest` checkpoint),
 *   a plain folder holding model.safetensors or model.safetensors.index.json (treated as hf:PATH). */
#ifndef ZG_TRAIN_MODEL_SOURCE_H
#define ZG_TRAIN_MODEL_SOURCE_H

#include "model/gpt2.h"
#include "train/checkpoint.h"

typedef enum { ZG_SRC_NAMED_CONFIG = 0, ZG_SRC_HF, ZG_SRC_CHECKPOINT } zg_source_kind;

typedef struct {
    zg_source_kind kind;
    char *path;     /* HF path or checkpoint folder; NULL for a config-only named model */
    char name[256]; /* named model or repo id as given, if any */
    gpt2_config cfg;
    zg_ckpt ckpt;  /* open (verified) when kind == ZG_SRC_CHECKPOINT */
    int deepspeed; /* kind ZG_SRC_HF from a DeepSpeed save_checkpoint folder (its tag folder is path) */
} zg_model_source;

/* A DeepSpeed save_checkpoint folder (a `latest` file naming a tag folder with DeepSpeed's model states): that tag
 * folder (heap), else NULL */
char *zg_deepspeed_tag_folder(const char *dir);

/* The hub repo a named model is downloaded from ("gpt2" -> "openai-community/gpt2"); spec itself
 * for anything else. */
const char *zg_model_hub_repo(const char *spec);
/* The folder a named model is looked up in (heap string). */
char *zg_models_dir_for(const char *name);
/* Resolves spec. need_weights = 0 lets a named model without local files resolve to its config only
 * (for bench / plan); with 1 it is an error naming the folder and how to obtain the files. */
int zg_model_source_open(zg_model_source *s, const char *spec, int need_weights);
/* 1 when the source has weights to load. */
int zg_model_source_has_weights(const zg_model_source *s);
/* fp32 host parameters in cfg's table layout (cfg = &s->cfg, or for a Hugging Face source the same
 * shape with a smaller block_size: position embeddings cropped). */
int zg_model_source_load(const zg_model_source *s, const gpt2_config *cfg, float *params_host, size_t num_params);
void zg_model_source_close(zg_model_source *s);
/* A short description for logs ("checkpoint out/iter_100", "hf:/models/gpt2", "gpt2 (config only)"). */
void zg_model_source_describe(const zg_model_source *s, char *buf, size_t cap);

/* Opens spec, creates the backend for device ("cpu", "cuda", "auto"; NULL = auto) at precision dtype
 * ("fp32", "bf16", "fp16"; NULL or "auto" = bf16 on CUDA, fp32 on the CPU, which computes in fp32 only
 * and says so when asked for another) and a model holding the source's fp32 weights (a checkpoint's:
 * its fp32 master weights) or random weights from seed for a config-only named model when need_weights
 * is 0. desc (may be NULL) receives a description. On failure nothing is left allocated. */
int zg_model_instantiate(const char *spec, const char *device, const char *dtype, int need_weights, uint64_t seed,
                         zg_backend **be, gpt2_model *m, char *desc, size_t desc_cap);
/* Frees what zg_model_instantiate created. */
void zg_model_release(zg_backend *be, gpt2_model *m);

#endif
