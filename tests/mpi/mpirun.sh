# Sourced by tests/cli/dist_*.sh: MPIRUN_ARGS for running test programs under Open MPI on a small
# CI machine (root in a container, more ranks than cores), and helpers.
MPIRUN=${ZGPT_MPIRUN:-mpirun}
MPIRUN_ARGS=(--oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none)
if [ "$(id -u)" = 0 ]; then MPIRUN_ARGS+=(--allow-run-as-root); fi
export OMP_NUM_THREADS=1

fail() { echo "FAIL: $*" >&2; exit 1; }
# Sanitizer builds: Open MPI keeps allocations past MPI_Finalize, some in plugins it has already
# unloaded (so no suppression can name them). Leak checking stays on for the single-process unit
# tests; under MPI only memory errors are checked.
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
