#!/usr/bin/env bash
# Training on a slurm cluster, mmseg's convention:
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#       tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py flags...]
# srun starts GPUS tasks, GPUS_PER_NODE per node; mmengine's slurm launcher reads each task's
# SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and SLURM_NODELIST (the first node is the master;
# MASTER_PORT, default 29500, sets its port).
#
# Stopped by slurm: srun --signal asks slurm for STOP_SIGNAL (default USR1) STOP_SIGNAL_SECONDS
# (default 300) before the job's time limit, and the training listens to it besides SIGTERM
# (what slurm sends on preemption, scancel and the time limit itself, KillWait seconds before
# SIGKILL): it finishes its iteration, saves a checkpoint that --resume finds and exits with
# status 75 (docs/user_guides/train_test.md, "Stopped by the cluster"). A batch job submitted
# with `sbatch --requeue` is queued again when preempted and runs its script again: pass
# --resume there (a work dir without a checkpoint starts afresh) so that it continues.
set -e
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
STOP_SIGNAL=${STOP_SIGNAL:-USR1}
STOP_SIGNAL_SECONDS=${STOP_SIGNAL_SECONDS:-300}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    --signal="$STOP_SIGNAL@$STOP_SIGNAL_SECONDS" \
    $SRUN_ARGS \
    "$PYTHON" -u "$(dirname "$0")/train.py" "$CONFIG" --launcher slurm \
    --cfg-options "default_hooks.stop_signal.signals=[SIGTERM,SIG$STOP_SIGNAL]" "${@:4}"
