/* Downloads a model's files from the Hugging Face Hub into the hub cache (hub_cache.h layout), as
 * huggingface_hub does, so transformers finds them too:
 *
 *   HEAD {endpoint}/{repo}/resolve/{revision}/{file} (revision and file percent-encoded as
 *   huggingface_hub's hf_hub_url encodes them): relative redirects (renamed repos) are
 *   followed; the answer (200, or a 302 to the CDN for LFS files) carries X-Repo-Commit, the ETag
 *   (X-Linked-Etag for LFS files: their sha256) and the size (X-Linked-Size / Content-Length).
 *   GET of the file (the CDN address for LFS files) into blobs/<etag>.incomplete, resumed with a
 *   Range request when that file is already there; its size checked, and for LFS files its sha256
 *   against the ETag; then renamed to blobs/<etag>, linked from snapshots/<commit>/<file>
 *   (relative symlink), and refs/<revision> written. A blob is never published unverified.
 *   A lost or stalled connection and HTTP 429/5xx answers are retried ($ZGPT_HUB_RETRIES, default 5;
 *   the GET resumes from what arrived), after Retry-After or 1, 2, 4, 8 s; $HF_HUB_ETAG_TIMEOUT and
 *   $HF_HUB_DOWNLOAD_TIMEOUT set the HEAD's and the GET's timeouts as huggingface_hub's do.
 *
 * $HF_ENDPOINT (default https://huggingface.co), $HF_TOKEN (else the token file $HF_TOKEN_PATH or
 * $HF_HOME/token: sent as "Authorization: Bearer" to the endpoint only), $HF_HUB_OFFLINE (nothing
 * is fetched). Several processes (ranks) downloading the same repo wait for each other (a lock file
 * under <cache>/.locks/). */
#ifndef ZG_HUB_HUB_DOWNLOAD_H
#define ZG_HUB_HUB_DOWNLOAD_H

/* Fetches a model (config.json and model.safetensors; where the repo has none model.safetensors.index.json and
 * every shard it names, else pytorch_model.bin) of repo_id at revision into cache; *snapshot (heap)
 * is the snapshot folder. 0, or -1 with a one-line error (401/403, 404 of repo, revision or file,
 * no network, checksum mismatch, disk full). */
int zg_hub_download(const char *cache, const char *repo_id, const char *revision, char **snapshot);
/* The endpoint in use (static string: $HF_ENDPOINT without a trailing '/', or the public hub). */
const char *zg_hub_endpoint(char *buf, unsigned long cap);

#endif
