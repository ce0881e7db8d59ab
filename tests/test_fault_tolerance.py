"""Runs that survive a dead rank, a preemption, and two machines training together, checked bit
for bit against undisturbed runs (tools/fault_drill.py does the runs; tiny images keep it fast).

- A rank SIGKILLed in the middle of its second epoch under ``torchrun --max-restarts 3``: the
  restarted worker group resumes by itself from the newest periodic checkpoint and its final
  weights, EMA and optimizer state equal the undisturbed 2-rank run's (YOLOX-nano and SSD).
- SIGTERM to a single-process run (loader workers included): one checkpoint, exit 143, and the
  same command run again finishes equal to the undisturbed run.
- Two "machines" (two launches meeting at one rendezvous, one process each) end with the
  weights of the one-machine 2-process run.
"""
import os
import re
import socket
import subprocess
import sys

import pytest

from yolox_tools import ROOT, load_tool

drill = load_tool("fault_drill")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def yolox_data(drill_data):
    return drill_data["yolox"]


@pytest.fixture(scope="module")
def ssd_data(drill_data):
    return drill_data["ssd"]


def run_drill(model, fault, nproc, data, out):
    out.mkdir(parents=True, exist_ok=True)
    reference, faulted, verdict = drill.drill(model, fault, nproc, data, out)
    assert reference["exit"] == 0, (out / "reference.log").read_text()[-3000:]
    return faulted, verdict


def killed_drill(model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"{model}_killed")
    faulted, verdict = run_drill(model, "sigkill", 2, data, out)
    return faulted, verdict, out


@pytest.fixture(scope="module")
def yolox_killed(yolox_data, tmp_path_factory):
    return killed_drill("yolox", yolox_data, tmp_path_factory)


@pytest.fixture(scope="module")
def ssd_killed(ssd_data, tmp_path_factory):
    return killed_drill("ssd", ssd_data, tmp_path_factory)


@pytest.fixture(scope="module")
def yolox_reference(torchrun_reference):
    """The undisturbed 2-process run (torchrun on one machine): the two-machine runs' target
    (conftest.py: shared with the srun tests)."""
    return torchrun_reference("yolox")


@pytest.fixture(scope="module")
def ssd_reference(torchrun_reference):
    return torchrun_reference("ssd")


def check_killed_run(faulted, verdict, out):
    log = (out / "drill.log").read_text(errors="replace")
    assert faulted["exit"] == 0, log[-3000:]
    # torchrun restarted the group, which resumed mid-epoch from a periodic checkpoint
    assert faulted["resumed_from"] and "torchrun restart 1" in log
    assert re.search(r"iter_0000000\d", faulted["resumed_from"][0])
    assert verdict["equal"], verdict
    assert verdict["tensors"] > 100


def test_yolox_rank_killed_mid_epoch_finishes_by_itself_bit_equal(yolox_killed):
    check_killed_run(*yolox_killed)


def test_ssd_rank_killed_mid_epoch_finishes_by_itself_bit_equal(ssd_killed):
    check_killed_run(*ssd_killed)


@pytest.mark.parametrize("model", ["yolox", "ssd"])
def test_sigterm_writes_one_checkpoint_exits_143_and_the_same_command_continues(
        model, yolox_data, ssd_data, tmp_path):
    faulted, verdict = run_drill(model, "sigterm", 1, yolox_data if model == "yolox" else ssd_data, tmp_path)
    assert faulted["exit"] == 143 and faulted["rerun_exit"] == 0
    line = faulted["preempted_line"]
    assert line.startswith("preempted: SIGTERM at epoch 2, iteration ")
    iteration = int(re.search(r"iteration (\d+)", line).group(1))
    assert faulted["resumed_from"] == [re.search(r"checkpoint (\S+);", line).group(1)]
    assert f"{iteration:08d}" in faulted["resumed_from"][0]
    assert verdict["equal"], verdict


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_both(commands, out):
    """Start the two machines' commands together; both must succeed."""
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for cmd in commands]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]
    return logs


def parameter_hashes(log):
    return re.findall(r"parameters identical on all 2 rank\(s\) \(sha256 (\w+)\)", log)


def test_two_yolox_machines_train_as_one_machine_with_two_processes(yolox_reference, yolox_data, tmp_path):
    """tools/train.py on "machines" 0 and 1 (--num_machines 2 --machine_rank R --dist-url, one
    device each) ends with the very weights, EMA and optimizer state of the --devices 2 run."""
    drills = yolox_reference
    port = free_port()
    script = drill.script_args("yolox", yolox_data, tmp_path, 2)
    logs = launch_both([[sys.executable, script[0], "--devices", "1", "--num_machines", "2", "--machine_rank",
                         str(rank), "--dist-url", f"tcp://127.0.0.1:{port}", *script[1:]] for rank in (0, 1)],
                       tmp_path)
    equal, count, first = drill.compare("yolox", drills / "reference", tmp_path)
    assert equal, first
    reference_log = (drills / "reference.log").read_text(errors="replace")
    assert parameter_hashes(logs[0]) == parameter_hashes(reference_log) != []


def test_two_ssd_machines_under_torchrun_nnodes_2_train_as_one_machine(ssd_reference, ssd_data, tmp_path):
    """ssd/train.py under ``torchrun --nnodes 2 --node_rank R --rdzv-endpoint`` (one process per
    node) ends equal to ``torchrun --nproc-per-node 2`` on one node."""
    drills = ssd_reference
    port = free_port()
    script = drill.script_args("ssd", ssd_data, tmp_path, 2)
    logs = launch_both([[sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
                         "--nproc-per-node=1", f"--rdzv-endpoint=127.0.0.1:{port}", *script]
                        for rank in (0, 1)], tmp_path)
    equal, count, first = drill.compare("ssd", drills / "reference", tmp_path)
    assert equal, first
    reference_log = (drills / "reference.log").read_text(errors="replace")
    assert parameter_hashes("\n".join(logs)) == parameter_hashes(reference_log) != []
