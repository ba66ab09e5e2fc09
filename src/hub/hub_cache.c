#include "hub/hub_cache.h"

#include "core/error.h"
#include "core/fileio.h"
#include "model/safetensors_index.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *zg_hub_cache_dir(const char **from) {
    const char *v;
    const char *dummy;
    if (!from) from = &dummy;
    if ((v = getenv("HF_HUB_CACHE")) && *v) {
        *from = "HF_HUB_CACHE";
        return zg_strdup(v);
    }
    if ((v = getenv("HF_HOME")) && *v) {
        *from = "HF_HOME";
        return zg_path_join(v, "hub");
    }
    if ((v = getenv("XDG_CACHE_HOME")) && *v) {
        *from = "XDG_CACHE_HOME";
        return zg_path_join(v, "huggingface/hub");
    }
    const char *home = getenv("HOME");
    *from = "HOME";
    return zg_path_join(home && *home ? home : ".", ".cache/huggingface/hub");
}

char *zg_hub_repo_folder(const char *cache, const char *repo_id) {
    size_t n = strlen(repo_id);
    char *name = zg_malloc(8 + 2 * n + 1), *o = name;
    memcpy(o, "models--", 8);
    o += 8;
    for (const char *p = repo_id; *p; p++) {
        if (*p == '/') {
            *o++ = '-';
            *o++ = '-';
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    char *dir = zg_path_join(cache, name);
    free(name);
    return dir;
}

static int id_part_ok(const char *s, size_t n) {
    if (n == 0 || n > 96) return 0;
    if (s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.') return 0;
        if (c == '.' && i + 1 < n && s[i + 1] == '.') return 0;
    }
    return 1;
}

int zg_hub_is_repo_id(const char *spec) {
    const char *slash = strchr(spec, '/');
    if (!slash || strchr(slash + 1, '/')) return 0;
    return id_part_ok(spec, (size_t)(slash - spec)) && id_part_ok(slash + 1, strlen(slash + 1));
}

int zg_hub_is_commit(const char *revision) {
    if (strlen(revision) != 40) return 0;
    for (const char *p = revision; *p; p++)
        if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p)) return 0;
    return 1;
}

int zg_hub_offline(void) {
    const char *v = getenv("HF_HUB_OFFLINE");
    if (!v) return 0;
    static const char *const yes[] = {"1", "true", "yes", "on"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(v, yes[i]) == 0) return 1;
    return 0;
}

static void add_searched(char *searched, size_t cap, const char *what) {
    size_t n = strlen(searched);
    if (n + 3 < cap) snprintf(searched + n, cap - n, "%s%s", n ? "; " : "", what);
}

int zg_hub_cache_find(const char *cache, const char *repo_id, const char *revision, char **snapshot, char *searched,
                      size_t cap) {
    *snapshot = NULL;
    char *repo = zg_hub_repo_folder(cache, repo_id);
    char *commit = NULL;
    int found = 0;
    if (zg_hub_is_commit(revision)) {
        commit = zg_strdup(revision);
    } else {
        char *refs = zg_path_join(repo, "refs");
        char *ref = zg_path_join(refs, revision);
        size_t len;
        if (zg_file_read_all(ref, &commit, &len) == 0) {
            while (len && isspace((unsigned char)commit[len - 1])) commit[--len] = '\0';
        } else {
            commit = NULL;
            zg_error_clear();
        }
        free(refs);
        free(ref);
    }
    char *dir = NULL;
    if (commit) {
        char *snaps = zg_path_join(repo, "snapshots");
        dir = zg_path_join(snaps, commit);
        free(snaps);
        /* config.json and the weights (model_folder_weights: safetensors or torch.save, whole or all shards);
         * zg_file_exists follows the snapshot's symlinks: a dangling one is not there */
        char *cfg = zg_path_join(dir, "config.json");
        char *weights = zg_file_exists(cfg) ? model_folder_weights(dir, NULL) : NULL;
        found = weights != NULL;
        free(weights);
        free(cfg);
    }
    char what[1200];
    snprintf(what, sizeof what, "%s (%s)", commit ? dir : repo, revision);
    if (found) {
        *snapshot = dir;
        dir = NULL;
    } else {
        add_searched(searched, cap, what);
    }
    free(dir);
    free(commit);
    free(repo);
    return found;
}
