#define _FILE_OFFSET_BITS 64
#include "text/prepare.h"

#include "core/clock.h"
#include "core/dirlock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "text/shard.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define IO_CHUNK (1u << 20)
#define PIECE_MAX (1u << 20) /* bytes per encoded piece (one task for one thread) */
#define PIECE_MIN (16u << 10)
#define PIECES_PER_THREAD 4 /* pieces per thread in one batch: keeps all cores busy with dynamic scheduling */

/* ---- cut points ----------------------------------------------------------------------------- */

/* A cut at p is safe when text[p-1] is '\n', the character before it is not whitespace and text[p]
 * is a printable non-space ASCII byte: a lone newline between two non-space characters. Why this is
 * always a pre-token boundary of
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * in the whole text AND gives the same pre-tokens on both sides when the text is cut there:
 *  - only the two whitespace alternatives can contain '\n', and they contain nothing but whitespace,
 *    so no match runs from text[p-2] into the '\n' or from the '\n' into text[p]; the '\n' is a
 *    pre-token of its own (matched by \s+ in the whole text, by \s+(?!\S) at the end of the left
 *    piece: the same token either way);
 *  - the only look-around is the one-character look-ahead of \s+(?!\S); a longer whitespace run
 *    before the cut ("\n\n" + "x") would be matched differently at the end of a piece (as one run)
 *    than in the whole text (the run minus its last character, then that character), which is why the
 *    character before the '\n' must not be whitespace;
 *  - there is no look-behind, so matching from p onwards sees what it sees in the whole text.
 * Whitespace is judged conservatively (every Unicode White_Space character, U+180E too, and any
 * malformed UTF-8 counts as "maybe whitespace"), so a doubtful place is simply not cut. */
static int is_space_cp(uint32_t c) {
    return c == 0x85 || c == 0xA0 || c == 0x1680 || c == 0x180E || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Is the character that ends just before position `end` certainly not whitespace? */
static int prev_char_not_space(const char *t, size_t end) {
    if (end == 0) return 0;
    unsigned char c = (unsigned char)t[end - 1];
    if (c < 0x80) return c > 0x20 && c < 0x7f;
    size_t k = 1; /* walk back over continuation bytes to the lead byte */
    while (k < 4 && k < end && ((unsigned char)t[end - k] & 0xC0) == 0x80) k++;
    unsigned char lead = (unsigned char)t[end - k];
    int need = lead >= 0xF0 && lead < 0xF8 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 0;
    if (need == 0 || (size_t)need != k || (lead & 0xC0) != 0xC0) return 0;
    uint32_t cp = lead & (0x7F >> need);
    for (size_t i = end - k + 1; i < end; i++) cp = cp << 6 | ((unsigned char)t[i] & 0x3F);
    return !is_space_cp(cp);
}

static int cut_ok(const char *t, size_t p) {
    unsigned char c = (unsigned char)t[p];
    return p >= 2 && t[p - 1] == '\n' && c > 0x20 && c < 0x7f && prev_char_not_space(t, p - 1);
}

size_t zg_prepare_next_cut(const char *text, size_t len, size_t from) {
    size_t p = from ? from : 1;
    while (p < len) {
        const char *nl = memchr(text + p - 1, '\n', len - p);
        if (!nl) return len;
        size_t q = (size_t)(nl - text) + 1;
        if (cut_ok(text, q)) return q;
        p = q + 1;
    }
    return len;
}

/* The last cut point in text[1..len), 0 if none. */
static size_t last_cut(const char *text, size_t len) {
    for (size_t p = len; p-- > 1;)
        if (cut_ok(text, p)) return p;
    return 0;
}

/* ---- parallel encoding -------------------------------------------------------------------------- */

typedef struct {
    const zg_tokenizer *tok;
    zg_encoder **encs;
    int threads;
    zg_tokens *piece; /* tokens of each piece of the current batch */
    size_t *off;      /* piece i is text[off[i], off[i+1]) */
    int n_pieces, cap_pieces;
    char err[1024];
    int failed;
} engine;

static void engine_init(engine *e, const zg_tokenizer *tok, int threads) {
    memset(e, 0, sizeof *e);
    e->tok = tok;
    e->threads = threads > 0 ? threads : omp_get_max_threads();
    if (e->threads < 1) e->threads = 1;
    e->encs = zg_calloc((size_t)e->threads, sizeof *e->encs);
    for (int i = 0; i < e->threads; i++) e->encs[i] = ZG_CHECK_PTR(zg_encoder_new(tok));
}

static void engine_free(engine *e) {
    for (int i = 0; i < e->threads; i++) zg_encoder_free(e->encs[i]);
    for (int i = 0; i < e->cap_pieces; i++) zg_tokens_free(&e->piece[i]);
    free(e->encs);
    free(e->piece);
    free(e->off);
    memset(e, 0, sizeof *e);
}

/* Cuts text into pieces of about piece_bytes and encodes them in parallel into e->piece[]. */
static int engine_encode(engine *e, const char *text, size_t len, size_t piece_bytes) {
    e->n_pieces = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos + piece_bytes >= len ? len : zg_prepare_next_cut(text, len, pos + piece_bytes);
        if (e->n_pieces + 1 >= e->cap_pieces) {
            int cap = e->cap_pieces ? 2 * e->cap_pieces : 64;
            e->piece = zg_realloc(e->piece, (size_t)cap * sizeof *e->piece);
            memset(e->piece + e->cap_pieces, 0, (size_t)(cap - e->cap_pieces) * sizeof *e->piece);
            e->off = zg_realloc(e->off, ((size_t)cap + 1) * sizeof *e->off);
            e->cap_pieces = cap;
        }
        e->off[e->n_pieces++] = pos;
        pos = end;
    }
    e->off[e->n_pieces] = len;
    e->failed = 0;
    int np = e->n_pieces;
#pragma omp parallel for schedule(dynamic, 1) num_threads(e->threads)
    for (int i = 0; i < np; i++) {
        zg_encoder *enc = e->encs[omp_get_thread_num()];
        e->piece[i].len = 0;
        if (zg_encoder_encode(enc, text + e->off[i], e->off[i + 1] - e->off[i], 0, &e->piece[i]) != 0) {
#pragma omp critical(zg_prepare_error)
            {
                if (!e->failed) snprintf(e->err, sizeof e->err, "%s", zg_error_message());
                e->failed = 1;
            }
        }
    }
    if (e->failed) return zg_errorf("%s", e->err);
    return 0;
}

int zg_prepare_encode_parallel(const zg_tokenizer *tok, const char *text, size_t len, size_t piece_bytes, int threads,
                               zg_tokens *out) {
    engine e;
    engine_init(&e, tok, threads);
    int rc = engine_encode(&e, text, len, piece_bytes ? piece_bytes : PIECE_MAX);
    for (int i = 0; rc == 0 && i < e.n_pieces; i++)
        for (size_t k = 0; k < e.piece[i].len; k++) zg_tokens_push(out, e.piece[i].ids[k]);
    engine_free(&e);
    return rc;
}

/* ---- input files ------------------------------------------------------------------------------ */

typedef struct {
    char *path;
    uint64_t bytes, chars, checksum;
} src_file;

typedef struct {
    src_file *f;
    int n;
} src_list;

static void src_add(src_list *l, const char *path) {
    l->f = zg_realloc(l->f, (size_t)(l->n + 1) * sizeof *l->f);
    memset(&l->f[l->n], 0, sizeof l->f[l->n]);
    l->f[l->n++].path = zg_strdup(path);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Every *.txt below dir (symbolic links to folders are not followed, so a cycle cannot trap us). */
static int walk_dir(const char *dir, char ***out, size_t *n) {
    DIR *d = opendir(dir);
    if (!d)
        return zg_errorf("cannot read folder '%s': %s; fix its permissions or leave it out of --input", dir,
                         strerror(errno));
    struct dirent *ent;
    int rc = 0;
    errno = 0;
    while (rc == 0 && (ent = readdir(d)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
        char *p = zg_path_join(dir, ent->d_name);
        struct stat st;
        if (lstat(p, &st) != 0) {
            rc = zg_errorf("cannot read '%s': %s", p, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            rc = walk_dir(p, out, n);
        } else if (ends_with(ent->d_name, ".txt") &&
                   (S_ISREG(st.st_mode) || (S_ISLNK(st.st_mode) && zg_file_exists(p)))) {
            *out = zg_realloc(*out, (*n + 1) * sizeof **out);
            (*out)[(*n)++] = p;
            p = NULL;
        }
        free(p);
        errno = 0;
    }
    if (rc == 0 && errno != 0) rc = zg_errorf("cannot read folder '%s': %s", dir, strerror(errno));
    closedir(d);
    return rc;
}

static int collect_inputs(const zg_prepare_config *cfg, src_list *l) {
    for (int i = 0; i < cfg->n_inputs; i++) {
        const char *in = cfg->inputs[i];
        struct stat st;
        if (stat(in, &st) != 0)
            return zg_errorf("input '%s' does not exist (%s); give a text file or a folder of *.txt files", in,
                             strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            char **names = NULL;
            size_t n = 0;
            int rc = walk_dir(in, &names, &n);
            if (rc == 0 && n > 1) qsort(names, n, sizeof *names, cmp_str);
            for (size_t k = 0; k < n; k++) {
                if (rc == 0) src_add(l, names[k]);
                free(names[k]);
            }
            free(names);
            if (rc != 0) return -1;
            if (n == 0) return zg_errorf("folder '%s' contains no *.txt files; put the text in .txt files", in);
        } else if (S_ISREG(st.st_mode)) {
            src_add(l, in);
        } else {
            return zg_errorf("input '%s' is neither a regular file nor a folder", in);
        }
    }
    return 0;
}

/* Pass 1: size, characters (UTF-8 lead bytes: Python's len() of the decoded text) and checksum. */
static int scan_file(src_file *f, char *buf) {
    FILE *fp = fopen(f->path, "rb");
    if (!fp) return zg_errorf("cannot open input '%s': %s", f->path, strerror(errno));
    zg_hasher h;
    zg_hasher_init(&h);
    size_t got;
    while ((got = fread(buf, 1, IO_CHUNK, fp)) > 0) {
        zg_hasher_update(&h, buf, got);
        f->bytes += got;
        uint64_t cont = 0;
        for (size_t i = 0; i < got; i++) cont += ((unsigned char)buf[i] & 0xC0) == 0x80;
        f->chars += got - cont;
    }
    int err = ferror(fp);
    fclose(fp);
    f->checksum = zg_hasher_final(&h);
    if (err) return zg_errorf("cannot read input '%s': read error", f->path);
    return 0;
}

/* Byte offset of character number `chars` in the file. */
static int find_char_offset(const src_file *f, uint64_t chars, char *buf, uint64_t *offset) {
    FILE *fp = fopen(f->path, "rb");
    if (!fp) return zg_errorf("cannot open input '%s': %s", f->path, strerror(errno));
    uint64_t seen = 0, pos = 0;
    size_t got;
    int found = 0;
    while (!found && (got = fread(buf, 1, IO_CHUNK, fp)) > 0) {
        for (size_t i = 0; i < got; i++, pos++) {
            if (((unsigned char)buf[i] & 0xC0) == 0x80) continue;
            if (seen == chars) {
                found = 1;
                break;
            }
            seen++;
        }
    }
    fclose(fp);
    if (!found) return zg_errorf("input '%s' changed while being prepared (shorter than before); run again", f->path);
    *offset = pos;
    return 0;
}

/* ---- output: shards of one split ------------------------------------------------------------------ */

typedef struct {
    char *file;
    const char *split;
    uint64_t tokens, checksum;
} shard_rec;

typedef struct {
    const char *dir;
    const char *split;
    int vocab;
    uint64_t shard_tokens;
    zg_shard_writer w;
    int open;
    uint64_t in_shard, total;
    shard_rec *recs;
    int n_recs;
} split_out;

static int split_out_close_shard(split_out *so) {
    uint64_t n, sum;
    so->open = 0;
    if (zg_shard_writer_commit(&so->w, &n, &sum) != 0) return -1;
    shard_rec *r = &so->recs[so->n_recs - 1];
    r->tokens = n;
    r->checksum = sum;
    so->in_shard = 0;
    return 0;
}

static int split_out_write(split_out *so, const int32_t *ids, size_t n) {
    while (n > 0) {
        if (!so->open) {
            char name[64];
            snprintf(name, sizeof name, "%s_%06d.bin", so->split, so->n_recs);
            char *path = zg_path_join(so->dir, name);
            int rc = zg_shard_writer_open(&so->w, path, so->vocab);
            free(path);
            if (rc != 0) return -1;
            so->open = 1;
            so->recs = zg_realloc(so->recs, (size_t)(so->n_recs + 1) * sizeof *so->recs);
            so->recs[so->n_recs].file = zg_strdup(name);
            so->recs[so->n_recs].split = so->split;
            so->recs[so->n_recs].tokens = 0;
            so->recs[so->n_recs].checksum = 0;
            so->n_recs++;
        }
        uint64_t room = so->shard_tokens - so->in_shard;
        size_t take = n < room ? n : (size_t)room;
        if (zg_shard_writer_write(&so->w, ids, take) != 0) return -1;
        so->in_shard += take;
        so->total += take;
        ids += take;
        n -= take;
        if (so->in_shard == so->shard_tokens && split_out_close_shard(so) != 0) return -1;
    }
    return 0;
}

static int split_out_finish(split_out *so) { return so->open ? split_out_close_shard(so) : 0; }

/* After a failure: nothing of this run may remain. */
static void split_out_discard(split_out *so) {
    if (so->open) {
        zg_shard_writer_abort(&so->w);
        so->open = 0;
        so->n_recs--; /* the record of the aborted shard */
        free(so->recs[so->n_recs].file);
    }
    for (int i = 0; i < so->n_recs; i++) {
        char *p = zg_path_join(so->dir, so->recs[i].file);
        if (unlink(p) != 0 && errno != ENOENT)
            fprintf(stderr, "zgpt: warning: cannot remove '%s': %s\n", p, strerror(errno));
        free(p);
    }
}

static void split_out_free(split_out *so) {
    for (int i = 0; i < so->n_recs; i++) free(so->recs[i].file);
    free(so->recs);
    memset(so, 0, sizeof *so);
}

/* ---- the pipeline ------------------------------------------------------------------------------- */

typedef struct {
    const zg_prepare_config *cfg;
    engine eng;
    char *buf;
    size_t cap;   /* current batch capacity (grows only for text without any cut point) */
    size_t piece; /* bytes per piece */
    uint64_t done, total_bytes;
    zg_progress prog; /* when cfg->progress */
} pipeline;

static void progress(pipeline *p, int final) {
    if (!p->cfg->progress) return;
    if (final)
        zg_progress_free(&p->prog);
    else
        zg_progress_update(&p->prog, p->done);
}

static int emit_batch(pipeline *p, const char *text, size_t len, split_out *so) {
    if (engine_encode(&p->eng, text, len, p->piece) != 0) return -1;
    for (int i = 0; i < p->eng.n_pieces; i++)
        if (split_out_write(so, p->eng.piece[i].ids, p->eng.piece[i].len) != 0) return -1;
    p->done += len;
    progress(p, 0);
    return 0;
}

/* Encodes bytes [a, b) of a file into a split, streaming in batches cut at safe points. */
static int encode_segment(pipeline *p, const src_file *f, uint64_t a, uint64_t b, split_out *so) {
    FILE *fp = fopen(f->path, "rb");
    if (!fp) return zg_errorf("cannot open input '%s': %s", f->path, strerror(errno));
    if (fseeko(fp, (off_t)a, SEEK_SET) != 0) {
        fclose(fp);
        return zg_errorf("cannot seek in input '%s': %s", f->path, strerror(errno));
    }
    uint64_t remaining = b - a;
    size_t have = 0;
    int rc = 0;
    while (rc == 0 && (remaining > 0 || have > 0)) {
        size_t want = p->cap - have;
        if (want > remaining) want = (size_t)remaining;
        size_t got = want ? fread(p->buf + have, 1, want, fp) : 0;
        if (got != want) {
            rc = zg_errorf("input '%s' changed or could not be read while being prepared; run again", f->path);
            break;
        }
        have += got;
        remaining -= got;
        size_t cut = remaining == 0 ? have : last_cut(p->buf, have);
        if (cut == 0) { /* no cut point in a whole batch (e.g. one enormous line): take a bigger batch */
            p->cap *= 2;
            p->buf = zg_realloc(p->buf, p->cap);
            continue;
        }
        rc = emit_batch(p, p->buf, cut, so);
        memmove(p->buf, p->buf + cut, have - cut);
        have -= cut;
    }
    fclose(fp);
    return rc;
}

static void hex64(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

static int write_meta(const zg_prepare_config *cfg, const zg_tokenizer *tok, const src_list *l, uint64_t chars,
                      uint64_t train_chars, int eot_docs, split_out *sp[2]) {
    char hex[17];
    cJSON *root = ZG_CHECK_PTR(cJSON_CreateObject());
    cJSON_AddStringToObject(root, "format", "zgpt-tokens");
    cJSON_AddNumberToObject(root, "format_version", ZG_SHARD_VERSION);
    int vocab = zg_tokenizer_vocab_size(tok);
    cJSON_AddNumberToObject(root, "vocab_size", vocab);
    cJSON_AddStringToObject(root, "token_dtype", zg_shard_token_bytes_for(vocab) == 2 ? "uint16" : "uint32");
    cJSON_AddNumberToObject(root, "eot", zg_tokenizer_eot(tok));
    cJSON *jt = cJSON_AddObjectToObject(root, "tokenizer");
    cJSON_AddStringToObject(jt, "dir", cfg->tokenizer_dir ? cfg->tokenizer_dir : "default");
    hex64(hex, zg_tokenizer_checksum(tok));
    cJSON_AddStringToObject(jt, "checksum", hex);
    cJSON_AddNumberToObject(root, "train_tokens", (double)sp[0]->total);
    cJSON_AddNumberToObject(root, "val_tokens", (double)sp[1]->total);
    cJSON_AddNumberToObject(root, "val_fraction", cfg->val_fraction);
    cJSON_AddNumberToObject(root, "shard_tokens", (double)cfg->shard_tokens);
    cJSON_AddNumberToObject(root, "chars", (double)chars);
    cJSON_AddNumberToObject(root, "train_chars", (double)train_chars);
    cJSON_AddBoolToObject(root, "eot_after_each_document", eot_docs);
    cJSON *js = cJSON_AddArrayToObject(root, "sources");
    for (int i = 0; i < l->n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", l->f[i].path);
        cJSON_AddNumberToObject(o, "bytes", (double)l->f[i].bytes);
        cJSON_AddNumberToObject(o, "chars", (double)l->f[i].chars);
        hex64(hex, l->f[i].checksum);
        cJSON_AddStringToObject(o, "checksum", hex);
        cJSON_AddItemToArray(js, o);
    }
    cJSON *jsh = cJSON_AddArrayToObject(root, "shards");
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < sp[s]->n_recs; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "file", sp[s]->recs[i].file);
            cJSON_AddStringToObject(o, "split", sp[s]->split);
            cJSON_AddNumberToObject(o, "tokens", (double)sp[s]->recs[i].tokens);
            hex64(hex, sp[s]->recs[i].checksum);
            cJSON_AddStringToObject(o, "checksum", hex);
            cJSON_AddItemToArray(jsh, o);
        }
    char *text = ZG_CHECK_PTR(cJSON_Print(root));
    cJSON_Delete(root);
    char *path = zg_path_join(cfg->out_dir, "meta.json");
    zg_atomic_file af;
    int rc = zg_atomic_open(&af, path);
    if (rc == 0) {
        if (zg_atomic_write(&af, text, strlen(text)) != 0 || zg_atomic_write(&af, "\n", 1) != 0) {
            zg_atomic_abort(&af);
            rc = -1;
        } else {
            rc = zg_atomic_commit(&af, NULL);
        }
    }
    free(path);
    free(text);
    return rc;
}

/* "<split>_<digits>.bin" written by an earlier run, and not by this one: removed so the folder holds
 * exactly what meta.json lists. Temporary files of crashed runs (their process is gone) go too. */
static int is_our_shard_name(const char *name) {
    const char *p;
    if (strncmp(name, "train_", 6) == 0)
        p = name + 6;
    else if (strncmp(name, "val_", 4) == 0)
        p = name + 4;
    else
        return 0;
    size_t digits = strspn(p, "0123456789");
    return digits >= 6 && strcmp(p + digits, ".bin") == 0;
}

static int is_dead_tmp(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t) return 0;
    size_t base = (size_t)(t - name);
    char head[256];
    if (base >= sizeof head) return 0;
    memcpy(head, name, base);
    head[base] = '\0';
    if (!is_our_shard_name(head) && strcmp(head, "meta.json") != 0) return 0;
    char *end;
    long pid = strtol(t + 5, &end, 10);
    if (*end != '\0' || pid <= 0) return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

static void remove_stale(const char *dir, split_out *sp[2], int include_shards) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        int stale = is_dead_tmp(ent->d_name);
        if (!stale && include_shards && is_our_shard_name(ent->d_name)) {
            stale = 1;
            for (int s = 0; s < 2 && stale; s++)
                for (int i = 0; i < sp[s]->n_recs; i++)
                    if (strcmp(sp[s]->recs[i].file, ent->d_name) == 0) stale = 0;
        }
        if (!stale) continue;
        char *p = zg_path_join(dir, ent->d_name);
        if (unlink(p) != 0) fprintf(stderr, "zgpt: warning: cannot remove stale '%s': %s\n", p, strerror(errno));
        free(p);
    }
    closedir(d);
}

int zg_prepare_run(const zg_prepare_config *cfg, zg_prepare_stats *stats) {
    memset(stats, 0, sizeof *stats);
    double t0 = zg_now_s();
    if (cfg->n_inputs < 1) return zg_errorf("no input given: pass --input with text files or folders");
    if (!cfg->out_dir || !*cfg->out_dir) return zg_errorf("no output folder given: pass --out DIR");
    if (!(cfg->val_fraction > 0 && cfg->val_fraction < 1))
        return zg_errorf(
            "--val-fraction %g is outside (0, 1): give the share of the text kept for validation, e.g. 0.1",
            cfg->val_fraction);
    if (cfg->shard_tokens < 1) return zg_errorf("--shard-tokens must be >= 1, e.g. 100000000");

    src_list l = {0};
    zg_tokenizer *own_tok = NULL;
    const zg_tokenizer *tok = cfg->tokenizer;
    char *buf = NULL;
    split_out train = {0}, val = {0};
    split_out *sp[2] = {&train, &val};
    pipeline p;
    memset(&p, 0, sizeof p);
    zg_dir_lock lock = {-1};
    int rc = collect_inputs(cfg, &l);
    if (rc == 0 && !tok) {
        rc = zg_tokenizer_init(&own_tok, cfg->tokenizer_dir);
        tok = own_tok;
    }
    if (rc != 0) goto cleanup;

    /* Pass 1: sizes and characters, to place the split. */
    buf = zg_malloc(IO_CHUNK);
    uint64_t chars = 0, bytes = 0;
    for (int i = 0; i < l.n && rc == 0; i++) {
        rc = scan_file(&l.f[i], buf);
        chars += l.f[i].chars;
        bytes += l.f[i].bytes;
    }
    if (rc != 0) goto cleanup;
    if (bytes == 0) {
        rc = zg_errorf("empty input: %s%s hold%s no text; give files with text in them", l.f[0].path,
                       l.n > 1 ? " and the other inputs" : "", l.n > 1 ? "" : "s");
        goto cleanup;
    }
    uint64_t train_chars = (uint64_t)((double)chars * (1.0 - cfg->val_fraction));
    if (train_chars == 0 || train_chars >= chars) {
        rc = zg_errorf("the inputs have only %llu characters: --val-fraction %g leaves the %s split empty; give more "
                       "text or another --val-fraction",
                       (unsigned long long)chars, cfg->val_fraction, train_chars == 0 ? "train" : "val");
        goto cleanup;
    }
    int n_docs = 0;
    for (int i = 0; i < l.n; i++) n_docs += l.f[i].bytes > 0;
    int eot_docs = n_docs > 1;
    int32_t eot = zg_tokenizer_eot(tok);

    /* Nothing above touched the output; from here on meta.json is absent until the run completes.
     * The folder's lock keeps a second prepare from mixing its shards in (one writer per folder). */
    if (zg_dir_make(cfg->out_dir) != 0 || zg_dir_lock_acquire(&lock, cfg->out_dir, "prepare") != 0) {
        rc = -1;
        goto cleanup;
    }
    char *meta = zg_path_join(cfg->out_dir, "meta.json");
    if (unlink(meta) != 0 && errno != ENOENT) {
        rc = zg_errorf("cannot remove the old '%s': %s", meta, strerror(errno));
        free(meta);
        goto cleanup;
    }
    free(meta);
    if ((rc = zg_dir_sync(cfg->out_dir)) != 0) goto cleanup;
    remove_stale(cfg->out_dir, sp, 0);

    int vocab = zg_tokenizer_vocab_size(tok);
    train = (split_out){.dir = cfg->out_dir, .split = "train", .vocab = vocab, .shard_tokens = cfg->shard_tokens};
    val = (split_out){.dir = cfg->out_dir, .split = "val", .vocab = vocab, .shard_tokens = cfg->shard_tokens};
    p.cfg = cfg;
    engine_init(&p.eng, tok, cfg->threads);
    p.piece = (size_t)(bytes / ((uint64_t)p.eng.threads * PIECES_PER_THREAD) + 1);
    if (p.piece > PIECE_MAX) p.piece = PIECE_MAX;
    if (p.piece < PIECE_MIN) p.piece = PIECE_MIN;
    p.cap = p.piece * (size_t)p.eng.threads * PIECES_PER_THREAD;
    p.buf = zg_malloc(p.cap);
    p.total_bytes = bytes;
    if (cfg->progress) zg_progress_init(&p.prog, "prepare", bytes, NULL);

    /* Pass 2: documents in order; the one holding the split character is cut in two. */
    uint64_t seen = 0;
    for (int i = 0; i < l.n && rc == 0; i++) {
        const src_file *f = &l.f[i];
        if (f->bytes == 0) continue;
        uint64_t split_byte = 0; /* bytes [0, split_byte) of this file go to train */
        if (seen + f->chars <= train_chars)
            split_byte = f->bytes;
        else if (seen >= train_chars)
            split_byte = 0;
        else
            rc = find_char_offset(f, train_chars - seen, buf, &split_byte);
        if (rc != 0) break;
        seen += f->chars;
        if (split_byte > 0) rc = encode_segment(&p, f, 0, split_byte, &train);
        if (rc == 0 && split_byte < f->bytes) rc = encode_segment(&p, f, split_byte, f->bytes, &val);
        /* A document cut by the split ends (with its EOT) in val; train's part just stops. */
        if (rc == 0 && eot_docs) rc = split_out_write(split_byte < f->bytes ? &val : &train, &eot, 1);
    }
    if (rc == 0) rc = split_out_finish(&train);
    if (rc == 0) rc = split_out_finish(&val);
    if (rc == 0) rc = write_meta(cfg, tok, &l, chars, train_chars, eot_docs, sp);
    if (rc != 0) {
        split_out_discard(&train);
        split_out_discard(&val);
        goto cleanup;
    }
    remove_stale(cfg->out_dir, sp, 1);
    progress(&p, 1);

    stats->n_files = l.n;
    stats->bytes = bytes;
    stats->chars = chars;
    stats->train_tokens = train.total;
    stats->val_tokens = val.total;
    stats->train_shards = train.n_recs;
    stats->val_shards = val.n_recs;
    stats->vocab_size = vocab;
    stats->tokenizer_checksum = zg_tokenizer_checksum(tok);
    stats->threads = p.eng.threads;
    stats->seconds = zg_now_s() - t0;

cleanup:
    zg_dir_lock_release(&lock);
    if (cfg->progress) zg_progress_free(&p.prog); /* ends a progress line left by a failure */
    if (p.eng.encs) engine_free(&p.eng);
    free(p.buf);
    split_out_free(&train);
    split_out_free(&val);
    for (int i = 0; i < l.n; i++) free(l.f[i].path);
    free(l.f);
    free(buf);
    if (own_tok) zg_tokenizer_free(own_tok);
    return rc;
}
