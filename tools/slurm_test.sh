#!/usr/bin/env bash
# Evaluation on a Slurm cluster: [GPUS=8] bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
exec bash "$(dirname "$0")/slurm_launch.sh" "$1" "$2" "$(dirname "$0")/test.py" "$3" "$4" "${@:5}"
