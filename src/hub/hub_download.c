#include "hub/hub_download.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/strutil.h"
#include "hub/hub_cache.h"
#include "model/safetensors_index.h"

#include <ctype.h>
#ifdef ZGPT_WITH_CURL
#include <curl/curl.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define MAX_RELATIVE_REDIRECTS 5
#define CONNECT_TIMEOUT_S 15L
/* a transfer slower than 1 byte/s for this long is a dead connection */
#define STALL_TIMEOUT_S 60L
/* Transient failures are retried, as huggingface_hub retries them: a connection lost mid-transfer, and HTTP 429 and
 * 5xx gateway answers. The wait doubles from 1 s up to RETRY_WAIT_MAX_S, or is the server's Retry-After (seconds) up
 * to RETRY_AFTER_MAX_S. $ZGPT_HUB_RETRIES sets how many retries a request gets. */
#define DEFAULT_RETRIES 5
#define MAX_RETRIES 100
#define RETRY_WAIT_MAX_S 8L
#define RETRY_AFTER_MAX_S 60L

const char *zg_hub_endpoint(char *buf, unsigned long cap) {
    const char *e = getenv("HF_ENDPOINT");
    snprintf(buf, cap, "%s", e && *e ? e : DEFAULT_ENDPOINT);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '/') buf[--n] = '\0';
    return buf;
}

#ifdef ZGPT_WITH_CURL
/* $HF_TOKEN, else the token file huggingface-cli login writes. NULL when none (heap string). */
static char *read_token(void) {
    const char *t = getenv("HF_TOKEN");
    if (t && *t) return zg_strdup(t);
    char *path = NULL;
    const char *p = getenv("HF_TOKEN_PATH");
    if (p && *p) {
        path = zg_strdup(p);
    } else {
        const char *home = getenv("HF_HOME");
        if (home && *home)
            path = zg_path_join(home, "token");
        else {
            const char *h = getenv("HOME");
            path = zg_path_join(h && *h ? h : ".", ".cache/huggingface/token");
        }
    }
    char *text = NULL;
    size_t len;
    if (zg_file_read_all(path, &text, &len) != 0) {
        zg_error_clear();
        text = NULL;
    } else {
        while (len && isspace((unsigned char)text[len - 1])) text[--len] = '\0';
        if (!len) {
            free(text);
            text = NULL;
        }
    }
    free(path);
    return text;
}

/* What one HEAD (or GET) response said. */
typedef struct {
    char commit[128], etag[160], location[2048], error_code[64];
    long long size;   /* -1 unknown */
    long status;      /* the response's status code */
    long retry_after; /* Retry-After in seconds, -1 none (or an HTTP date) */
} head_info;

static void head_info_reset(head_info *h) {
    memset(h, 0, sizeof *h);
    h->size = -1;
    h->retry_after = -1;
}

static void strip_value(char *v) {
    size_t n = strlen(v);
    while (n && isspace((unsigned char)v[n - 1])) v[--n] = '\0';
}

static void copy_header(char *dst, size_t cap, const char *line, size_t hlen) {
    const char *v = line + hlen;
    while (*v == ' ' || *v == '\t') v++;
    size_t n = strlen(v);
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
    strip_value(dst);
}

/* Records the headers of the last response only (a redirect starts a new set). */
static size_t on_header(char *buf, size_t size, size_t nitems, void *ud) {
    head_info *h = ud;
    size_t n = size * nitems;
    char line[2200];
    size_t m = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, buf, m);
    line[m] = '\0';
    if (strncmp(line, "HTTP/", 5) == 0) {
        head_info_reset(h);
        const char *sp = strchr(line, ' ');
        h->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return n;
    }
    static const struct {
        const char *name;
        size_t off, cap;
    } keys[] = {{"x-repo-commit:", offsetof(head_info, commit), sizeof(((head_info *)0)->commit)},
                {"x-linked-etag:", offsetof(head_info, etag), sizeof(((head_info *)0)->etag)},
                {"location:", offsetof(head_info, location), sizeof(((head_info *)0)->location)},
                {"x-error-code:", offsetof(head_info, error_code), sizeof(((head_info *)0)->error_code)}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        size_t kl = strlen(keys[i].name);
        if (strncasecmp(line, keys[i].name, kl) == 0) copy_header((char *)h + keys[i].off, keys[i].cap, line, kl);
    }
    /* ETag: only when no X-Linked-Etag came (LFS: the linked one is the content's sha256) */
    if (strncasecmp(line, "etag:", 5) == 0 && !h->etag[0]) copy_header(h->etag, sizeof h->etag, line, 5);
    if (strncasecmp(line, "x-linked-size:", 14) == 0)
        h->size = strtoll(line + 14, NULL, 10);
    else if (strncasecmp(line, "content-length:", 15) == 0 && h->size < 0 && (h->status < 300 || h->status >= 400))
        h->size = strtoll(line + 15, NULL, 10); /* a redirect's length is its own body's, not the file's */
    if (strncasecmp(line, "retry-after:", 12) == 0) {
        char *end;
        long v = strtol(line + 12, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
        if (*end == '\0' && v >= 0 && end != line + 12) h->retry_after = v;
    }
    return n;
}

/* ETag as a file name: without W/ and quotes. */
static void normalize_etag(char *e) {
    char *p = e;
    if (strncmp(p, "W/", 2) == 0) p += 2;
    if (*p == '"') p++;
    size_t n = strlen(p);
    if (n && p[n - 1] == '"') n--;
    memmove(e, p, n);
    e[n] = '\0';
}

static int is_sha256(const char *s) {
    if (strlen(s) != 64) return 0;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s)) return 0;
    return 1;
}

typedef struct {
    const char *endpoint, *repo, *revision, *token;
    char url[4096];
    int entry_missing; /* the last error was a 404 EntryNotFound (the file is not in the repo at this revision) */
    int retries;       /* retries a request gets ($ZGPT_HUB_RETRIES) */
    double head_timeout_s, get_timeout_s; /* $HF_HUB_ETAG_TIMEOUT, $HF_HUB_DOWNLOAD_TIMEOUT; 0: zgpt's defaults */
    int transient;                        /* the last failure may pass if tried again */
    long retry_after;                     /* the last answer's Retry-After (s), -1 none */
    char why[512];                        /* the last transient failure in a few words */
} request;

/* s with every byte outside RFC 3986's unreserved set (and '/' unless slash_ok) percent-encoded, as
 * huggingface_hub's hf_hub_url quotes the revision (a branch "refs/pr/1" -> refs%2Fpr%2F1) and the file name. */
static void url_escape(char *dst, size_t cap, const char *s, int slash_ok) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s && n + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~' || (slash_ok && ch == '/')) {
            dst[n++] = (char)ch;
        } else {
            dst[n++] = '%';
            dst[n++] = hex[ch >> 4];
            dst[n++] = hex[ch & 15];
        }
    }
    dst[n] = '\0';
}

/* Whether a failed transfer may pass if tried again: the connection was lost or stalled after it was made. Before a
 * file's metadata is known (HEAD), a host that cannot be reached or a timeout is an absent network: not retried. */
static int curl_transient(CURLcode cc, int connect_too) {
    switch (cc) {
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return 1;
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR: return connect_too;
    default: return 0;
    }
}

/* HTTP answers that say "later": rate limited, or a gateway or server that failed this once. */
static int http_transient(long code) { return code == 429 || code == 500 || code == 502 || code == 503 || code == 504; }

static struct curl_slist *auth_headers(const request *r, const char *url) {
    struct curl_slist *h = curl_slist_append(NULL, "User-Agent: zgpt/" ZGPT_VERSION);
    /* the token goes to the hub only, never to the CDN it redirects to */
    if (r->token && strncmp(url, r->endpoint, strlen(r->endpoint)) == 0) {
        char line[2048];
        snprintf(line, sizeof line, "Authorization: Bearer %s", r->token);
        h = curl_slist_append(h, line);
    }
    return h;
}

/* The one-line error for an HTTP status. */
static int http_error(request *r, const char *file, long code, const head_info *h) {
    if (code == 401 || code == 403)
        return zg_errorf("%s/%s: HTTP %ld from %s: the repo is private or gated, or the token is wrong; %s", r->repo,
                         file, code, r->endpoint,
                         r->token ? "check that $HF_TOKEN has access (and that the repo's conditions are accepted "
                                    "on its page)"
                                  : "set $HF_TOKEN to a token with access (huggingface.co/settings/tokens)");
    if (code == 404) {
        if (strcmp(h->error_code, "RevisionNotFound") == 0)
            return zg_errorf("%s: revision '%s' not found on %s (check --revision)", r->repo, r->revision, r->endpoint);
        if (strcmp(h->error_code, "EntryNotFound") == 0) {
            r->entry_missing = 1;
            return zg_errorf("%s: file '%s' not found at revision '%s' on %s (zgpt needs config.json and the "
                             "safetensors weights: model.safetensors, or model.safetensors.index.json and its shards)",
                             r->repo, file, r->revision, r->endpoint);
        }
        return zg_errorf("%s: repo not found on %s (check the name; a private repo needs $HF_TOKEN)", r->repo,
                         r->endpoint);
    }
    return zg_errorf("%s/%s: HTTP %ld from %s", r->repo, file, code, r->endpoint);
}

/* A request that ended with HTTP `code`: whether trying again may help (and after how long) noted in r, then
 * http_error's line. */
static int http_failed(request *r, const char *file, long code, const head_info *h) {
    r->transient = http_transient(code);
    r->retry_after = h->retry_after;
    snprintf(r->why, sizeof r->why, "HTTP %ld", code);
    return http_error(r, file, code, h);
}

static int curl_error(const request *r, CURLcode cc, const char *errbuf) {
    return zg_errorf("cannot reach %s for %s: %s; check the network (or proxy), or use files already in the cache "
                     "with HF_HUB_OFFLINE=1",
                     r->endpoint, r->repo, errbuf[0] ? errbuf : curl_easy_strerror(cc));
}

/* A handle with zgpt's timeouts, or timeout_s (huggingface_hub's variables) for the connection and for a stall. */
static CURL *new_handle(char *errbuf, double timeout_s) {
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    errbuf[0] = '\0';
    long ms = (long)(timeout_s * 1000.0 + 0.5), stall_s = (long)(timeout_s + 0.999);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_s > 0 ? ms : CONNECT_TIMEOUT_S * 1000L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, timeout_s > 0 ? (stall_s > 0 ? stall_s : 1L) : STALL_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

/* HEAD of one file: commit, etag, size and where to GET it (*get_url, heap). A failure that may pass if tried again
 * sets r->transient (and r->retry_after). */
static int head_file(request *r, const char *file, head_info *h, char **get_url) {
    char url[4096], errbuf[CURL_ERROR_SIZE], rev[512], name[1024];
    url_escape(rev, sizeof rev, r->revision, 0);
    url_escape(name, sizeof name, file, 1);
    snprintf(url, sizeof url, "%s/%s/resolve/%s/%s", r->endpoint, r->repo, rev, name);
    for (int hop = 0; hop <= MAX_RELATIVE_REDIRECTS; hop++) {
        CURL *c = new_handle(errbuf, r->head_timeout_s);
        if (!c) return zg_errorf("cannot start libcurl");
        struct curl_slist *hd = auth_headers(r, url);
        head_info_reset(h);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
        if (r->head_timeout_s > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(r->head_timeout_s * 1000.0 + 0.5));
        CURLcode cc = curl_easy_perform(c);
        long code = 0;
        char *redirect = NULL;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &redirect);
        char *next = redirect ? zg_strdup(redirect) : NULL;
        curl_easy_cleanup(c);
        curl_slist_free_all(hd);
        if (cc != CURLE_OK) {
            free(next);
            r->transient = curl_transient(cc, 0);
            snprintf(r->why, sizeof r->why, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
            return curl_error(r, cc, errbuf);
        }
        if (code >= 300 && code < 400 && next && h->location[0] == '/') { /* a renamed repo: same server */
            snprintf(url, sizeof url, "%s", next);
            free(next);
            continue;
        }
        if (code >= 400 || (code >= 300 && !next)) {
            free(next);
            return http_failed(r, file, code, h);
        }
        if (!h->commit[0] || !h->etag[0]) {
            free(next);
            return zg_errorf("%s/%s: %s answered without X-Repo-Commit or ETag (is $HF_ENDPOINT a Hugging Face hub?)",
                             r->repo, file, r->endpoint);
        }
        normalize_etag(h->etag);
        if (strchr(h->etag, '/') || strstr(h->etag, "..") || !h->etag[0] || strchr(h->commit, '/') ||
            strstr(h->commit, "..")) {
            free(next);
            return zg_errorf("%s/%s: unusable ETag or commit from %s", r->repo, file, r->endpoint);
        }
        *get_url = code >= 300 ? next : zg_strdup(url);
        if (code < 300) free(next);
        return 0;
    }
    return zg_errorf("%s/%s: too many redirects from %s", r->repo, file, r->endpoint);
}

typedef struct {
    FILE *f;
    int write_errno;
    long long offset;  /* bytes already in the .incomplete file when the GET started */
    long long written; /* bytes of this GET written */
    int checked;       /* the status was looked at (first body bytes) */
    CURL *c;
    zg_progress *prog;
} get_state;

static size_t on_body(char *buf, size_t size, size_t nmemb, void *ud) {
    get_state *g = ud;
    size_t n = size * nmemb;
    if (!g->checked) {
        long code = 0;
        curl_easy_getinfo(g->c, CURLINFO_RESPONSE_CODE, &code);
        g->checked = 1;
        if (code == 200 && g->offset > 0) { /* the server ignored Range: start over */
            if (fflush(g->f) != 0 || ftruncate(fileno(g->f), 0) != 0 || fseeko(g->f, 0, SEEK_SET) != 0) {
                g->write_errno = errno;
                return 0;
            }
            g->offset = 0;
            zg_progress_set_base(g->prog, 0);
        }
        if (code >= 300) return n; /* an error page: not written, the status is reported */
    }
    long code = 0;
    curl_easy_getinfo(g->c, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 300) return n;
    if (fwrite(buf, 1, n, g->f) != n) {
        g->write_errno = errno ? errno : EIO;
        return 0;
    }
    g->written += (long long)n;
    zg_progress_update(g->prog, (uint64_t)(g->offset + g->written));
    return n;
}

/* GET into `part`, appending from its current size. */
static int get_file(request *r, const char *file, const char *url, const char *part, long long size) {
    struct stat st;
    long long have = stat(part, &st) == 0 ? (long long)st.st_size : 0;
    if (size >= 0 && have > size) { /* longer than the file: not a prefix of it */
        if (unlink(part) != 0) return zg_errorf("cannot remove '%s': %s", part, zg_strerrno());
        have = 0;
    }
    if (size > 0 && have == size) return 0; /* all there (a try that failed after its last byte): verified next */
    FILE *f = fopen(part, have ? "ab" : "wb");
    if (!f) return zg_errorf("cannot write '%s': %s", part, zg_strerrno());
    char label[300], errbuf[CURL_ERROR_SIZE];
    snprintf(label, sizeof label, "download %s/%s", r->repo, file);
    zg_progress prog;
    zg_progress_init(&prog, label, size > 0 ? (uint64_t)size : 0, NULL);
    zg_progress_set_base(&prog, (uint64_t)have);
    if (have) fprintf(stderr, "%s: resuming at byte %lld\n", label, have);
    CURL *c = new_handle(errbuf, r->get_timeout_s);
    if (!c) {
        fclose(f);
        zg_progress_free(&prog);
        return zg_errorf("cannot start libcurl");
    }
    get_state g = {f, 0, have, 0, 0, c, &prog};
    struct curl_slist *hd = auth_headers(r, url);
    char range[64];
    snprintf(range, sizeof range, "%lld-", have);
    head_info h;
    head_info_reset(&h);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &g);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    if (have) curl_easy_setopt(c, CURLOPT_RANGE, range);
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    curl_slist_free_all(hd);
    int rc = 0;
    if (fflush(f) != 0 && !g.write_errno) g.write_errno = errno;
    if (fclose(f) != 0 && !g.write_errno) g.write_errno = errno;
    zg_progress_free(&prog);
    if (g.write_errno) {
        errno = g.write_errno;
        rc = zg_errorf("writing '%s' failed: %s; free space (or fix the folder) and run again: the download resumes "
                       "from what is there",
                       part, zg_strerrno());
    } else if (cc != CURLE_OK) {
        r->transient = curl_transient(cc, 1);
        snprintf(r->why, sizeof r->why, "the connection stopped after %lld bytes (%s)", g.offset + g.written,
                 errbuf[0] ? errbuf : curl_easy_strerror(cc));
        rc = zg_errorf("%s/%s: the download stopped after %lld bytes (%s); run again: it resumes from '%s'", r->repo,
                       file, g.offset + g.written, errbuf[0] ? errbuf : curl_easy_strerror(cc), part);
    } else if (code == 416) { /* the range lies past the end: what is there is not a prefix */
        unlink(part);
        rc = zg_errorf("%s/%s: the partial download did not match the file (HTTP 416); it was removed, run again",
                       r->repo, file);
    } else if (code >= 300) {
        rc = http_failed(r, file, code, &h);
    }
    return rc;
}

/* Creates `link` -> `target` (relative), replacing what is there. */
static int relink(const char *target, const char *link) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", link, (long)getpid());
    unlink(tmp);
    if (symlink(target, tmp) != 0) return zg_errorf("cannot create the link '%s': %s", tmp, zg_strerrno());
    if (rename(tmp, link) != 0) {
        unlink(tmp);
        return zg_errorf("cannot create the link '%s': %s", link, zg_strerrno());
    }
    return 0;
}

/* Before try `attempt` + 1 of a request that failed: 0 when the failure is not transient or the retries are spent
 * (its error stands); else says so, waits, and returns 1. */
static int retry_wait(request *r, const char *file, int attempt) {
    if (!r->transient || attempt >= r->retries) return 0;
    long wait = r->retry_after >= 0 ? (r->retry_after < RETRY_AFTER_MAX_S ? r->retry_after : RETRY_AFTER_MAX_S)
                                    : (attempt < 3 ? 1L << attempt : RETRY_WAIT_MAX_S);
    zg_note("download %s/%s: %s; trying again in %ld s (retry %d of %d)", r->repo, file, r->why, wait, attempt + 1,
            r->retries);
    zg_error_clear();
    if (wait > 0) sleep((unsigned)wait);
    return 1;
}

static void try_reset(request *r) {
    r->transient = 0;
    r->retry_after = -1;
    r->why[0] = '\0';
}

/* One file: HEAD, GET into the blob (unless there), verify, publish, link; each request retried while its failure is
 * transient. *commit receives the commit. */
static int fetch_file(request *r, const char *repo_dir, const char *file, char *commit, size_t commit_cap) {
    head_info h;
    char *url = NULL;
    for (int attempt = 0;; attempt++) {
        try_reset(r);
        if (head_file(r, file, &h, &url) == 0) break;
        if (!retry_wait(r, file, attempt)) return -1;
    }
    if (commit[0] && strcmp(commit, h.commit) != 0) {
        free(url);
        return zg_errorf("%s: the revision '%s' moved to another commit during the download (%s, then %s); run again",
                         r->repo, r->revision, commit, h.commit);
    }
    snprintf(commit, commit_cap, "%s", h.commit);
    char *blobs = zg_path_join(repo_dir, "blobs");
    char *blob = zg_path_join(blobs, h.etag);
    size_t bl = strlen(blob);
    char *part = zg_malloc(bl + 12);
    snprintf(part, bl + 12, "%s.incomplete", blob);
    int rc = zg_dir_make(blobs);
    if (rc == 0 && !zg_file_exists(blob)) {
        for (int attempt = 0;; attempt++) { /* each try resumes from what the last one wrote */
            try_reset(r);
            rc = get_file(r, file, url, part, h.size);
            if (rc == 0 || !retry_wait(r, file, attempt)) break;
        }
        struct stat st;
        if (rc == 0 && h.size >= 0 && (stat(part, &st) != 0 || (long long)st.st_size != h.size))
            rc = zg_errorf("%s/%s: got %lld bytes, the hub announced %lld; run again", r->repo, file,
                           stat(part, &st) == 0 ? (long long)st.st_size : -1LL, h.size);
        if (rc == 0 && is_sha256(h.etag)) { /* LFS: the ETag is the sha256 of the content */
            char hex[65];
            rc = zg_sha256_file(part, hex);
            if (rc == 0 && strcasecmp(hex, h.etag) != 0) {
                unlink(part); /* corrupt: resuming from it cannot help */
                rc = zg_errorf("%s/%s: checksum mismatch: sha256 %s, the hub says %s; the download was discarded, run "
                               "again",
                               r->repo, file, hex, h.etag);
            }
        }
        if (rc == 0 && rename(part, blob) != 0) rc = zg_errorf("cannot publish '%s': %s", blob, zg_strerrno());
        if (rc == 0) rc = zg_dir_sync(blobs);
    }
    if (rc == 0) {
        char *snaps = zg_path_join(repo_dir, "snapshots");
        char *snap = zg_path_join(snaps, h.commit);
        char *link = zg_path_join(snap, file);
        char target[512];
        snprintf(target, sizeof target, "../../blobs/%s", h.etag);
        rc = zg_dir_make(snap);
        if (rc == 0) rc = relink(target, link);
        free(snaps);
        free(snap);
        free(link);
    }
    free(blobs);
    free(blob);
    free(part);
    free(url);
    return rc;
}

static int fetch_shards(request *r, const char *repo_dir, const char *name, char *commit, size_t commit_cap);

/* The weights, as transformers looks for them (model_weight_files): the first file the repo has, and for an index
 * every shard it names. */
static int fetch_weights(request *r, const char *repo_dir, char *commit, size_t commit_cap) {
    for (int i = 0; i < MODEL_WEIGHT_FILES; i++) {
        const char *name = model_weight_files[i];
        r->entry_missing = 0;
        if (fetch_file(r, repo_dir, name, commit, commit_cap) == 0)
            return safetensors_is_index_path(name) ? fetch_shards(r, repo_dir, name, commit, commit_cap) : 0;
        if (!r->entry_missing) return -1;
        zg_error_clear();
    }
    return zg_errorf("%s: none of %s, %s (a sharded checkpoint), %s or %s at revision '%s' on %s: no weights zgpt "
                     "reads",
                     r->repo, model_weight_files[0], model_weight_files[1], model_weight_files[2],
                     model_weight_files[3], r->revision, r->endpoint);
}

/* every shard the index `name` (already in the snapshot) names */
static int fetch_shards(request *r, const char *repo_dir, const char *name, char *commit, size_t commit_cap) {
    char *snaps = zg_path_join(repo_dir, "snapshots");
    char *snap = zg_path_join(snaps, commit);
    char *index = zg_path_join(snap, name);
    safetensors_index ix;
    int rc = safetensors_index_read(&ix, index);
    if (rc == 0) {
        for (int s = 0; s < ix.n_shards && rc == 0; s++) rc = fetch_file(r, repo_dir, ix.shards[s], commit, commit_cap);
        safetensors_index_free(&ix);
    }
    free(snaps);
    free(snap);
    free(index);
    return rc;
}

/* refs/<revision> = commit (atomically), unless the revision is the commit itself. */
static int write_ref(const char *repo_dir, const char *revision, const char *commit) {
    if (zg_hub_is_commit(revision)) return 0;
    char *refs = zg_path_join(repo_dir, "refs");
    char *ref = zg_path_join(refs, revision);
    char *dir = zg_strdup(ref);
    *strrchr(dir, '/') = '\0'; /* a revision like refs/pr/1 has folders */
    zg_atomic_file af;
    int rc = zg_dir_make(dir);
    if (rc == 0) rc = zg_atomic_open(&af, ref);
    if (rc == 0) rc = zg_atomic_write(&af, commit, strlen(commit));
    if (rc == 0) rc = zg_atomic_commit(&af, NULL);
    free(refs);
    free(ref);
    free(dir);
    return rc;
}

/* An exclusive lock per repo (<cache>/.locks/models--org--name/zgpt.lock), held for the download. */
static int lock_repo(const char *cache, const char *repo_id) {
    char *locks = zg_path_join(cache, ".locks");
    char *folder = zg_hub_repo_folder(locks, repo_id);
    char *path = zg_path_join(folder, "zgpt.lock");
    int fd = -1;
    if (zg_dir_make(folder) == 0) {
        fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
        if (fd < 0)
            zg_errorf("cannot open the lock '%s': %s", path, zg_strerrno());
        else if (flock(fd, LOCK_EX) != 0) {
            zg_errorf("cannot lock '%s': %s", path, zg_strerrno());
            close(fd);
            fd = -1;
        }
    }
    free(locks);
    free(folder);
    free(path);
    return fd;
}

/* $name as seconds (> 0, at most a day) into *out; unset or empty leaves it. A bad value is added to errs. */
static void env_seconds(zg_lines *errs, const char *name, double *out) {
    const char *v = getenv(name);
    if (!v || !*v) return;
    double x = 0;
    if (zg_parse_f64(v, name, &x) != 0) zg_error_clear(); /* (said below, with the range) */
    if (!(x > 0 && x <= 86400))
        zg_lines_add(errs, "%s='%s' is not a number of seconds between 0 and 86400; unset it or give one (e.g. 60)",
                     name, v);
    else
        *out = x;
}

/* The environment's settings for the requests: retries and huggingface_hub's timeouts, all problems said together. */
static int hub_env(request *r) {
    zg_lines errs = {0};
    r->retries = DEFAULT_RETRIES;
    const char *v = getenv("ZGPT_HUB_RETRIES");
    if (v && *v) {
        char *end;
        long n = strtol(v, &end, 10);
        if (*end != '\0' || n < 0 || n > MAX_RETRIES)
            zg_lines_add(&errs,
                         "ZGPT_HUB_RETRIES='%s' is not a count of retries from 0 to %d; unset it (%d) or give one", v,
                         MAX_RETRIES, DEFAULT_RETRIES);
        else
            r->retries = (int)n;
    }
    env_seconds(&errs, "HF_HUB_ETAG_TIMEOUT", &r->head_timeout_s);
    env_seconds(&errs, "HF_HUB_DOWNLOAD_TIMEOUT", &r->get_timeout_s);
    int rc = zg_error_lines(&errs, "in the download settings");
    zg_lines_free(&errs);
    return rc;
}

int zg_hub_download(const char *cache, const char *repo_id, const char *revision, char **snapshot) {
    *snapshot = NULL;
    if (zg_hub_offline())
        return zg_errorf("HF_HUB_OFFLINE is set: %s (%s) is not downloaded; unset it, or put the files in the cache",
                         repo_id, revision);
    if (!zg_hub_is_repo_id(repo_id) && strchr(repo_id, '/'))
        return zg_errorf("'%s' is not a Hugging Face repo id (expected org/name)", repo_id);
    char endpoint[1024];
    request r;
    memset(&r, 0, sizeof r);
    r.endpoint = zg_hub_endpoint(endpoint, sizeof endpoint);
    r.repo = repo_id;
    r.revision = revision;
    if (hub_env(&r) != 0) return -1;
    char *token = read_token();
    r.token = token;
    char *repo_dir = zg_hub_repo_folder(cache, repo_id);
    int fd = lock_repo(cache, repo_id);
    int rc = fd < 0 ? -1 : 0;
    char commit[128] = "";
    if (rc == 0) rc = fetch_file(&r, repo_dir, "config.json", commit, sizeof commit);
    if (rc == 0) rc = fetch_weights(&r, repo_dir, commit, sizeof commit);
    if (rc == 0) rc = write_ref(repo_dir, revision, commit);
    if (rc == 0) {
        char *snaps = zg_path_join(repo_dir, "snapshots");
        *snapshot = zg_path_join(snaps, commit);
        free(snaps);
    }
    if (fd >= 0) close(fd); /* releases the lock */
    free(repo_dir);
    free(token);
    return rc;
}
#else
/* Built without libcurl (it is optional, like MPI): the cache still works; downloading says so. */
int zg_hub_download(const char *cache, const char *repo_id, const char *revision, char **snapshot) {
    (void)cache;
    *snapshot = NULL;
    return zg_errorf("%s (%s) is not in the Hugging Face cache, and this zgpt was built without libcurl, so it "
                     "cannot download it: install libcurl4-openssl-dev and rebuild, or put the files in the cache "
                     "(HF_HUB_CACHE)",
                     repo_id, revision ? revision : "main");
}
#endif
