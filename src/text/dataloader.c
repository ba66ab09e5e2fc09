/* Data loader: every sample is a pure function of (seed, global sample index), so any rank, any
 * micro-step and any resumed run can compute the sequence it needs directly (see dataloader.h).
 *
 * Global sample g = step * G + index, G = B * grad_accum * world_size.
 *  1. Source (mixtures): samples are grouped in blocks of ZG_MIX_BLOCK; within block b, source s owns
 *     exactly quota_s of the slots (weights rounded by largest remainder) and the slots are shuffled
 *     by a keyed permutation. So the k-th sample of source s is found in O(1), and the mixture
 *     proportions hold exactly over every block, not only on average.
 *  2. Window within the source, sample k of that source:
 *     - random: a start drawn uniformly from all valid starts (nanoGPT's get_batch), by hashing k;
 *     - epoch:  windows [i*T, i*T+T+1) of every shard, visited in a keyed permutation that changes
 *               each epoch (epoch = k / windows).
 * Windows never cross shard boundaries (a shard is one stream; llm.c and nanoGPT do the same). */
#include "text/dataloader.h"

#include "core/error.h"
#include "core/fileio.h"
#include "text/shard.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ZG_MIX_BLOCK 10000u /* mixture schedule block: weights resolve to 1/10000 */

typedef struct {
    char *path;
    zg_shard *shards;
    int n_shards;
    uint64_t *start_cum; /* random mode: cumulative count of valid window starts, n_shards + 1 */
    uint64_t *win_cum;   /* epoch mode: cumulative count of non-overlapping windows, n_shards + 1 */
    uint64_t n_tokens;
    uint32_t quota; /* slots per mixture block */
    uint32_t quota_start;
} dl_source;

struct zg_dataloader {
    int B, T, rank, world_size, grad_accum, vocab_size;
    zg_sample_mode mode;
    dl_source *src;
    int n_src;
    zg_dataloader_state st;
    int32_t *window; /* T + 1 tokens */
};

/* ---- counter-based randomness ---------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) { /* splitmix64 finalizer: a bijective avalanche mix */
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

/* A hash of (seed, purpose tag, a, b); distinct tags give independent streams. */
static uint64_t hash4(uint64_t seed, uint64_t tag, uint64_t a, uint64_t b) {
    uint64_t h = mix64(seed + 0x9E3779B97F4A7C15ull * (tag + 1));
    h = mix64(h ^ (a + 0x632BE59BD9B4E019ull));
    return mix64(h ^ (b + 0x85157AF5D0E4B0C9ull));
}

/* Uniform integer in [0, n) from 64 random bits (multiply-high: no modulo bias worth speaking of). */
static uint64_t bounded(uint64_t r, uint64_t n) { return (uint64_t)(((unsigned __int128)r * n) >> 64); }

/* A keyed bijection of [0, n): a 4-round Feistel network on the smallest even-bit power-of-two domain
 * >= n, cycle-walking until the value falls inside [0, n) (at most ~4 steps on average). */
static uint64_t permute(uint64_t j, uint64_t n, uint64_t key) {
    if (n <= 1) return 0;
    int bits = 64 - __builtin_clzll(n - 1);
    int half = (bits + 1) / 2;
    uint64_t mask = (half >= 64) ? ~0ull : ((1ull << half) - 1);
    uint64_t x = j;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = mix64(r ^ key ^ ((uint64_t)round * 0xD6E8FEB86659FD93ull)) & mask;
            uint64_t nl = r;
            r = l ^ f;
            l = nl;
        }
        x = (l << half) | r;
    } while (x >= n);
    return x;
}

enum { TAG_MIX = 1, TAG_RANDOM = 2, TAG_EPOCH = 3 };

/* ---- opening sources --------------------------------------------------------------------------- */

/* "train_000000.bin", "train.bin", "fineweb_train_000001.bin": the split name as a whole word of a
 * *.bin name. Temporary files of interrupted writes ("x.bin.tmp.123") never match. */
static int name_matches_split(const char *name, const char *split) {
    size_t n = strlen(name), k = strlen(split);
    if (n < 4 || strcmp(name + n - 4, ".bin") != 0) return 0;
    for (const char *p = name; (p = strstr(p, split)) != NULL; p++) {
        int before = p == name || p[-1] == '_' || p[-1] == '-' || p[-1] == '.';
        char a = p[k];
        int after = a == '_' || a == '-' || a == '.';
        if (before && after && (size_t)(p - name) + k <= n - 4) return 1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void source_add_shard(dl_source *s, const zg_shard *sh) {
    s->shards = zg_realloc(s->shards, (size_t)(s->n_shards + 1) * sizeof *s->shards);
    s->shards[s->n_shards++] = *sh;
}

/* Shards listed in a zgpt meta.json: authoritative, so a missing or swapped shard is an error. */
static int source_open_meta(dl_source *s, const char *dir, const char *meta_path, const char *split, int vocab) {
    char *text;
    size_t len;
    if (zg_file_read_all(meta_path, &text, &len) != 0) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return zg_errorf("'%s' is not valid JSON; re-run 'zgpt prepare' to rewrite it", meta_path);
    int rc = 0;
    cJSON *shards = cJSON_GetObjectItemCaseSensitive(root, "shards");
    if (!cJSON_IsArray(shards)) {
        rc = zg_errorf("'%s' has no \"shards\" list; re-run 'zgpt prepare'", meta_path);
        goto cleanup;
    }
    cJSON *it;
    cJSON_ArrayForEach(it, shards) {
        cJSON *file = cJSON_GetObjectItemCaseSensitive(it, "file");
        cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "split");
        cJSON *ntok = cJSON_GetObjectItemCaseSensitive(it, "tokens");
        cJSON *sum = cJSON_GetObjectItemCaseSensitive(it, "checksum");
        if (!cJSON_IsString(file) || !cJSON_IsString(sp) || !cJSON_IsNumber(ntok) || !cJSON_IsString(sum) ||
            strchr(file->valuestring, '/')) {
            rc = zg_errorf("'%s': malformed entry in \"shards\"; re-run 'zgpt prepare'", meta_path);
            goto cleanup;
        }
        if (strcmp(sp->valuestring, split) != 0) continue;
        char *path = zg_path_join(dir, file->valuestring);
        zg_shard sh;
        if (zg_shard_open(&sh, path, vocab) != 0) {
            free(path);
            rc = -1;
            goto cleanup;
        }
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sh.checksum);
        if ((double)sh.n_tokens != ntok->valuedouble || strcmp(hex, sum->valuestring) != 0) {
            rc = zg_errorf("'%s' does not match '%s' (%llu tokens, checksum %s; listed: %.0f, %s): the folder mixes "
                           "two prepare runs; re-run 'zgpt prepare'",
                           path, meta_path, (unsigned long long)sh.n_tokens, hex, ntok->valuedouble, sum->valuestring);
            zg_shard_close(&sh);
            free(path);
            goto cleanup;
        }
        free(path);
        source_add_shard(s, &sh);
    }
    if (s->n_shards == 0) rc = zg_errorf("'%s' lists no %s shards; re-run 'zgpt prepare'", meta_path, split);
cleanup:
    cJSON_Delete(root);
    return rc;
}

static int source_open_dir(dl_source *s, const char *dir, const char *split, int vocab) {
    char *meta = zg_path_join(dir, "meta.json");
    if (zg_file_exists(meta)) {
        int rc = source_open_meta(s, dir, meta, split, vocab);
        free(meta);
        return rc;
    }
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        free(meta);
        return zg_errorf("cannot read folder '%s': %s", dir, strerror(e));
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (!name_matches_split(ent->d_name, split)) continue;
        names = zg_realloc(names, (n + 1) * sizeof *names);
        names[n++] = zg_strdup(ent->d_name);
    }
    closedir(d);
    if (n > 1) qsort(names, n, sizeof *names, cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *path = zg_path_join(dir, names[i]);
        zg_shard sh;
        if (zg_shard_open(&sh, path, vocab) != 0) {
            rc = -1;
        } else if (sh.format == ZG_SHARD_ZGPT) {
            /* zgpt writes meta.json last: shards without it are the remains of an unfinished run. */
            zg_shard_close(&sh);
            rc = zg_errorf("'%s' has zgpt shards but no meta.json: the 'zgpt prepare' run that wrote them did not "
                           "finish; re-run it",
                           dir);
        } else {
            source_add_shard(s, &sh);
        }
        free(path);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc == 0 && s->n_shards == 0)
        rc = zg_errorf("no %s shards in '%s' (expected %s_*.bin from 'zgpt prepare', nanoGPT's %s.bin or llm.c's "
                       "*_%s_*.bin); run 'zgpt prepare --input TEXT --out %s'",
                       split, dir, split, split, split, dir);
    free(meta);
    return rc;
}

int zg_data_path_check(const char *path) {
    if (zg_dir_exists(path) || zg_file_exists(path)) return 0;
    return zg_errorf("data path '%s' does not exist; create it with 'zgpt prepare --input TEXT --out %s'", path, path);
}

static int source_open(dl_source *s, const char *path, const char *split, int T, int vocab) {
    s->path = zg_strdup(path);
    int rc;
    if (zg_dir_exists(path)) {
        rc = source_open_dir(s, path, split, vocab);
    } else if (zg_file_exists(path)) {
        zg_shard sh;
        rc = zg_shard_open(&sh, path, vocab);
        if (rc == 0) source_add_shard(s, &sh);
    } else {
        rc = zg_data_path_check(path);
    }
    if (rc != 0) return -1;
    s->start_cum = zg_calloc((size_t)s->n_shards + 1, sizeof *s->start_cum);
    s->win_cum = zg_calloc((size_t)s->n_shards + 1, sizeof *s->win_cum);
    for (int i = 0; i < s->n_shards; i++) {
        uint64_t n = s->shards[i].n_tokens;
        s->n_tokens += n;
        /* A shard shorter than T + 1 holds no full window; it is skipped (the last shard of a split
         * may be short), unless no shard of the source is long enough. */
        uint64_t starts = n >= (uint64_t)T + 1 ? n - (uint64_t)T : 0;
        uint64_t wins = n >= (uint64_t)T + 1 ? (n - 1) / (uint64_t)T : 0;
        s->start_cum[i + 1] = s->start_cum[i] + starts;
        s->win_cum[i + 1] = s->win_cum[i] + wins;
    }
    if (s->win_cum[s->n_shards] == 0) {
        if (s->n_shards == 1)
            return zg_errorf("'%s' has %llu %s tokens, fewer than block size + 1 = %d needed for one sequence; use a "
                             "smaller block size or more text",
                             s->shards[0].path, (unsigned long long)s->shards[0].n_tokens, split, T + 1);
        return zg_errorf("'%s': every %s shard is shorter than block size + 1 = %d tokens; use a smaller block size or "
                         "a larger --shard-tokens",
                         path, split, T + 1);
    }
    return 0;
}

static void source_free(dl_source *s) {
    for (int i = 0; i < s->n_shards; i++) zg_shard_close(&s->shards[i]);
    free(s->shards);
    free(s->start_cum);
    free(s->win_cum);
    free(s->path);
    memset(s, 0, sizeof *s);
}

/* Largest-remainder rounding of the weights to ZG_MIX_BLOCK slots. */
static int assign_quotas(zg_dataloader *dl, const zg_data_source *srcs) {
    double total = 0;
    for (int i = 0; i < dl->n_src; i++) total += srcs[i].weight;
    uint32_t used = 0;
    double *frac = zg_malloc((size_t)dl->n_src * sizeof *frac);
    for (int i = 0; i < dl->n_src; i++) {
        double exact = srcs[i].weight / total * ZG_MIX_BLOCK;
        dl->src[i].quota = (uint32_t)floor(exact);
        frac[i] = exact - floor(exact);
        used += dl->src[i].quota;
    }
    while (used < ZG_MIX_BLOCK) {
        int best = 0;
        for (int i = 1; i < dl->n_src; i++)
            if (frac[i] > frac[best]) best = i;
        dl->src[best].quota++;
        frac[best] = -1;
        used++;
    }
    free(frac);
    uint32_t start = 0;
    for (int i = 0; i < dl->n_src; i++) {
        if (dl->src[i].quota == 0)
            return zg_errorf("data source '%s': weight %g is below 1/%u of the total %g; raise it or drop the source",
                             srcs[i].path, srcs[i].weight, ZG_MIX_BLOCK, total);
        dl->src[i].quota_start = start;
        start += dl->src[i].quota;
    }
    return 0;
}

int zg_dataloader_init(zg_dataloader **out, const zg_dataloader_config *cfg) {
    *out = NULL;
    if (cfg->n_sources < 1 || !cfg->sources) return zg_errorf("data loader: no data source given");
    if (cfg->B < 1 || cfg->T < 1)
        return zg_errorf("data loader: batch %d x block size %d must both be >= 1", cfg->B, cfg->T);
    if (cfg->world_size < 1 || cfg->rank < 0 || cfg->rank >= cfg->world_size)
        return zg_errorf("data loader: rank %d is outside world size %d", cfg->rank, cfg->world_size);
    if (cfg->vocab_size < 1) return zg_errorf("data loader: vocab_size %d must be >= 1", cfg->vocab_size);
    if (!cfg->split || (strcmp(cfg->split, "train") != 0 && strcmp(cfg->split, "val") != 0))
        return zg_errorf("data loader: split '%s' must be 'train' or 'val'", cfg->split ? cfg->split : "(null)");
    if (cfg->mode != ZG_SAMPLE_RANDOM && cfg->mode != ZG_SAMPLE_EPOCH)
        return zg_errorf("data loader: unknown sampling mode %d", (int)cfg->mode);
    for (int i = 0; i < cfg->n_sources; i++) {
        double w = cfg->sources[i].weight;
        if (cfg->n_sources > 1 && !(w > 0 && isfinite(w)))
            return zg_errorf("data source '%s': weight %g must be a positive number", cfg->sources[i].path, w);
    }
    zg_dataloader *dl = zg_calloc(1, sizeof *dl);
    dl->B = cfg->B;
    dl->T = cfg->T;
    dl->rank = cfg->rank;
    dl->world_size = cfg->world_size;
    dl->grad_accum = 1;
    dl->vocab_size = cfg->vocab_size;
    dl->mode = cfg->mode;
    dl->st.seed = cfg->seed;
    dl->n_src = cfg->n_sources;
    dl->src = zg_calloc((size_t)dl->n_src, sizeof *dl->src);
    dl->window = zg_malloc(((size_t)cfg->T + 1) * sizeof *dl->window);
    for (int i = 0; i < dl->n_src; i++) {
        if (source_open(&dl->src[i], cfg->sources[i].path, cfg->split, cfg->T, cfg->vocab_size) != 0) {
            zg_dataloader_free(dl);
            return -1;
        }
    }
    if (dl->n_src > 1 && assign_quotas(dl, cfg->sources) != 0) {
        zg_dataloader_free(dl);
        return -1;
    }
    *out = dl;
    return 0;
}

void zg_dataloader_free(zg_dataloader *dl) {
    if (!dl) return;
    for (int i = 0; i < dl->n_src; i++) source_free(&dl->src[i]);
    free(dl->src);
    free(dl->window);
    free(dl);
}

void zg_dataloader_set_grad_accum(zg_dataloader *dl, int grad_accum) {
    dl->grad_accum = grad_accum < 1 ? 1 : grad_accum;
}

/* Index of the shard holding position x of a cumulative table (cum[0] = 0, strictly inside). */
static int find_shard(const uint64_t *cum, int n, uint64_t x) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (cum[mid] <= x)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

void zg_dataloader_sample(zg_dataloader *dl, uint64_t step, uint64_t index, int32_t *inputs, int32_t *targets) {
    uint64_t G = (uint64_t)dl->B * (uint64_t)dl->grad_accum * (uint64_t)dl->world_size;
    uint64_t g = step * G + index;
    uint64_t seed = dl->st.seed;
    int si = 0;
    uint64_t k = g; /* sample number within the chosen source */
    if (dl->n_src > 1) {
        uint64_t block = g / ZG_MIX_BLOCK;
        uint64_t slot = permute(g % ZG_MIX_BLOCK, ZG_MIX_BLOCK, hash4(seed, TAG_MIX, block, 0));
        while (si + 1 < dl->n_src && slot >= dl->src[si + 1].quota_start) si++;
        k = block * dl->src[si].quota + (slot - dl->src[si].quota_start);
    }
    const dl_source *s = &dl->src[si];
    int sh;
    uint64_t start;
    if (dl->mode == ZG_SAMPLE_RANDOM) {
        uint64_t x = bounded(hash4(seed, TAG_RANDOM, (uint64_t)si, k), s->start_cum[s->n_shards]);
        sh = find_shard(s->start_cum, s->n_shards, x);
        start = x - s->start_cum[sh];
    } else {
        uint64_t W = s->win_cum[s->n_shards];
        uint64_t epoch = k / W;
        uint64_t w = permute(k % W, W, hash4(seed, TAG_EPOCH, (uint64_t)si, epoch));
        sh = find_shard(s->win_cum, s->n_shards, w);
        start = (w - s->win_cum[sh]) * (uint64_t)dl->T;
    }
    zg_shard_read(&s->shards[sh], start, (size_t)dl->T + 1, dl->window);
    memcpy(inputs, dl->window, (size_t)dl->T * sizeof *inputs);
    memcpy(targets, dl->window + 1, (size_t)dl->T * sizeof *targets);
}

void zg_dataloader_next(zg_dataloader *dl, int32_t *inputs, int32_t *targets) {
    if (dl->st.micro >= (uint64_t)dl->grad_accum) { /* grad_accum was lowered after a restore */
        dl->st.micro = 0;
        dl->st.step++;
    }
    uint64_t base = (dl->st.micro * (uint64_t)dl->world_size + (uint64_t)dl->rank) * (uint64_t)dl->B;
    for (int b = 0; b < dl->B; b++)
        zg_dataloader_sample(dl, dl->st.step, base + (uint64_t)b, inputs + (size_t)b * dl->T,
                             targets + (size_t)b * dl->T);
    if (++dl->st.micro >= (uint64_t)dl->grad_accum) {
        dl->st.micro = 0;
        dl->st.step++;
    }
}

void zg_dataloader_get_state(const zg_dataloader *dl, zg_dataloader_state *st) { *st = dl->st; }

void zg_dataloader_set_state(zg_dataloader *dl, const zg_dataloader_state *st) { dl->st = *st; }

uint64_t zg_dataloader_num_tokens(const zg_dataloader *dl) {
    uint64_t n = 0;
    for (int i = 0; i < dl->n_src; i++) n += dl->src[i].n_tokens;
    return n;
}

const char *zg_dataloader_describe(const zg_dataloader *dl, char *buf, size_t cap) {
    size_t used = 0;
    if (cap) buf[0] = '\0';
    for (int i = 0; i < dl->n_src && used < cap; i++) {
        const dl_source *s = &dl->src[i];
        int n = snprintf(buf + used, cap - used, "%s%s: %llu tokens in %d %s shard%s", i ? "; " : "", s->path,
                         (unsigned long long)s->n_tokens, s->n_shards, zg_shard_format_name(s->shards[0].format),
                         s->n_shards == 1 ? "" : "s");
        if (n < 0) break;
        used += (size_t)n;
        if (dl->n_src > 1 && used < cap) {
            n = snprintf(buf + used, cap - used, " (%.4g of samples)", s->quota / (double)ZG_MIX_BLOCK);
            if (n < 0) break;
            used += (size_t)n;
        }
    }
    return buf;
}
