/* zgpt download: a model's files from the Hugging Face Hub into the hub cache. */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "hub/hub_cache.h"
#include "hub/hub_download.h"
#include "train/model_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *revision;
    const char *cache_dir;
} download_args;

static const zg_option download_opts[] = {
    ZG_OPT_STR(download_args, revision, "revision", "R", "branch, tag or commit", "main"),
    ZG_OPT_STR(download_args, cache_dir, "cache-dir", "DIR",
               "hub cache to fill (default: $HF_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub or "
               "~/.cache/huggingface/hub)",
               NULL),
    ZG_OPT_END,
};

static const zg_command_spec download_spec = {
    "download",
    "REPO_OR_NAME [--revision R] [--cache-dir DIR]",
    "Download a GPT-2 (config.json + model.safetensors, or a sharded checkpoint's index and shards) from the "
    "Hugging Face Hub into its cache.",
    download_opts,
    "REPO_OR_NAME",
    "REPO_OR_NAME: gpt2, gpt2-medium, gpt2-large, gpt2-xl (from openai-community/), distilgpt2 (from distilbert/),\n"
    "or any org/name repo.\n"
    "The cache has huggingface_hub's layout (blobs, snapshots, refs), so transformers finds the files too;\n"
    "init_from / --model then read them in place. An interrupted download resumes. Environment:\n"
    "HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (gated or private repos), HF_HUB_OFFLINE=1\n"
    "(fetch nothing: succeed only when the cache already has the files), HF_HUB_ETAG_TIMEOUT and\n"
    "HF_HUB_DOWNLOAD_TIMEOUT (seconds), ZGPT_HUB_RETRIES (retries of a lost connection or a 429/5xx answer; 5)."};

int zg_cmd_download(int argc, char **argv) {
    download_args a;
    zg_strlist pos = {0};
    int rc = zg_cli_parse(&download_spec, argc, argv, &a, &pos);
    if (rc != 0) return rc < 0 ? 2 : 0;
    if (pos.count != 1) {
        zg_strlist_free(&pos);
        zg_errorf("zgpt download takes one REPO_OR_NAME (e.g. 'zgpt download gpt2-xl'); see 'zgpt download --help'");
        zg_error_print();
        return 2;
    }
    const char *repo = zg_model_hub_repo(pos.items[0]);
    int status = 0;
    char *cache = a.cache_dir ? zg_strdup(a.cache_dir) : zg_hub_cache_dir(NULL);
    char *snap = NULL, searched[2048] = "";
    char names[GPT2_NAMED_LIST_CAP];
    if (!zg_hub_is_repo_id(repo)) {
        zg_errorf("'%s' is not a Hugging Face repo id (org/name) nor one of %s", pos.items[0],
                  gpt2_named_list(names, sizeof names));
        status = 2;
        zg_error_print();
    } else if (zg_hub_offline()) {
        if (zg_hub_cache_find(cache, repo, a.revision, &snap, searched, sizeof searched))
            printf("%s (%s) is in the cache: %s (HF_HUB_OFFLINE is set: the hub was not asked for a newer commit)\n",
                   repo, a.revision, snap);
        else {
            zg_errorf("HF_HUB_OFFLINE is set and %s (%s) is not in the cache (looked in %s); unset it to download",
                      repo, a.revision, searched);
            status = zg_cli_fail();
        }
    } else if (zg_hub_download(cache, repo, a.revision, &snap) != 0) {
        status = zg_cli_fail();
    } else {
        printf("%s (%s) is in %s\nuse it as init_from / --model %s%s%s\n", repo, a.revision, snap, pos.items[0],
               strcmp(a.revision, "main") ? "@" : "", strcmp(a.revision, "main") ? a.revision : "");
    }
    free(snap);
    free(cache);
    zg_strlist_free(&pos);
    return status;
}
