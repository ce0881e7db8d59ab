"""Per-class statistics and the confusion matrix of one COCO-style evaluation, for both detectors
and every data format (everything arrives as detection rows and a pycocotools index).

Conventions (docs/diagnostics.md says the same for users):
- **Matching for precision/recall** is COCO's own rule at IoU 0.50, area "all", at most 100
  detections per image and class: detections in descending score order (stable) each take the
  unmatched ground-truth box of their class with the highest IoU >= 0.50 (ties: the later box, as
  pycocotools); a crowd box is taken only when no ordinary box qualifies, may be taken many times,
  and a detection on it counts neither as true nor as false positive. ``test_class_stats`` checks
  this matching against the evaluator's own matches, so P/R and the COCO AP describe the same pairs.
- **AP50 and AP50:95 per class** are read from the COCO evaluation's ``precision`` array, so they
  are exactly its per-class values; "all" is the 12-stat summary's AP50 / AP50:95.
- **The operating confidence** is the point of a 1000-step grid over [0, 1] where the mean F1 over
  the classes that have ground truth is highest (the first such point, i.e. the lowest
  confidence); P and R per class are exact counts at that confidence (precision of no detections
  is 0). The curves (P, R, F1 against confidence) are the same counts on the whole grid.
- **The confusion matrix** follows Ultralytics' definition: detections with score > ``conf``
  (0.25), class-agnostic IoU > ``iou`` (0.45), pairs taken in descending IoU, each detection and
  each ground-truth box at most once. Rows are the true class, columns the predicted one; the
  last row ("background") counts detections that matched nothing (false positives), the last
  column counts ground-truth boxes nothing matched (missed). Crowd boxes take no part.

Everything is vectorised over boxes: the only Python loops run over the detection rank within an
image and class (at most 100 rounds) and over classes.
"""
from dataclasses import dataclass, field

import numpy as np

from detcore.boxes import xywh2xyxy
from detcore.data.index import find_sorted

CONF_GRID = np.linspace(0.0, 1.0, 1000)
MAX_DETS = 100
CM_CONF, CM_IOU = 0.25, 0.45


@dataclass
class Boxes:
    """Boxes of one evaluation as flat arrays: image index (into the evaluated image ids), class
    index (into the sorted category ids), xyxy pixels, score (detections) or crowd flag (truth)."""
    img: np.ndarray
    cls: np.ndarray
    xyxy: np.ndarray
    score: np.ndarray = None
    crowd: np.ndarray = None

    def __len__(self):
        return len(self.img)

    def subset(self, keep):
        def pick(a):
            return None if a is None else a[keep]
        return Boxes(self.img[keep], self.cls[keep], self.xyxy[keep], pick(self.score), pick(self.crowd))


def ground_truth(coco_gt, img_ids, cat_ids):
    """The ground-truth boxes of ``img_ids`` from a pycocotools index, as ``Boxes``."""
    anns = coco_gt.dataset.get("annotations", [])
    n = len(anns)
    img = np.fromiter((a["image_id"] for a in anns), np.float64, n)
    cat = np.fromiter((a["category_id"] for a in anns), np.float64, n)
    crowd = np.fromiter((a.get("iscrowd", 0) for a in anns), np.int64, n).astype(bool)
    xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    return _boxes(img, cat, xywh, img_ids, cat_ids, crowd=crowd)


def detections(rows, img_ids, cat_ids):
    """Detection rows ``[N, 7]`` (image_id, x, y, w, h, score, category_id) as ``Boxes``; rows of
    other images or unknown categories are dropped, as COCOeval does."""
    rows = np.asarray(rows, np.float64).reshape(-1, 7)
    return _boxes(rows[:, 0], rows[:, 6], rows[:, 1:5], img_ids, cat_ids, score=rows[:, 5])


def _boxes(img_id, cat_id, xywh, img_ids, cat_ids, score=None, crowd=None):
    img = find_sorted(np.asarray(sorted(img_ids), np.float64), img_id)
    cls = find_sorted(np.asarray(sorted(cat_ids), np.float64), cat_id)
    keep = (img >= 0) & (cls >= 0)
    boxes = Boxes(img, cls, xywh2xyxy(xywh), score, crowd)
    return boxes.subset(keep)


def _pair_iou(a, ia, b, ib, crowd=None):
    """IoU of box pairs (row ``ia[i]`` of ``a`` with row ``ib[i]`` of ``b``, xyxy); for a crowd
    ``b`` the intersection over the area of ``a`` alone (COCO's crowd rule). Column by column:
    no [pairs, 4] temporaries."""
    w = np.minimum(a[ia, 2], b[ib, 2]) - np.maximum(a[ia, 0], b[ib, 0])
    h = np.minimum(a[ia, 3], b[ib, 3]) - np.maximum(a[ia, 1], b[ib, 1])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[ia]
    union = area_a + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[ib] - inter
    if crowd is not None:
        union = np.where(crowd[ib], area_a, union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _areas(xyxy):
    return (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])


def _pairs(det_key, gt_key):
    """All (det, gt) index pairs with equal keys; ``gt_key`` must be sorted ascending."""
    lo = np.searchsorted(gt_key, det_key, "left")
    hi = np.searchsorted(gt_key, det_key, "right")
    counts = hi - lo
    det = np.repeat(np.arange(len(det_key)), counts)
    start = np.repeat(lo - np.cumsum(counts) + counts, counts)
    return det, start + np.arange(len(det))


TP, FP, IGNORED, UNCOUNTED = 1, 0, -1, -2


def match(dets, gts, num_classes, iou_thr=0.5, max_dets=MAX_DETS):
    """COCO's greedy matching (module docstring). Returns ``(state, gt_score)``: per detection
    TP / FP / IGNORED (matched a crowd box) / UNCOUNTED (beyond ``max_dets`` in its image and
    class, which COCOeval never looks at); per ground-truth box the score of the detection that
    took it (-inf when none did)."""
    state = np.full(len(dets), UNCOUNTED, np.int8)
    gt_score = np.full(len(gts), -np.inf)
    if not len(dets):
        return state, gt_score
    d_group = dets.img.astype(np.int64) * num_classes + dets.cls
    order = np.lexsort((np.arange(len(dets)), -dets.score, d_group))
    g_group = gts.img.astype(np.int64) * num_classes + gts.cls
    g_order = np.lexsort((np.arange(len(gts)), gts.crowd, g_group))
    sorted_group = d_group[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_group, sorted_group, "left")
    counted = order[rank < max_dets]
    state[counted] = FP
    rank_of = np.empty(len(dets), np.int64)
    rank_of[order] = rank
    d_idx, g_pos = _pairs(d_group[counted], g_group[g_order])
    d_idx, g_idx = counted[d_idx], g_order[g_pos]
    iou = _pair_iou(dets.xyxy, d_idx, gts.xyxy, g_idx, gts.crowd)
    ok = iou >= min(iou_thr, 1 - 1e-10)
    d_idx, g_idx, g_pos, iou = d_idx[ok], g_idx[ok], g_pos[ok], iou[ok]
    by_rank = np.argsort(rank_of[d_idx], kind="stable")
    d_idx, g_idx, g_pos, iou = d_idx[by_rank], g_idx[by_rank], g_pos[by_rank], iou[by_rank]
    bounds = np.searchsorted(rank_of[d_idx], np.arange(max_dets + 1))
    taken = np.zeros(len(gts), bool)
    for r in range(max_dets):
        s = slice(bounds[r], bounds[r + 1])
        if s.start == s.stop:
            continue
        d, g, p, v = d_idx[s], g_idx[s], g_pos[s], iou[s]
        free = ~taken[g] | gts.crowd[g]
        d, g, p, v = d[free], g[free], p[free], v[free]
        # per detection: ordinary boxes first, then the highest IoU, then the later box
        best = np.lexsort((-p, -v, gts.crowd[g], d))
        d, g = d[best], g[best]
        first = np.ones(len(d), bool)
        first[1:] = d[1:] != d[:-1]
        d, g = d[first], g[first]
        crowd = gts.crowd[g]
        state[d] = np.where(crowd, IGNORED, TP)
        taken[g[~crowd]] = True
        gt_score[g[~crowd]] = dets.score[d[~crowd]]
    return state, gt_score


def confusion_matrix(dets, gts, num_classes, conf=CM_CONF, iou_thr=CM_IOU):
    """``[K+1, K+1]`` counts, rows true class, columns predicted class, the last row and column
    background (module docstring)."""
    cm = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    dets = dets.subset(dets.score > conf)
    gts = gts.subset(~gts.crowd)
    g_order = np.argsort(gts.img, kind="stable")
    d_idx, g_pos = _pairs(dets.img, gts.img[g_order])
    g_idx = g_order[g_pos]
    # IoU <= min(area) / max(area): pairs of too different sizes cannot pass (exact, and it
    # spares the full IoU of most pairs of an image's unrelated boxes)
    d_area, g_area = _areas(dets.xyxy)[d_idx], _areas(gts.xyxy)[g_idx]
    fit = np.minimum(d_area, g_area) > iou_thr * np.maximum(d_area, g_area)
    d_idx, g_idx = d_idx[fit], g_idx[fit]
    iou = _pair_iou(dets.xyxy, d_idx, gts.xyxy, g_idx)
    ok = iou > iou_thr
    d_idx, g_idx, iou = d_idx[ok], g_idx[ok], iou[ok]
    by_iou = np.argsort(-iou, kind="stable")
    d_idx, g_idx = d_idx[by_iou], g_idx[by_iou]
    _, first = np.unique(d_idx, return_index=True)
    first = np.sort(first)
    d_idx, g_idx = d_idx[first], g_idx[first]
    _, first = np.unique(g_idx, return_index=True)
    d_idx, g_idx = d_idx[first], g_idx[first]
    np.add.at(cm, (gts.cls[g_idx], dets.cls[d_idx]), 1)
    missed = np.ones(len(gts), bool)
    missed[g_idx] = False
    np.add.at(cm, (gts.cls[missed], num_classes), 1)
    spurious = np.ones(len(dets), bool)
    spurious[d_idx] = False
    np.add.at(cm, (num_classes, dets.cls[spurious]), 1)
    return cm


def _counts_above(scores_sorted, hits_sorted, grid):
    """(detections, true positives) with score >= each grid value; inputs sorted by score."""
    n_above = len(scores_sorted) - np.searchsorted(scores_sorted, grid, "left")
    tp_cum = np.concatenate([[0], np.cumsum(hits_sorted[::-1])])     # from the top score down
    return n_above, tp_cum[n_above]


def _precision(tp, n):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, tp / np.maximum(n, 1), 0.0)


@dataclass
class ClassStats:
    """The per-class report of one evaluation: counts, P/R at the operating confidence, AP50 and
    AP50:95, the curves and the confusion matrix (see the module docstring for each)."""
    names: list
    images: np.ndarray           # [K] images holding the class (crowd boxes excepted)
    instances: np.ndarray        # [K] ground-truth boxes (crowd boxes excepted)
    ap50: np.ndarray             # [K] NaN where the class has no ground truth
    ap50_95: np.ndarray
    conf: float                  # operating confidence (max mean F1)
    precision: np.ndarray        # [K] at ``conf``
    recall: np.ndarray
    curves: dict = field(default_factory=dict)   # "conf" [G], "P"/"R"/"F1" [K, G], "recall" [101], "pr" [K, 101]
    confusion: np.ndarray = None
    confusion_conf: float = CM_CONF
    confusion_iou: float = CM_IOU
    per_image: dict = field(default_factory=dict)  # image_id -> (tp, fp, fn) at ``conf``
    total_images: int = 0
    all_ap50: float = float("nan")
    all_ap50_95: float = float("nan")

    @property
    def valid(self):
        """Classes that have ground truth (the others get no P/R/AP)."""
        return self.instances > 0

    def mean(self, values):
        v = np.asarray(values, np.float64)[self.valid]
        return float(v.mean()) if v.size else float("nan")

    def rows(self):
        """[(class, images, instances, P, R, AP50, AP50:95)], "all" first."""
        out = [("all", self.total_images, int(self.instances.sum()), self.mean(self.precision),
                self.mean(self.recall), self.all_ap50, self.all_ap50_95)]
        for k, name in enumerate(self.names):
            ok = self.valid[k]
            nan = float("nan")
            out.append((name, int(self.images[k]), int(self.instances[k]),
                        float(self.precision[k]) if ok else nan, float(self.recall[k]) if ok else nan,
                        float(self.ap50[k]), float(self.ap50_95[k])))
        return out

    def table(self):
        """The log's per-class table (tabulate "pipe"), the operating confidence in its title."""
        from tabulate import tabulate

        body = [[n, i, b] + [("-" if np.isnan(v) else f"{v:.3f}") for v in vals]
                for n, i, b, *vals in self.rows()]
        return (f"per class at IoU 0.50, confidence {self.conf:.3f} (max mean F1):\n"
                + tabulate(body, headers=["class", "images", "instances", "P", "R", "AP50", "AP50:95"],
                           tablefmt="pipe", disable_numparse=True, colalign=("left",) + ("right",) * 6))

    def csv_rows(self, **leading):
        """Rows for the per-class csv (``leading`` columns first, e.g. the epoch), "all" first."""
        head = ("class", "images", "instances", "P", "R", "AP50", "AP50_95")
        return [{**leading, **dict(zip(head, row)), "conf": self.conf} for row in self.rows()]

    def confusion_csv(self):
        """The confusion matrix as csv text: a header of predicted classes, one row per true
        class, "background" last in both."""
        labels = list(self.names) + ["background"]
        lines = ["true\\predicted," + ",".join(_csv_cell(n) for n in labels)]
        lines += [_csv_cell(n) + "," + ",".join(str(int(v)) for v in row)
                  for n, row in zip(labels, self.confusion)]
        return "\n".join(lines) + "\n"

    def scalars(self, prefix="val"):
        """TensorBoard / W&B scalars: P, R, AP50, AP50:95 per class and for all."""
        out = {}
        for name, _, _, p, r, a50, a in self.rows():
            for key, value in (("P", p), ("R", r), ("AP50", a50), ("AP50_95", a)):
                if not np.isnan(value):
                    out[f"{prefix}_class/{name}/{key}" if name != "all" else f"{prefix}/{key}"] = value
        return out


def _csv_cell(text):
    text = str(text)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def class_stats(coco_eval, coco_gt, rows, img_ids):
    """The ``ClassStats`` of an evaluated COCOeval (its ``precision`` array gives the APs) and the
    same detection rows and images it scored; ``coco_eval`` None when there were no detections."""
    cat_ids = sorted(coco_gt.getCatIds()) if coco_eval is None else list(coco_eval.params.catIds)
    img_ids = sorted(img_ids)
    K = len(cat_ids)
    names = [coco_gt.cats[int(c)].get("name", str(c)) for c in cat_ids]
    gts = ground_truth(coco_gt, img_ids, cat_ids)
    dets = detections(rows, img_ids, cat_ids)
    state, gt_score = match(dets, gts, K)

    plain = ~gts.crowd
    instances = np.bincount(gts.cls[plain], minlength=K)
    pairs = np.unique(gts.img[plain].astype(np.int64) * K + gts.cls[plain])
    images = np.bincount(pairs % K, minlength=K)

    ap50, ap50_95, pr, recall_grid = _coco_ap(coco_eval, instances)

    counted = state >= FP
    # scores outside [0, 1] clipped just beyond the grid (the counts above any grid value stay
    # the same), so class and score make one float key: one sort, no stable sort needed (equal
    # scores count together), half the time of a two-key lexsort
    c_cls, c_hit = dets.cls[counted], state[counted] == TP
    c_score = np.clip(dets.score[counted], -1.0, 2.0)
    order = np.argsort(c_cls * 4.0 + c_score)
    c_cls, c_score, c_hit = c_cls[order], c_score[order], c_hit[order]
    starts = np.searchsorted(c_cls, np.arange(K + 1))
    P = np.zeros((K, len(CONF_GRID)))
    R = np.zeros((K, len(CONF_GRID)))
    for k in range(K):
        s = slice(starts[k], starts[k + 1])
        n, tp = _counts_above(c_score[s], c_hit[s], CONF_GRID)
        P[k] = _precision(tp, n)
        R[k] = tp / max(instances[k], 1)
    with np.errstate(divide="ignore", invalid="ignore"):    # P + R is a float below 1 where both are low
        F1 = np.where(P + R > 0, 2 * P * R / (P + R), 0.0)
    has_gt = instances > 0
    mean_f1 = F1[has_gt].mean(axis=0) if has_gt.any() else np.zeros(len(CONF_GRID))
    best = int(np.argmax(mean_f1))
    conf = float(CONF_GRID[best])

    stats = ClassStats(
        names=names, images=images, instances=instances, ap50=ap50, ap50_95=ap50_95, conf=conf,
        precision=P[:, best], recall=R[:, best],
        curves={"conf": CONF_GRID, "P": P, "R": R, "F1": F1, "recall": recall_grid, "pr": pr},
        confusion=confusion_matrix(dets, gts, K),
        per_image=per_image_errors(dets, state, gts, gt_score, conf, img_ids),
        total_images=len(img_ids))
    if coco_eval is not None:
        stats.all_ap50, stats.all_ap50_95 = float(coco_eval.stats[1]), float(coco_eval.stats[0])
    else:
        stats.all_ap50 = stats.all_ap50_95 = 0.0
    return stats


def _coco_ap(coco_eval, instances):
    """(AP50 [K], AP50:95 [K], interpolated precision at IoU 0.50 [K, 101], the recall grid) from
    COCOeval's ``precision`` [T, R, K, A, M] at area "all", 100 detections: exactly its per-class
    values (the mean over the entries that are not -1, NaN where all are). Without an evaluation
    (no detections at all) every class with ground truth has AP 0."""
    if coco_eval is None:
        zero = np.where(instances > 0, 0.0, np.nan)
        return zero, zero.copy(), np.zeros((len(instances), 101)), np.linspace(0, 1, 101)
    p = coco_eval.eval["precision"][:, :, :, 0, -1]
    valid = p > -1
    kept = np.where(valid, p, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap50_95 = kept.sum(axis=(0, 1)) / valid.sum(axis=(0, 1))
        ap50 = kept[0].sum(axis=0) / valid[0].sum(axis=0)
    return ap50, ap50_95, kept[0].T, np.asarray(coco_eval.params.recThrs)


def per_image_errors(dets, state, gts, gt_score, conf, img_ids):
    """{image_id: (tp, fp, fn)} at ``conf``: a ground-truth box is missed when no detection at or
    above ``conf`` took it (greedy by score, so the pairs above ``conf`` are those of the full
    matching)."""
    n = len(img_ids)
    above = dets.score >= conf
    tp = np.bincount(dets.img[above & (state == TP)], minlength=n)
    fp = np.bincount(dets.img[above & (state == FP)], minlength=n)
    plain = ~gts.crowd
    fn = np.bincount(gts.img[plain & (gt_score < conf)], minlength=n)
    return {int(i): (int(a), int(b), int(c)) for i, a, b, c in zip(img_ids, tp, fp, fn)}
