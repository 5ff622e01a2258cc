"""Every launch route of the README on CPU with 2 processes: launch/torchrun.sh, launch/deepspeed.sh, `accelerate launch`
with launch/accelerate.yaml, and launch/slurm.sbatch (SLURM itself cannot run here: `scontrol` and `srun` are replaced
by stand-ins on PATH, so the script's own command line is what gets checked, and then run on one node)."""

import json
import os
import shlex
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SMOKE, assert_trained_run, child_env
from wandb_reader import read_run

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = REPO / "launch" / "slurm.sbatch"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_launcher(command: list[str], *, env: dict[str, str] | None = None, path_prepend: Path | None = None, timeout=600):
    # torchrun / deepspeed / accelerate of this interpreter's environment, whatever PATH says.
    dirs = [path_prepend] if path_prepend else []
    full_env = child_env(env, path=[*dirs, Path(sys.executable).parent])
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def train_overrides(out_dir: Path, zero_stage: int) -> list[str]:
    """2 steps of the smoke config, 2 prompts x 4 completions per rank, with the stage's JSON from configs/deepspeed/."""
    return [
        "max_steps=2", "rollout.prompts_per_step=4", "optim.micro_batch_size=4", "eval.source=null",
        f"deepspeed.zero_stage={zero_stage}", f"deepspeed.config_file=configs/deepspeed/zero{zero_stage}.json",
        f"output_dir={out_dir}", "run_name=launched",
    ]


def assert_two_rank_run(result, out_dir: Path, zero_stage: int):
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert f"world size 2 | ZeRO-{zero_stage}" in result.stdout, result.stdout[-2000:]
    # Ranks end with os._exit (train/distributed.py): rank 0's last line must still have been flushed.
    assert f"thinkrl train: done; run directory {out_dir / 'launched'}" in result.stdout, result.stdout[-2000:]
    assert_trained_run(out_dir / "launched", steps=2)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_script(tmp_path):
    wandb_offline = ["log.wandb.mode=offline", "log.wandb.project=thinkrl-test"]
    result = run_launcher(["bash", "launch/torchrun.sh", str(SMOKE), *train_overrides(tmp_path, 1), *wandb_offline],
                          env={"NPROC": "2"})
    assert_two_rank_run(result, tmp_path, 1)
    # Rank 0's W&B run is complete although the process skipped interpreter shutdown (and W&B's atexit hook).
    run_files = sorted((tmp_path / "launched" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    assert [row["_step"] for row in read_run(run_files[0])["history"] if "reward/mean" in row] == [1, 2]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_deepspeed_launcher_script(tmp_path):
    """The deepspeed launcher appends --local_rank=N; on a CPU-only machine `--num_gpus 2` starts 2 CPU ranks."""
    result = run_launcher(
        ["bash", "launch/deepspeed.sh", str(SMOKE), *train_overrides(tmp_path, 3)],
        env={"NPROC": "2", "MASTER_PORT": str(_free_port())},
    )
    assert "--local_rank=1" in result.stdout + result.stderr  # the launcher's own log of the rank's command line
    assert_two_rank_run(result, tmp_path, 3)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_accelerate_launch(tmp_path):
    result = run_launcher([
        "accelerate", "launch", "--config_file", "launch/accelerate.yaml", "--num_processes", "2",
        "-m", "train", "--config", str(SMOKE), *train_overrides(tmp_path, 2),
    ])
    assert_two_rank_run(result, tmp_path, 2)


# --- SLURM -------------------------------------------------------------------------------------------------------

FAKE_SCONTROL = """#!/usr/bin/env bash
# scontrol stand-in: `scontrol show hostnames LIST` prints $FAKE_HOSTNAMES, one per line, and records LIST.
[ "$1 $2" = "show hostnames" ] || { echo "fake scontrol: unexpected $*" >&2; exit 1; }
echo "$3" > "$FAKE_RECORD/scontrol_nodelist"
printf '%s\\n' $FAKE_HOSTNAMES
"""
FAKE_SRUN = """#!/usr/bin/env bash
# srun stand-in: records srun's options, then runs the command once per node with that node's SLURM_NODEID, as
# `srun --ntasks-per-node 1` does on an allocation of SLURM_NNODES nodes (here one after the other, on this machine).
options=()
while [ $# -gt 0 ] && [ "$1" != bash ]; do options+=("$1"); shift; done
printf '%s\\n' "${options[@]}" > "$FAKE_RECORD/srun_options"
for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node "$@" || exit $?; done
"""
# torchrun stand-in: writes the arguments it got on each node.
FAKE_TORCHRUN = f"""#!{sys.executable}
import json, os, sys
with open(os.path.join(os.environ["FAKE_RECORD"], "torchrun_node" + os.environ["SLURM_NODEID"]), "w") as f:
    json.dump(sys.argv[1:], f)
"""


def fake_slurm(tmp_path: Path, hostnames: str, *, torchrun: bool) -> tuple[Path, dict[str, str]]:
    """A bin directory with scontrol / srun (/ torchrun) stand-ins, and the SLURM variables of a job."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    scripts = {"scontrol": FAKE_SCONTROL, "srun": FAKE_SRUN, **({"torchrun": FAKE_TORCHRUN} if torchrun else {})}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    return bin_dir, {"FAKE_RECORD": str(record), "FAKE_HOSTNAMES": hostnames, "SLURM_JOB_ID": "4242"}


OVERRIDES_WITH_SPACES = ["rewards.functions=[{name: tag_count}]", "data.system_prompt=it's \"quoted\"", "max_steps=3"]


def test_slurm_command_per_node(tmp_path):
    """2 nodes x 4 GPUs: each node's torchrun gets nnodes 2, its own node rank, 4 ranks, and the c10d rendezvous at the
    first host of the node list; the thinkrl arguments arrive intact whatever their quoting."""
    bin_dir, env = fake_slurm(tmp_path, "gpu-a01 gpu-a02", torchrun=True)
    env.update(SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu-a[01-02]", SLURM_GPUS_ON_NODE="4")
    result = run_launcher(["bash", str(SLURM_SCRIPT), "configs/smoke.yaml", *OVERRIDES_WITH_SPACES],
                          env=env, path_prepend=bin_dir, timeout=60)
    assert result.returncode == 0, result.stderr
    record = Path(env["FAKE_RECORD"])
    assert (record / "scontrol_nodelist").read_text().strip() == "gpu-a[01-02]"
    srun_options = (record / "srun_options").read_text().split()
    assert srun_options == ["--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    for node in (0, 1):
        argv = json.loads((record / f"torchrun_node{node}").read_text())
        assert argv == [
            "--nnodes", "2", "--nproc_per_node", "4", "--rdzv_backend", "c10d", "--rdzv_endpoint", "gpu-a01:29500",
            "--rdzv_id", "4242", "--node_rank", str(node), "-m", "train", "--config", "configs/smoke.yaml",
            *OVERRIDES_WITH_SPACES,
        ]


def test_slurm_dry_run_and_overrides(tmp_path):
    """DRY_RUN=1 prints one shell-parsable srun command; MASTER_ADDR / MASTER_PORT / GPUS_PER_NODE override SLURM's."""
    bin_dir, env = fake_slurm(tmp_path, "n1 n2 n3", torchrun=False)
    env.update(SLURM_NNODES="3", SLURM_JOB_NODELIST="n[1-3]", SLURM_GPUS_PER_NODE="h100:8", DRY_RUN="1",
               MASTER_PORT="6000", GPUS_PER_NODE="2")
    result = run_launcher(["bash", str(SLURM_SCRIPT), "configs/X.yaml", "seed=1"], env=env, path_prepend=bin_dir, timeout=60)
    assert result.returncode == 0, result.stderr
    srun = shlex.split(result.stdout)
    assert srun[:8] == ["srun", "--nodes", "3", "--ntasks-per-node", "1", "--kill-on-bad-exit=1", "bash", "-c"]
    per_node = shlex.split(srun[8])
    assert per_node[per_node.index("--rdzv_endpoint") + 1] == "n1:6000"
    assert per_node[per_node.index("--nproc_per_node") + 1] == "2"
    assert per_node[per_node.index("--node_rank") + 1] == "$SLURM_NODEID"  # expanded by bash on each node
    assert per_node[-5:] == ["-m", "train", "--config", "configs/X.yaml", "seed=1"]
    # SLURM's "type:count" form of GPUs per node, when GPUS_PER_NODE is not set.
    del env["GPUS_PER_NODE"]
    env["MASTER_ADDR"] = "10.0.0.9"
    result = run_launcher(["bash", str(SLURM_SCRIPT), "configs/X.yaml"], env=env, path_prepend=bin_dir, timeout=60)
    per_node = shlex.split(shlex.split(result.stdout)[8])
    assert per_node[per_node.index("--nproc_per_node") + 1] == "8"
    assert per_node[per_node.index("--rdzv_endpoint") + 1] == "10.0.0.9:6000"


def test_slurm_master_address_from_long_or_empty_node_list(tmp_path):
    """The first host of a long node list (scontrol must not die of SIGPIPE under pipefail); no host: a clear error."""
    bin_dir, env = fake_slurm(tmp_path, " ".join(f"node{i:05d}" for i in range(9000)), torchrun=False)  # > a 64 KB pipe
    env.update(SLURM_NNODES="2", SLURM_JOB_NODELIST="node[00000-08999]", GPUS_PER_NODE="8", DRY_RUN="1")
    result = run_launcher(["bash", str(SLURM_SCRIPT), "configs/X.yaml"], env=env, path_prepend=bin_dir, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--rdzv_endpoint node00000:29500" in result.stdout
    env["FAKE_HOSTNAMES"] = ""
    result = run_launcher(["bash", str(SLURM_SCRIPT), "configs/X.yaml"], env=env, path_prepend=bin_dir, timeout=60)
    assert result.returncode != 0 and "printed no host" in result.stderr


def test_slurm_outside_an_allocation_says_so():
    clean = child_env(drop=[k for k in os.environ if k.startswith("SLURM_")])
    result = subprocess.run(["bash", str(SLURM_SCRIPT), "configs/X.yaml"], cwd=REPO, env=clean, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "SLURM_NNODES is not set" in result.stderr


def test_slurm_header():
    """sbatch reads #SBATCH lines only up to the first command; one task per node (torchrun starts the GPU ranks)."""
    lines = SLURM_SCRIPT.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = [line.split()[1] for line in lines[:first_command] if line.startswith("#SBATCH")]
    assert not any(line.startswith("#SBATCH") for line in lines[first_command:])
    assert "--ntasks-per-node=1" in directives
    assert any(d.startswith("--nodes=") for d in directives) and any(d.startswith("--gpus-per-node=") for d in directives)
