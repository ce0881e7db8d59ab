"""YOLOX loss (batched SimOTA + terms) timing for YOLOX-S heads at 640: 8400 anchors, 80 classes.

Prints one JSON line per (implementation, GT count): median loss time over ``--repeat`` runs
after warm-up, eager and TorchScript. ``--compare`` also times the released YOLOX 0.3.0
``YOLOXHead.get_losses`` on the same tensors when it is importable: run this script with the
interpreter of a virtualenv that has ``yolox==0.3.0``
(e.g. ``REF_VENV/bin/python bench/bench_yolox_loss.py --compare``).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from common import ROOT, emit, machine

from yolox.models.yolo_loss import get_loss_fn  # noqa: E402  (common.py put the repo on sys.path)

STRIDES = (8, 16, 32)


def make_inputs(batch, n_gt, size=640, num_classes=80, seed=0):
    """Head-like outputs (raw offsets decoded to pixels, random logits) and ``n_gt`` boxes per image."""
    g = torch.Generator().manual_seed(seed)
    grids, strides = [], []
    for s in STRIDES:
        n = size // s
        yv, xv = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        grids.append(torch.stack([xv.reshape(-1), yv.reshape(-1)], 1).float())
        strides.append(torch.full((n * n,), float(s)))
    grids, strides = torch.cat(grids), torch.cat(strides)
    a = grids.shape[0]
    raw = torch.randn(batch, a, 4, generator=g) * 0.7
    raw[..., 2:] += 1.0
    logits = torch.randn(batch, a, 1 + num_classes, generator=g) * 2 - 3
    out = torch.cat([(raw[..., :2] + grids) * strides[:, None], raw[..., 2:].exp() * strides[:, None], logits], -1)
    wh = 8 + torch.rand(batch, n_gt, 2, generator=g) * (size / 3)
    cxy = wh / 2 + torch.rand(batch, n_gt, 2, generator=g) * (size - wh)
    cls = torch.randint(0, num_classes, (batch, n_gt, 1), generator=g).float()
    return dict(out=out, raw=raw, grids=grids, strides=strides, targets=torch.cat([cls, cxy, wh], 2))


def time_wall_and_cpu(fn, repeat, warmup):
    """Median wall and process-CPU seconds of ``fn()``; CPU time is the steadier number on a shared machine."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def load_reference_head():
    """Released YOLOXHead, or None. Both packages are named ``yolox``: import the installed one
    with this repo off sys.path, then put this project's modules back."""
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "yolox" or k.startswith("yolox.")}
    saved_path = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "bench")]
    try:
        import yolox as ref
        from yolox.models.yolo_head import YOLOXHead
        return YOLOXHead, ref.__version__
    except ImportError:
        return None
    finally:
        sys.path[:] = saved_path
        for k in [k for k in sys.modules if k == "yolox" or k.startswith("yolox.")]:
            del sys.modules[k]
        sys.modules.update(ours)


def reference_call(head_cls, d, num_classes):
    """Closure running the reference get_losses on the tensors of ``d`` (its list-of-levels API)."""
    head = head_cls(num_classes, width=0.5)
    head.use_l1 = False
    sizes = [(640 // s) ** 2 for s in STRIDES]
    xs = [x.view(1, -1) for x in torch.split(d["grids"][:, 0], sizes)]
    ys = [y.view(1, -1) for y in torch.split(d["grids"][:, 1], sizes)]
    es = [s.view(1, -1) for s in torch.split(d["strides"], sizes)]
    return lambda: head.get_losses(None, xs, ys, es, d["targets"], d["out"], [], torch.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--gts", type=int, nargs="+", default=[5, 50, 100])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="TorchScript profiles its first calls")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compare", action="store_true", help="also time the installed yolox==0.3.x")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    num_classes = 80
    impls = {"eager": get_loss_fn(False), "scripted": get_loss_fn(True)}
    ref = load_reference_head() if args.compare else None
    if args.compare and ref is None:
        emit(bench="yolox_loss", impl="reference", skipped="yolox==0.3.x is not importable here")
    for n_gt in args.gts:
        d = make_inputs(args.batch, n_gt, num_classes=num_classes)
        calls = {
            name: (lambda fn=fn: fn(d["out"], d["raw"], d["grids"], d["strides"], d["targets"], num_classes, False))
            for name, fn in impls.items()
        }
        if ref is not None:
            calls["reference " + ref[1]] = reference_call(ref[0], d, num_classes)
        for name, call in calls.items():
            with torch.no_grad():
                wall, cpu = time_wall_and_cpu(call, args.repeat, args.warmup)
                total = float(call()[0])
            emit(bench="yolox_loss", impl=name, batch=args.batch, gt_per_image=n_gt, anchors=d["out"].shape[1],
                 num_classes=num_classes, median_ms=round(wall * 1e3, 2), median_cpu_ms=round(cpu * 1e3, 2),
                 total_loss=round(total, 4), **machine())


if __name__ == "__main__":
    main()
