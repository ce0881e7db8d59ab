"""VOC detection AP (detcore.evaluation.voc_eval, VOCEvaluator): hand-computed values for both metrics with a
difficult box and a duplicate, agreement with the COCO path, a loop reference, and the table."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detcore.evaluation.coco_eval import score as coco_score
from detcore.data.voc import VocSource
from detcore.evaluation.voc_eval import IOU_THRESHOLDS, class_aps, score, voc_ap


def write_voc(root, images, sets=(("2007", "test"),), extra_xml=None):
    """A VOCdevkit under ``root``: ``images`` maps stem -> (w, h, [(name, 0-based box, difficult)]);
    every listed set lists every stem. Boxes are written 1-based (VOC), i.e. + 1."""
    for year, name in sets:
        base = root / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for stem, (w, h, objects) in images.items():
            cv2.imwrite(str(base / "JPEGImages" / f"{stem}.jpg"), np.full((h, w, 3), 90, np.uint8))
            objs = "".join(
                f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox>"
                f"<xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin><xmax>{b[2] + 1}</xmax>"
                f"<ymax>{b[3] + 1}</ymax></bndbox></object>" for n, b, d in objects)
            size = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            (base / "Annotations" / f"{stem}.xml").write_text(f"<annotation>{size}{objs}</annotation>")
        (base / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{s}\n" for s in images))
    return root


# ---------------------------------------------------------------------------- the hand case
# 0-based boxes (the xml holds them + 1). Image "a" = id 0, image "b" = id 1, both 100 x 100.
HAND_IMAGES = {
    "a": (100, 100, [("a", (10, 10, 50, 50), False),      # G1
                     ("a", (60, 60, 90, 90), True),       # G2, difficult
                     ("b", (20, 60, 40, 90), False)]),    # G3
    "b": (100, 100, [("a", (5, 5, 45, 45), False),        # G4
                     ("a", (50, 50, 95, 95), False)]),    # G5
}
# (image id, x1, y1, x2, y2, score, class index); IoU with the devkit's +1 widths
HAND_ROWS = np.array([
    [0, 10, 10, 50, 50, 0.90, 0],   # d1 = G1 (IoU 1)                    -> TP
    [0, 14, 10, 54, 50, 0.80, 0],   # d2: G1 shifted 4: IoU 37/45 = .822 -> duplicate of G1: FP
    [0, 60, 60, 90, 90, 0.70, 0],   # d3 = G2, difficult                  -> neither TP nor FP
    [1, 50, 50, 95, 95, 0.60, 0],   # d4 = G5                             -> TP
    [1, 60, 5, 90, 30, 0.50, 0],    # d5 touches no box                   -> FP
    [1, 14, 5, 54, 45, 0.40, 0],    # d6: G4 shifted 9: IoU 32/50 = .64   -> TP at IoU .50-.60, FP above
    [1, 20, 60, 40, 90, 0.95, 1],   # e1: class b where image b has none  -> FP
    [0, 20, 60, 40, 90, 0.30, 1],   # e2 = G3                             -> TP
])
# Class a has 3 positives (G1, G4, G5; G2 is difficult). In score order, at IoU 0.5:
#   d1 TP (rec 1/3, prec 1), d2 FP (1/3, 1/2), d3 skipped, d4 TP (2/3, 2/3), d5 FP (2/3, 1/2),
#   d6 TP (1, 3/5).
#   area: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], 3/5 on (2/3, 1]
#         AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45 = 0.755556
#   11-point: recall >= 0, .1, .2, .3 -> 1; >= .4, .5, .6 -> 2/3; >= .7, .8, .9, 1 -> 3/5
#         AP = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4/11 = 0.763636
# At IoU >= 0.65, d6 is an FP: d1 TP, d2 FP, d4 TP, d5 FP, d6 FP (recall tops out at 2/3):
#   area AP = 1/3 * 1 + 1/3 * 2/3 = 5/9 = 0.555556;  11-point = (4 * 1 + 3 * 2/3) / 11 = 6/11
# Class b has 1 positive (G3): e1 FP (rec 0, prec 0), e2 TP (rec 1, prec 1/2):
#   area AP = 1 * 1/2 = 0.5;  11-point: every recall level -> 1/2, AP = 0.5
# The bugs these values catch: counting G2 as a 4th positive with d3 a TP gives class a an
# area AP of 1/4 + 1/4 * 3/4 + 1/4 * 3/4 + 1/4 * 2/3 = 0.791667; skipping the duplicate d2
# instead of counting it as an FP gives 1/3 + 1/3 + 1/3 * 3/4 = 0.916667.
A_AREA_LOW, A_07_LOW, A_AREA_HIGH, A_07_HIGH = 34 / 45, 8.4 / 11, 5 / 9, 6 / 11


@pytest.fixture(scope="module")
def hand_source(tmp_path_factory):
    root = write_voc(tmp_path_factory.mktemp("voc_hand") / "VOCdevkit", HAND_IMAGES)
    return VocSource(root, [("2007", "test")], class_names=("a", "b"))


def test_hand_case_source_reads_the_boxes(hand_source):
    assert hand_source.ids == [0, 1] and hand_source.class_names == ("a", "b")
    np.testing.assert_array_equal(hand_source.boxes[0][0], [[10, 10, 50, 50], [60, 60, 90, 90], [20, 60, 40, 90]])
    np.testing.assert_array_equal(hand_source.difficult[0], [False, True, False])


@pytest.mark.parametrize("use_07, a_low, a_high", [(False, A_AREA_LOW, A_AREA_HIGH), (True, A_07_LOW, A_07_HIGH)])
def test_hand_computed_ap_per_class_and_threshold(hand_source, use_07, a_low, a_high):
    aps = class_aps(HAND_ROWS, hand_source, IOU_THRESHOLDS, use_07_metric=use_07)
    assert aps.shape == (10, 2)
    # d6's IoU .64 passes the thresholds .50, .55, .60 and fails .65 .. .95
    np.testing.assert_allclose(aps[:, 0], [a_low] * 3 + [a_high] * 7, rtol=0, atol=1e-12)
    np.testing.assert_allclose(aps[:, 1], 0.5, rtol=0, atol=1e-12)


def test_hand_computed_means(hand_source):
    area, v07 = score(HAND_ROWS, hand_source, use_07_metric=False), score(HAND_ROWS, hand_source, use_07_metric=True)
    # mAP50 = (class a + class b) / 2
    assert area.ap50 == pytest.approx((34 / 45 + 0.5) / 2, abs=1e-12)          # 0.627778
    assert v07.ap50 == pytest.approx((8.4 / 11 + 0.5) / 2, abs=1e-12)          # 0.631818
    # mAP50:95 = mean over the 10 thresholds: 3 at the "low" class-a AP, 7 at the "high" one
    assert area.ap50_95 == pytest.approx((3 * 34 / 45 + 7 * 5 / 9) / 20 + 0.25, abs=1e-12)   # 0.557778
    assert v07.ap50_95 == pytest.approx((3 * 8.4 / 11 + 7 * 6 / 11) / 20 + 0.25, abs=1e-12)  # 0.555455
    assert area.ap50_per_class == pytest.approx({"a": 34 / 45, "b": 0.5})
    # the set's year picks the metric: VOC2007 -> 11-point
    assert hand_source.use_07_metric and score(HAND_ROWS, hand_source).ap50 == v07.ap50


def test_area_ap50_agrees_with_coco_path(hand_source):
    """pycocotools on the in-memory index (difficult = crowd/ignore) scores the same rows close
    to the VOC area AP: by hand its 101-point AP50 is ((34 + 33 * 2/3 + 34 * 3/5) / 101 + 1/2) / 2
    = 0.628218 against the VOC 0.627778."""
    coco_rows = HAND_ROWS.copy()
    coco_rows[:, 3:5] -= coco_rows[:, 1:3]                  # xyxy -> xywh; class index = category id
    coco = coco_score(hand_source.coco, coco_rows, hand_source.ids)
    voc = score(HAND_ROWS, hand_source, use_07_metric=False)
    assert coco.ap50 == pytest.approx(((34 + 33 * 2 / 3 + 34 * 3 / 5) / 101 + 0.5) / 2, abs=1e-9)
    assert abs(coco.ap50 - voc.ap50) < 0.02


def test_voc_ap_curves():
    # recall reaches 1/2 at precision 1, then 1 at precision 1/2: area = .5 * 1 + .5 * .5
    assert voc_ap([0.5, 1.0], [1.0, 0.5]) == pytest.approx(0.75)
    # 11-point: recall >= 0 .. .5 (6 levels) -> 1, >= .6 .. 1 (5 levels) -> .5: (6 + 2.5) / 11
    assert voc_ap([0.5, 1.0], [1.0, 0.5], use_07_metric=True) == pytest.approx(8.5 / 11)
    # precision rises later: the envelope lifts the first point (area .25 * 2/3 + .25 * 2/3)
    assert voc_ap([0.25, 0.5], [0.5, 2 / 3]) == pytest.approx(1 / 3)
    assert voc_ap([], []) == 0.0


def test_no_detections_and_classes_without_positives(hand_source):
    empty = score(np.zeros((0, 7)), hand_source)
    assert empty.ap50 == 0.0 and empty.ap50_95 == 0.0
    # a class with no (non-difficult) box has no AP and stays out of the mean
    only_difficult = SimpleNamespace(ids=[0], boxes={0: (np.array([[0.0, 0, 9, 9]]), np.array([1]))},
                                     difficult={0: np.array([True])}, class_names=("a", "b"))
    rows = np.array([[0, 0, 0, 9, 9, 0.9, 1]])
    aps = class_aps(rows, only_difficult, [0.5])
    assert np.isnan(aps).all()


def reference_ap(rows, source, thr, use_07):
    """The devkit's per-detection loop, written plainly (the vectorised version must match it)."""
    out = []
    for k in range(len(source.class_names)):
        gts = {i: [(b, d, [False]) for b, c, d in zip(source.boxes[i][0], source.boxes[i][1],
                                                        source.difficult[i]) if c == k] for i in source.ids}
        npos = sum(not d for g in gts.values() for _, d, _ in g)
        dets = sorted([r for r in rows if int(r[6]) == k], key=lambda r: -r[5])
        tp, fp = [], []
        for r in dets:
            best, pick = -np.inf, None
            for g in gts[int(r[0])]:
                b = g[0]
                iw = max(min(r[3], b[2]) - max(r[1], b[0]) + 1, 0)
                ih = max(min(r[4], b[3]) - max(r[2], b[1]) + 1, 0)
                inter = iw * ih
                iou = inter / ((r[3] - r[1] + 1) * (r[4] - r[2] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter)
                if iou > best:
                    best, pick = iou, g
            if best > thr:
                if not pick[1]:
                    tp.append(0 if pick[2][0] else 1)
                    fp.append(1 if pick[2][0] else 0)
                    pick[2][0] = True
                else:
                    tp.append(0)
                    fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        if npos == 0:
            out.append(np.nan)
            continue
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        out.append(voc_ap(ctp / npos, ctp / np.maximum(ctp + cfp, np.finfo(float).eps), use_07))
    return np.array(out)


def test_vectorised_matching_equals_devkit_loop():
    rng = np.random.default_rng(3)
    ids = [2, 5, 7, 11]
    boxes, difficult = {}, {}
    for i in ids:
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 60, (n, 2))
        boxes[i] = (np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1), rng.integers(0, 3, n))
        difficult[i] = rng.random(n) < 0.25
    source = SimpleNamespace(ids=ids, boxes=boxes, difficult=difficult, class_names=("x", "y", "z"))
    # detections: jittered copies of the boxes (several per box: duplicates) plus random ones
    rows = []
    for i in ids:
        for b, c in zip(*boxes[i]):
            for _ in range(int(rng.integers(1, 4))):
                rows.append([i, *(b + rng.normal(0, 4, 4)), rng.random(), c])
    for _ in range(30):
        xy = rng.uniform(0, 60, 2)
        rows.append([rng.choice(ids + [99]), *xy, *(xy + rng.uniform(5, 40, 2)), rng.random(), rng.integers(0, 3)])
    rows = np.array(rows)
    for use_07 in (False, True):
        aps = class_aps(rows, source, IOU_THRESHOLDS, use_07)
        for t, thr in enumerate(IOU_THRESHOLDS):
            kept = rows[rows[:, 0] != 99]               # detections on unknown images are ignored
            np.testing.assert_allclose(aps[t], reference_ap(kept, source, thr, use_07), atol=1e-12)


def test_table_has_upstreams_layout(hand_source):
    lines = score(HAND_ROWS, hand_source).summary.splitlines()
    assert lines[:4] == ["Eval IoU : 0.50", "VOC07 metric? Yes", "AP for a = 0.7636", "AP for b = 0.5000"]
    assert lines[4:8] == ["Mean AP = 0.6318", "~~~~~~~~", "Results:", "0.764"]
    assert lines[8:11] == ["0.500", "0.632", "~~~~~~~~"]
    assert "map_5095: 0.5555" in lines and "map_50: 0.6318" in lines


class OracleModel(nn.Module):
    """Emits each image's boxes (from the VOC source) as a decoded YOLOX output, in loader order."""

    def __init__(self, source, size, num_classes, num_anchors=20):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.outputs = []
        for img_id in source.ids:
            h, w = source.size(img_id)
            r = min(size[0] / h, size[1] / w)
            out = torch.zeros(num_anchors, 5 + num_classes)
            for j, (b, c) in enumerate(zip(*source.boxes[img_id])):
                x1, y1, x2, y2 = (float(v) * r for v in b)
                out[j, :5] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0])
                out[j, 5 + int(c)] = 1.0
            self.outputs.append(out)

    def forward(self, x):
        batch, self.outputs = self.outputs[:x.shape[0]], self.outputs[x.shape[0]:]
        return torch.stack(batch)


def test_voc_evaluator_end_to_end_with_oracle(tmp_path):
    from conftest import load_make_shapes
    from yolox.evaluators import VOCEvaluator
    from yolox_tools import ROOT
    from yolox.exp import get_exp

    load_make_shapes()(tmp_path, 6, 6, seed=2, fmt="voc")
    exp = get_exp(str(ROOT / "exps" / "example" / "shapes" / "yolox_nano_voc_shapes.py"))
    exp.merge(["test_size", "320,320", "data_num_workers", "0"])
    exp.data_dir = str(tmp_path / "VOCdevkit")
    evaluator = exp.get_evaluator(batch_size=4, is_distributed=False)
    assert isinstance(evaluator, VOCEvaluator)
    source = evaluator.dataloader.dataset.source
    assert any(d.any() for d in source.difficult.values())
    model = OracleModel(source, exp.test_size, exp.num_classes)
    (ap50_95, ap50, summary), rows = exp.eval(model, evaluator, False, return_outputs=True)
    assert ap50 == pytest.approx(1.0)          # every box found once; difficult ones ignored
    assert ap50_95 > 0.8                        # letterbox round trip keeps the IoU high
    assert rows.shape == (sum(len(b) for b, _ in source.boxes.values()), 7)
    assert "Mean AP = 1.0000" in summary and "map_5095:" in summary


# --------------------------------------------------------------------- IoU exactly at the threshold
# Matching counts a detection as a hit only when its IoU is strictly above the threshold (the
# devkit's ``ovmax > ovthresh``), with the devkit's inclusive-pixel IoU (width = x2 - x1 + 1): a
# detection at IoU exactly 0.5 is a false positive at IoU 0.5. Every IoU below is a ratio of small
# integers, exact in floating point.

def one_box_source(box):
    return SimpleNamespace(ids=[7], boxes={7: (np.array([box], dtype=np.float64), np.array([0]))},
                           class_names=("thing",))


def ap50(gt_box, det_box):
    rows = np.array([[7, *det_box, 0.9, 0]], dtype=np.float64)
    aps = class_aps(rows, one_box_source(gt_box), [0.5])
    assert aps[0, 0] == score(rows, one_box_source(gt_box)).aps[0, 0]   # score() agrees
    return aps[0, 0]


def test_voc_detection_at_iou_exactly_half_is_a_false_positive():
    # GT (0, 0, 9, 9): 10 x 10 = 100 px (devkit +1). Det (0, 0, 4, 9): 5 x 10 = 50 px, inside it:
    # IoU = 50 / 100 = 0.5 exactly -> not > 0.5 -> FP, the only GT unmatched: AP 0.
    assert ap50((0, 0, 9, 9), (0, 0, 4, 9)) == 0.0
    # one pixel column more: 60 / 100 = 0.6 > 0.5 -> TP: AP 1
    assert ap50((0, 0, 9, 9), (0, 0, 5, 9)) == 1.0


def test_voc_iou_uses_the_devkits_inclusive_pixels():
    # GT (0, 0, 1, 1) is 2 x 2 = 4 px; det (0, 0, 2, 1) is 3 x 2 = 6 px, overlap 4: IoU 4/6 -> TP.
    # (With exclusive widths it would be 1 / 2 = 0.5 exactly, a miss.)
    assert ap50((0, 0, 1, 1), (0, 0, 2, 1)) == 1.0
    # det (0, 0, 1, 0): 2 x 1 = 2 px inside the GT: 2 / 4 = 0.5 exactly -> FP (exclusive: area 0)
    assert ap50((0, 0, 1, 1), (0, 0, 1, 0)) == 0.0


def test_voc_exact_threshold_in_a_ranking():
    """Three detections on two GT boxes, by hand at IoU 0.5: d1 (score .9) hits G1 exactly at 0.5
    -> FP; d2 (.8) = G1 -> TP; d3 (.7) = G2 -> TP. Precision/recall: (0, 0), (1/2, 1/2), (2/3, 1);
    envelope 2/3 over recall (0, 1] -> AP = 2/3."""
    source = SimpleNamespace(ids=[1], class_names=("thing",),
                             boxes={1: (np.array([[0.0, 0, 9, 9], [50, 50, 69, 59]]), np.array([0, 0]))})
    rows = np.array([[1, 0, 0, 4, 9, 0.9, 0],
                     [1, 0, 0, 9, 9, 0.8, 0],
                     [1, 50, 50, 69, 59, 0.7, 0]], dtype=np.float64)
    assert class_aps(rows, source, [0.5])[0, 0] == pytest.approx(2 / 3, abs=1e-12)
    # VOC07 11-point: recall >= 0 .. 1.0 all have max precision 2/3 -> 2/3
    assert class_aps(rows, source, [0.5], use_07_metric=True)[0, 0] == pytest.approx(2 / 3, abs=1e-12)
