#!/usr/bin/env bash
# Launch thinkrl with torchrun on one node (or several: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT on each).
#   NPROC=2 launch/torchrun.sh configs/quickstart.yaml deepspeed.zero_stage=2
# NPROC defaults to the number of visible GPUs (1 on a CPU-only machine). Extra arguments are key.sub=value overrides.
set -euo pipefail
CONFIG=${1:?usage: launch/torchrun.sh CONFIG [key.sub=value ...]}
shift
NPROC=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
NNODES=${NNODES:-1}
if [ "$NNODES" -eq 1 ]; then
  exec torchrun --standalone --nproc_per_node "$NPROC" -m train --config "$CONFIG" "$@"
fi
exec torchrun --nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK}" --nproc_per_node "$NPROC" \
  --master_addr "${MASTER_ADDR:?set MASTER_ADDR}" --master_port "${MASTER_PORT:-29500}" -m train --config "$CONFIG" "$@"
