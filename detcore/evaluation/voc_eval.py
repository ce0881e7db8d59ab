"""Pascal VOC detection AP, as upstream YOLOX's ``voc_eval`` / ``VOCEvaluator`` compute it.

Definition (the VOC devkit's, via py-faster-rcnn and upstream YOLOX):
- per class, detections sorted by descending score are matched greedily: each takes the ground
  truth box of its image and class with the highest IoU (whether or not that box is already
  taken); above the IoU threshold (strictly, upstream's ``ovmax > ovthresh``) it is a true
  positive if that box is not difficult and not yet taken, a false positive (duplicate) if it
  is taken, and neither if the box is difficult; at or below the threshold it is a false positive;
- difficult boxes do not count as positives;
- IoU uses the devkit's inclusive-pixel convention (width = x2 - x1 + 1); the boxes here are the
  0-based ones of ``detcore.data.voc`` (upstream writes detections + 1 and reads the xml's 1-based
  boxes, the same IoU);
- AP is the area under the precision envelope (all points) or, with ``use_07_metric``, VOC2007's
  mean of the envelope at the 11 recalls 0, 0.1, ..., 1 (taken as exact tenths);
- mAP50 is the class mean at IoU 0.5; mAP50:95 the mean over IoU 0.50, 0.55, ..., 0.95 (upstream
  HEAD's ``evaluate_detections``), each with the metric the set's year calls for.

Classes without a single non-difficult box have no defined AP (NaN) and are left out of the
means (upstream would divide by zero). Matching is vectorised: the max-IoU box of each detection
does not depend on earlier matches, so a detection is a true positive exactly when it is the
first (in score order) to pick a given non-difficult box; only the per-class AP loop remains.
"""
from dataclasses import dataclass, field

import numpy as np

from accel import all_gather_object, broadcast_object, is_main_process
from detcore.data.index import find_sorted

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_RULE = "-" * 62


def rows_from_coco(rows, class_ids):
    """COCO result rows (image_id, x, y, w, h, score, category_id) -> the rows scored here
    (image_id, x1, y1, x2, y2, score, class index in the sorted ``class_ids``): both detectors'
    evaluation loops produce COCO rows, and a VOC source's category ids are its class indices."""
    rows = np.array(rows, dtype=np.float64).reshape(-1, 7)
    rows[:, 3:5] += rows[:, 1:3]
    rows[:, 6] = np.searchsorted(np.asarray(class_ids, dtype=np.float64), rows[:, 6])
    return rows


def voc_ap(rec, prec, use_07_metric=False):
    """AP of one class from its recall/precision curve (arrays in detection order)."""
    rec, prec = np.asarray(rec, dtype=np.float64), np.asarray(prec, dtype=np.float64)
    if rec.size == 0:
        return 0.0
    if use_07_metric:
        # envelope[i] = max precision at recall >= rec[i] (recall is non-decreasing)
        envelope = np.maximum.accumulate(prec[::-1])[::-1]
        first = np.searchsorted(rec, np.arange(11) / 10.0, side="left")
        hit = first < rec.size
        return float(envelope[first[hit]].sum() / 11.0)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def _positions(img_ids, ids):
    """Position of each of ``img_ids`` in the list ``ids`` (-1 when absent), without a dict
    lookup per detection."""
    ids, img_ids = np.asarray(ids, dtype=np.int64), np.asarray(img_ids, dtype=np.float64)
    if ids.size == 0:
        return np.full(len(img_ids), -1, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    at = find_sorted(ids[order], img_ids)
    return np.where(at >= 0, order[at], -1).astype(np.int64)


def _ground_truth(source):
    """All kept boxes of ``source`` flattened: (boxes [G,4], class [G], image position in
    ``source.ids`` [G], difficult [G])."""
    # a COCO source has no difficult flags: every box counts
    flags = getattr(source, "difficult", None)
    per = [(b, c, flags[i] if flags is not None else np.zeros(len(b), bool))
           for i in source.ids for b, c in [source.boxes[i][:2]]]
    counts = np.array([len(b) for b, _, _ in per], dtype=np.int64)
    boxes = np.concatenate([b for b, _, _ in per]).reshape(-1, 4) if per else np.zeros((0, 4))
    cls = np.concatenate([c for _, c, _ in per]).astype(np.int64) if per else np.zeros(0, np.int64)
    diff = np.concatenate([d for _, _, d in per]).astype(bool) if per else np.zeros(0, bool)
    img = np.repeat(np.arange(len(per), dtype=np.int64), counts)
    return boxes, cls, img, diff


def _iou_inclusive(a, b):
    """Row-wise IoU of boxes ``a`` and ``b`` [N, 4] with the devkit's +1 pixel widths."""
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0, 0.0)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0] + 1.0) * (x[:, 3] - x[:, 1] + 1.0)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def best_overlaps(det_boxes, det_key, gt_boxes, gt_key):
    """For each detection, the IoU with and the index of the ground-truth box of the same key
    (image x class) with the highest IoU (first such box on ties, as ``np.argmax``); -inf / -1
    when its image has no box of its class. Vectorised over (detection, same-key box) pairs."""
    n = len(det_key)
    ovmax, jmax = np.full(n, -np.inf), np.full(n, -1, dtype=np.int64)
    order = np.argsort(gt_key, kind="stable")
    sorted_keys = gt_key[order]
    start = np.searchsorted(sorted_keys, det_key, side="left")
    count = np.searchsorted(sorted_keys, det_key, side="right") - start
    if n == 0 or count.sum() == 0:
        return ovmax, jmax
    det = np.repeat(np.arange(n), count)
    offset = np.arange(len(det)) - np.repeat(np.cumsum(count) - count, count)
    gt = order[np.repeat(start, count) + offset]
    iou = _iou_inclusive(det_boxes[det], gt_boxes[gt])
    # per detection: highest IoU first, then the earliest box (pairs are in box order)
    best = np.lexsort((np.arange(len(det)), -iou, det))
    first = best[np.r_[True, det[best][1:] != det[best][:-1]]]
    ovmax[det[first]], jmax[det[first]] = iou[first], gt[first]
    return ovmax, jmax


@dataclass
class VocScore:
    """Per-class APs [T, K] at ``IOU_THRESHOLDS`` (NaN: class without positives), the means,
    and the printable table."""
    aps: np.ndarray
    class_names: tuple
    use_07_metric: bool
    summary: str = field(default="")

    @property
    def ap50_per_class(self):
        """{class name: AP at IoU 0.5}, the devkit table's per-class column."""
        return dict(zip(self.class_names, self.aps[0].tolist()))

    @property
    def map_per_iou(self):
        valid = ~np.isnan(self.aps[0])
        return self.aps[:, valid].mean(axis=1) if valid.any() else np.zeros(len(self.aps))

    @property
    def ap50(self):
        return float(self.map_per_iou[0])

    @property
    def ap50_95(self):
        return float(self.map_per_iou.mean())


def class_aps(rows, source, iou_thresholds=IOU_THRESHOLDS, use_07_metric=None):
    """AP [T, K] of detection rows [N, 7] (image_id, x1, y1, x2, y2, score, class index) against
    ``source`` (a ``VocSource``, or anything with ``ids``, ``boxes`` and ``class_names``, and
    optionally ``difficult``). Rows of images not in ``source.ids`` are ignored."""
    if use_07_metric is None:
        use_07_metric = bool(getattr(source, "use_07_metric", False))
    num_classes = len(source.class_names)
    gt_boxes, gt_cls, gt_img, gt_diff = _ground_truth(source)
    npos = np.bincount(gt_cls[~gt_diff], minlength=num_classes)[:num_classes]

    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    img = _positions(rows[:, 0], source.ids)
    cls = rows[:, 6].astype(np.int64)
    keep = (img >= 0) & (cls >= 0) & (cls < num_classes) & np.isfinite(rows).all(axis=1)
    rows, img, cls = rows[keep], img[keep], cls[keep]
    # class-major, then descending score (stable: ties keep row order)
    order = np.lexsort((-rows[:, 5], cls))
    rows, img, cls = rows[order], img[order], cls[order]
    ovmax, jmax = best_overlaps(rows[:, 1:5], img * num_classes + cls, gt_boxes,
                                gt_img * num_classes + gt_cls)
    bounds = np.searchsorted(cls, np.arange(num_classes + 1))

    aps = np.full((len(iou_thresholds), num_classes), np.nan)
    for t, thr in enumerate(iou_thresholds):
        above = ovmax > thr
        difficult = above & np.append(gt_diff, False)[jmax]     # jmax -1: no box, not above
        counted = above & ~difficult
        first = np.zeros(len(rows), dtype=bool)
        if counted.any():
            idx = np.flatnonzero(counted)
            _, first_of_box = np.unique(jmax[idx], return_index=True)
            first[idx[first_of_box]] = True     # the first detection to take a box: TP
        tp = first.astype(np.float64)
        fp = (~above | (counted & ~first)).astype(np.float64)
        for k in range(num_classes):
            if npos[k] == 0:
                continue
            lo, hi = bounds[k], bounds[k + 1]
            ctp, cfp = np.cumsum(tp[lo:hi]), np.cumsum(fp[lo:hi])
            rec = ctp / float(npos[k])
            prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
            aps[t, k] = voc_ap(rec, prec, use_07_metric)
    return aps


def format_table(score, header=""):
    """Upstream's printout (VOCDetection._do_python_eval at IoU 0.50, then evaluate_detections'
    map lines), with the metric named."""
    aps50 = score.aps[0]
    lines = [header.rstrip("\n")] if header else []
    lines += ["Eval IoU : 0.50", f"VOC07 metric? {'Yes' if score.use_07_metric else 'No'}"]
    lines += [f"AP for {name} = {ap:.4f}" for name, ap in zip(score.class_names, aps50)]
    lines += [f"Mean AP = {score.ap50:.4f}", "~~~~~~~~", "Results:"]
    lines += [f"{ap:.3f}" for ap in aps50]
    lines += [f"{score.ap50:.3f}", "~~~~~~~~", "", _RULE,
              f"map_5095: {score.ap50_95:.4f}", f"map_50: {score.ap50:.4f}", _RULE]
    return "\n".join(lines) + "\n"


def score(rows, source, use_07_metric=None):
    """VocScore of detection rows (image_id, x1, y1, x2, y2, score, class index) on ``source``:
    per-class AP at IoU 0.5, mAP50, mAP50:95 and upstream's table as ``summary``."""
    if use_07_metric is None:
        use_07_metric = bool(getattr(source, "use_07_metric", False))
    aps = class_aps(rows, source, IOU_THRESHOLDS, use_07_metric)
    result = VocScore(aps, tuple(source.class_names), use_07_metric)
    result.summary = format_table(result)
    return result


def gather_and_score(source, local_rows, seconds=0.0, images=0):
    """Every rank's rows -> VOC AP on the main process -> the same VocScore on every rank (as
    ``detcore.evaluation.coco_eval.gather_and_score``); ``seconds``/``images`` add a timing line."""
    from detcore.evaluation.coco_eval import drop_non_finite

    gathered = all_gather_object((drop_non_finite(local_rows), seconds, images))
    result = None
    if is_main_process():
        rows = np.concatenate([g[0] for g in gathered])
        result = score(rows, source)
        secs, n = max(g[1] for g in gathered), sum(g[2] for g in gathered)
        if n:
            result.summary = (f"Average forward + NMS time: {1000.0 * secs / n:.2f} ms per image "
                              f"({n} images)\n" + result.summary)
    return broadcast_object(result, src=0)
