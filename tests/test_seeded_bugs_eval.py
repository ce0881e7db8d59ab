"""Evaluation-side boundary facts that a bug-seeding run found unguarded:

4. VOC matching (``detcore.evaluation.voc_eval``) counts a detection as a hit only when its IoU is strictly
   above the threshold (the devkit's ``ovmax > ovthresh``), with the devkit's inclusive-pixel IoU
   (width = x2 - x1 + 1): a detection at IoU exactly 0.5 is a false positive at IoU 0.5;
5. the torch-free runtime's NMS (``detcore.deploy.postprocess.nms``) suppresses only IoU strictly above
   the threshold, as ``torchvision.ops.nms``: a box at exactly the threshold survives.

Every IoU below is a ratio of small integers, exact in floating point.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, nms as tv_nms

from detcore.deploy.postprocess import nms
from detcore.evaluation.voc_eval import class_aps, score


# ------------------------------------------------------------------ 4. VOC strict IoU > threshold
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


# ------------------------------------------------------------------ 5. NMS at exactly the threshold
# A (score .9) is 10 x 10. B = A's top half: IoU(A, B) = 50/100 = 0.5. C = A's bottom half:
# IoU(A, C) = 0.5, IoU(B, C) = 0. D = A's top three quarters: IoU(A, D) = 75/100 = 0.75,
# IoU(B, D) = 50/75. E / F elsewhere: IoU(E, F) = 8/16 = 0.5.
BOXES = np.array([[0, 0, 10, 10],      # A .9
                  [0, 0, 10, 5],       # B .8
                  [0, 5, 10, 10],      # C .7
                  [0, 0, 10, 7.5],     # D .6
                  [20, 20, 24, 24],    # E .5
                  [20, 20, 24, 22]],   # F .4
                 dtype=np.float32)
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=np.float32)


@pytest.mark.parametrize("thr,kept", [
    (0.5, [0, 1, 2, 4, 5]),      # B, C, F sit exactly at 0.5 and survive; D (0.75 with A) goes
    (0.75, [0, 1, 2, 3, 4, 5]),  # D exactly at 0.75 with A, 0.667 with B: survives
    (0.25, [0, 4]),              # B, C (0.5) and D (0.75) go; F (0.5 with E) goes
])
def test_nms_keeps_a_box_exactly_at_the_threshold(thr, kept):
    for dtype in (np.float32, np.float64):
        boxes, scores = BOXES.astype(dtype), SCORES.astype(dtype)
        expected = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
        assert expected == kept               # the hand count is torchvision's
        assert nms(boxes, scores, thr).tolist() == kept


def test_batched_nms_keeps_a_box_exactly_at_the_threshold():
    classes = np.array([0, 0, 1, 0, 2, 2])    # C alone in its class; E, F share class 2
    for thr in (0.5, 0.75):
        expected = batched_nms(torch.from_numpy(BOXES), torch.from_numpy(SCORES),
                               torch.from_numpy(classes), thr).tolist()
        assert nms(BOXES, SCORES, thr, classes=classes).tolist() == expected
    assert nms(BOXES, SCORES, 0.5, classes=classes).tolist() == [0, 1, 2, 4, 5]
