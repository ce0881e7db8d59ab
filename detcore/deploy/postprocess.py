"""From the network's outputs to detections, in numpy: the YOLOX grid decode and selection, the
SSD300 default boxes, decode and selection, and greedy NMS.

Each function has the semantics of the PyTorch path it names (``YOLOXHead.decode``,
``yolox.utils.postprocess`` as ``tools/demo.py`` calls it, ``ssd.anchors.DefaultBoxes``,
``Encoder.scale_back_batch`` / ``decode_batch``, ``torchvision.ops.batched_nms``);
``tests/test_onnx_runtime.py`` finds the same detections through both."""
import math

import numpy as np

from detcore.boxes import cxcywh2xyxy
from detcore.deploy.preprocess import SSD_SIZE

YOLOX_STRIDES = (8, 16, 32)
YOLOX_MAX_LOG_SIZE = 20.0            # yolox.models.yolo_head.MAX_LOG_SIZE: the decode caps log-sizes there
SSD_ANCHORS = 8732
SSD_VARIANCES = (0.1, 0.2)           # scale_xy, scale_wh of dboxes300_coco
SSD_MAX_CANDIDATES = 200             # per class before NMS (the reference's max_num)
SSD_MAX_OUTPUT = 200                 # detections per image after NMS


# ---------------------------------------------------------------- decoding

def yolox_grids(height, width, strides=YOLOX_STRIDES):
    """Anchor cells ``[A, 2]`` (x, y) and their strides ``[A]`` in the head's output order
    (level by level, row-major), as ``YOLOXHead.grids_and_strides``."""
    grids, steps = [], []
    for s in strides:
        ys, xs = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
        grids.append(np.stack((xs, ys), axis=-1).reshape(-1, 2))
        steps.append(np.full(grids[-1].shape[0], s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(steps).astype(np.float32)


def yolox_anchor_count(height, width, strides=YOLOX_STRIDES):
    return sum((height // s) * (width // s) for s in strides)


def yolox_decode(raw, grids, strides):
    """Raw map ``[..., A, 5+C]`` (offsets, log-sizes, sigmoid scores) -> centre/size boxes in input
    pixels, as ``YOLOXHead.decode``: centre = (offset + cell) * stride, size = exp(log-size) * stride."""
    s = strides[:, None]
    xy = (raw[..., :2] + grids) * s
    wh = np.exp(np.minimum(raw[..., 2:4], YOLOX_MAX_LOG_SIZE)) * s
    return np.concatenate([xy, wh, raw[..., 4:]], axis=-1)


def ssd_default_boxes():
    """The 8732 SSD300 default boxes as ``dboxes300_coco()(order="xywh")``: feature maps
    38/19/10/5/3/1, steps 8/16/32/64/100/300, scales 21..315, ratios (2), (2, 3) x3, (2), (2);
    per map, per anchor shape, per location row-major; computed in float64, stored float32,
    clamped to [0, 1], exactly as ``ssd.anchors.DefaultBoxes``."""
    fig, feat = SSD_SIZE, (38, 19, 10, 5, 3, 1)
    steps, scales = (8, 16, 32, 64, 100, 300), (21, 45, 99, 153, 207, 261, 315)
    ratios = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    levels = []
    for idx, size in enumerate(feat):
        centres = (np.arange(size, dtype=np.float64) + 0.5) / (fig / steps[idx])
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        sk1, sk2 = scales[idx] / fig, scales[idx + 1] / fig
        sk3 = math.sqrt(sk1 * sk2)
        shapes = [(sk1, sk1), (sk3, sk3)]
        for r in ratios[idx]:
            w, h = sk1 * math.sqrt(r), sk1 / math.sqrt(r)
            shapes += [(w, h), (h, w)]
        xy = np.broadcast_to(np.stack((cx.ravel(), cy.ravel()), axis=1), (len(shapes), size * size, 2))
        wh = np.broadcast_to(np.array(shapes)[:, None, :], (len(shapes), size * size, 2))
        levels.append(np.concatenate((xy, wh), axis=2).reshape(-1, 4).astype(np.float32))
    return np.clip(np.concatenate(levels), 0.0, 1.0)


def ssd_scale_back(locs, confs, anchors):
    """One image's network maps ``locs`` [4, A] and ``confs`` [C, A] -> (ltrb boxes [A, 4] in [0, 1]
    image units, class probabilities [A, C]), as ``Encoder.scale_back_batch``."""
    off = locs.T.astype(np.float32)
    xy = off[:, :2] * np.float32(SSD_VARIANCES[0]) * anchors[:, 2:] + anchors[:, :2]
    wh = np.exp(off[:, 2:] * np.float32(SSD_VARIANCES[1])) * anchors[:, 2:]
    boxes = cxcywh2xyxy(np.concatenate((xy, wh), axis=1))
    logits = confs.T.astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return boxes, e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- NMS

def nms(boxes, scores, iou_threshold, classes=None):
    """Greedy NMS as ``torchvision.ops.nms`` (``batched_nms`` when ``classes`` is given: boxes only
    suppress boxes of their own class). Highest score first; a box is dropped when its IoU with a
    kept one is above ``iou_threshold`` (a nan IoU suppresses nothing, as torchvision). Returns the
    kept indices, best score first. One vectorised IoU row per kept box."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        with np.errstate(divide="ignore", invalid="ignore"):
            suppress = inter / (areas[i] + areas[rest] - inter) > iou_threshold
        if classes is not None:
            suppress &= classes[rest] == classes[i]
        order = rest[~suppress]
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------- postprocessing

def yolox_postprocess(pred, conf, nms_threshold, ratio, classes=None, agnostic=False):
    """One image's decoded map ``[A, 5+C]`` -> rows (x1, y1, x2, y2, score, class) in source image
    pixels, best first: ``yolox.utils.postprocess`` (class-aware NMS, or across classes when
    ``agnostic``) + ``tools/demo.py``'s scaling and its drop of non-finite rows (an undertrained
    model may decode nan boxes). ``classes``: keep only anchors whose best class is one of these,
    before NMS (as Ultralytics' ``--classes``)."""
    cls_scores = pred[:, 5:]
    cls = cls_scores.argmax(axis=1)
    score = pred[:, 4] * cls_scores[np.arange(len(pred)), cls]
    sel = score >= conf
    if classes is not None:
        sel &= np.isin(cls, classes)
    boxes = cxcywh2xyxy(pred[sel, :4])
    keep = nms(boxes, score[sel], nms_threshold, classes=None if agnostic else cls[sel])
    rows = np.concatenate((boxes[keep] / ratio, score[sel][keep, None], cls[sel][keep, None].astype(np.float32)),
                          axis=1).astype(np.float32)
    return rows[np.isfinite(rows).all(axis=1)]


def ssd_postprocess(boxes, probs, conf, nms_threshold, width, height, classes=None, agnostic=False):
    """One image's ltrb boxes [A, 4] (image units) and probabilities [A, C] -> rows (x1, y1, x2, y2,
    score, label) in pixels, best first: per class (background 0 skipped) the 200 best scores above
    ``conf``, NMS per class (across classes when ``agnostic``), the 200 best survivors
    (``Encoder.decode_batch``); then clipped to the image, non-finite and empty boxes dropped
    (``ssd/demo.py``). ``classes``: the labels whose candidates are kept (before NMS)."""
    cls_scores = probs[:, 1:].T                                    # [C-1, A]
    if classes is not None:
        cls_scores = cls_scores * np.isin(np.arange(1, probs.shape[1]), classes)[:, None]
    k = min(SSD_MAX_CANDIDATES, cls_scores.shape[1])
    top = np.argpartition(-cls_scores, k - 1, axis=1)[:, :k]       # each class's k best anchors
    top_scores = np.take_along_axis(cls_scores, top, axis=1)
    cls_idx, slot = np.nonzero(top_scores > conf)
    anchor, scores = top[cls_idx, slot], top_scores[cls_idx, slot]
    cand = boxes[anchor]
    keep = nms(cand, scores, nms_threshold, classes=None if agnostic else cls_idx)[:SSD_MAX_OUTPUT]
    size = np.array([width, height, width, height], dtype=np.float32)
    pixels = np.minimum(np.maximum(cand[keep] * size, 0), size)
    rows = np.concatenate((pixels, scores[keep, None], (cls_idx[keep] + 1)[:, None].astype(np.float32)), axis=1)
    rows = rows.astype(np.float32)
    ok = np.isfinite(rows).all(axis=1) & (rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])
    return rows[ok]
