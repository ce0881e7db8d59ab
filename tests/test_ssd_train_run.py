"""Real SSD training steps on CPU: finite losses, and a resumed run continues bit-exactly."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    from conftest import load_make_shapes

    return load_make_shapes()(tmp_path_factory.mktemp("ssd_run"), num_train=4, num_val=2, seed=1)


def train(data, out, *extra, launcher=(), seed=("-s", "5")):
    cmd = [*launcher, "ssd/train.py", "-d", str(data), "-b", "1", "-e", "1", "--val-interval", "100",
           "--log-interval", "1", "--num-workers", "0", *map(str, seed), "--deterministic", "--output-dir", str(out),
           *map(str, extra)]
    run = subprocess.run(cmd if launcher else [sys.executable, *cmd], cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-1500:] + run.stderr[-1500:]
    return run.stdout + run.stderr     # the MLPerf lines and the loguru training log


def losses(log):
    return {int(i): float(v) for i, v in re.findall(r"\| iteration (\d+) epoch \d+ loss (\S+)", log)}


def test_resume_continues_at_saved_iteration_with_saved_state(tiny_coco, tmp_path):
    # the split run draws its seed (no -s) and resumes without it: the checkpoint carries it
    first = train(tiny_coco, tmp_path / "split", "--end-iteration", 1, seed=())
    ckpt1 = torch.load(tmp_path / "split" / "ssd300_latest.pth", weights_only=True)
    assert ckpt1["iteration"] == 1 and ckpt1["epoch"] == 0  # stopped inside epoch 0
    straight = train(tiny_coco, tmp_path / "straight", "--end-iteration", 2, seed=("-s", ckpt1["seed"]))
    resumed = train(tiny_coco, tmp_path / "split", "--end-iteration", 2,
                    "--checkpoint", tmp_path / "split" / "ssd300_latest.pth", seed=())
    assert "at iteration 1" in resumed and "finished at iteration 2" in resumed
    full, parts = losses(straight), {**losses(first), **losses(resumed)}
    assert sorted(full) == sorted(parts) == [1, 2] and all(math.isfinite(v) for v in full.values())
    assert parts == full  # iteration 2 saw the same batch, weights and momentum
    a = torch.load(tmp_path / "straight" / "ssd300_latest.pth", weights_only=True)
    b = torch.load(tmp_path / "split" / "ssd300_latest.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])


def test_opt_adamw_resumes_exactly_and_refuses_another_optimizer(tiny_coco, tmp_path):
    """``--opt adamw``: torch's AdamW at the batch-scaled lr and the given weight decay; its state
    (exp_avg, exp_avg_sq, step) resumes bit-exactly; a resume with another --opt is one line."""
    ckpt = tmp_path / "split" / "ssd300_latest.pth"
    flags = ("--opt", "adamw", "--lr", 0.004, "--wd", 1e-4)
    first = train(tiny_coco, tmp_path / "split", *flags, "--end-iteration", 1)
    state = torch.load(ckpt, weights_only=True)
    assert state["opt"] == "adamw"
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.004 / 32) and group["weight_decay"] == 1e-4
    assert "exp_avg_sq" in next(iter(state["optimizer"]["state"].values()))
    assert '"key": "opt_name", "value": "adamw"' in first and "will not be compliant" in first
    straight = train(tiny_coco, tmp_path / "straight", *flags, "--end-iteration", 2)
    resumed = train(tiny_coco, tmp_path / "split", *flags, "--end-iteration", 2, "--checkpoint", ckpt)
    assert {**losses(first), **losses(resumed)} == losses(straight)
    a = torch.load(tmp_path / "straight" / "ssd300_latest.pth", weights_only=True)["optimizer"]["state"]
    b = torch.load(ckpt, weights_only=True)["optimizer"]["state"]
    for key in a:
        assert torch.equal(a[key]["exp_avg_sq"], b[key]["exp_avg_sq"])
    switched = subprocess.run(
        [sys.executable, "ssd/train.py", "-d", str(tiny_coco), "-b", "1", "--num-workers", "0",
         "--output-dir", str(tmp_path / "split"), "--checkpoint", str(ckpt), "--end-iteration", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    err = [ln for ln in switched.stderr.splitlines() if ln.startswith("error")]
    assert switched.returncode == 2 and len(err) == 1, switched.stderr[-800:]
    assert "trained with --opt adamw; resume it with the same --opt (got --opt sgd)" in err[0]


def test_encode_in_workers_trains_on_the_same_targets(tiny_coco, tmp_path):
    """The per-image encoding of ``--encode-in workers`` reaches the step encoded (not encoded twice):
    the same losses as the default batched encoding, iteration by iteration."""
    main = train(tiny_coco, tmp_path / "main", "--end-iteration", 2)
    workers = train(tiny_coco, tmp_path / "workers", "--end-iteration", 2, "--encode-in", "workers")
    assert sorted(losses(main)) == [1, 2]
    assert losses(workers) == pytest.approx(losses(main), rel=1e-5)


def test_run_trains_channels_last_on_cpu_with_nchw_outputs(tiny_coco, tmp_path):
    """SSDRun places the network as YOLOX's trainer does: channels_last on CPU, where oneDNN
    reorders an NCHW tensor at every convolution (the fp32 step went from 3.25 to 2.91 s on the
    Xeon, bench/ssd_step.py); its outputs equal an NCHW copy's (same weights, fp32 rounding)."""
    import copy

    from ssd.step import to_model_input
    from yolox_tools import layout_bearing, ssd_run

    run = ssd_run(tiny_coco, tmp_path, "-b", "1")
    try:
        assert layout_bearing(run.net) and all(w.is_contiguous(memory_format=torch.channels_last)
                                               for w in layout_bearing(run.net))
        nchw = copy.deepcopy(run.net).to(memory_format=torch.contiguous_format).eval()
        assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in layout_bearing(nchw))
        imgs = torch.rand(1, 3, 300, 300)
        batch = to_model_input(imgs, run.device)
        assert batch.is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            for a, b in zip(run.net.eval()(batch), nchw(imgs)):
                assert (a - b).abs().max() <= 1e-5 * b.abs().max(), ((a - b).abs().max(), b.abs().max())
    finally:
        run.lock.release()
