#!/usr/bin/env bash
# Launch thinkrl with the deepspeed launcher (it appends --local_rank, which thinkrl accepts).
#   NPROC=2 launch/deepspeed.sh configs/quickstart.yaml deepspeed.zero_stage=3
#   HOSTFILE=launch/hostfile.example launch/deepspeed.sh configs/X.yaml       # several nodes over ssh (pdsh)
set -euo pipefail
CONFIG=${1:?usage: launch/deepspeed.sh CONFIG [key.sub=value ...]}
shift
NPROC=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
if [ -n "${HOSTFILE:-}" ]; then
  exec deepspeed --hostfile "$HOSTFILE" --master_port "${MASTER_PORT:-29500}" --module train --config "$CONFIG" "$@"
fi
exec deepspeed --num_gpus "$NPROC" --master_port "${MASTER_PORT:-29500}" --module train --config "$CONFIG" "$@"
