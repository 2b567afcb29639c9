#!/usr/bin/env bash
# A SLURM batch job: train, evaluate and submit with one task per GPU, started by srun (no
# torchrun), continued by itself across preemptions and time limits.
#   sbatch run_slurm.sh                       # ASP-OC on Cityscapes, 1 node x 4 GPUs
#   sbatch --nodes 2 run_slurm.sh             # 2 nodes x 4 GPUs (BATCHSIZE is the total batch)
#   SCRIPT=run_ocr.sh sbatch run_slurm.sh     # another run script; any setting of run_common.sh
# Each task reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and meets the others on the first
# node of the job (MASTER_PORT: 15000 + job id % 20000 unless set). SLURM sends SIGUSR1 three
# minutes before the time limit: training checkpoints and exits with status 75, and the job
# requeues itself; the requeued job resumes from that checkpoint (RESUME=True).
#SBATCH --job-name=ocnet
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
# Under sbatch the script runs from a spool copy: SLURM_SUBMIT_DIR is where it was submitted.
cd "${SLURM_SUBMIT_DIR:-$(dirname "${BASH_SOURCE[0]}")}"

PREEMPTED_STATUS=75  # engine.launch.PREEMPTED_STATUS
MAX_REQUEUES=${MAX_REQUEUES:-20}
# One process per task, each on cuda:<SLURM_LOCALID> (GPUS= keeps train.py from spawning).
export GPUS=""
export DEVICE=${DEVICE:-cuda}
export RESUME=True
# --kill-on-bad-exit: a task that fails ends the step at once instead of leaving the others in a
# collective until --dist-timeout.
export LAUNCH=${LAUNCH:-srun --kill-on-bad-exit=1}
# The run script to follow: run_asp_oc.sh, run_ocr.sh, run_hrnet_ocr.sh, ...
SCRIPT=${SCRIPT:-run_asp_oc.sh}

status=0
bash "$SCRIPT" || status=$?
if [ "$status" -eq "$PREEMPTED_STATUS" ]; then
  restarts=${SLURM_RESTART_COUNT:-0}
  if [ "$restarts" -lt "$MAX_REQUEUES" ]; then
    echo "==> $(date +%H:%M:%S) stopped at a checkpoint; requeueing job ${SLURM_JOB_ID:?}" \
      "($((restarts + 1))/$MAX_REQUEUES)"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  echo "==> not requeueing: the job was requeued $restarts times (MAX_REQUEUES=$MAX_REQUEUES)" >&2
fi
exit "$status"
