"""COCO bbox scoring shared by both detectors: rows on every rank -> gather -> score on the
main process -> the same result broadcast to every rank.

faster-coco-eval (a C++ port of COCOeval) gives the same numbers as pycocotools several times
faster (bench/eval.py); it is used when installed, pycocotools otherwise. Either way the printed
summary is the standard 12-line pycocotools text, formatted here from the stats.
"""
import contextlib
import io
from dataclasses import dataclass

import numpy as np
from tabulate import tabulate

from accel import all_gather_object, broadcast_object, is_main_process

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


def per_class_ap_table(coco_eval, coco_gt, columns=6):
    """AP (IoU .50:.95, all areas, maxDets 100) per category as a tabulate grid."""
    precision = coco_eval.eval["precision"]          # [T, R, K, A, M]
    cells = []
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        ap = float(np.mean(p)) * 100 if p.size else float("nan")
        cells += [coco_gt.cats[int(cat_id)].get("name", str(cat_id)), f"{ap:.3f}"]
    rows = [cells[i:i + columns] for i in range(0, len(cells), columns)]
    return tabulate(rows, headers=["class", "AP"] * (columns // 2), tablefmt="pipe", numalign="left")


@dataclass
class CocoScore:
    """The 12 COCO stats (zeros without detections) and the printable summary."""
    stats: np.ndarray
    summary: str

    @property
    def ap50_95(self):
        return float(self.stats[0])

    @property
    def ap50(self):
        return float(self.stats[1])


def score(coco_gt, rows, img_ids=None):
    """Score rows ``[N, 7]`` in this process: stats, standard summary and per-class AP table."""
    if len(rows) == 0:
        return CocoScore(np.zeros(12), "no detections: AP and AR are 0\n")
    coco_eval = evaluate_bbox(coco_gt, rows, img_ids)
    summary = (format_summary(coco_eval.stats) + "per class AP:\n"
               + per_class_ap_table(coco_eval, coco_gt) + "\n")
    return CocoScore(coco_eval.stats, summary)


def drop_non_finite(rows):
    """An early, diverging model can decode inf/nan boxes; pycocotools must not see them."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return rows[np.isfinite(rows).all(axis=1)]


def gather_and_score(coco_gt, local_rows, img_ids, seconds=0.0, images=0):
    """Every rank's detection rows -> COCOeval on the main process -> the same CocoScore on every
    rank. ``seconds``/``images`` (this rank's forward + NMS time) add a timing line.

    ``coco_gt``: the pycocotools index, or a function returning it, called on the main process
    only: a data set builds its index on first use, so the other ranks never build theirs.
    """
    gathered = all_gather_object((drop_non_finite(local_rows), seconds, images))
    result = None
    if is_main_process():
        rows = np.concatenate([g[0] for g in gathered])
        result = score(coco_gt() if callable(coco_gt) else coco_gt, rows, img_ids)
        secs, n = max(g[1] for g in gathered), sum(g[2] for g in gathered)
        if n:
            result.summary = (f"Average forward + NMS time: {1000.0 * secs / n:.2f} ms per image "
                              f"({n} images)\n" + result.summary)
    return broadcast_object(result, src=0)
