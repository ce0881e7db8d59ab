"""Launcher environment parsing, single-process no-ops, and real 2-process gloo runs."""
import os
import re
import socket
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import accel
from accel import distributed
from accel.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "accel_scripts" / "dist_check.py"
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
               "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
               "MPI_LOCALRANKID", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize("env,expected", [
    ({}, (0, 0, 1)),
    ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}, (3, 1, 4)),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
      "OMPI_COMM_WORLD_SIZE": "2"}, (1, 0, 2)),
    ({"PMI_RANK": "2", "PMI_SIZE": "8", "MPI_LOCALRANKID": "2"}, (2, 2, 8)),
    ({"PMI_RANK": "5", "PMI_SIZE": "8"}, (5, 5, 8)),  # no local rank: single node assumed
    # torchrun wins when an mpirun-started job re-exports torchrun's variables
    ({"RANK": "0", "WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1",
      "OMPI_COMM_WORLD_SIZE": "2"}, (0, 0, 2)),
])
def test_dist_env(env, expected):
    info = accel.dist_env(env)
    assert (info.rank, info.local_rank, info.world_size) == expected


def test_dist_env_errors():
    with pytest.raises(UserError, match="environment variable WORLD_SIZE='two' is not an integer"):
        accel.dist_env({"RANK": "0", "WORLD_SIZE": "two"})
    with pytest.raises(UserError, match="Open MPI environment is inconsistent"):
        accel.dist_env({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "2"})


def test_backend_by_device():
    assert accel.backend_for(torch.device("cpu")) == "gloo"
    assert accel.backend_for(torch.device("cuda", 1)) == "nccl"
    assert accel.backend_for("hpu") == "hccl"


def test_single_process_helpers_are_noops(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    assert accel.init_distributed(torch.device("cpu")) == accel.DistInfo(0, 0, 1)
    assert not torch.distributed.is_initialized()
    t = torch.tensor([2.0, 4.0])
    assert accel.all_reduce_mean(t) is t
    assert accel.all_gather_object({"a": 1}) == [{"a": 1}]
    assert accel.broadcast_object("x") == "x"
    assert accel.is_main_process() and accel.get_rank() == 0 and accel.get_world_size() == 1
    model = torch.nn.Linear(2, 2)
    assert accel.wrap_ddp(model, torch.device("cpu")) is model and accel.unwrap(model) is model
    accel.barrier()
    accel.destroy()


def test_launch_local(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.os, "execv", lambda exe, cmd: calls.append((exe, cmd)))
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    accel.launch_local(1, "tools/train.py", ["-n", "yolox-nano"])
    assert calls == []
    accel.launch_local(2, "tools/train.py", ["-n", "yolox-nano", "max_epoch", 1])
    assert calls == [(sys.executable, [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "tools/train.py", "-n", "yolox-nano", "max_epoch", "1"])]
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")  # already one rank of an mpirun launch
    accel.launch_local(2, "tools/train.py", [])
    assert len(calls) == 1
    with pytest.raises(UserError, match="must be >= 1"):
        accel.launch_local(0, "tools/train.py", [])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               **extra)
    return env


def _check_ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok = sorted(line for line in proc.stdout.splitlines() if line.startswith("OK "))
    assert len(ok) == 2, proc.stdout
    assert ok[0].startswith("OK rank=0 local=0 world=2 main=True mean=[1.5, 15.0]")
    assert ok[1].startswith("OK rank=1 local=1 world=2 main=False mean=[1.5, 15.0]")
    return ok


def test_torchrun_two_process_gloo():
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(SCRIPT), "collectives", "60"],
        env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    _check_ok(proc)


def test_torchrun_restarted_group_meets_its_own_store_keys():
    """torchrun keeps one store across --max-restarts; a restarted rank 1 that arrives before
    rank 0 must not read attempt 0's gloo addresses (that failed with "connectFullMesh ...
    Connection refused" before accel.init_distributed gave each attempt its own key prefix)."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "--max-restarts", "1", "--monitor-interval", "0.2", str(SCRIPT), "restart", "60"],
        env=_env(), cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    joined = sorted(line for line in proc.stdout.splitlines() if line.startswith("JOINED"))
    assert joined == ["JOINED attempt 0 rank 0", "JOINED attempt 1 rank 0", "JOINED attempt 1 rank 1"]


def test_mpirun_two_process_gloo():
    if shutil.which("mpirun") is None:
        if os.environ.get("CI"):
            pytest.fail("mpirun not found: CI must install Open MPI (.ci/run does)")
        pytest.skip("mpirun not found (install Open MPI, e.g. apt-get install openmpi-bin)")
    port = _free_port()
    proc = subprocess.run(
        ["mpirun", "-n", "2", "--oversubscribe", sys.executable, str(SCRIPT), "collectives", "60"],
        env=_env(MASTER_PORT=port), cwd=REPO, capture_output=True, text=True, timeout=120)
    ok = _check_ok(proc)
    assert all(line.endswith(f"master=127.0.0.1:{port}") for line in ok)  # default MASTER_ADDR


def _run_with_stalled_peer(mode, tmp_path, **extra):
    """dist_check.py MODE with a 3 s timeout: rank 1 joins and then never enters the collective.
    Returns rank 0's completed process and its wall time."""
    base = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=_free_port(), WORLD_SIZE="2", **extra)
    cmd = [sys.executable, str(SCRIPT), mode, "3", str(tmp_path)]
    peer = subprocess.Popen(cmd, env={**base, "RANK": "1", "LOCAL_RANK": "1"}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        proc = subprocess.run(cmd, env={**base, "RANK": "0", "LOCAL_RANK": "0"}, cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        return proc, time.monotonic() - start
    finally:
        peer.kill()
        peer.wait()


def test_stalled_rank_times_out_instead_of_hanging(tmp_path):
    """Rank 0 must give up at ~3 s instead of waiting for the stalled rank forever: the process
    group's own timeout, the backstop when the watchdog is off (or cannot act)."""
    proc, elapsed = _run_with_stalled_peer("stall", tmp_path, DETKIT_WATCHDOG="0")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "TIMEOUT after" in proc.stdout
    waited = float(proc.stdout.split("TIMEOUT after ")[1].split("s")[0])
    assert 2.5 <= waited < 15 and elapsed < 45


def test_stalled_rank_ends_the_cli_with_one_line(tmp_path):
    """What ``--dist-timeout`` gives a user: the live rank exits within the watchdog's bound
    (--dist-timeout + 5 s) with one line naming the rank that did not arrive, its host, pid,
    last step and phase, and its stacks are in the log folder."""
    proc, elapsed = _run_with_stalled_peer("stall_cli", tmp_path)
    err = [ln for ln in proc.stderr.splitlines() if " | " not in ln and ln.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(err) == 1, err
    assert re.match(r"error: rank 1 \(host \S+, pid \d+\) did not arrive: alive, last completed step 4, "
                    r"in data loading for \d+ s; no rank progressed for \d+ s \(--dist-timeout 3 s\)", err[0]), err
    assert "Thread" in (tmp_path / "stacks_rank0.txt").read_text()
    assert elapsed < 3 + 5 + 10        # + 10 s: both processes' imports and start


def test_dead_rank_is_named_in_the_survivors_line(tmp_path):
    """A rank that dies (SIGKILL, an OOM kill): the survivor's collective fails at once, and its
    one line names the dead rank, its pid and what it was doing, not "a rank stopped or died"."""
    proc, elapsed = _run_with_stalled_peer("die_cli", tmp_path)
    err = [ln for ln in proc.stderr.splitlines() if " | " not in ln and ln.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(err) == 1, err
    assert re.match(r"error: rank 1 \(host \S+, pid \d+\) did not arrive: died \(its process is gone\), "
                    r"last completed step 6, in training step for \d+ s; a collective failed: ", err[0]), err
    assert elapsed < 3 + 15


def test_a_rank_without_rank_0_is_one_line_within_the_timeout(tmp_path):
    """Slurm calls this process rank 1 of 2 and no rank 0 exists anywhere: after --dist-timeout
    (here 3 s) one line naming the rendezvous address and the missing rank 0, exit 2, no C++
    frames; before the fix torch's store client waited ~74 s (twice the timeout plus its grace)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                      # closed again: nothing listens there
    code = ("import torch, accel\nfrom accel.errors import cli_entry\n"
            "cli_entry(lambda: accel.init_distributed(torch.device('cpu'), timeout_s=3))()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "WORLD_", "LOCAL_RANK",
                                                                    "OMPI_", "PMI_", "SLURM_"))}
    env.update(SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_LOCALID="1",
               SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost", SLURM_NODELIST="localhost",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: rank 1 of 2 (Slurm): nothing answers at the rendezvous address "
                               f"127.0.0.1:{port} after 3 s"), lines[0]
    assert elapsed < 3 + 30
