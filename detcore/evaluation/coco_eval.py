"""COCO bbox scoring shared by both detectors: rows on every rank -> gather -> score on the
main process -> the same result broadcast to every rank.

faster-coco-eval (a C++ port of COCOeval) gives the same numbers as pycocotools several times
faster (bench/eval.py); it is used when installed, pycocotools otherwise. Either way the printed
summary is the standard 12-line pycocotools text, formatted here from the stats, followed by
the per-class table of ``detcore.evaluation.class_stats`` computed from the same evaluation.
"""
import contextlib
import io
from dataclasses import dataclass

import numpy as np
from loguru import logger

from accel import all_gather_object, broadcast_object, is_main_process
from detcore.evaluation.class_stats import class_stats

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


@dataclass
class CocoScore:
    """The 12 COCO stats (zeros without detections), the printable summary and the per-class
    report (``detcore.evaluation.class_stats.ClassStats``; None when it could not be computed)."""
    stats: np.ndarray
    summary: str
    classes: object = None
    rows: np.ndarray = None

    @property
    def ap50_95(self):
        return float(self.stats[0])

    @property
    def ap50(self):
        return float(self.stats[1])


def score(coco_gt, rows, img_ids=None):
    """Score rows ``[N, 7]`` in this process: the 12 stats, the standard summary, and from the
    same evaluation the per-class table, curves and confusion matrix. A failure of the per-class
    part (it is a report, not the metric) is one warning line; the stats stand."""
    img_ids = sorted(coco_gt.getImgIds() if img_ids is None else img_ids)
    if len(rows) == 0:
        coco_eval, summary = None, "no detections: AP and AR are 0\n"
    else:
        coco_eval = evaluate_bbox(coco_gt, rows, img_ids)
        summary = format_summary(coco_eval.stats)
    classes = None
    try:
        classes = class_stats(coco_eval, coco_gt, rows, img_ids)
        summary += classes.table() + "\n"
    except Exception as exc:       # noqa: BLE001 -- a report must not end a training run
        logger.warning(f"per-class statistics not computed ({type(exc).__name__}: {exc}); "
                       "the COCO stats above are complete")
    return CocoScore(np.zeros(12) if coco_eval is None else coco_eval.stats, summary, classes)


def drop_non_finite(rows):
    """An early, diverging model can decode inf/nan boxes; pycocotools must not see them."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return rows[np.isfinite(rows).all(axis=1)]


def gather_and_score(coco_gt, local_rows, img_ids, seconds=0.0, images=0, keep_rows=False):
    """Every rank's detection rows -> COCOeval on the main process -> the same CocoScore on every
    rank. ``seconds``/``images`` (this rank's forward + NMS time) add a timing line.

    ``coco_gt``: the pycocotools index, or a function returning it, called on the main process
    only: a data set builds its index on first use, so the other ranks never build theirs.
    ``keep_rows``: the main process's result also carries every rank's rows (``.rows``), for
    ``--analyze`` and a run's ``best_detections.npy``; they are not broadcast (other ranks: None).
    """
    gathered = all_gather_object((drop_non_finite(local_rows), seconds, images))
    result, rows = None, None
    if is_main_process():
        rows = np.concatenate([g[0] for g in gathered])
        result = score(coco_gt() if callable(coco_gt) else coco_gt, rows, img_ids)
        secs, n = max(g[1] for g in gathered), sum(g[2] for g in gathered)
        if n:
            result.summary = (f"Average forward + NMS time: {1000.0 * secs / n:.2f} ms per image "
                              f"({n} images)\n" + result.summary)
    result = broadcast_object(result, src=0)
    if keep_rows and rows is not None:      # the main process: its rows, never sent to the others
        result.rows = rows
    return result
