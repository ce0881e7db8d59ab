"""The hang watchdog (accel.watchdog) and one-rank failures, on the fault drills' tiny YOLOX-nano
run (2 ranks, --dist-timeout 8, one epoch):

- rank 1 SIGSTOPped mid-epoch under torchrun: within --dist-timeout + 5 s rank 0 writes its
  stacks and one line naming rank 1, its host and pid, "stopped", its last step and phase;
- a data-loader worker that sleeps forever on rank 1 (ranks started from the environment, the
  store on rank 0 as under srun and mpirun): both ranks write their stacks and end with the
  line naming rank 1 "in data loading";
- a corrupt image on rank 1 during the distributed evaluation (torchrun), and a full disk on
  rank 0 while it writes a checkpoint: every rank ends with that cause, never a hang, and the
  run does not log "training done";
plus the verdict logic on a fake store, and Ctrl-C in SSD.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from accel import watchdog
from yolox_tools import ROOT, load_tool, ssd_run

drill = load_tool("fault_drill")
FAULTY = ROOT / "tests" / "accel_scripts" / "faulty_train.py"
DIST_TIMEOUT = 8
BOUND = DIST_TIMEOUT + 5          # accel.watchdog's stated bound
SLACK = 8                         # a loaded 2-core test machine
ERROR = re.compile(r"^error: .*$", re.M)


# ---------------------------------------------------------------- the verdict, on a fake store
class FakeStore:
    def __init__(self):
        self.data = {}

    def set(self, key, value):
        self.data[key] = value.encode() if isinstance(value, str) else value

    def get(self, key):
        return self.data[key]

    def check(self, keys):
        return all(k in self.data for k in keys)

    def multi_get(self, keys):
        return [self.data[k] for k in keys]

    def compare_set(self, key, expected, desired):
        if key not in self.data and expected == "":
            self.data[key] = desired.encode()
        return self.data[key]

    def add(self, key, n):
        self.data[key] = str(int(self.data.get(key, b"0")) + n).encode()
        return int(self.data[key])


def heartbeat(store, rank, seq, step, phase, pid, host="vm", count=0):
    store.set(f"hb/{rank}", json.dumps({"rank": rank, "host": host, "pid": pid, "step": step, "phase": phase,
                                        "age": 1.0, "count": count, "seq": seq}))


def judge_after(monkeypatch, beats_then, beats_now, quiet=10.0):
    """A rank-0 watchdog that read ``beats_then``, and ``quiet`` seconds later ``beats_now``."""
    store, clock = FakeStore(), [1000.0]
    monkeypatch.setattr(watchdog.time, "monotonic", lambda: clock[0])
    wd = watchdog.Watchdog(store, 0, 2, hang_after_s=DIST_TIMEOUT)
    for args in beats_then:
        heartbeat(store, *args)
    assert wd.judge() is None                      # first sight: nothing is quiet yet
    clock[0] += quiet
    for args in beats_now:
        heartbeat(store, *args)
    return wd.judge()


def test_verdict_names_the_rank_behind(monkeypatch):
    """Both heartbeats alive, no progress: rank 1 still loads data while rank 0 is in the step."""
    line = judge_after(monkeypatch, [(0, 1, 7, "training step", 10), (1, 1, 7, "data loading", 11)],
                       [(0, 6, 7, "training step", 10), (1, 6, 7, "data loading", 11)])
    assert line.startswith("error: rank 1 (host vm, pid 11) did not arrive: alive, last completed step 7, "
                           "in data loading for ")
    assert "no rank progressed for 10 s (--dist-timeout 8 s)" in line and "rank 0" not in line


def test_verdict_names_a_stopped_or_dead_rank(monkeypatch):
    """Rank 1's heartbeat stopped (its pid is gone here): named as dead, whatever its phase."""
    dead = 2 ** 22 + 12345
    line = judge_after(monkeypatch, [(0, 1, 7, "training step", os.getpid()), (1, 1, 7, "training step", dead)],
                       [(0, 6, 7, "training step", os.getpid())], quiet=10.0)
    assert line.startswith(f"error: rank 1 (host vm, pid {dead}) did not arrive: died (its process is gone), "
                           "last completed step 7, in training step")


def test_no_verdict_while_progressing_or_before_training(monkeypatch):
    assert judge_after(monkeypatch, [(0, 1, 7, "training step", 10), (1, 1, 7, "data loading", 11)],
                       [(0, 6, 8, "training step", 10), (1, 6, 8, "data loading", 11)]) is None
    # setup (cache loading, model building) may take longer than --dist-timeout
    assert judge_after(monkeypatch, [(0, 1, 0, "starting", 10), (1, 1, 0, "starting", 11)],
                       [(0, 6, 0, "starting", 10), (1, 6, 0, "starting", 11)], quiet=100) is None


def test_the_hot_path_touches_no_store(monkeypatch):
    """beat/tick are attribute writes: with a running watchdog whose store fails on any use, the
    training loop's calls still cost nothing and raise nothing; only the thread talks to it."""
    class Refusing:
        def __getattr__(self, name):
            raise AssertionError(f"store.{name} on the hot path")

    monkeypatch.setattr(watchdog, "_current", watchdog.Watchdog(Refusing(), 0, 2, hang_after_s=DIST_TIMEOUT))
    before = watchdog._beat.count
    watchdog.beat("training step", step=3)
    watchdog.tick()
    with watchdog.ticking(torch.nn.Linear(1, 1)) as ticking:
        ticking.model(torch.ones(1, 1))
    assert watchdog._beat.count == before + 4 and watchdog._beat.step == 3


# ---------------------------------------------------------------- real runs
def train_args(data, out):
    return ["--dist-timeout", str(DIST_TIMEOUT), *drill.script_args("yolox", data, out, 2, epochs=1)[1:]]


def env_with(**extra):
    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch_ranks(argv, out, **extra):
    """Two ranks started from the environment (RANK/WORLD_SIZE), rank 0 hosting the store as
    under srun and mpirun; returns [(exit code, stderr text)] by rank and the seconds taken."""
    base = env_with(MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port(), WORLD_SIZE="2", **extra)
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=dict(base, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.DEVNULL, stderr=open(out / f"rank{r}.err", "w"))
             for r in range(2)]
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(c, (out / f"rank{r}.err").read_text(errors="replace")) for r, c in enumerate(codes)], \
        time.monotonic() - t0


def test_sigstopped_rank_is_named_within_the_bound(drill_data, tmp_path):
    log = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "--monitor-interval=0.2", str(ROOT / "tools" / "train.py"), *train_args(drill_data["yolox"], tmp_path)]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env_with(), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    stopped = None
    try:
        first = tmp_path / "yolox_nano_shapes" / "iter_00000002_ckpt.pth"
        deadline = time.time() + 180
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.exists(), log.read_text(errors="replace")[-3000:]
        stopped = drill.worker_ranks(proc.pid)[1]
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.monotonic()
        while time.monotonic() - t0 < BOUND + SLACK + 20 and not ERROR.search(log.read_text(errors="replace")):
            time.sleep(0.1)
        took = time.monotonic() - t0
    finally:
        if stopped:
            os.kill(stopped, signal.SIGKILL)
        proc.wait(timeout=120)
    text = log.read_text(errors="replace")
    lines = ERROR.findall(text)
    print(f"SIGSTOP -> line after {took:.1f} s: {lines[:1]}")
    assert lines, text[-3000:]
    assert re.match(rf"error: rank 1 \(host \S+, pid {stopped}\) did not arrive: stopped \(SIGSTOP or a "
                    r"debugger\), last completed step \d+, in (training step|data loading|checkpoint) for \d+ s; "
                    r"no rank progressed for \d+ s \(--dist-timeout 8 s\); Python stacks of the live ranks in ",
                    lines[0]), lines
    assert took < BOUND + SLACK, took
    stacks = (tmp_path / "yolox_nano_shapes" / "stacks_rank0.txt").read_text()
    assert stacks.startswith(lines[0]) and "trainer.py" in stacks     # the main thread, mid-step
    assert "training done" not in text and proc.returncode != 0


def test_data_worker_that_sleeps_forever_is_named(drill_data, tmp_path):
    argv = [str(FAULTY), *train_args(drill_data["yolox"], tmp_path)]
    (code0, err0), (code1, err1) = launch_ranks(argv, tmp_path, FAULT="worker_sleeps", FAULT_RANK="1")[0]
    lines = ERROR.findall(err0) + ERROR.findall(err1)
    print(f"worker hang: {lines[:1]}")
    assert code0 == code1 == 1, err0[-2000:] + err1[-2000:]
    assert len(lines) == 2 and lines[0] == lines[1], lines
    match = re.match(r"error: rank 1 \(host \S+, pid \d+\) did not arrive: alive, last completed step (\d+), in "
                     r"data loading for (\d+) s; no rank progressed for (\d+) s \(--dist-timeout 8 s\)", lines[0])
    assert match, lines
    assert int(match.group(3)) <= DIST_TIMEOUT + watchdog.INTERVAL_S + SLACK
    for rank in (0, 1):        # every live rank wrote the stacks of all its threads
        stacks = (tmp_path / "yolox_nano_shapes" / f"stacks_rank{rank}.txt").read_text()
        assert "Current thread" in stacks or "Thread 0x" in stacks
    assert "_next_data" in (tmp_path / "yolox_nano_shapes" / "stacks_rank1.txt").read_text()


def test_corrupt_image_on_one_rank_during_evaluation_ends_every_rank_with_it(drill_data, tmp_path):
    log = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "--monitor-interval=0.2", str(FAULTY), *train_args(drill_data["yolox"], tmp_path)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env_with(FAULT="eval_raises", FAULT_RANK="1"), capture_output=True,
                          text=True, timeout=240)
    took = time.monotonic() - t0
    text = proc.stdout + proc.stderr
    log.write_text(text)
    lines = ERROR.findall(text)
    assert proc.returncode != 0 and len(lines) == 2, text[-3000:]
    assert all("ValueError: corrupt image" in ln for ln in lines), lines
    assert any(re.match(r"error: rank 1 \(host \S+, pid \d+\) failed in evaluation after step 6: ", ln)
               for ln in lines), lines
    assert "training done" not in text and took < 180


def test_full_disk_on_rank_0_while_checkpointing_ends_every_rank_with_it(drill_data, tmp_path):
    argv = [str(FAULTY), *train_args(drill_data["yolox"], tmp_path)]
    (code0, err0), (code1, err1) = launch_ranks(argv, tmp_path, FAULT="save_fails")[0]
    lines0, lines1 = ERROR.findall(err0), ERROR.findall(err1)
    assert code0 == code1 == 2, err0[-2000:] + err1[-2000:]
    assert len(lines0) == 1 and lines0[0].startswith("error: cannot write ") and "the disk is full" in lines0[0]
    assert len(lines1) == 1 and re.match(r"error: rank 0 \(host \S+, pid \d+\) failed in checkpoint after step \d+: "
                                         r"cannot write ", lines1[0]), lines1
    assert lines1[0].endswith(lines0[0].removeprefix("error: "))
    log = (tmp_path / "yolox_nano_shapes" / "train_log.txt").read_text()
    assert "training done" not in log      # the run did not finish: it must not say so


def test_ssd_ctrl_c_does_not_say_finished(drill_data, tmp_path):
    from loguru import logger

    run = ssd_run(drill_data["ssd"], tmp_path, "-b", "2", "-e", "1")     # (re)sets loguru's sinks
    log_lines = []
    logger.add(lambda m: log_lines.append(str(m)), format="{message}", level="INFO")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run.step = interrupted
    with pytest.raises(KeyboardInterrupt):
        run.fit()
    assert any("train / 1 val images" in ln for ln in log_lines)      # the sink saw the run
    assert not [ln for ln in log_lines if "finished at iteration" in ln or "training done" in ln]
