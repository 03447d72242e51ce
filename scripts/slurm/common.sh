# Shared by the gali sbatch templates (sourced, not run). Provides:
#   PY                 the python that runs the harness ($GALI_PYTHON, else $GALI_HOME/.venv/bin/python, else python3)
#   gali_exp_dir ARGS  print <results_dir>/<exp_name> for `--cfg X [--set k=v ...]` (loads no model)
#   gali_log_to FILE   send the rest of the job's output to FILE (under the experiment's logs/)
#   gali_run CMD...    run CMD in the background and forward signals to it:
#                        USR1 (sbatch --signal=B:USR1@T, T seconds before the time limit) -> CMD gets USR1, stops after
#                        its current example and exits 143 -> this job requeues itself (scontrol requeue) and the
#                        requeued job resumes from the prediction files;
#                        TERM (scancel, preemption) -> forwarded; no self-requeue (SLURM requeues preempted --requeue
#                        jobs itself; a cancelled job stays cancelled).
#                      On a restart (SLURM_RESTART_COUNT > 0) --overwrite is dropped, so a requeue never wipes progress.
# Environment: GALI_HOME (repository root), GALI_PYTHON, GALI_MAX_REQUEUES (default 20), GALI_LOCK_WAIT (seconds to
# wait for a held experiment lock, default 300), HF_HUB_OFFLINE (default 1:
# compute nodes read the models and data pre-fetched on the login node; export HF_HUB_OFFLINE=0 to allow downloads).

set -u
: "${GALI_HOME:=$(pwd)}"
if [ -z "${GALI_PYTHON:-}" ]; then
    if [ -x "$GALI_HOME/.venv/bin/python" ]; then GALI_PYTHON="$GALI_HOME/.venv/bin/python"; else GALI_PYTHON=python3; fi
fi
PY="$GALI_PYTHON"
export PYTHONPATH="$GALI_HOME${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
export TQDM_MININTERVAL="${TQDM_MININTERVAL:-30}"
# a requeued job can start while its old instance is still finishing: wait for its experiment lock, do not fail
export GALI_LOCK_WAIT="${GALI_LOCK_WAIT:-300}"

gali_exp_dir() {
    "$PY" -m harness.cluster.slurm exp-dir "$@"
}

gali_log_to() {
    mkdir -p "$(dirname "$1")" || return 1
    echo "[gali] job ${SLURM_JOB_ID:-?} on $(hostname): logging to $1"
    exec >>"$1" 2>&1
    echo "=== $(date '+%F %T') job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname)"
}

gali_run() {
    local args=() a
    for a in "$@"; do
        if [ "$a" = "--overwrite" ] && [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
            echo "[gali] restart ${SLURM_RESTART_COUNT}: ignoring --overwrite (resuming)"
            continue
        fi
        args+=("$a")
    done
    _gali_requeue=0
    _gali_trapped=0
    _gali_child=
    trap '_gali_trapped=1; _gali_requeue=1; echo "[gali] USR1: time limit near, stopping after the current example"; [ -n "$_gali_child" ] && kill -USR1 "$_gali_child" 2>/dev/null' USR1
    trap '_gali_trapped=1; echo "[gali] TERM: stopping after the current example"; [ -n "$_gali_child" ] && kill -TERM "$_gali_child" 2>/dev/null' TERM
    echo "[gali] $(date '+%F %T') running: ${args[*]}"
    "${args[@]}" &
    _gali_child=$!
    local rc r
    while :; do
        _gali_trapped=0
        wait "$_gali_child"
        r=$?
        if [ "$_gali_trapped" = 1 ]; then   # a trapped signal may have cut `wait` short (status 128+n)
            if kill -0 "$_gali_child" 2>/dev/null; then continue; fi
            wait "$_gali_child" 2>/dev/null
            rc=$?
            [ "$rc" = 127 ] && rc=$r   # 127: `wait` had already reported the child's own status
        else
            rc=$r
        fi
        break
    done
    trap - USR1 TERM
    echo "[gali] $(date '+%F %T') exit status $rc"
    if [ "$_gali_requeue" = 1 ] && [ "$rc" != 0 ] && [ "$rc" != 1 ] && [ "$rc" != 2 ]; then
        local n="${SLURM_RESTART_COUNT:-0}" max="${GALI_MAX_REQUEUES:-20}"
        if [ "$n" -ge "$max" ]; then
            echo "[gali] not requeued: already restarted $n times (GALI_MAX_REQUEUES=$max)"
        elif [ -z "${SLURM_JOB_ID:-}" ]; then
            echo "[gali] not under SLURM: rerun the same command to resume"
        elif scontrol requeue "$SLURM_JOB_ID"; then
            echo "[gali] requeued job $SLURM_JOB_ID: it resumes where it stopped"
        else
            echo "[gali] scontrol requeue $SLURM_JOB_ID failed: resubmit to resume"
        fi
    fi
    return "$rc"
}
