/* Progress slots shared by zgpt's launcher and its workers on one machine.
 *
 * When one rank stops making progress (SIGSTOP, a debugger, a stuck driver call), the ranks that
 * wait for it time out in a collective and the job ends; but the rank that times out is the healthy
 * one. To name the rank that did not arrive, the launcher (zgpt --nproc / --gpus) creates a small
 * shared file of one slot per rank and passes its path in $ZGPT_HEARTBEAT; each worker's
 * communicator writes its pid into its slot and, at the start of every collective, the number of
 * collectives it has started. When a rank reports a timeout, the launcher reads the slots: a rank
 * whose count is behind the one that timed out never reached that collective. It also reads each
 * rank's process state (/proc/<pid>/stat: 'T' = stopped) for the message, and uses the pids to make
 * sure no worker outlives the job (mpirun's ranks are not the launcher's children).
 *
 * A worker whose collective times out does the same check itself first (zg_heartbeat_blame), while
 * the culprit is certainly still as it was (mpirun resumes and kills stopped ranks once the job
 * aborts), marks the ranks it blames in their slots, and names them in its own fatal line.
 *
 * Layout: nranks slots of 64 bytes (one cache line each, so ranks never share a line): int64 pid,
 * int64 collectives started, int64 stalled (0x100 | the process state another rank saw). Updates are single relaxed atomic stores: a reader sees a slightly old
 * count at worst, never a torn one. */
#ifndef ZG_DIST_HEARTBEAT_H
#define ZG_DIST_HEARTBEAT_H

#include <stdint.h>
#include <sys/types.h>

typedef struct {
    void *map; /* nranks * 64 bytes, shared */
    int nranks;
    int rank;   /* worker: its slot; launcher: -1 */
    char *path; /* launcher: the file it created (removed by zg_heartbeat_free) */
} zg_heartbeat;

/* Launcher: creates the shared file for nranks workers (in /dev/shm when present, else $TMPDIR or
 * /tmp). The workers get its path through "ZGPT_HEARTBEAT=<path>". */
int zg_heartbeat_create(zg_heartbeat *h, int nranks);
/* Worker: attaches slot `rank` of the file $ZGPT_HEARTBEAT names; 0 without touching h->map when the
 * variable is unset (not started by zgpt's launcher). Records this process's pid. */
int zg_heartbeat_attach(zg_heartbeat *h, int rank);
/* Worker: publishes the number of collectives started (no-op when not attached). */
void zg_heartbeat_beat(zg_heartbeat *h, int64_t collectives);
/* Launcher: a rank's pid (0: never attached) and collectives started. */
pid_t zg_heartbeat_pid(const zg_heartbeat *h, int rank);
int64_t zg_heartbeat_count(const zg_heartbeat *h, int rank);
/* The state letter of a rank's process (/proc/<pid>/stat: 'R', 'S', 'T' stopped, 't' traced, ...),
 * '?' when unknown. */
char zg_heartbeat_state(const zg_heartbeat *h, int rank);
/* Worker whose collective timed out: marks the other ranks that are behind it or stopped, and
 * describes them into buf ("rank 1 is stopped (SIGSTOP or job control)"). Returns how many. */
int zg_heartbeat_blame(zg_heartbeat *h, char *buf, size_t cap);
/* Launcher: 1 when some rank marked `rank` as stalled; the state it saw into *state. */
int zg_heartbeat_stalled(const zg_heartbeat *h, int rank, char *state);
/* Unmaps; the launcher also removes the file. */
void zg_heartbeat_free(zg_heartbeat *h);

#endif
