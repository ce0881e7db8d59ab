"""Where SSD training targets should be encoded, measured end to end: images/s of loader + encoding
+ training step, with encoding

* ``main``: batched in the main process, today's path: the loader's ``collate`` pads the boxes and
  ``TrainStep`` calls ``Encoder.encode_batch`` on the whole batch;
* ``workers``: per image in the loader workers, the MLPerf reference's way (its transform calls
  ``Encoder.encode`` on every sample): each worker returns [8732, 4] / [8732] targets, they are
  stacked, and ``TrainStep(..., encoded=True)`` skips encoding.

Both pipelines are built here from the trainer's own pieces (``ssd.data.CocoDetection``,
``EpochSampler``, ``collate`` / ``EncodedTargets`` + ``collate_encoded`` of ``--encode-in workers``,
``ssd.encoder.Encoder``, ``ssd.step.TrainStep``), on the same images in the same order with the
same augmentation draws and the same initial weights; the first step's loss of both is printed and
must agree. Rounds alternate the two pipelines so that drift of a shared machine hits both; the
median round counts.
Each round also times the loader alone (no training step), which shows what the encoding costs
the workers.

Usage: python bench/ssd_encode_where.py [--data COCO_ROOT] [--batch 8] [--batches 20] [--workers 2]
Without ``--data`` a synthetic shapes set (tools/make_shapes.py) is generated in a temporary
directory.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common import emit, machine, make_shapes

from accel import Precision  # noqa: E402
from ssd import SSD300, Encoder, Loss, dboxes300_coco  # noqa: E402
from ssd.data import (CocoDetection, EncodedTargets, EpochSampler, coco_paths, collate,  # noqa: E402
                      collate_encoded)
from ssd.step import TrainStep, place_model  # noqa: E402

PIPELINES = ("main", "workers")
PREFETCH = 2    # DataLoader's default prefetch_factor: batches each worker may have ready


def make_loader(dataset, pipeline, batch, workers):
    """The trainer's loader arguments (its sampler, whole batches) for one pipeline."""
    sampler = EpochSampler(len(dataset), batch, 0, 1, seed=0)
    if pipeline == "workers":
        return DataLoader(EncodedTargets(dataset, Encoder(dboxes300_coco())), batch_size=batch, sampler=sampler,
                          drop_last=True, num_workers=workers, collate_fn=collate_encoded)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                      collate_fn=collate)


def run_pipeline(dataset, pipeline, state, args):
    """(end-to-end img/s, loader-alone img/s, first step's loss). The first batch (worker start-up)
    and the first step (allocations) are a warm-up and are not timed. Timing the loader alone
    starts only after the batches the workers could prefetch meanwhile (``PREFETCH`` per worker)
    are taken too: they were made while nobody was timing. The end-to-end loop needs no such
    skip: its queue is as full at the end as at the start whenever loading keeps up with the step."""
    it = iter(make_loader(dataset, pipeline, args.batch, args.workers))
    for _ in range(1 + PREFETCH * args.workers):
        next(it)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    loader_img_s = args.batch * args.batches / (time.perf_counter() - t0)
    del it

    dboxes = dboxes300_coco()
    model = SSD300(label_num=dataset.num_classes)
    model.load_state_dict(state)
    cpu = torch.device("cpu")
    place_model(model, cpu).train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    step = TrainStep(model, Loss(dboxes), Encoder(dboxes), opt, Precision(cpu, mode="fp32"), cpu, 1)
    encoded = pipeline == "workers"
    it = iter(make_loader(dataset, pipeline, args.batch, args.workers))
    imgs, boxes, labels, _, _ = next(it)
    first_loss = float(step(imgs, boxes, labels, args.lr, encoded=encoded))
    t0 = time.perf_counter()
    for _ in range(args.batches):
        imgs, boxes, labels, _, _ = next(it)
        step(imgs, boxes, labels, args.lr, encoded=encoded)
    return args.batch * args.batches / (time.perf_counter() - t0), loader_img_s, first_loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="COCO root (train2017/, annotations/); default: "
                                                 "a generated shapes set")
    ap.add_argument("--num-train", type=int, default=256, help="images of the generated set")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per pipeline and round")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="main/workers alternations; the median counts")
    ap.add_argument("--lr", type=float, default=2.5e-3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else make_shapes(Path(tmp) / "shapes", args.num_train, 0, seed=0)
        train_dir, train_ann, _, _ = coco_paths(root)
        dataset = CocoDetection(train_dir, train_ann, train=True, seed=0)
        need = args.batch * (args.batches + 1 + PREFETCH * args.workers)
        if len(dataset) < need:
            ap.error(f"{len(dataset)} training images, {need} needed (--batch x (--batches + 1 + "
                     f"{PREFETCH} x --workers)); fewer --batches or a larger --num-train")
        torch.manual_seed(0)
        state = SSD300(label_num=dataset.num_classes).state_dict()
        emit(bench="ssd_encode_where", **machine(), data=str(args.data or f"shapes x {args.num_train}"))
        runs = {p: [] for p in PIPELINES}
        for _ in range(args.rounds):
            for pipeline in PIPELINES:
                runs[pipeline].append(run_pipeline(dataset, pipeline, state, args))
    summary = {}
    for pipeline in PIPELINES:
        e2e = statistics.median(r[0] for r in runs[pipeline])
        summary[pipeline] = e2e
        emit(bench="ssd_encode_where", encode_in=pipeline, batch=args.batch, workers=args.workers,
             batches=args.batches, img_s=round(e2e, 3), img_s_rounds=[round(r[0], 3) for r in runs[pipeline]],
             loader_img_s=round(statistics.median(r[1] for r in runs[pipeline]), 2),
             first_loss=runs[pipeline][0][2])
    main_loss, worker_loss = runs["main"][0][2], runs["workers"][0][2]
    ratio = summary["workers"] / summary["main"]
    # a gap inside the rounds' own spread names no winner (then the default stays)
    spread = max((max(r[0] for r in runs[p]) - min(r[0] for r in runs[p])) / summary[p] for p in PIPELINES)
    emit(bench="ssd_encode_where", summary=True, batch=args.batch, workers=args.workers,
         workers_vs_main=round(ratio, 3), round_spread=round(spread, 3),
         faster="tie" if abs(ratio - 1) <= spread else max(summary, key=summary.get),
         first_loss_rel_diff=abs(main_loss - worker_loss) / abs(main_loss))


if __name__ == "__main__":
    main()
