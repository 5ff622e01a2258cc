#!/usr/bin/env bash
# Launch thinkrl with torchrun on one node, or on several (run it on each with NNODES, NODE_RANK, MASTER_ADDR set).
#   NPROC=2 launch/torchrun.sh configs/smoke.yaml deepspeed.zero_stage=2
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node-001 NPROC=8 launch/torchrun.sh configs/X.yaml    # on node-001
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node-001 NPROC=8 launch/torchrun.sh configs/X.yaml    # on node-002
# NPROC (ranks per node) defaults to the number of visible GPUs (1 on a CPU-only machine, where the ranks are CPU
# processes and thinkrl uses gloo). Extra arguments are key.sub=value overrides. Under SLURM use launch/slurm.sbatch.
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
