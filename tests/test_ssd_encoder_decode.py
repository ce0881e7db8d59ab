"""Encoder.decode_batch: exact inverse of the encoding on perfect predictions, NMS, limits, thresholds."""
import math

import pytest
import torch

from accel.errors import UserError
from ssd import Encoder, Loss, dboxes300_coco

DBOXES = dboxes300_coco()
ENCODER = Encoder(DBOXES)
NUM_CLASSES = 5


def perfect_predictions(boxes, labels, logit=12.0):
    """Network outputs that decode to the encoded targets: offsets by the loss's formula, one-hot logits."""
    xywh, lab = ENCODER.encode_batch(boxes, labels)
    ploc = Loss(DBOXES)._loc_vec(xywh.transpose(1, 2))
    plabel = torch.zeros(boxes.shape[0], NUM_CLASSES, DBOXES(order="xywh").shape[0])
    plabel.scatter_(1, lab[:, None], logit)
    return ploc, plabel


def test_perfect_predictions_decode_to_ground_truth():
    boxes = torch.tensor([[[0.10, 0.10, 0.40, 0.50], [0.55, 0.45, 0.95, 0.90]],
                          [[0.20, 0.30, 0.70, 0.80], [0.00, 0.00, 0.00, 0.00]]])
    labels = torch.tensor([[1, 3], [4, 0]])
    out = ENCODER.decode_batch(*perfect_predictions(boxes, labels))
    assert len(out) == 2
    score = math.exp(12) / (math.exp(12) + NUM_CLASSES - 1)  # softmax of the one-hot logit
    for (dboxes, dlabels, dscores), gt, gl in zip(out, boxes, labels):
        real = gl > 0
        order = torch.argsort(dlabels)
        assert dlabels[order].tolist() == sorted(gl[real].tolist())  # every matched anchor NMSes down to 1
        torch.testing.assert_close(dboxes[order], gt[real][torch.argsort(gl[real])], rtol=0, atol=1e-5)
        torch.testing.assert_close(dscores, torch.full_like(dscores, score))


def test_scale_back_formula_by_hand():
    ploc = torch.zeros(1, 4, len(DBOXES))
    ploc[0, :, 0] = torch.tensor([1.0, -2.0, 0.5, -1.0])
    boxes, probs = ENCODER.scale_back_batch(ploc, torch.zeros(1, 3, len(DBOXES)))
    cx, cy, w, h = DBOXES(order="xywh")[0].tolist()
    ecx, ecy = cx + 0.1 * 1.0 * w, cy + 0.1 * -2.0 * h
    ew, eh = w * math.exp(0.2 * 0.5), h * math.exp(0.2 * -1.0)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([ecx - ew / 2, ecy - eh / 2, ecx + ew / 2, ecy + eh / 2]))
    torch.testing.assert_close(probs, torch.full((1, len(DBOXES), 3), 1 / 3))


def test_nms_is_per_class_and_keeps_the_best():
    # anchors 0 and 1 are neighbours (IoU 0.45 < criteria) -> move anchor 1's box onto anchor 0's
    anchors = DBOXES(order="xywh")
    ploc = torch.zeros(1, 4, len(DBOXES))
    ploc[0, 0, 1] = (anchors[0, 0] - anchors[1, 0]) / (0.1 * anchors[1, 2])
    plabel = torch.full((1, 3, len(DBOXES)), -20.0)
    plabel[0, 0] = 20.0  # background everywhere else
    plabel[0, :, 0] = torch.tensor([0.0, 3.0, -20.0])  # class 1, higher score
    plabel[0, :, 1] = torch.tensor([0.0, 2.0, -20.0])  # class 1 on the same box: suppressed
    same = ENCODER.decode_batch(ploc, plabel)[0]
    assert same[1].tolist() == [1]
    torch.testing.assert_close(same[2], torch.softmax(torch.tensor([0.0, 3.0, -20.0]), 0)[1:2])
    plabel[0, :, 1] = torch.tensor([0.0, -20.0, 2.0])  # other class on the same box: kept
    other = ENCODER.decode_batch(ploc, plabel)[0]
    assert other[1].tolist() == [1, 2]
    torch.testing.assert_close(other[0][0], other[0][1])


def test_max_output_threshold_and_empty():
    gen = torch.Generator().manual_seed(0)
    ploc = torch.randn(2, 4, len(DBOXES), generator=gen) * 0.1
    plabel = torch.randn(2, 81, len(DBOXES), generator=gen)
    plabel[:, 0] -= 5.0  # confident foreground everywhere: far more than 200 survivors
    boxes, labels, scores = ENCODER.decode_batch(ploc, plabel, max_output=200)[0]
    assert boxes.shape == (200, 4) and labels.shape == (200,) and scores.shape == (200,)
    assert torch.all(scores[:-1] >= scores[1:]) and labels.min() >= 1 and labels.max() <= 80
    assert len(ENCODER.decode_batch(ploc, plabel, max_output=7)[1][0]) == 7
    boxes, labels, scores = ENCODER.decode_batch(ploc, plabel, nms_valid_thresh=1.0)[0]
    assert boxes.shape == (0, 4) and labels.shape == (0,) and scores.shape == (0,)
    assert labels.dtype == torch.long


def test_bad_shapes_are_user_errors():
    with pytest.raises(UserError, match="decode_batch"):
        ENCODER.decode_batch(torch.zeros(1, 8732, 4), torch.zeros(1, 81, 8732))
