"""COCO bbox evaluation time: pycocotools vs faster-coco-eval on one fixed detections file.

The detections are the synthetic val set's ground truth, jittered, with some boxes dropped and
false positives added (deterministic from the seed), so AP is neither 0 nor 1. Both evaluators read
the same json files; the 12 summary numbers must agree to 1e-4.
"""
import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import emit, make_shapes


def fake_detections(gt_json, seed=0):
    """Jittered true positives (80% kept) plus two random false positives per image."""
    gt = json.loads(Path(gt_json).read_text())
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [float(x + jit[0]), float(y + jit[1]), float(max(1, w + jit[2])),
                              float(max(1, h + jit[3]))], "score": float(rng.uniform(0.3, 1.0))})
    cat_ids = [c["id"] for c in gt["categories"]]
    for img in gt["images"]:
        for _ in range(2):
            w, h = rng.uniform(8, img["width"] / 3), rng.uniform(8, img["height"] / 3)
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cat_ids)),
                         "bbox": [float(rng.uniform(0, img["width"] - w)),
                                  float(rng.uniform(0, img["height"] - h)), float(w), float(h)],
                         "score": float(rng.uniform(0.0, 0.6))})
    return dets


def run_eval(coco_cls, eval_cls, gt_json, dt_json):
    """Load, evaluate, accumulate, summarize (as an evaluator does); (seconds, the 12 stats)."""
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        gt = coco_cls(gt_json)
        ev = eval_cls(gt, gt.loadRes(dt_json), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return time.perf_counter() - t0, np.array(ev.stats[:12])


def evaluators():
    """(name, COCO class, COCOeval class) for each evaluator that is installed."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    found = [("pycocotools", COCO, COCOeval)]
    try:
        from faster_coco_eval import COCO as FastCOCO, COCOeval_faster
        found.append(("faster_coco_eval", FastCOCO, COCOeval_faster))
    except ImportError as exc:
        emit(bench="coco_eval", evaluator="faster_coco_eval", skipped=f"not installed: {exc}")
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--num-val", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_shapes(tmp, 0, args.num_val, seed=1)
        gt_json = str(Path(tmp) / "annotations" / "instances_val2017.json")
        dt_json = str(Path(tmp) / "dets.json")
        dets = fake_detections(gt_json)
        Path(dt_json).write_text(json.dumps(dets))
        results = {}
        for name, coco_cls, eval_cls in evaluators():
            runs = [run_eval(coco_cls, eval_cls, gt_json, dt_json) for _ in range(args.repeat)]
            secs = float(np.median([r[0] for r in runs]))
            results[name] = (secs, runs[0][1])
            emit(bench="coco_eval", evaluator=name, images=args.num_val, detections=len(dets),
                 secs=round(secs, 4), AP=round(float(runs[0][1][0]), 5), AP50=round(float(runs[0][1][1]), 5))
        if len(results) == 2:
            (t_ref, s_ref), (t_fast, s_fast) = results["pycocotools"], results["faster_coco_eval"]
            emit(bench="coco_eval_compare", speedup=round(t_ref / t_fast, 2),
                 max_abs_stat_diff=float(np.abs(s_ref - s_fast).max()),
                 equal_1e4=bool(np.abs(s_ref - s_fast).max() <= 1e-4))


if __name__ == "__main__":
    main()
