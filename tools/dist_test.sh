#!/usr/bin/env bash
# Distributed evaluation with torchrun: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on each.
exec bash "$(dirname "$0")/dist_launch.sh" "$3" "$(dirname "$0")/test.py" "$1" "$2" "${@:4}"
