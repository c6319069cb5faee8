#!/usr/bin/env bash
# Multi-process training with torchrun: bash tools/dist_train.sh CONFIG GPUS [train.py args]
# GPUS is the number of processes per node; without CUDA they train on CPU over gloo.
# Environment: NNODES, NODE_RANK, PORT, MASTER_ADDR as in mmdet; PYTHON (default: the repo's
# .venv if present, else python).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash $0 CONFIG GPUS [train.py args]" >&2; exit 2
fi
CONFIG=$1
GPUS=$2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
PYTHONPATH="$ROOT:${PYTHONPATH:-}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$ROOT/tools/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
