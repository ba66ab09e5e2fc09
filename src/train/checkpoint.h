/* Checkpoints: one folder per tag under out_dir (iter_N, best, final) plus a `latest` pointer file.
 *
 * A checkpoint folder holds (docs/FORMATS.md, "Checkpoints"):
 *   model.bin                  versioned header + the flat parameter buffer in fp32 (table layout);
 *                              header only when the shards hold the fp32 master (mixed precision):
 *                              the parameters are then the master rounded to the training dtype
 *   optim_<begin>_<end>.bin    one or more optimizer SHARDS, each covering [begin, end) of the flat
 *                              buffer: fp32 master (when training in bf16/fp16), Adam m, Adam v
 *   state.json                 trainer state (iteration, best val loss, loss scaler, data loader
 *                              positions, the config) — written by the trainer
 *   manifest.json              every file above with its size and XXH3-64 checksum; written last
 * Reading verifies the manifest (sizes, checksums) before anything is used, and an optimizer range is
 * assembled from whichever shards overlap it, so a checkpoint written by N ranks resumes on M.
 *
 * Writing is atomic: files go into out_dir/.partial.<tag>/ (each through a temporary file, fsync,
 * rename), the manifest is written last, the folder is swapped with the old <tag> in one rename, and
 * `latest` is replaced last. A failure at any point removes the partial folder and leaves the previous
 * checkpoint and `latest` untouched.
 *
 * Test hook (documented for tests only): ZGPT_TEST_FAIL_WRITE_AFTER=N makes checkpoint writes fail
 * with "No space left on device" once N bytes have been written in this process, to simulate a full
 * disk (counting what every thread writes); ZGPT_TEST_WRITER_DELAY_MS=D sleeps D ms before each write
 * call, a slow disk, so that a test can kill a run in the middle of a background save;
 * ZGPT_TEST_HOST_AVAILABLE_BYTES=N replaces MemAvailable, which a host snapshot is checked against;
 * ZGPT_TEST_RESERVE_DELAY_MS=D makes the snapshot's reservation thread sleep D ms first, so that a save
 * comes before the reservation is done; ZGPT_TEST_DELETE_DELAY_MS=D makes a deletion (retention) sleep
 * D ms after its folder was renamed to .trash.<tag> and before its files go, so that a test can kill a
 * run in the middle of a deletion.
 * ZGPT_CKPT_IO=buffered turns direct I/O off for the shard files (src/train/ckpt_io.h). */
#ifndef ZG_TRAIN_CHECKPOINT_H
#define ZG_TRAIN_CHECKPOINT_H

#include "model/gpt2.h"
#include "train/optimizer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ZG_CKPT_MODEL_MAGIC "ZGPTCKPT"
#define ZG_CKPT_OPTIM_MAGIC "ZGPTOPTS"
#define ZG_CKPT_VERSION 2u /* written; version 1 (model.bin always with its payload) still reads */
#define ZG_CKPT_VERSION_MIN 1u
#define ZG_CKPT_HEADER_BYTES 64u

typedef struct {
    char name[96];
    uint64_t size, xxh3;
    int unverified; /* reading: the checksum is checked when the file is read (zg_ckpt_open_deferred) */
} zg_ckpt_file;

typedef struct {
    char *out_dir, *tag, *stage_dir, *final_dir;
    zg_ckpt_file *files;
    int n_files;
    int quiet; /* a background save: no progress redrawn on a terminal (plain log lines stay) */
} zg_ckpt_writer;

/* A host copy of an optimizer range (fp32 master when present, m, v), taken at a save point so that
 * training can go on while a writer thread writes it. The buffer is host_alloc'ed (pinned on CUDA),
 * touched once and kept between saves; it holds the shard file's image (its 64-byte header, then the
 * arrays), aligned for direct I/O (src/train/ckpt_io.h), so the file is written straight from it. */
typedef struct {
    size_t begin, end;
    int64_t step;
    int has_master;
    zg_backend *be;       /* whose host memory and events these are */
    void *block;          /* host_alloc'ed; image lies inside it */
    unsigned char *image; /* ZG_CKPT_IO_ALIGN-aligned: header, then [master,] m, v */
    float *buf;           /* image + ZG_CKPT_HEADER_BYTES: [master,] m, v, (end-begin) each */
    size_t cap;           /* elements buf holds */
    zg_event *at_save;    /* the compute stream at the save point (the copies start after it) */
    zg_event *copied;     /* reached once the copies have landed in buf */
    int direct;           /* the last write went through direct I/O */
    /* a reservation on a thread of its own (zg_ckpt_snapshot_reserve_start): the thread fills
     * pending_block / reserve_rc / reserve_error / reserve_s and sets reserve_done; the joiner takes them */
    pthread_t reserver;
    int reserving;           /* started and not yet joined */
    atomic_int reserve_done; /* the thread has finished */
    size_t reserve_bytes, reserve_cap;
    void *pending_block;
    int reserve_rc;
    double reserve_s; /* how long the reservation took on its thread */
    char reserve_error[512];
} zg_ckpt_snapshot;

/* Starts a checkpoint `tag` in out_dir (created if needed); a stale partial folder of the same tag
 * (from a crash) is removed. */
int zg_ckpt_writer_begin(zg_ckpt_writer *w, const char *out_dir, const char *tag);
/* For the other ranks of a sharded save: a writer into the partial folder that zg_ckpt_writer_begin
 * created in another process (after a barrier). It never commits nor removes the folder; release it
 * with zg_ckpt_writer_release once its files are reported to the committing rank. */
int zg_ckpt_writer_join(zg_ckpt_writer *w, const char *out_dir, const char *tag);
void zg_ckpt_writer_release(zg_ckpt_writer *w);
/* model.bin from fp32 host parameters in the table layout. param_dtype is the dtype training holds the
 * parameters in: fp32 writes them; bf16/fp16 (the optimizer shards hold the fp32 master and the
 * parameters are the master rounded to that dtype) writes the header only, with the dtype and the
 * checksum of params_host, which the reader checks the rebuilt parameters against. */
int zg_ckpt_write_model(zg_ckpt_writer *w, const gpt2_config *cfg, const float *params_host, size_t num_params,
                        zg_dtype param_dtype);
/* optim_<begin>_<end>.bin from the optimizer's state (downloaded in chunks). */
int zg_ckpt_write_optimizer(zg_ckpt_writer *w, const zg_optimizer *o, size_t num_params);
/* Queues the copy of the optimizer's state into s on the backend's copy stream after the work queued so
 * far (allocating s's buffer at the first save) and returns without waiting: the optimizer's next
 * update waits for the copy (zg_optimizer_hold), forward and backward overlap it. -1 with an error
 * when host memory cannot hold the snapshot (s is then empty, and the caller saves synchronously). */
int zg_ckpt_snapshot_take(zg_ckpt_snapshot *s, zg_optimizer *o);
/* Takes `block` (host memory of the optimizer's backend, `bytes` = zg_ckpt_snapshot_bytes of o's range;
 * freed by zg_ckpt_snapshot_free with host_free) as the snapshot's, instead of reserving one: a resume's
 * prefetched shard (src/train/ckpt_prefetch.h), which is laid out as the snapshot. -1 (nothing taken) when
 * s already holds or reserves one, or the size differs. */
int zg_ckpt_snapshot_take_block(zg_ckpt_snapshot *s, const zg_optimizer *o, void *block, size_t bytes);
/* Allocates s's buffer for o's range now (joining a reservation in flight first); -1 with the error of
 * take when host memory cannot hold it. */
int zg_ckpt_snapshot_reserve(zg_ckpt_snapshot *s, const zg_optimizer *o);
/* The same allocation on a thread of its own, started now (at the start of training, so that neither
 * the first iteration nor the first save waits for gigabytes to be pinned and touched); returns at
 * once. 0 when the thread started or s already holds o's range; -1 with an error when no thread could
 * be started (s is untouched). The thread only allocates host memory (backend.h: host_alloc may run
 * on any thread); the events are created when it is joined, on the caller's thread. */
int zg_ckpt_snapshot_reserve_start(zg_ckpt_snapshot *s, const zg_optimizer *o);
/* 1 while a reservation is in flight (started, not joined); done: 1 once its thread has finished
 * (never blocks). */
int zg_ckpt_snapshot_reserving(const zg_ckpt_snapshot *s);
int zg_ckpt_snapshot_reserve_finished(zg_ckpt_snapshot *s);
/* Joins the reservation in flight (blocking until it is done): 0 and s holds the buffer, or -1 with its
 * error (host memory cannot hold the snapshot; s is empty). *took: the seconds the thread spent. */
int zg_ckpt_snapshot_reserve_join(zg_ckpt_snapshot *s, double *took);
/* The snapshot's host buffer, idle until the first save, lent to a resume's read of Adam's moments
 * (zg_ckpt_moments_start): its aligned start and the bytes readable from it in *bytes; NULL when s holds
 * no buffer (not reserved, or still reserving: join it first). */
void *zg_ckpt_snapshot_lend(const zg_ckpt_snapshot *s, size_t *bytes);
/* Host memory a snapshot of n optimizer elements takes (has_master: 3 arrays, else 2). */
size_t zg_ckpt_snapshot_bytes(size_t n, int has_master);
/* 1 once the copies of the last take have landed (never blocks); wait blocks until they have. Call
 * them on the thread that drives the backend. */
int zg_ckpt_snapshot_ready(const zg_ckpt_snapshot *s);
void zg_ckpt_snapshot_wait(const zg_ckpt_snapshot *s);
void zg_ckpt_snapshot_free(zg_ckpt_snapshot *s);
/* optim_<begin>_<end>.bin from a snapshot whose copies have landed: the same file
 * zg_ckpt_write_optimizer writes, written from the image by several threads (ckpt_io). */
int zg_ckpt_write_snapshot(zg_ckpt_writer *w, zg_ckpt_snapshot *s, size_t num_params);
/* The checksum model.bin's header holds in mixed precision (the fp32 parameters, i.e. the master
 * rounded to param_dtype and widened), computed from a snapshot that holds the whole master. */
uint64_t zg_ckpt_snapshot_params_checksum(const zg_ckpt_snapshot *s, zg_dtype param_dtype);
/* Header-only model.bin (mixed precision) with that checksum. */
int zg_ckpt_write_model_header(zg_ckpt_writer *w, const gpt2_config *cfg, size_t num_params, zg_dtype param_dtype,
                               uint64_t params_checksum);
/* Any small file (state.json). */
int zg_ckpt_write_text(zg_ckpt_writer *w, const char *name, const char *text);
/* Writes the manifest, swaps the folder into place; set_latest: then points `latest` at it. */
int zg_ckpt_writer_commit(zg_ckpt_writer *w, int set_latest);
/* Removes the partial folder (after a failure). Safe to call after commit (no-op). */
void zg_ckpt_writer_abort(zg_ckpt_writer *w);

/* out_dir/dst_tag becomes a copy of out_dir/src_tag made of hard links (atomic swap as above). */
int zg_ckpt_link(const char *out_dir, const char *src_tag, const char *dst_tag);
/* Atomically points out_dir/latest at tag. */
int zg_ckpt_set_latest(const char *out_dir, const char *tag);
/* Deletes iter_N folders except the newest keep_last_k and the one `latest` names. Each goes to its
 * trash name .trash.<tag> first (one rename: the tag is gone at once), then its files are unlinked by
 * several threads. */
int zg_ckpt_retain(const char *out_dir, int64_t keep_last_k);
/* The same, with one line per folder removed on `log` (when non-NULL): "checkpoint: removed iter_20
 * (18.69 GB) in 0.40 s, <how>". */
int zg_ckpt_retain_log(const char *out_dir, int64_t keep_last_k, FILE *log, const char *how);

/* zg_ckpt_retain on a thread of its own, so that training goes on while old checkpoints are deleted:
 * unlinking GPT-2 XL's 18.7 GB checkpoint held the training thread ~6 s on the H200 host's disk (v0.13).
 * Each folder is still moved aside (one rename, the folder synced) before its files go, so a crash at
 * any moment leaves either the whole checkpoint or a .trash.<tag> folder the next start removes.
 * One at a time: start waits for the previous one. */
typedef struct {
    pthread_t thread;
    int running;
    char out_dir[512];
    int64_t keep_last_k;
    FILE *log; /* each deletion's line (zg_ckpt_retain_log); NULL: quiet */
    int rc;
    char error[512];
    /* Set by the end of a run (zg_ckpt_retainer_hand_off): a folder is then only moved aside (its rename
     * is what makes it no checkpoint), and the wait hands its files to a process of their own, so that
     * the run does not wait for the unlinks (~4 s for GPT-2 XL's 18.7 GB on the H200 host's disk) */
    atomic_int hand_off;
    int n_handed;
    char **handed; /* (n_handed) the .trash.<tag> folders moved aside under hand_off */
} zg_ckpt_retainer;
/* Starts deleting (after waiting for the previous deletion; its failure is returned then, as
 * zg_ckpt_retainer_wait's). Runs it on this thread when no thread can be started. */
int zg_ckpt_retainer_start(zg_ckpt_retainer *r, const char *out_dir, int64_t keep_last_k);
/* Waits for the deletion in flight, if any: 0, or -1 with its error (zg_error_message). Folders moved
 * aside under hand_off are then removed by a process started for them (`rm -rf`, its own session, not
 * waited for), with a line each on `log`; when no process can start, here, with the usual line. */
int zg_ckpt_retainer_wait(zg_ckpt_retainer *r);
/* From now on (the end of a run) deletions only move folders aside; zg_ckpt_retainer_wait hands their
 * files on. keep_last_k holds for the checkpoints at once: a moved folder is no checkpoint (.trash.*,
 * which no tag lookup sees and the next run's start removes if anything is left). */
void zg_ckpt_retainer_hand_off(zg_ckpt_retainer *r);

/* Before a run writes into out_dir (and holds its lock): -1 with an error naming the entry when
 * something zgpt writes or deletes there (latest, best, final, iter_N, metrics.jsonl, .partial.*,
 * .trash.*) is a symbolic link: zgpt never writes or deletes through a link it did not create. */
int zg_ckpt_out_dir_check(const char *out_dir);
/* Removes what an interrupted run left in out_dir (only while holding its lock): staging folders
 * (.partial.*), folders a deletion had moved aside (.trash.*), temporary files (latest.tmp.*,
 * metrics.jsonl.tmp.*), folders moved aside (<tag>.old), and iter_N folders newer than the one
 * `latest` names (complete but never published). Each removal is named in `report` (cap bytes, ""
 * when nothing was removed). */
int zg_ckpt_out_dir_tidy(const char *out_dir, char *report, size_t cap);
/* The iteration a checkpoint folder's state.json records; -1 when it has none (or is not complete). */
int64_t zg_ckpt_folder_iter(const char *dir);
/* The tag `latest` names, into tag[cap]; -1 with an error when it is missing or corrupt. */
int zg_ckpt_latest_tag(const char *out_dir, char *tag, size_t cap);

typedef struct {
    char file[96];
    uint64_t begin, end, step;
    int has_master;
} zg_ckpt_shard;

typedef struct {
    char *dir;
    gpt2_config cfg;
    uint64_t num_params;
    zg_ckpt_file *files;
    int n_files;
    zg_ckpt_shard *shards;
    int n_shards;
    int params_from_master; /* model.bin is header only: parameters = round(master) in master_dtype */
    zg_dtype master_dtype;
} zg_ckpt;

/* 1 when path looks like a checkpoint folder (has manifest.json) or an out_dir with `latest`. */
int zg_ckpt_exists(const char *path);
/* Opens a checkpoint folder, or the one out_dir/latest names; verifies the manifest: every file's
 * size and checksum, the headers. -1 with a one-line error naming the file otherwise. */
int zg_ckpt_open(zg_ckpt *c, const char *path);
/* The same, except that the optimizer shards' checksums are checked while zg_ckpt_read_optimizer reads
 * them (one pass over the largest files instead of two: resume). Sizes and headers are checked here;
 * a shard is verified before any read that does not cover it whole. */
int zg_ckpt_open_deferred(zg_ckpt *c, const char *path);
void zg_ckpt_close(zg_ckpt *c);
/* Parameters (fp32 host, c->num_params elements): model.bin's payload, or (header-only model.bin) the
 * shards' fp32 master rounded to the training dtype, checked against the checksum model.bin holds. */
int zg_ckpt_read_model(const zg_ckpt *c, float *params_host);
/* Fills the optimizer's range [o->begin, o->end) from the overlapping shards (m, v, and the master
 * when both have one; a master-less checkpoint leaves o->master as initialised from the params).
 * Sets o->step. -1 when the shards do not cover the range. The reads are pipelined: several threads
 * read a range into one of two host staging buffers while the other uploads on the copy stream; a
 * shard read whole is checksummed on the way. */
int zg_ckpt_read_optimizer(const zg_ckpt *c, zg_optimizer *o);
/* Resume without waiting for all of the optimizer state: zg_ckpt_read_optimizer_deferred reads what the
 * forward needs now (the fp32 master when o has one, and the step), as zg_ckpt_read_optimizer reads it;
 * zg_ckpt_moments_start then starts a thread that reads Adam's m and v (two thirds of a mixed-precision
 * checkpoint) into host memory, checksummed on the way, while training runs its first forward and
 * backward passes. Device state: the thread reads into `lend` (host memory lent until wait, aligned to
 * ZG_CKPT_IO_ALIGN: the checkpoint snapshot's pinned buffer, which is idle until the first save) when
 * its lend_bytes hold them, else into pinned memory it allocates itself (host_alloc; freed by wait);
 * when one rank's shard is exactly its range, the file's bytes land in place (laid out as the file,
 * O_DIRECT straight into the buffer: no copy). ZeRO-Offload (o->host): straight into o->m, o->v.
 * zg_ckpt_moments_wait, on the thread that drives the backend and before the first update, joins the
 * thread and, once the checksums held, uploads the moments from the pinned buffer (the host waits for
 * the copies: upload_s); -1 with the error (a shard that fails its checksum, a read error): m and v are
 * then untouched and the state is not to be used. Where host memory cannot hold them, start reads them
 * at once through the staging buffers (sync_reason says why). The thread reads files only (its one
 * backend call is host_alloc, which may run on any thread); c may be closed once deferred returns. */
struct zg_ckpt_moments_job;
typedef struct zg_ckpt_prefetch zg_ckpt_prefetch; /* src/train/ckpt_prefetch.h */
typedef struct {
    zg_optimizer *o;
    zg_ckpt_prefetch *prefetch; /* set before the deferred read: a read of the shard from the start of the run,
                                   used when it holds this range's shard whole (from_prefetch) */
    int from_prefetch;          /* the master came from the prefetch; the moments wait for its thread */
    struct zg_ckpt_moments_job *jobs;
    int n_jobs;
    pthread_t thread;
    int running, started;
    int rc;
    char error[1024];
    unsigned char *image;                      /* the host buffer the moments are read into (lent, or in own_block) */
    void *own_block;                           /* host_alloc'ed by the thread when nothing was lent (alloc_bytes) */
    size_t alloc_bytes;                        /* the thread's allocation; 0 when lent */
    size_t m_off, v_off;                       /* where m and v lie in image */
    int in_place;                              /* image is laid out as the shard file (read straight into it) */
    const char *where;                         /* the host memory they were read into, in words */
    const char *sync_reason;                   /* non-NULL: everything was read at once (why) */
    double t_params, t_start, t_done, t_ready; /* master in place, thread started, moments read, uploaded */
    double master_upload_wait;                 /* the master's read waited this long for its uploads */
    double upload_s;                           /* wait: the moments' upload from host memory */
    uint64_t bytes;                            /* the moments' bytes */
    const char *read_mode;                     /* ZGPT_CKPT_READ's strategy name (src/train/ckpt_io.h) */
} zg_ckpt_moments;
/* pf (NULL: none): a read of the shard started with the run (src/train/ckpt_prefetch.h); used when it holds
 * this range's shard whole: the master is uploaded from it, the moments wait for it. */
int zg_ckpt_read_optimizer_deferred(const zg_ckpt *c, zg_optimizer *o, zg_ckpt_moments *mo, zg_ckpt_prefetch *pf);
/* lend: NULL (or too small) for the thread's own allocation. Returns 0 (a failure surfaces at wait). */
int zg_ckpt_moments_start(zg_ckpt_moments *mo, void *lend, size_t lend_bytes);
int zg_ckpt_moments_wait(zg_ckpt_moments *mo);
/* Joins the thread if it runs (an error path) and frees what mo holds; safe after wait and twice. */
void zg_ckpt_moments_free(zg_ckpt_moments *mo);
/* Whole small file as a NUL-terminated heap string. */
int zg_ckpt_read_text(const zg_ckpt *c, const char *name, char **text);

#endif
