/* Launcher detection (zg_launch_env_detect) for each way a job can be started: zgpt's own --gpus and
 * --nproc launchers, mpirun (Open MPI), mpiexec (PMI/PMIx), srun (Slurm), and none. The variables are
 * set in this process, as each launcher would set them for a worker, so srun and mpiexec are covered
 * without a cluster. */
#include "core/error.h"
#include "dist/launch.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static const char *k_vars[] = {"ZGPT_RANK",
                               "ZGPT_WORLD_SIZE",
                               "ZGPT_LOCAL_RANK",
                               "ZGPT_LOCAL_WORLD_SIZE",
                               "ZGPT_LAUNCHER",
                               "OMPI_COMM_WORLD_RANK",
                               "OMPI_COMM_WORLD_SIZE",
                               "OMPI_COMM_WORLD_LOCAL_RANK",
                               "OMPI_COMM_WORLD_LOCAL_SIZE",
                               "PMI_RANK",
                               "PMIX_RANK",
                               "PMI_SIZE",
                               "MPI_LOCALRANKID",
                               "MPI_LOCALNRANKS",
                               "SLURM_STEP_ID",
                               "SLURM_PROCID",
                               "SLURM_STEP_NUM_TASKS",
                               "SLURM_NTASKS",
                               "SLURM_LOCALID",
                               "SLURM_MPI_TYPE",
                               "PMI_FD"};

/* Clears every launcher variable, then sets the NULL-terminated name/value pairs. */
static void env_only(const char *const *pairs) {
    for (size_t i = 0; i < sizeof k_vars / sizeof k_vars[0]; i++) unsetenv(k_vars[i]);
    for (int i = 0; pairs[i]; i += 2) setenv(pairs[i], pairs[i + 1], 1);
}

static zg_launch_env detect(const char *const *pairs) {
    env_only(pairs);
    zg_launch_env e;
    zg_launch_env_detect(&e);
    return e;
}

static void test_none(void) {
    const char *p[] = {NULL};
    zg_launch_env e = detect(p);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_NONE && e.rank == 0 && e.size == 1 && e.local_rank == 0);
}

static void test_zgpt_gpus(void) {
    const char *p[] = {"ZGPT_RANK", "3", "ZGPT_WORLD_SIZE", "4", "ZGPT_LOCAL_RANK", "1", NULL};
    zg_launch_env e = detect(p);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_ZGPT_GPU && e.rank == 3 && e.size == 4 && e.local_rank == 1);
    const char *q[] = {"ZGPT_RANK", "2", "ZGPT_WORLD_SIZE", "4", NULL}; /* local rank defaults to the rank */
    e = detect(q);
    ZT_CHECK(e.local_rank == 2 && e.local_size == 4);
}

static void test_mpirun(void) {
    const char *p[] = {"OMPI_COMM_WORLD_RANK",
                       "5",
                       "OMPI_COMM_WORLD_SIZE",
                       "8",
                       "OMPI_COMM_WORLD_LOCAL_RANK",
                       "1",
                       "OMPI_COMM_WORLD_LOCAL_SIZE",
                       "4",
                       NULL};
    zg_launch_env e = detect(p);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_OMPI && e.rank == 5 && e.size == 8 && e.local_rank == 1 && e.local_size == 4);
    const char *q[] = {"OMPI_COMM_WORLD_RANK", "0", "OMPI_COMM_WORLD_SIZE", "2", "ZGPT_LAUNCHER", "mpi", NULL};
    e = detect(q);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_ZGPT_MPI && e.size == 2);
}

static void test_mpiexec(void) {
    const char *p[] = {"PMI_RANK", "2", "PMI_SIZE", "3", "MPI_LOCALRANKID", "0", NULL};
    zg_launch_env e = detect(p);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_PMI && e.rank == 2 && e.size == 3 && e.local_rank == 0);
    const char *q[] = {"PMIX_RANK", "1", "PMI_SIZE", "2", NULL};
    e = detect(q);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_PMI && e.rank == 1 && e.size == 2);
}

static void test_srun(void) {
    /* a task of an srun step on its second node: global rank 5 of 8, second task on the node */
    const char *p[] = {"SLURM_STEP_ID",
                       "0",
                       "SLURM_PROCID",
                       "5",
                       "SLURM_STEP_NUM_TASKS",
                       "8",
                       "SLURM_NTASKS",
                       "16",
                       "SLURM_LOCALID",
                       "1",
                       NULL};
    zg_launch_env e = detect(p);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_SLURM && e.rank == 5 && e.size == 8 && e.local_rank == 1);
    ZT_CHECK(strcmp(zg_launch_src_name(e.source), "srun") == 0);
    /* an older Slurm without SLURM_STEP_NUM_TASKS: the job's task count */
    const char *q[] = {"SLURM_STEP_ID", "3", "SLURM_PROCID", "1", "SLURM_NTASKS", "2", NULL};
    e = detect(q);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_SLURM && e.rank == 1 && e.size == 2 && e.local_rank == 0);
}

/* The batch script itself (sbatch) has SLURM_PROCID=0 and SLURM_NTASKS but is not a worker: it must
 * stay a single process, so that `zgpt train --gpus N` inside an allocation still launches. */
static void test_sbatch_script_is_not_a_worker(void) {
    const char *p[] = {"SLURM_PROCID", "0", "SLURM_NTASKS", "8", "SLURM_LOCALID", "0", NULL};
    zg_launch_env e = detect(p);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_NONE && e.size == 1);
}

static void test_precedence_and_bad_values(void) {
    /* zgpt's own launcher inside an srun step (srun -n 1 zgpt train --gpus 4): its workers are zgpt's */
    const char *p[] = {
        "SLURM_STEP_ID", "0", "SLURM_PROCID", "0", "SLURM_NTASKS", "1", "ZGPT_RANK", "2", "ZGPT_WORLD_SIZE", "4", NULL};
    zg_launch_env e = detect(p);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_ZGPT_GPU && e.rank == 2 && e.size == 4);
    /* values that are not plain non-negative integers are ignored, not half-parsed */
    const char *q[] = {"SLURM_STEP_ID", "0", "SLURM_PROCID", "5x", "SLURM_NTASKS", "8", NULL};
    e = detect(q);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_NONE && e.size == 1);
    const char *r[] = {"OMPI_COMM_WORLD_RANK", "-1", "OMPI_COMM_WORLD_SIZE", "2", NULL};
    e = detect(r);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_NONE);
}

/* srun must give MPI a process-management interface: --mpi=pmix (PMIX_RANK) or pmi2 (PMI_RANK/PMI_SIZE,
 * PMI_FD); a step without one (--mpi=none) is refused with advice before MPI_Init. */
static void test_mpi_bootstrap(void) {
    const char *none[] = {"SLURM_STEP_ID", "0", "SLURM_PROCID", "1", "SLURM_STEP_NUM_TASKS", "2", NULL};
    zg_launch_env e = detect(none);
    ZT_CHECK(zg_launch_check_mpi_bootstrap(&e) != 0);
    ZT_CHECK(strstr(zg_error_message(), "rank 1 of 2") && strstr(zg_error_message(), "srun --mpi=pmix"));
    const char *pmix[] = {
        "SLURM_STEP_ID", "0", "SLURM_PROCID", "1", "SLURM_STEP_NUM_TASKS", "2", "PMIX_RANK", "1", "SLURM_MPI_TYPE",
        "pmix",          NULL};
    e = detect(pmix);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_SLURM && zg_launch_check_mpi_bootstrap(&e) == 0);
    const char *pmi2[] = {"SLURM_STEP_ID", "0", "SLURM_PROCID", "1",  "SLURM_STEP_NUM_TASKS", "2",    "PMI_RANK", "1",
                          "PMI_SIZE",      "2", "PMI_FD",       "11", "SLURM_MPI_TYPE",       "pmi2", NULL};
    e = detect(pmi2);
    ZT_CHECK(e.source == ZG_LAUNCH_SRC_PMI && zg_launch_check_mpi_bootstrap(&e) == 0);
    /* one task needs no peers; mpirun and plain processes are not srun steps */
    const char *one[] = {"SLURM_STEP_ID", "0", "SLURM_PROCID", "0", "SLURM_STEP_NUM_TASKS", "1", NULL};
    e = detect(one);
    ZT_CHECK(zg_launch_check_mpi_bootstrap(&e) == 0);
    const char *ompi[] = {"OMPI_COMM_WORLD_RANK", "0", "OMPI_COMM_WORLD_SIZE", "2", NULL};
    e = detect(ompi);
    ZT_CHECK(zg_launch_check_mpi_bootstrap(&e) == 0);
}

int main(void) {
    zt_run("none", test_none);
    zt_run("zgpt --gpus", test_zgpt_gpus);
    zt_run("mpirun", test_mpirun);
    zt_run("mpiexec", test_mpiexec);
    zt_run("srun", test_srun);
    zt_run("sbatch script is not a worker", test_sbatch_script_is_not_a_worker);
    zt_run("precedence and bad values", test_precedence_and_bad_values);
    zt_run("srun needs PMIx for MPI", test_mpi_bootstrap);
    const char *none[] = {NULL};
    env_only(none);
    return zt_finish();
}
