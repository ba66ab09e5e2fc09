/* The index of a sharded safetensors checkpoint (safetensors_index.h). */
#include "model/safetensors_index.h"

#include "core/error.h"
#include "core/fileio.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

const char *const model_weight_files[MODEL_WEIGHT_FILES] = {SAFETENSORS_SINGLE_NAME, SAFETENSORS_INDEX_NAME,
                                                            "pytorch_model.bin", "pytorch_model.bin.index.json"};

void safetensors_index_free(safetensors_index *ix) {
    for (int i = 0; i < ix->n_shards; i++) free(ix->shards[i]);
    for (int i = 0; i < ix->n_names; i++) free(ix->names[i]);
    free(ix->shards);
    free(ix->names);
    free(ix->shard_of);
    memset(ix, 0, sizeof *ix);
}

int safetensors_is_index_path(const char *path) {
    size_t n = strlen(path), k = strlen(".index.json");
    return n > k && strcmp(path + n - k, ".index.json") == 0;
}

/* a shard's name as the index gives it: a file in the index's folder, never a path out of it */
static int plain_file_name(const char *s) {
    return s[0] != '\0' && strchr(s, '/') == NULL && strchr(s, '\\') == NULL && strcmp(s, ".") != 0 &&
           strcmp(s, "..") != 0;
}

int safetensors_index_read(safetensors_index *ix, const char *path) {
    memset(ix, 0, sizeof *ix);
    char *text = NULL;
    size_t len = 0;
    if (zg_file_read_all(path, &text, &len) != 0) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    int rc = 0;
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (root == NULL || !cJSON_IsObject(root))
        rc = zg_errorf("%s: not a safetensors index (not a JSON object)", path);
    else if (map == NULL || !cJSON_IsObject(map) || map->child == NULL)
        rc = zg_errorf("%s: not a safetensors index: \"weight_map\" (tensor name -> shard file) is missing or empty",
                       path);
    int n = 0;
    for (const cJSON *e = map && rc == 0 ? map->child : NULL; e; e = e->next) n++;
    if (rc == 0) {
        ix->names = zg_calloc((size_t)n, sizeof *ix->names);
        ix->shard_of = zg_calloc((size_t)n, sizeof *ix->shard_of);
        ix->shards = zg_calloc((size_t)n, sizeof *ix->shards);
    }
    for (const cJSON *e = rc == 0 ? map->child : NULL; e && rc == 0; e = e->next) {
        if (!cJSON_IsString(e) || !plain_file_name(e->valuestring)) {
            rc = zg_errorf("%s: weight_map[\"%s\"] must name a shard file in the index's folder (got %s)", path,
                           e->string, cJSON_IsString(e) ? e->valuestring : "a non-string");
            break;
        }
        int s = 0;
        while (s < ix->n_shards && strcmp(ix->shards[s], e->valuestring) != 0) s++;
        if (s == ix->n_shards) ix->shards[ix->n_shards++] = zg_strdup(e->valuestring);
        ix->names[ix->n_names] = zg_strdup(e->string);
        ix->shard_of[ix->n_names++] = s;
    }
    cJSON_Delete(root);
    if (rc != 0) safetensors_index_free(ix);
    return rc;
}

/* index's shards all in dir: 1; else 0 with the first missing one's name in *missing (when not NULL) */
static int shards_present(const char *dir, const char *index, char **missing) {
    safetensors_index ix;
    if (safetensors_index_read(&ix, index) != 0) {
        zg_error_clear();
        return 0;
    }
    int all = 1;
    for (int s = 0; s < ix.n_shards && all; s++) {
        char *p = zg_path_join(dir, ix.shards[s]);
        all = zg_file_exists(p); /* follows a cache snapshot's symlink: a dangling one is not there */
        if (!all && missing && *missing == NULL) *missing = zg_strdup(ix.shards[s]);
        free(p);
    }
    safetensors_index_free(&ix);
    return all;
}

char *model_folder_weights(const char *dir, char **missing) {
    if (missing) *missing = NULL;
    for (int i = 0; i < MODEL_WEIGHT_FILES; i++) {
        char *p = zg_path_join(dir, model_weight_files[i]);
        if (zg_file_exists(p) && (!safetensors_is_index_path(p) || shards_present(dir, p, missing))) return p;
        free(p);
    }
    return NULL;
}
