"""COCO bbox scoring shared by both detectors.

faster-coco-eval (a C++ port of COCOeval) gives the same numbers as pycocotools several times
faster (bench/eval.py); it is used when installed, pycocotools otherwise. Either way the printed
summary is the standard 12-line pycocotools text, formatted here from the stats.
"""
import contextlib
import io

import numpy as np

# (metric, IoU range, area, maxDets) of the 12 COCO stats, in pycocotools' order.
_STATS = (
    ("AP", "0.50:0.95", "all", 100), ("AP", "0.50", "all", 100), ("AP", "0.75", "all", 100),
    ("AP", "0.50:0.95", "small", 100), ("AP", "0.50:0.95", "medium", 100),
    ("AP", "0.50:0.95", "large", 100),
    ("AR", "0.50:0.95", "all", 1), ("AR", "0.50:0.95", "all", 10), ("AR", "0.50:0.95", "all", 100),
    ("AR", "0.50:0.95", "small", 100), ("AR", "0.50:0.95", "medium", 100),
    ("AR", "0.50:0.95", "large", 100),
)


def _evaluator_class():
    try:
        from faster_coco_eval import COCOeval_faster
        return COCOeval_faster
    except ImportError:
        from pycocotools.cocoeval import COCOeval
        return COCOeval


def format_summary(stats):
    """The 12 summary lines exactly as pycocotools' ``COCOeval.summarize()`` prints them."""
    lines = []
    for value, (metric, iou, area, max_dets) in zip(stats, _STATS):
        title = "Average Precision" if metric == "AP" else "Average Recall"
        lines.append(f" {title:<18} ({metric}) @[ IoU={iou:<9} | area={area:>6s} | "
                     f"maxDets={max_dets:>3d} ] = {value:0.3f}")
    return "\n".join(lines) + "\n"


def evaluate_bbox(coco_gt, rows, img_ids=None):
    """Score detection rows ``[N, 7]`` (image_id, x, y, w, h, score, category_id) against a
    pycocotools ``COCO``; returns the evaluated COCOeval (``.stats``, ``.eval["precision"]``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = _evaluator_class()(coco_gt, coco_gt.loadRes(np.asarray(rows)), "bbox")
        coco_eval.params.imgIds = sorted(coco_gt.getImgIds() if img_ids is None else img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    coco_eval.stats = np.asarray(coco_eval.stats[:12], dtype=np.float64)
    return coco_eval
