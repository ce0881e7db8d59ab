"""YOLOX training data pipeline throughput (Mosaic + MixUp + affine + HSV + flip) on the synthetic
shapes set, images/s with 0 and 2 DataLoader workers, built from the same classes the trainer uses.

``--compare`` runs the identical pipeline built from the released YOLOX's ``yolox.data`` (REF_PYTHON:
a virtualenv with ``yolox==0.3.0``) through ``bench/ref_runner.py data`` and prints the ratio.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

from common import ROOT, emit, make_shapes



def build_loader(data, data_dir, size, batch, workers):
    """The upstream YOLOX-S augmentation settings, from whichever ``yolox.data`` module is given."""
    coco = data.COCODataset(data_dir, json_file="instances_train2017.json", name="train2017",
                            img_size=(size, size), preproc=data.TrainTransform(max_labels=50))
    dataset = data.MosaicDetection(coco, (size, size), True,
                                   data.TrainTransform(max_labels=120, flip_prob=0.5, hsv_prob=1.0),
                                   degrees=10.0, translate=0.1, mosaic_scale=(0.1, 2),
                                   mixup_scale=(0.5, 1.5), shear=2.0, enable_mixup=True,
                                   mosaic_prob=1.0, mixup_prob=1.0)
    sampler = data.YoloBatchSampler(sampler=data.InfiniteSampler(len(dataset), seed=0), batch_size=batch,
                                    drop_last=False, mosaic=True)
    return data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=False,
                           worker_init_fn=data.worker_init_reset_seed, persistent_workers=workers > 0)


def images_per_s(data, data_dir, size, batch, batches, workers):
    """Throughput after the first batch (worker start-up is not throughput). Our loader yields
    uint8 images, which the trainer turns into float32 (the reference's batches) after the
    device copy: on CPU that conversion is in the main process, so it is timed here too."""
    it = iter(build_loader(data, data_dir, size, batch, workers))
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)[0].float()
    return batch * batches / (time.perf_counter() - t0)


def reference_images_per_s(ref_python, data_dir, args, workers):
    proc = subprocess.run([ref_python, str(ROOT / "bench" / "ref_runner.py"), "data",
                           json.dumps({"data_dir": data_dir, "size": args.size, "batch": args.batch,
                                       "batches": args.batches, "workers": workers})],
                          capture_output=True, text=True, cwd=data_dir)
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["img_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--num-train", type=int, default=128)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--compare", action="store_true", help="also time the released YOLOX pipeline")
    ap.add_argument("--ref-python", default=os.environ.get("REF_PYTHON", "/work/ref_compare/venv/bin/python"))
    args = ap.parse_args()

    import yolox.data as ours
    with tempfile.TemporaryDirectory() as tmp:
        make_shapes(tmp, args.num_train, 0, seed=0)
        for workers in [int(w) for w in args.workers.split(",")]:
            rate = images_per_s(ours, tmp, args.size, args.batch, args.batches, workers)
            row = dict(bench="yolox_data", size=args.size, batch=args.batch, workers=workers,
                       img_s=round(rate, 2))
            if args.compare:
                ref = reference_images_per_s(args.ref_python, tmp, args, workers)
                row.update(ref_img_s=round(ref, 2), speedup_vs_ref=round(rate / ref, 3))
            emit(**row)


if __name__ == "__main__":
    main()
