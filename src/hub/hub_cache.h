/* The Hugging Face hub cache, as huggingface_hub lays it out (and transformers reads it):
 *
 *   <cache>/models--<org>--<name>/blobs/<etag>              the files' content
 *                                 snapshots/<commit>/<file>  relative symlinks to ../../blobs/<etag>
 *                                 refs/<revision>            the commit a branch or tag names
 *
 * <cache> is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub. Files are read in place. */
#ifndef ZG_HUB_HUB_CACHE_H
#define ZG_HUB_HUB_CACHE_H

#include <stddef.h>

/* The cache folder (heap string) and, in `from`, the variable it came from ("HF_HUB_CACHE", ...). */
char *zg_hub_cache_dir(const char **from);
/* "openai-community/gpt2" -> "models--openai-community--gpt2" (heap string). */
char *zg_hub_repo_folder(const char *cache, const char *repo_id);
/* 1 when spec has the shape of a repo id: "org/name" (letters, digits, '-', '_', '.'; no "..",
 * no leading or trailing '.' or '-'). */
int zg_hub_is_repo_id(const char *spec);
/* 1 for a full commit hash (40 hex digits). */
int zg_hub_is_commit(const char *revision);
/* 1 when $HF_HUB_OFFLINE is set to a true value (1, true, yes, on). */
int zg_hub_offline(void);

/* The snapshot of repo_id at revision (a branch/tag through refs/<revision>, or a commit) holding a model:
 * config.json and its weights (model_folder_weights in model/safetensors_index.h: model.safetensors, or its index
 * and every shard, else pytorch_model.bin or its index and shards): 1 with *snapshot (heap) set; 0 when it is not
 * there (the folder looked at is appended to `searched`, "; "-separated). */
int zg_hub_cache_find(const char *cache, const char *repo_id, const char *revision, char **snapshot, char *searched,
                      size_t cap);

#endif
