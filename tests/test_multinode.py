"""Multi-node for real on one machine (issue 16): two hosts are two network namespaces joined by a veth pair, each with
only that interface and its loopback, so every byte between the two nodes crosses the veth, as between two machines.
Each host runs one node (`torchrun --nnodes 2`, gloo on the veth interface).

* ZeRO-3 GRPO on 2 nodes x 1 process == 1 process with the same global batch (tests/equivalence_worker.py).
* launch/slurm.sbatch launches for real: a stand-in `srun` runs the script's own per-node command inside each host
  (c10d rendezvous at host 0's address, which a stand-in `scontrol` gives as the first host of the allocation).
* The deepspeed launcher across hosts with a hostfile, without ssh (`--no_ssh --node_rank`): the same run.
* A node lost in the middle of a run: host 0 exits non-zero within a bounded time with a "lost contact" line, both when
  host 1's processes are killed and when they hang (SIGSTOP: no connection closes, ddp_timeout bounds the wait);
  restarting both with checkpoint.resume=auto ends with the weights of a run that never stopped. SIGTERM to both hosts
  (pre-emption) saves one checkpoint and resumes the same way.

Needs root and iproute2 (`ip netns`); CI has both and must not skip these (CI=true turns the skip into a failure).
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO, SMOKE, WORKER, assert_same_run, assert_same_training, child_env, launch_worker, read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

SLURM_SCRIPT = REPO / "launch" / "slurm.sbatch"
PORT = 29400  # each namespace has its own ports: no clash with the machine's or another test's
# The run every multi-node test trains: 6 smoke steps, 2 prompts x 4 completions per node, ZeRO-3, a checkpoint every 2.
OVERRIDES = [
    "max_steps=6", "checkpoint.every=2", "eval.source=null", "rollout.prompts_per_step=4",
    "optim.micro_batch_size=4", "deepspeed.zero_stage=3", "rewards.functions=[{name: 'tests.fault_rewards:alternating'}]",
    "optim.lr=3e-3", "rewards.preflight=false",
]
RUN = ["--config", str(SMOKE), *OVERRIDES]
# How long host 0 may take to exit after host 1 dies (its sockets close: gloo fails at once; the rest is shutdown).
DEATH_BOUND_S = 60
DDP_TIMEOUT_S = 10  # for the hang test: host 0 waits this long in a collective, then exits


@dataclass
class Hosts:
    names: list[str]  # network namespaces
    ifnames: list[str]  # the veth end inside each
    addrs: list[str]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def host_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def signal_host(name: str, sig: int) -> None:
    for pid in host_pids(name):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the two-host tests: they need root and iproute2 (`ip netns`)")
        pytest.skip("two hosts need network namespaces: root and iproute2 (`ip`)")
    tag = os.getpid() % 10000
    names, ifnames = [f"thinkrl{tag}h{i}" for i in (0, 1)], [f"trl{tag}v{i}" for i in (0, 1)]
    subnet = f"10.231.{tag % 250}"
    addrs = [f"{subnet}.1", f"{subnet}.2"]
    try:
        for name in names:
            _ip("netns", "add", name)
        _ip("link", "add", ifnames[0], "type", "veth", "peer", "name", ifnames[1])
        for name, ifname, addr in zip(names, ifnames, addrs):
            _ip("link", "set", ifname, "netns", name)
            _ip("-n", name, "addr", "add", f"{addr}/24", "dev", ifname)
            _ip("-n", name, "link", "set", ifname, "up")
            _ip("-n", name, "link", "set", "lo", "up")
            # Each host resolves the other's name, as on a cluster: `ip netns exec` mounts /etc/netns/NAME/hosts
            # over /etc/hosts. (The hostname itself is set per node by the srun stand-in, in a UTS namespace.)
            etc = Path("/etc/netns") / name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"{a} host{j}\n" for j, a in enumerate(addrs)))
        yield Hosts(names, ifnames, addrs)
    finally:
        for name in names:
            signal_host(name, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


def host_env(hosts: Hosts, i: int, **extra: str) -> dict[str, str]:
    """A child's environment on host i: gloo over that host's own interface, one OpenMP thread per rank, and this
    interpreter's torchrun / deepspeed first on PATH."""
    return child_env({"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": hosts.ifnames[i], **extra},
                     path=[Path(sys.executable).parent])


def start_node(hosts: Hosts, i: int, args: list[str]) -> subprocess.Popen:
    """Node i: torchrun with static rendezvous at host 0 (node rank i holds global rank i), inside host i."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(i),
                "--master_addr", hosts.addrs[0], "--master_port", str(PORT)]
    return subprocess.Popen(["ip", "netns", "exec", hosts.names[i], *torchrun, *args], cwd=REPO, env=host_env(hosts, i),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(nodes: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    """(exit status, stdout, stderr) of each node once it has exited."""
    outputs = [node.communicate(timeout=timeout) for node in nodes]
    return [(node.returncode, *output) for node, output in zip(nodes, outputs)]


def run_nodes(hosts: Hosts, args: list[str]) -> list[tuple[int, str, str]]:
    return finish([start_node(hosts, i, args) for i in (0, 1)])


def wait_for_step(nodes, metrics_path: Path, step: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics_path.is_file() and any(json.loads(line)["step"] >= step for line in metrics_path.read_text().splitlines() if line.endswith("}")):
            return
        for node in nodes:
            if node.poll() is not None:
                raise AssertionError(f"a node exited early: {node.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for step {step}")


def veth_bytes(hosts: Hosts) -> int:
    out = subprocess.run(["ip", "netns", "exec", hosts.names[0], "cat", f"/sys/class/net/{hosts.ifnames[0]}/statistics/tx_bytes"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def test_zero3_grpo_on_two_nodes_equals_one_process(hosts, tmp_path):
    """The equivalence harness's ZeRO-3 case (one micro-batch of 4 rows per rank) on 2 nodes x 1 process over the
    veth, against 1 process x 8 rows: same per-step loss and gradient norm, same final weights."""
    reference = launch_worker([sys.executable], tmp_path / "world1", ["0:8"])["world1/0:8"]
    out = tmp_path / "nodes"
    out.mkdir()
    before = veth_bytes(hosts)
    results = run_nodes(hosts, [str(WORKER), str(out), "3:4"])
    for rc, stdout, stderr in results:
        assert rc == 0, stderr[-3000:]
    sent = veth_bytes(hosts) - before
    two_nodes = __import__("torch").load(out / "3_4.pt")
    assert_same_training(two_nodes, reference)
    # ZeRO-3 gathers every parameter shard at every forward: the weights crossed the wire many times over.
    weight_bytes = sum(w.numel() * w.element_size() for w in reference["weights"].values())
    assert sent > weight_bytes, (sent, weight_bytes)


FAKE_SCONTROL = """#!/usr/bin/env bash
# Stand-in for `scontrol show hostnames LIST`: the hosts of the allocation, one per line.
[ "$1 $2" = "show hostnames" ] || { echo "fake scontrol: unexpected: $*" >&2; exit 1; }
echo host0
echo host1
"""
FAKE_SRUN = """#!/usr/bin/env bash
# Stand-in for srun: runs its last argument (the per-node command of `bash -c CMD`) once per host namespace, as SLURM
# runs one task per node, with that node's SLURM_NODEID, hostname, and gloo on that host's interface.
echo "$@" > "$FAKE_RECORD/srun_args"
cmd="${@: -1}"
i=0; pids=()
for ns in $FAKE_NAMESPACES; do
  ifnames=($FAKE_IFNAMES)
  # unshare --uts: the node's own hostname (host0, host1), which torchrun's c10d rendezvous announces to the others
  ip netns exec "$ns" unshare --uts env SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 GLOO_SOCKET_IFNAME=${ifnames[$i]} \
    bash -c 'hostname "host$SLURM_NODEID" && eval "$0"' "$cmd" &
  pids+=($!); i=$((i + 1))
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
"""


def fake_slurm(tmp_path: Path, hosts: Hosts) -> tuple[dict[str, str], Path]:
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    for name, text in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    env = host_env(hosts, 0, FAKE_NAMESPACES=" ".join(hosts.names),
                   FAKE_IFNAMES=" ".join(hosts.ifnames), FAKE_RECORD=str(record), SLURM_NNODES="2", SLURM_JOB_ID="77",
                   SLURM_JOB_NODELIST="host[0-1]", GPUS_PER_NODE="1",
                   TORCHRUN=f"{sys.executable} -m torch.distributed.run")
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
    return env, record


@pytest.fixture(scope="module")
def straight(hosts, tmp_path_factory):
    """The reference run, launched by launch/slurm.sbatch itself across the two hosts: 6 steps, never stopped."""
    out = tmp_path_factory.mktemp("multinode")
    env, record = fake_slurm(out, hosts)
    result = subprocess.run(["bash", str(SLURM_SCRIPT), str(SMOKE), *OVERRIDES, f"output_dir={out}", "run_name=straight"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert "world size 2 | ZeRO-3" in result.stdout, result.stdout[-2000:]
    srun_args = (record / "srun_args").read_text()
    assert srun_args.startswith("--nodes 2 --ntasks-per-node 1") and "--rdzv_endpoint host0:29500" in srun_args
    assert [r["step"] for r in read_jsonl(out / "straight" / "metrics.jsonl")] == list(range(1, 7))
    return out / "straight"


def test_slurm_script_launches_two_hosts(straight):
    """launch/slurm.sbatch's own command trained on the two hosts (the fixture's checks), and the run exported."""
    assert (straight / "final_model" / "model.safetensors").is_file()


def test_deepspeed_launcher_across_hosts_without_ssh(hosts, straight, tmp_path):
    """launch/deepspeed.sh with HOSTFILE and NODE_RANK on each host (deepspeed's --no_ssh: each node starts its own
    ranks, nothing over ssh): the run equals the SLURM-launched one."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("host0 slots=1\nhost1 slots=1\n")
    nodes = []
    for i in (0, 1):
        env = {**host_env(hosts, i), "HOSTFILE": str(hostfile), "NODE_RANK": str(i), "MASTER_ADDR": hosts.addrs[0],
               "MASTER_PORT": str(PORT)}
        command = ["bash", "launch/deepspeed.sh", str(SMOKE), *OVERRIDES, f"output_dir={tmp_path}", "run_name=ds"]
        nodes.append(subprocess.Popen(["ip", "netns", "exec", hosts.names[i], *command], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for rc, stdout, stderr in finish(nodes):
        assert rc == 0, (stdout[-2000:], stderr[-4000:])
    assert_same_run(straight, tmp_path / "ds")


def test_a_node_killed_mid_run_stops_the_other_then_both_resume(hosts, straight, tmp_path):
    args = ["-m", "train", *RUN, f"output_dir={tmp_path}", "run_name=lost", "checkpoint.resume=auto"]
    nodes = [start_node(hosts, i, args) for i in (0, 1)]
    wait_for_step(nodes, tmp_path / "lost" / "metrics.jsonl", 3)
    killed_at = time.monotonic()
    signal_host(hosts.names[1], signal.SIGKILL)  # host 1's torchrun and its rank, in the middle of step 4
    rc, _, stderr = finish(nodes[:1], timeout=DEATH_BOUND_S + 60)[0]
    took = time.monotonic() - killed_at
    print(f"host 0 exited {took:.1f} s after host 1 was killed (status {rc})")
    assert rc != 0 and took < DEATH_BOUND_S, (rc, took, stderr[-3000:])
    assert "thinkrl train: error: rank 0: lost contact with another rank" in stderr, stderr[-3000:]
    finish(nodes[1:], timeout=60)
    assert not (tmp_path / "lost" / "final_model").exists()

    for rc, stdout, stderr in run_nodes(hosts, args):
        assert rc == 0, stderr[-3000:]
    assert_same_run(straight, tmp_path / "lost")


def test_a_hung_node_stops_the_other_within_ddp_timeout(hosts, tmp_path):
    """SIGSTOP keeps host 1's sockets open and silent (a frozen node, a cable pulled): host 0 gives up after
    ddp_timeout instead of waiting for ever."""
    args = ["-m", "train", *RUN, f"output_dir={tmp_path}", "run_name=hung", f"ddp_timeout={DDP_TIMEOUT_S}"]
    nodes = [start_node(hosts, i, args) for i in (0, 1)]
    try:
        wait_for_step(nodes, tmp_path / "hung" / "metrics.jsonl", 3)
        stopped_at = time.monotonic()
        signal_host(hosts.names[1], signal.SIGSTOP)
        rc, _, stderr = finish(nodes[:1], timeout=DDP_TIMEOUT_S + DEATH_BOUND_S + 60)[0]
        took = time.monotonic() - stopped_at
    finally:
        signal_host(hosts.names[1], signal.SIGKILL)
        signal_host(hosts.names[1], signal.SIGCONT)
    finish(nodes[1:], timeout=60)
    print(f"host 0 exited {took:.1f} s after host 1 froze (ddp_timeout={DDP_TIMEOUT_S} s; status {rc})")
    assert rc != 0 and took < DDP_TIMEOUT_S + DEATH_BOUND_S, (rc, took, stderr[-3000:])
    assert "lost contact with another rank" in stderr, stderr[-3000:]


def test_sigterm_to_both_hosts_saves_one_checkpoint_and_resumes(hosts, straight, tmp_path):
    args = ["-m", "train", *RUN, f"output_dir={tmp_path}", "run_name=preempted", "checkpoint.resume=auto"]
    nodes = [start_node(hosts, i, args) for i in (0, 1)]
    wait_for_step(nodes, tmp_path / "preempted" / "metrics.jsonl", 3)
    for name in hosts.names:  # what scancel does: every process of the job, on every node
        signal_host(name, signal.SIGTERM)
    results = finish(nodes, timeout=120)
    assert all(rc != 0 for rc, _, _ in results)
    assert f"thinkrl train: signal {int(signal.SIGTERM)}: checkpoint saved at step" in results[0][1], results[0][2][-3000:]
    checkpoints = tmp_path / "preempted" / "checkpoints"
    latest = checkpoints / (checkpoints / "latest").read_text().strip()
    marker = json.loads((latest / "COMPLETE").read_text())
    assert marker["world_size"] == 2 and 3 <= marker["step"] <= 6, marker
    assert len(list(latest.glob("*zero_pp_rank_1_*"))) >= 1, "host 1's ZeRO-3 shard is in the checkpoint"

    for rc, stdout, stderr in run_nodes(hosts, args):
        assert rc == 0, stderr[-3000:]
    assert_same_run(straight, tmp_path / "preempted")
