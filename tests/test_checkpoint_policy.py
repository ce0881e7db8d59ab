"""The checkpoint policy and preemption pieces on their own: periodic files, rotation, which file
a run resumes from, when it resumes by itself, the preemption flag and the loader-worker shield."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detcore.training.checkpoints import save_atomic
from accel.errors import PREEMPTED_EXIT_CODE, Preempted, UserError, cli_entry
from accel.preemption import PreemptionGuard
from detcore.training.checkpoints import Checkpoints, check_same_run, rank_states, restore_rank_state

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"max_epoch": 2, "batch_size": 4, "input_size": (160, 160)}


def write(cps, iteration, preempted=False, config=CONFIG):
    path = cps.periodic_path(iteration)
    save_atomic({"iteration": iteration, "preempted": preempted, "run_config": dict(config)}, path)
    return path


def names(cps):
    return [p.name for _, p in cps.periodic()]


def test_due_every_k_iterations_only():
    cps = Checkpoints("unused", "latest.pth", every=3)
    assert [i for i in range(1, 10) if cps.due(i)] == [3, 6, 9]
    assert not any(Checkpoints("unused", "latest.pth", every=0).due(i) for i in range(1, 10))
    with pytest.raises(UserError, match="keep"):
        Checkpoints("unused", "latest.pth", keep=0)


def test_rotation_keeps_the_newest_m_and_the_epoch_end_supersedes(tmp_path):
    cps = Checkpoints(tmp_path, "latest_ckpt.pth", every=2, keep=2)
    for it in (2, 4, 6, 8):
        cps.save_periodic({"iteration": it}, it)
    assert names(cps) == ["iter_00000006_ckpt.pth", "iter_00000008_ckpt.pth"]
    save_atomic({"iteration": 6}, tmp_path / "latest_ckpt.pth")
    cps.superseded(6)                       # the epoch-end file holds iteration 6: older ones go
    assert names(cps) == ["iter_00000008_ckpt.pth"]
    assert cps.newest() == tmp_path / "iter_00000008_ckpt.pth"
    cps.superseded(8)
    assert cps.newest() == tmp_path / "latest_ckpt.pth"


def test_newest_never_picks_a_half_written_file(tmp_path):
    cps = Checkpoints(tmp_path, "latest_ckpt.pth", every=1)
    assert cps.newest() is None
    write(cps, 3)
    # what a write killed midway leaves (detcore.files.write_atomic's temp file), and a stray copy
    (tmp_path / ".iter_00000009_ckpt.pth.abc123.tmp").write_bytes(b"\x00" * 10)
    (tmp_path / "iter_00000011_ckpt.pth.partial").write_bytes(b"\x00" * 10)
    assert cps.newest() == tmp_path / "iter_00000003_ckpt.pth"


def test_resumes_by_itself_only_after_a_restart_or_a_preemption(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    cps = Checkpoints(tmp_path, "latest_ckpt.pth", every=1)
    write(cps, 4)
    assert cps.auto_resume(CONFIG, "--resume") == (None, None)      # a finished or crashed run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    path, state = cps.auto_resume(CONFIG, "--resume")
    assert path == cps.periodic_path(4) and state["iteration"] == 4
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    write(cps, 5, preempted=True)
    path, state = cps.auto_resume(CONFIG, "--resume")
    assert path == cps.periodic_path(5) and state["preempted"]


def test_a_fresh_start_beside_an_epoch_end_file_does_not_load_it(tmp_path, monkeypatch):
    """Preemption checkpoints are periodic files, so a fresh start next to a finished run's
    latest file decides without loading it (a whole checkpoint, on every rank); after a torchrun
    restart that file is loaded and resumed."""
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    cps = Checkpoints(tmp_path, "latest_ckpt.pth", every=1)
    cps.latest.write_bytes(b"not a checkpoint: loading it would fail")
    assert cps.auto_resume(CONFIG, "--resume") == (None, None)
    save_atomic({"iteration": 8, "preempted": False, "run_config": dict(CONFIG)}, cps.latest)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    path, state = cps.auto_resume(CONFIG, "--resume")
    assert path == cps.latest and state["iteration"] == 8


def test_never_resumes_another_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    cps = Checkpoints(tmp_path, "latest_ckpt.pth", every=1)
    write(cps, 5, preempted=True)
    with pytest.raises(UserError, match=r"another configuration \(max_epoch 2 -> 3\)"):
        cps.auto_resume({**CONFIG, "max_epoch": 3}, "--resume")
    # a list and a tuple of the same values are the same setting (a checkpoint round-trip)
    check_same_run({"run_config": {"input_size": [160, 160]}}, {"input_size": (160, 160)}, "f", "x")
    with pytest.raises(UserError, match="no run_config"):
        check_same_run({"model": {}}, CONFIG, "old.pth", "pass --resume")


def test_a_fresh_run_clears_an_earlier_runs_periodic_files(tmp_path):
    cps = Checkpoints(tmp_path, "latest_ckpt.pth", every=1)
    write(cps, 7)
    save_atomic({}, tmp_path / "latest_ckpt.pth")
    cps.clear()
    assert cps.periodic() == [] and (tmp_path / "latest_ckpt.pth").is_file()


def test_rank_state_round_trip_restores_rng_and_buffers():
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(0.5)
    torch.manual_seed(11)
    states = rank_states(bn)
    expected = torch.rand(4)
    bn.running_mean.zero_()
    torch.manual_seed(99)
    assert restore_rank_state(states, bn)
    assert torch.equal(torch.rand(4), expected)
    assert torch.equal(bn.running_mean, torch.full((3,), 0.5))
    assert not restore_rank_state(states * 2, bn)       # written by 2 ranks, this run has 1


def test_preemption_flag_and_handlers_restored():
    previous = signal.getsignal(signal.SIGUSR1)
    guard = PreemptionGuard()
    try:
        assert not guard.requested()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert guard.requested() and guard.signal_name == "SIGUSR1"
    finally:
        guard.close()
    assert signal.getsignal(signal.SIGUSR1) == previous


def test_preempted_is_one_line_and_exit_143(capsys):
    @cli_entry
    def main():
        raise Preempted("SIGTERM at epoch 2, iteration 9; checkpoint out/iter_00000009_ckpt.pth")

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == PREEMPTED_EXIT_CODE == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["preempted: SIGTERM at epoch 2, iteration 9; checkpoint out/iter_00000009_ckpt.pth"]


def run_script(code, timeout=60):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_a_second_signal_ends_the_process_at_once():
    run = run_script("""
        import os, signal, time
        from accel.preemption import PreemptionGuard
        guard = PreemptionGuard()
        os.kill(os.getpid(), signal.SIGTERM)
        print("flag", guard.signum == signal.SIGTERM, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        print("still alive")
    """)
    assert run.stdout.split() == ["flag", "True"] and run.returncode == -signal.SIGTERM


def test_loader_workers_outlive_a_schedulers_sigterm_but_obey_their_parent():
    """SIGTERM sent to a worker by someone else (a scheduler signals every process of a job) is
    ignored: the loader delivers every batch. The loader's own shutdown still ends the worker,
    and the interpreter exits without hanging (multiprocessing terminates daemonic workers)."""
    run = run_script("""
        import os, subprocess, time
        import torch
        from torch.utils.data import DataLoader, Dataset
        from accel.preemption import shield_worker

        class Slow(Dataset):
            def __len__(self):
                return 6
            def __getitem__(self, i):
                time.sleep(0.2)
                return torch.tensor([i, os.getpid()])

        loader = DataLoader(Slow(), batch_size=1, num_workers=1, worker_init_fn=shield_worker,
                            persistent_workers=True)
        seen = []
        for i, batch in enumerate(loader):
            if i == 1:      # from another process, as a scheduler's
                subprocess.run(["kill", "-TERM", str(int(batch[0, 1]))], check=True)
            seen.append(int(batch[0, 0]))
        print("seen", seen, flush=True)
        it = iter(loader)          # the persistent worker is kept alive at exit
        next(it)
    """)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "seen [0, 1, 2, 3, 4, 5]" in run.stdout


class RaisedFlag:
    """A PreemptionGuard whose signal has arrived (``requested()`` True) or not."""

    def __init__(self, raised):
        self.raised, self.signal_name = raised, "SIGUSR1"

    def requested(self):
        return self.raised


def test_after_step_preempts_with_a_checkpoint_at_this_iteration(tmp_path):
    cps = Checkpoints(tmp_path, "latest.pth", every=0)
    built = []

    def state(preempted=False):
        built.append(preempted)
        return {"iteration": 7, "preempted": preempted}

    with pytest.raises(Preempted) as info:
        cps.after_step(7, 2, RaisedFlag(True), state)
    assert str(info.value) == (f"SIGUSR1 at epoch 2, iteration 7; checkpoint {cps.periodic_path(7)}; "
                               "run the same command again to continue from it")
    assert built == [True] and names(cps) == ["iter_00000007_ckpt.pth"]
    with pytest.raises(Preempted, match=r"^SIGUSR1 at epoch 2, iteration 8; no checkpoint \(--no-save\)$"):
        cps.after_step(8, 2, RaisedFlag(True), state, save=False)
    assert built == [True] and names(cps) == ["iter_00000007_ckpt.pth"]   # --no-save wrote nothing


def test_after_step_writes_periodic_files_when_due_but_not_at_an_epoch_end(tmp_path):
    cps = Checkpoints(tmp_path, "latest.pth", every=3, keep=5)
    built = []

    def state(preempted=False):
        built.append(preempted)
        return {"preempted": preempted}

    for it in range(1, 10):
        cps.after_step(it, 1, RaisedFlag(False), state, epoch_end=it == 6)
    cps.after_step(12, 2, None, state, save=False)                 # --no-save: never, even when due
    assert names(cps) == ["iter_00000003_ckpt.pth", "iter_00000009_ckpt.pth"] and built == [False, False]


def test_run_config_drops_volatile_keys_and_counts_a_given_seed_only():
    from detcore.training.checkpoints import run_config
    settings = {"max_epoch": 3, "output_dir": "a", "seed": 9, "lr": 0.1}
    assert run_config(settings, ("output_dir", "seed")) == {"max_epoch": 3, "lr": 0.1}
    assert run_config(settings, ("output_dir", "seed"), seed=9, world_size=2) == {
        "max_epoch": 3, "lr": 0.1, "world_size": 2, "seed": 9}
    assert run_config(settings, ("output_dir", "seed"), seed=0)["seed"] == 0       # seed 0 is a seed


def test_training_state_round_trip_restores_optimizer_precision_watch_and_rng():
    from accel import Precision
    from detcore.training.checkpoints import restore_rng, restore_training_state, training_state
    from detcore.training.early_stop import MetricWatch

    def build():
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 2)
        return net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    net, opt = build()
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    watch = MetricWatch("ap50", patience=3)
    watch.update(0.25, 1)
    watch.update(0.20, 2)
    state = training_state(opt, Precision("cpu"), 17, {"lr": 0.1}, watch, [net], preempted=True)
    assert state["seed"] == 17 and state["run_config"] == {"lr": 0.1, "seed": 17} and state["preempted"]
    expected = torch.rand(3)                                        # what the run draws next
    net2, opt2 = build()
    watch2 = MetricWatch("ap50", patience=3)
    restore_training_state(state, "x.pth", opt2, Precision("cpu"), watch2)
    restore_rng(state, net2)
    assert torch.equal(torch.rand(3), expected)
    momentum = [o.state_dict()["state"][0]["momentum_buffer"] for o in (opt, opt2)]
    assert torch.equal(*momentum)
    assert (watch2.best, watch2.state_dict()) == (0.25, watch.state_dict())
    wrong = torch.optim.SGD(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)).parameters(), lr=0.1)
    with pytest.raises(UserError, match=r"^checkpoint x\.pth: optimizer state does not fit this model"):
        restore_training_state(state, "x.pth", wrong, Precision("cpu"))
