"""One detection run matched against COCO ground truth once, with COCOeval's rules, kept as flat
arrays (``Matches``) that ``detcore.evaluation.bootstrap`` re-weighs per resample instead of
running COCOeval again: per class, its detections in the order COCOeval.accumulate sorts them,
with their score, image, and per IoU threshold (0.50:0.05:0.95) whether each is a true positive
or ignored; per (class, image) the number of ground-truth boxes that count (area "all", at most
100 detections per image and class). ``match_run`` matches all images and classes at once: the
one Python loop runs over the detection rank within an image and class (at most 100 rounds),
each round a few numpy operations over every image.

COCOeval's rules, as followed here (the places where they surprise):

- A ground-truth box is ignored when it is a crowd box or its ``area`` lies outside [0, 1e10]:
  pycocotools overwrites every annotation's ``ignore`` flag with ``iscrowd`` before it looks at
  it, so an ``ignore`` key in the data set has no effect there, and none here.
- A detection takes the unmatched ordinary box of its class with the highest IoU (ties: the
  later box), a crowd box only when no ordinary box qualifies (crowd boxes may be taken many
  times; the IoU with a crowd box divides by the detection's area); a detection on an ignored
  box is ignored, and so is an unmatched detection whose area is outside [0, 1e10].
- A detection matched to a box whose annotation id is 0 counts as a false positive (COCOeval
  records the matched box's id and tests that for truth); so it does here, to give the same
  numbers on data sets that number annotations from 0.
- Equal scores across images keep COCOeval's order (image id, then the order of the rows). In a
  resample the copies of one image sit together, whereas COCOeval on a data set of copied images
  would order equal scores of the copies by their new ids: the two differ only for equal scores.
- Not reproduced: duplicate annotation ids (pycocotools would see the last such box twice).
"""
from dataclasses import dataclass

import numpy as np

from detcore.data.index import find_sorted

# pycocotools' own expressions, so that the thresholds are the same floats
IOU_THRS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
REC_THRS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = 100
AREA_ALL = (0.0, 1e5 ** 2)


@dataclass
class Matches:
    """One run matched against the ground truth: what COCOeval.accumulate reads, as flat arrays.

    The detections of class ``k`` are ``slice(starts[k], starts[k + 1])``, in COCOeval's
    accumulate order (score descending; equal scores by image, then row order); those beyond the
    first 100 of their image and class are left out, as COCOeval never looks at them.
    """
    img_ids: np.ndarray      # [I] sorted image ids: the unit a resample draws
    cat_ids: np.ndarray      # [K] sorted category ids
    names: list              # [K] category names
    npig: np.ndarray         # [K, I] ground-truth boxes that count (not ignored) per class and image
    starts: np.ndarray       # [K + 1]
    score: np.ndarray        # [N]
    img: np.ndarray          # [N] index into ``img_ids``
    tp: np.ndarray           # [T, N] bool: true positive at each IoU threshold
    ignored: np.ndarray      # [T, N] bool: ignored at each IoU threshold (counts neither way)

    def category(self, k):
        """(score, image index, tp [T, n], ignored [T, n]) of class ``k``'s detections."""
        s = slice(self.starts[k], self.starts[k + 1])
        return self.score[s], self.img[s], self.tp[:, s], self.ignored[:, s]


def _det_columns(rows):
    """(image id, category id, xywh [N, 4], score) of COCO result dicts, or of rows ``[N, 7]``
    (image_id, x, y, w, h, score, category_id) as ``detcore.evaluation.coco_eval`` passes them."""
    if isinstance(rows, np.ndarray) or (len(rows) and not isinstance(rows[0], dict)):
        a = np.asarray(rows, np.float64).reshape(-1, 7)
        return a[:, 0], a[:, 6], a[:, 1:5], a[:, 5]
    n = len(rows)
    img = np.fromiter((r["image_id"] for r in rows), np.float64, n)
    cat = np.fromiter((r["category_id"] for r in rows), np.float64, n)
    score = np.fromiter((r["score"] for r in rows), np.float64, n)
    xywh = np.array([r["bbox"] for r in rows], np.float64).reshape(-1, 4)
    return img, cat, xywh, score


def _group_rank(group, first, second):
    """Order by (group, first, second) and each item's rank within its group in that order."""
    order = np.lexsort((second, first, group))
    g = group[order]
    return order, np.arange(len(g)) - np.searchsorted(g, g, "left")


def _ground_truth(coco_gt, img_ids, cat_ids):
    """The counted images' ground truth, sorted as evaluateImg sorts it: by (image, class), then
    ordinary before ignored boxes, then data-set order (``pos``: the rank in that order)."""
    anns = coco_gt.dataset.get("annotations", [])
    n = len(anns)
    img = find_sorted(img_ids, np.fromiter((a["image_id"] for a in anns), np.int64, n))
    cls = find_sorted(cat_ids, np.fromiter((a["category_id"] for a in anns), np.int64, n))
    xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    area = np.fromiter((a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns), np.float64, n)
    crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), bool, n)
    ann_id = np.fromiter((a.get("id", -1) for a in anns), np.int64, n)
    ignored = crowd | (area < AREA_ALL[0]) | (area > AREA_ALL[1])
    keep = np.flatnonzero((img >= 0) & (cls >= 0))
    group = img[keep] * len(cat_ids) + cls[keep]
    order, pos = _group_rank(group, ignored[keep], np.arange(len(keep)))
    sel = keep[order]
    return {"group": group[order], "pos": pos, "img": img[sel], "cls": cls[sel], "xywh": xywh[sel],
            "crowd": crowd[sel], "ignored": ignored[sel], "id": ann_id[sel]}


def _detections(rows, img_ids, cat_ids):
    """The detections COCOeval looks at: of the counted images and known classes, the first 100
    per image and class by score (stable), sorted by (image, class, rank)."""
    img_id, cat_id, xywh, score = _det_columns(rows)
    img, cls = find_sorted(img_ids, img_id), find_sorted(cat_ids, cat_id)
    keep = np.flatnonzero((img >= 0) & (cls >= 0))
    group = img[keep] * len(cat_ids) + cls[keep]
    order, rank = _group_rank(group, -score[keep], np.arange(len(keep)))
    first = rank < MAX_DETS
    sel = keep[order[first]]
    return {"group": group[order[first]], "rank": rank[first], "img": img[sel], "cls": cls[sel],
            "xywh": xywh[sel], "score": score[sel]}


def box_iou(d, g, crowd):
    """IoU of box pairs (rows of ``d`` with rows of ``g``, xywh) as pycocotools' ``bbIou`` computes
    it, operation for operation (the same floats): 0 unless both overlaps are positive; a crowd
    ``g`` divides the intersection by the area of ``d`` alone."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da, ga = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    ok = (w > 0) & (h > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def _candidates(dt, gt):
    """(det, gt, IoU) of every pair in the same image and class with IoU >= 0.50 (no lower
    threshold can match), in the order the greedy pass takes them: by the detection's rank, the
    detection, then its preference among boxes: ordinary first, higher IoU, later box."""
    lo = np.searchsorted(gt["group"], dt["group"], "left")
    counts = np.searchsorted(gt["group"], dt["group"], "right") - lo
    d = np.repeat(np.arange(len(lo)), counts)
    g = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(len(d))
    iou = box_iou(dt["xywh"][d], gt["xywh"][g], gt["crowd"][g])
    ok = iou >= min(IOU_THRS[0], 1 - 1e-10)
    d, g, iou = d[ok], g[ok], iou[ok]
    order = np.lexsort((-gt["pos"][g], -iou, gt["ignored"][g], d, dt["rank"][d]))
    return d[order], g[order], iou[order]


def _greedy(dt, gt):
    """COCOeval's greedy matching at the 10 thresholds at once: [T, D] the box each detection
    takes (-1: none). Round r matches every image's and class's r-th detection together (they
    never compete for a box); at each threshold a detection takes the first candidate in its
    preference order that passes the threshold and is free (crowd boxes always are)."""
    d, g, iou = _candidates(dt, gt)
    thr = np.minimum(IOU_THRS, 1 - 1e-10)[:, None]
    taken = np.zeros((len(IOU_THRS), len(gt["group"])), bool)
    gt_of = np.full((len(IOU_THRS), len(dt["group"])), -1, np.int64)
    bounds = np.searchsorted(dt["rank"][d], np.arange(MAX_DETS + 1))
    for r in range(MAX_DETS):
        lo, hi = bounds[r], bounds[r + 1]
        if lo == hi:
            continue
        rd, rg = d[lo:hi], g[lo:hi]
        ok = (iou[lo:hi] >= thr) & (~taken[:, rg] | gt["crowd"][rg])
        seg = np.flatnonzero(np.r_[True, rd[1:] != rd[:-1]])
        first = np.minimum.reduceat(np.where(ok, np.arange(hi - lo), hi - lo), seg, axis=1)
        t, s = np.nonzero(first < hi - lo)
        pick = first[t, s]
        gt_of[t, rd[pick]] = rg[pick]
        taken[t, rg[pick]] = True
    return gt_of


def _outcomes(gt_of, dt, gt):
    """(tp, ignored) [T, D] from the matches, with COCOeval's reading of ``dtMatches``: the
    matched box's id, 0 meaning none (module docstring: id 0)."""
    matched = gt_of >= 0
    g = np.maximum(gt_of, 0)
    has_id = matched & (gt["id"][g] != 0) if len(gt["id"]) else matched
    on_ignored = matched & gt["ignored"][g] if len(gt["id"]) else matched
    area = dt["xywh"][:, 2] * dt["xywh"][:, 3]
    outside = (area < AREA_ALL[0]) | (area > AREA_ALL[1])
    ignored = on_ignored | (~has_id & outside)
    return has_id & ~ignored, ignored


def match_run(coco_gt, rows, img_ids=None):
    """Match one run's detections (COCO result dicts, or rows ``[N, 7]``) against a pycocotools
    ``COCO`` (integer image and category ids) on ``img_ids`` (default: all its images; a repeated
    id counts once, as in COCOeval; detections of other images or unknown categories are left
    out): the ``Matches`` every later score of this run is computed from, without matching again."""
    img_ids = np.unique(np.asarray(coco_gt.getImgIds() if img_ids is None else img_ids, np.int64))
    cat_ids = np.asarray(sorted(coco_gt.getCatIds()), np.int64)
    K = len(cat_ids)
    gt, dt = _ground_truth(coco_gt, img_ids, cat_ids), _detections(rows, img_ids, cat_ids)
    tp, ignored = _outcomes(_greedy(dt, gt), dt, gt)
    order = np.lexsort((dt["rank"], dt["img"], -dt["score"], dt["cls"]))
    counted = ~gt["ignored"]
    npig = np.bincount(gt["cls"][counted] * len(img_ids) + gt["img"][counted],
                       minlength=K * len(img_ids)).reshape(K, len(img_ids)).astype(np.int32)
    return Matches(img_ids=img_ids, cat_ids=cat_ids,
                   names=[str(coco_gt.cats[int(c)].get("name", c)) for c in cat_ids], npig=npig,
                   starts=np.searchsorted(dt["cls"][order], np.arange(K + 1)), score=dt["score"][order],
                   img=dt["img"][order], tp=tp[:, order], ignored=ignored[:, order])
