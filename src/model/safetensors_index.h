/* Sharded safetensors checkpoints: what transformers' save_pretrained writes when the weights exceed its
 * max_shard_size (5 GB by default: GPT-2 XL in fp32 is 6.2 GB), and what many Hub repos hold:
 *   model.safetensors.index.json  {"metadata": {...}, "weight_map": {"<tensor name>": "<shard file>", ...}}
 *   model-00001-of-00002.safetensors, ...  (the shards, in the index's folder)
 * A model folder holds its weights either as model.safetensors or as that index and its shards. */
#ifndef ZG_MODEL_SAFETENSORS_INDEX_H
#define ZG_MODEL_SAFETENSORS_INDEX_H

#define SAFETENSORS_SINGLE_NAME "model.safetensors"
#define SAFETENSORS_INDEX_NAME "model.safetensors.index.json"

typedef struct {
    char **shards; /* the distinct shard file names, in the order of their first tensor in weight_map */
    int n_shards;
    char **names;  /* weight_map's tensor names */
    int *shard_of; /* for each name, its shard (index into shards) */
    int n_names;
} safetensors_index;

/* Reads and validates an index: a JSON object whose "weight_map" is a non-empty object of strings, each a plain
 * file name in the index's folder (no '/', not "." or ".."). 0, or -1 with a one-line error naming the file. */
int safetensors_index_read(safetensors_index *ix, const char *path);
void safetensors_index_free(safetensors_index *ix);

/* 1 when the name ends in ".index.json" (an index rather than a safetensors file) */
int safetensors_is_index_path(const char *path);

/* A model folder's weights files in the order transformers looks for them (an index, safetensors_is_index_path,
 * names shards in the same folder) */
#define MODEL_WEIGHT_FILES 4
extern const char *const model_weight_files[MODEL_WEIGHT_FILES];

/* The weights file of a model folder, in transformers' order (model_weight_files): DIR/model.safetensors, DIR/model.safetensors.index.json
 * with every shard it names there, DIR/pytorch_model.bin, DIR/pytorch_model.bin.index.json with its shards; NULL
 * when none (heap string). With missing shards, *missing (when not NULL) receives the first one's name (heap),
 * else NULL. (The same index format names safetensors or torch.save shards.) */
char *model_folder_weights(const char *dir, char **missing);

#endif
