"""The paired bootstrap comparison (detcore.evaluation.bootstrap.compare) against one plain COCO
evaluation, at COCO val2017's size: 5,000 images x 100 detections, 80 classes.

The data are generated (seeded): ~7 ground-truth boxes per image (1% crowd), run A finds 80% of
them with jittered boxes and fills each image to 100 detections with false positives at lower
scores; run B is the same with its own jitter and draws. Printed as JSON lines: the CPU, the
seconds of one pycocotools evaluation of run A (loadRes, then evaluate + accumulate + summarize;
the ratios use the latter alone, the smaller), of faster-coco-eval when installed, of matching
one run, of ``compare`` with ``--resamples`` (default 1000), and compare / pycocotools (the
issue's bound: <= 3) and compare / faster-coco-eval.
"""
import argparse
import contextlib
import copy
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detcore.evaluation import bootstrap  # noqa: E402
from detcore.evaluation.matches import match_run  # noqa: E402

CPU = "unknown"


def emit(**fields):
    """One JSON line naming the bench and the CPU (as every bench line does), flushed."""
    print(json.dumps({"bench": "compare_bootstrap", "cpu": CPU, **fields}), flush=True)


def cpu_name():
    """lscpu's "Model name" (the CPU every number here was taken on)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown")


def ground_truth(rng, n_images, n_classes, per_image=7):
    """COCO dataset dict: boxes of 10-300 px on 640x480 images, Poisson(7) per image, 1% crowd."""
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 640, "height": 480})
        n = rng.poisson(per_image)
        wh = rng.uniform(10, 300, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * ([640, 480] - wh)
        cls = rng.integers(1, n_classes + 1, n)
        crowd = rng.random(n) < 0.01
        for b in range(n):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(cls[b]),
                         "bbox": [*map(float, xy[b]), *map(float, wh[b])], "area": float(wh[b].prod()),
                         "iscrowd": int(crowd[b])})
    cats = [{"id": k, "name": f"class{k}"} for k in range(1, n_classes + 1)]
    return {"images": images, "annotations": anns, "categories": cats}


def detections(rng, gt, n_classes, per_image=100, recall=0.8):
    """One run: jittered true boxes (score ~ U(0.3, 1)) and false positives (~ U(0, 0.6)) up to
    ``per_image`` detections per image."""
    by_image = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    rows = []
    for img in gt["images"]:
        found = [a for a in by_image.get(img["id"], []) if rng.random() < recall]
        for a in found:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            rows.append({"image_id": img["id"], "category_id": a["category_id"],
                         "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])],
                         "score": float(rng.uniform(0.3, 1.0))})
        n = per_image - len(found)
        wh = rng.uniform(8, 250, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * ([640, 480] - wh)
        cls, score = rng.integers(1, n_classes + 1, n), rng.uniform(0, 0.6, n)
        rows += [{"image_id": img["id"], "category_id": int(cls[b]), "bbox": [*map(float, xy[b]), *map(float, wh[b])],
                  "score": float(score[b])} for b in range(n)]
    return rows


def time_eval(eval_cls, gt, rows):
    """(seconds of loadRes, seconds of evaluate + accumulate + summarize, AP50:95)."""
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        dt = gt.loadRes(copy.deepcopy(rows))
        t1 = time.perf_counter()
        ev = eval_cls(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, float(ev.stats[0])


def make_coco(cls, dataset):
    """A COCO index of ``dataset`` without reading a file."""
    coco = cls()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--skip-pycocotools", action="store_true", help="time only the bootstrap")
    args = ap.parse_args()
    global CPU
    CPU = cpu_name()
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    dataset = ground_truth(rng, args.images, args.classes)
    rows_a = detections(rng, dataset, args.classes)
    rows_b = detections(rng, dataset, args.classes)
    gt = make_coco(COCO, dataset)
    ids = gt.getImgIds()
    emit(images=args.images, classes=args.classes,
         detections=len(rows_a), ground_truth=len(dataset["annotations"]), resamples=args.resamples)
    base, fast = None, None
    if not args.skip_pycocotools:
        load_s, eval_s, ap_coco = time_eval(COCOeval, gt, rows_a)
        base = eval_s
        emit(evaluator="pycocotools", load_res_s=round(load_s, 2), evaluate_accumulate_summarize_s=round(eval_s, 2),
             ap50_95=round(ap_coco, 6))
    try:
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        emit(evaluator="faster_coco_eval", installed=False)
    else:
        load_s, eval_s, ap_fast = time_eval(COCOeval_faster, make_coco(FastCOCO, dataset), rows_a)
        fast = eval_s
        emit(evaluator="faster_coco_eval", load_res_s=round(load_s, 2),
             evaluate_accumulate_summarize_s=round(eval_s, 2), ap50_95=round(ap_fast, 6))
    t0 = time.perf_counter()
    matches = match_run(gt, rows_a, ids)
    t1 = time.perf_counter()
    plain = bootstrap.metrics(matches)["AP50_95"][0, 0]
    t2 = time.perf_counter()
    emit(step="match_run (one run)", seconds=round(t1 - t0, 2), plain_metrics_s=round(t2 - t1, 2),
         ap50_95=round(float(plain), 6))
    t0 = time.perf_counter()
    result = bootstrap.compare(gt, rows_a, rows_b, ids, resamples=args.resamples, seed=0)
    took = time.perf_counter() - t0
    i = result.classes.index("all")
    emit(step=f"compare ({args.resamples} resamples, both runs matched)", seconds=round(took, 2),
         ap50_95_a=round(float(result.a["AP50_95"][i]), 6), ap50_95_b=round(float(result.b["AP50_95"][i]), 6),
         diff=round(float(result.diff["AP50_95"][i]), 6),
         ci=[round(float(result.low["AP50_95"][i]), 6), round(float(result.high["AP50_95"][i]), 6)])
    if base:
        emit(ratio_compare_over_pycocotools=round(took / base, 3), target="<= 3")
    if fast:
        emit(ratio_compare_over_faster_coco_eval=round(took / fast, 3))


if __name__ == "__main__":
    main()
