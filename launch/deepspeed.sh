#!/usr/bin/env bash
# Launch thinkrl with the deepspeed launcher (it appends --local_rank, which thinkrl accepts).
#   NPROC=2 launch/deepspeed.sh configs/smoke.yaml deepspeed.zero_stage=3      # one node, 2 ranks
#   HOSTFILE=launch/hostfile.example launch/deepspeed.sh configs/X.yaml             # the nodes and slots of a hostfile
#   HOSTFILE=H NODE_RANK=i MASTER_ADDR=node0 launch/deepspeed.sh configs/X.yaml     # on each node i yourself: no ssh
# NPROC defaults to the number of visible GPUs (1 on a CPU-only machine, where the ranks are CPU processes and thinkrl
# uses gloo). With a HOSTFILE the launcher starts ranks on every node over passwordless ssh (pdsh); it forwards only
# NCCL_*/PYTHON* variables and those listed in ./.deepspeed_env or ~/.deepspeed_env. MASTER_ADDR defaults to the first
# host of the hostfile. With NODE_RANK set, nothing is started over ssh: run the script on every node of the hostfile
# (deepspeed's --no_ssh; MASTER_ADDR is then needed). Extra arguments are key.sub=value overrides.
set -euo pipefail
CONFIG=${1:?usage: launch/deepspeed.sh CONFIG [key.sub=value ...]}
shift
MASTER_PORT=${MASTER_PORT:-29500}
if [ -n "${HOSTFILE:-}" ]; then
  NO_SSH=()
  if [ -n "${NODE_RANK:-}" ]; then
    NO_SSH=(--no_ssh --node_rank "$NODE_RANK" --master_addr "${MASTER_ADDR:?NODE_RANK without ssh needs MASTER_ADDR (node 0)}")
  fi
  exec deepspeed --hostfile "$HOSTFILE" "${NO_SSH[@]}" ${MASTER_ADDR:+--master_addr "$MASTER_ADDR"} --master_port "$MASTER_PORT" \
    --module train --config "$CONFIG" "$@"
fi
NPROC=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
# Like torchrun: one OpenMP thread per rank unless set, so CPU ranks do not oversubscribe the cores.
if [ "$NPROC" -gt 1 ]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi
exec deepspeed --num_gpus "$NPROC" --master_port "$MASTER_PORT" --module train --config "$CONFIG" "$@"
