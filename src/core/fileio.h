/* File helpers: whole-file reads, memory maps, atomic writes, checksums, paths.
 * All return 0 / -1 (or NULL) with a zg_errorf() message that names the path. */
#ifndef ZG_CORE_FILEIO_H
#define ZG_CORE_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Reads a whole file into a NUL-terminated heap buffer (*len excludes the NUL). */
int zg_file_read_all(const char *path, char **data, size_t *len);
int zg_file_exists(const char *path);
int zg_dir_exists(const char *path);
/* mkdir -p; 0 if it exists already. */
int zg_dir_make(const char *path);
/* Removes a flat folder (files only) WITHOUT following symbolic links: when `path` itself is a link,
 * or a plain file, only that entry is removed, never what it points to; a link inside the folder is
 * unlinked as a link. 0 when `path` does not exist. A sub-folder is an error (nothing is removed
 * below it). This is the one way zgpt deletes a folder. */
int zg_dir_remove_flat(const char *path);
/* The same, with the files unlinked by `threads` threads (the caller's among them), and the sizes of
 * the plain files removed added to *bytes (when non-NULL): a file system frees a file's blocks inside
 * its unlink, so the files of a folder of large ones go side by side. */
int zg_dir_remove_files(const char *path, int threads, uint64_t *bytes);
/* The bytes of the regular files directly in folder `path` (links not followed; 0 when it cannot be read). */
uint64_t zg_dir_file_bytes(const char *path);
/* 1 when `path` is a symbolic link (not followed); its target into target[cap] when non-NULL. */
int zg_path_is_link(const char *path, char *target, size_t cap);
/* fsync a directory so a rename inside it is durable. */
int zg_dir_sync(const char *path);
/* zg_dir_sync of the folder that holds `path` ("." for a bare name): after a rename into it. */
int zg_dir_sync_parent(const char *path);
/* Joins a and b with one '/', into a heap string. */
char *zg_path_join(const char *a, const char *b);
/* The folder of a path, as a heap string: "." for a bare name, "/" for "/name". */
char *zg_path_dir(const char *path);
/* The last component of a path (a pointer into it). */
const char *zg_path_base(const char *path);

/* Read-only memory map of a whole file. */
typedef struct {
    const void *data;
    size_t size;
    int fd;
} zg_mmap;
int zg_mmap_open(zg_mmap *m, const char *path);
void zg_mmap_close(zg_mmap *m);

/* Atomic file write: data goes to "<path>.tmp.<pid>", zg_atomic_commit() flushes, fsyncs, renames
 * over <path> and fsyncs the directory. If anything fails, or zg_atomic_abort() is called, the
 * temporary file is removed and <path> is untouched. A running checksum of the bytes written is kept. */
typedef struct {
    FILE *f;
    char *path;
    char *tmp_path;
    uint64_t bytes;
    void *hash_state; /* XXH3 state */
    int failed;
} zg_atomic_file;
int zg_atomic_open(zg_atomic_file *af, const char *path);
int zg_atomic_write(zg_atomic_file *af, const void *data, size_t n);
int zg_atomic_commit(zg_atomic_file *af, uint64_t *checksum_out);
void zg_atomic_abort(zg_atomic_file *af);

/* 64-bit checksum (XXH3-64) of a buffer, and a streaming version. */
uint64_t zg_checksum(const void *data, size_t n);
typedef struct {
    void *state;
} zg_hasher;
void zg_hasher_init(zg_hasher *h);
void zg_hasher_update(zg_hasher *h, const void *data, size_t n);
uint64_t zg_hasher_final(zg_hasher *h); /* also frees the state */
/* Checksum of a whole file, streamed. */
int zg_file_checksum(const char *path, uint64_t *checksum, uint64_t *size);

/* The folder of data shipped with zgpt (tokenizer files, default corpus). Resolution order:
 * $ZGPT_DATA_DIR, <dir of the executable>/../data, <dir of the executable>/../share/zgpt, the
 * source tree's data/ (compiled in). Returns a static-lifetime string or NULL with an error. */
const char *zg_data_dir(char *buf, size_t cap);

#endif
