/* Starting the workers of a data-parallel job, and finding out who we are inside one.
 *
 *  zgpt train --nproc N ...   CPU workers: re-runs this program under `mpirun -np N` (MPI build),
 *                             forwarding argv unchanged; the workers see the MPI environment and do
 *                             not launch again.
 *  zgpt train --gpus N|all    one worker per GPU (CUDA build): forks N copies of this program with
 *                             ZGPT_RANK/ZGPT_WORLD_SIZE/ZGPT_LOCAL_RANK, CUDA_VISIBLE_DEVICES narrowed to
 *                             one device (honouring the caller's CUDA_VISIBLE_DEVICES), and a
 *                             ZGPT_NCCL_ID made by the launcher for the NCCL bootstrap.
 *  mpirun -np N zgpt train / srun zgpt train: rank and size come from the launcher's environment
 *                             (OMPI_COMM_WORLD_*, PMI_*, PMIX_RANK, SLURM_PROCID/SLURM_NTASKS).
 *
 * Supervision (the launching process): workers' stdout/stderr pass through it line by line; it keeps
 * each rank's last error lines. When a worker exits non-zero or dies from a signal, the others are
 * stopped (SIGTERM, SIGKILL after a grace period) and it prints
 *   zgpt: error: rank R failed (exit status S | killed by signal K); its last lines: ...
 * and returns non-zero. SIGINT/SIGTERM to the launcher are forwarded to all workers (a second
 * Ctrl-C kills them).
 *
 * Tests only: $ZGPT_LAUNCH_FORK_TEST=N makes zg_launch_maybe fork N supervised workers (ZGPT_RANK...,
 * no communicator bootstrap), so the --gpus supervision is exercised on a machine without GPUs.
 */
#ifndef ZG_DIST_LAUNCH_H
#define ZG_DIST_LAUNCH_H

typedef enum {
    ZG_LAUNCH_SRC_NONE = 0, /* plain process */
    ZG_LAUNCH_SRC_ZGPT_GPU, /* zgpt's fork launcher (ZGPT_RANK, NCCL) */
    ZG_LAUNCH_SRC_ZGPT_MPI, /* zgpt's --nproc re-exec under mpirun */
    ZG_LAUNCH_SRC_OMPI,     /* mpirun (Open MPI) */
    ZG_LAUNCH_SRC_PMI,      /* MPICH/Hydra or PMIx */
    ZG_LAUNCH_SRC_SLURM,    /* srun */
} zg_launch_source;

typedef struct {
    int rank, size, local_rank, local_size;
    zg_launch_source source;
} zg_launch_env;

/* Reads rank/size from the environment (size 1, rank 0 when not launched). */
void zg_launch_env_detect(zg_launch_env *env);
const char *zg_launch_src_name(zg_launch_source s);

/* Before MPI_Init: whether the launcher gave the ranks a way to find each other. An srun step started
 * without PMIx (srun --mpi=none, Slurm's default MpiDefault) cannot be bootstrapped by Open MPI, which
 * would print a page of advice and abort (and an MPI that falls back to singletons would train N
 * unconnected copies). Returns 0, or -1 with a one-line error saying to use srun --mpi=pmix. */
int zg_launch_check_mpi_bootstrap(const zg_launch_env *env);

typedef struct {
    int nproc;          /* CPU workers (0 = not requested) */
    int gpus;           /* GPU workers (0 = not requested, -1 = all visible) */
    double grace_s;     /* seconds between SIGTERM and SIGKILL when stopping workers (default 5) */
    const char *mpirun; /* mpirun to use (NULL: $ZGPT_MPIRUN or "mpirun") */
    int tail_lines;     /* last lines kept per rank for the failure report (default 8) */
    /* Called once the workers' count is known, before any is started (NULL: none), so that a mistake
     * every worker would make (a config error, a missing data path) is said once, not once per rank
     * and again in the failure report. Non-zero (with an error): nothing is started. */
    int (*preflight)(void *ctx, int world);
    void *preflight_ctx;
} zg_launch_opts;

/* Called by a command at start. argc/argv: the arguments each worker gets after the program's path
 * (for `zgpt train ...`, the argv zg_cmd_train receives: argv[0] = "train"). If workers must be started (nproc > 1 or gpus
 * given, and this process is not already a worker), starts them, supervises them until they end,
 * sets *is_parent = 1 and returns the exit status for the command (0 when every worker succeeded).
 * Otherwise sets *is_parent = 0 and returns 0: this process is the (only) worker; go on.
 * Returns -1 with an error (and *is_parent = 1) when the workers cannot be started, or when
 * opts->preflight refused. */
int zg_launch_maybe(int argc, char **argv, const zg_launch_opts *opts, int *is_parent);

/* Parses "--gpus" values: "all" -> -1, N >= 1 -> N. -1 with an error otherwise. */
int zg_launch_parse_gpus(const char *s, int *out);

#endif
