/* Advisory lock of a folder that one zgpt process writes (a training out_dir, a prepare output).
 *
 * The lock is flock(LOCK_EX) on <dir>/.lock; the file holds one line naming the holder (pid, host,
 * what, start time) so a refused run can say who holds it. The kernel drops a flock when its holder
 * exits or dies, so a lock file left by a crashed run is stale by construction: the next run simply
 * takes the lock and rewrites the line. The file is never unlinked (unlinking would let two runs hold
 * locks on two different inodes). flock works on local file systems and, on Linux, over NFS (as a
 * POSIX byte-range lock). */
#ifndef ZG_CORE_DIRLOCK_H
#define ZG_CORE_DIRLOCK_H

typedef struct {
    int fd; /* -1: not held */
} zg_dir_lock;

/* Takes the lock of `dir` (which must exist) for `what` ("train", "prepare"). -1 with a one-line
 * error naming the holder when another process holds it. */
int zg_dir_lock_acquire(zg_dir_lock *l, const char *dir, const char *what);
/* Releases it (safe on a lock that is not held). */
void zg_dir_lock_release(zg_dir_lock *l);

#endif
