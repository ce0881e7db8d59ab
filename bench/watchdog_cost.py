"""What the hang watchdog (accel.watchdog) costs a training step: YOLOX-nano, 2 ranks under
torchrun, the real trainer (tools/train.py) with the watchdog on and off (``DETKIT_WATCHDOG=0``),
alternating, ``--repeats`` runs each.

Prints one JSON line per run (median step time of its steps after ``STEP_WARMUP``, from the
trainer's own ``iter_time`` log lines, which are rank 0's wall time per step) and one summary
line per mode plus the on/off ratio of the medians. Run it alone on the machine: the two ranks
share its cores, and anything else running moves step times far more than the watchdog does.

    python bench/watchdog_cost.py                        # 3 runs each, 96 images, batch 8, 320 px
    python bench/watchdog_cost.py --repeats 1 --images 16 --size 160    # a quick check that it runs
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, STEP_WARMUP, emit, machine

SHAPES_EXP = ROOT / "exps" / "example" / "shapes" / "yolox_nano_shapes.py"
ITER_TIME = re.compile(r"iter_time: ([0-9.]+)s")


def make_data(folder, images):
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_shapes.py"), "--out", str(folder),
                    "--num-train", str(images), "--num-val", "2", "--seed", "0"],
                   check=True, capture_output=True)
    return folder


def one_run(data, out, args, watchdog):
    """Step times (s) of one 2-rank training run, rank 0's, after the warm-up steps."""
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // 2)),
               DETKIT_WATCHDOG="1" if watchdog else "0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(ROOT / "tools" / "train.py"), "-f", str(SHAPES_EXP), "-b", str(args.batch), "--device", args.device,
           "--data_dir", str(data), "--seed", "0", "input_size", f"{args.size},{args.size}",
           "test_size", f"{args.size},{args.size}", "data_num_workers", "1", "print_interval", "1",
           "multiscale_range", "0", "max_epoch", "1", "no_aug_epochs", "0", "eval_interval", "100",
           "output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: training run failed (exit {proc.returncode}): "
                         f"{(proc.stdout + proc.stderr).strip().splitlines()[-1:]}")
    times = [float(t) for t in ITER_TIME.findall(proc.stdout + proc.stderr)]
    return times[STEP_WARMUP:] or times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per mode (on, off), alternating")
    ap.add_argument("--images", type=int, default=96, help="training images (one epoch)")
    ap.add_argument("--batch", type=int, default=8, help="global batch (both ranks)")
    ap.add_argument("--size", type=int, default=320, help="input size in pixels")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "hpu"))
    args = ap.parse_args(argv)
    info = {**machine("cuda" if args.device == "cuda" else "cpu"), "device": args.device}
    medians = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data", args.images)
        for k in range(args.repeats):
            for mode in ("on", "off") if k % 2 == 0 else ("off", "on"):
                times = one_run(data, Path(tmp) / f"{mode}{k}", args, mode == "on")
                median = statistics.median(times)
                medians[mode].append(median)
                emit(bench="watchdog_cost", mode=f"watchdog {mode}", run=k, model="yolox-nano", ranks=2,
                     batch=args.batch, size=args.size, steps_timed=len(times),
                     step_s=round(median, 4), **info)
    for mode, values in medians.items():
        emit(bench="watchdog_cost_summary", mode=f"watchdog {mode}", runs=len(values),
             step_s_median=round(statistics.median(values), 4), step_s_runs=[round(v, 4) for v in values])
    emit(bench="watchdog_cost_ratio", on_over_off=round(statistics.median(medians["on"])
                                                       / statistics.median(medians["off"]), 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
