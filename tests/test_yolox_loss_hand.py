"""Hand-checkable SimOTA / YOLOX-loss cases on one 8x8 grid of stride 8 (a 64x64 image).

Anchor (ix, iy) has index iy * 8 + ix and centre (8 * ix + 4, 8 * iy + 4). Unless a
case says otherwise every logit is 0 and every prediction is a 1x1 box at (2, 2), far
from every GT, so only the predictions a case sets have a non-zero IoU.
"""
import math

import pytest
import torch

from yolox.models.simota import candidate_masks, simota_assign
from yolox.models.yolo_loss import yolox_loss

LOG2 = math.log(2.0)
C = 2  # classes


def anchor(ix, iy):
    return iy * 8 + ix


def grid8():
    iy, ix = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    grids = torch.stack([ix.reshape(-1), iy.reshape(-1)], 1).float()
    return grids, torch.full((64,), 8.0)


def blank_outputs():
    out = torch.zeros(1, 64, 5 + C)
    out[0, :, :4] = torch.tensor([2.0, 2.0, 1.0, 1.0])
    return out


def targets(*rows, pad_to=None):
    n = pad_to or len(rows)
    t = torch.zeros(1, n, 5)
    for i, r in enumerate(rows):
        t[0, i] = torch.tensor(r, dtype=torch.float)
    return t


def run(out, t, use_l1=False, origin=None):
    grids, strides = grid8()
    origin = torch.zeros(1, 64, 4) if origin is None else origin
    return [float(v) for v in yolox_loss(out, origin, grids, strides, t, C, use_l1)]


def assign(out, t):
    grids, strides = grid8()
    valid = t.sum(2) > 0
    return simota_assign(out[..., :4], out[..., 4], out[..., 5:], t[..., 1:5], t[..., 0].long(), valid, grids, strides)


def fg_set(fg):
    return set(torch.nonzero(fg[0]).flatten().tolist())


def test_candidate_sets_box_and_centre_region():
    """GT (32,32,24,24) spans (20,44): anchor centres 28 and 36 are inside on each axis (2x2);
    the 2.5-stride centre region (12,52) holds centres 20..44 (4x4)."""
    grids, strides = grid8()
    t = targets((1, 32, 32, 24, 24))
    in_box, in_ctr = candidate_masks(t[..., 1:5], t.sum(2) > 0, grids, strides)
    assert fg_set(in_box[:, 0]) == {anchor(x, y) for x in (3, 4) for y in (3, 4)}
    assert fg_set(in_ctr[:, 0]) == {anchor(x, y) for x in range(2, 6) for y in range(2, 6)}


def test_dynamic_k_from_top_ious_and_losses_by_formula():
    """IoUs 1, 1, 0.5 -> k = int(2.5) = 2 -> the two exact predictions win."""
    out = blank_outputs()
    gt = [32.0, 32.0, 24.0, 24.0]
    out[0, anchor(3, 3), :4] = torch.tensor(gt)
    out[0, anchor(4, 4), :4] = torch.tensor(gt)
    out[0, anchor(3, 4), :4] = torch.tensor([32.0, 32.0, 24.0, 12.0])  # IoU 288 / 576
    t = targets([1.0] + gt)
    fg, matched_gt, matched_iou = assign(out, t)
    assert fg_set(fg) == {anchor(3, 3), anchor(4, 4)}
    assert torch.equal(matched_iou[0, fg[0]], torch.ones(2))

    total, iou_w, obj, cls, l1, ratio = run(out, t)
    # obj: 64 anchors x BCE(0, .) = 64 log2, / num_fg 2; cls: 2 fg x 2 classes x log2 / 2
    assert iou_w == pytest.approx(0.0, abs=1e-6)
    assert obj == pytest.approx(32 * LOG2, rel=1e-6)
    assert cls == pytest.approx(2 * LOG2, rel=1e-6)
    assert l1 == 0.0 and ratio == 2.0
    assert total == pytest.approx(34 * LOG2, rel=1e-6)

    # L1 with zero raw outputs: anchor (3,3): |1|+|1|+2 log 3; anchor (4,4): 0+0+2 log 3; / 2
    total_l1, _, _, _, l1, _ = run(out, t, use_l1=True)
    assert l1 == pytest.approx(1 + 2 * math.log(3.0), rel=1e-6)
    assert total_l1 == pytest.approx(total + l1, rel=1e-6)


def test_centre_region_candidate_k_clamped_to_one_and_non_candidates_ignored():
    """A 4x4 GT between anchor centres: no anchor is inside it, the 4x4 centre region is.
    The only overlapping candidate has IoU 0.5 -> k = max(1, int(0.5)) = 1. Anchor (0,0)
    predicts the GT exactly but lies outside both regions, so it can never be chosen."""
    out = blank_outputs()
    gt = [32.0, 32.0, 4.0, 4.0]
    out[0, anchor(2, 2), :4] = torch.tensor([32.0, 32.0, 4.0, 2.0])
    out[0, anchor(0, 0), :4] = torch.tensor(gt)
    t = targets([0.0] + gt)
    fg, _, matched_iou = assign(out, t)
    assert fg_set(fg) == {anchor(2, 2)}
    assert float(matched_iou[0, anchor(2, 2)]) == pytest.approx(0.5)

    total, iou_w, obj, cls, l1, ratio = run(out, t)
    assert iou_w == pytest.approx(5 * (1 - 0.5**2), rel=1e-6)
    assert obj == pytest.approx(64 * LOG2, rel=1e-6)
    # class 0 target 0.5 and class 1 target 0, logits 0: BCE = log2 each
    assert cls == pytest.approx(2 * LOG2, rel=1e-6)
    assert ratio == 1.0


@pytest.mark.parametrize("winner", [0, 1])
def test_conflict_goes_to_lowest_cost_gt(winner):
    """Two GTs on the same box both pick the one exact prediction; the class logits make
    the winner's classification cost lower, so it keeps the anchor and the other gets none."""
    out = blank_outputs()
    gt = [32.0, 32.0, 24.0, 24.0]
    a = anchor(3, 3)
    out[0, a, :4] = torch.tensor(gt)
    out[0, a, 5 + winner] = 4.0
    out[0, a, 5 + (1 - winner)] = -4.0
    t = targets([0.0] + gt, [1.0] + gt)
    fg, matched_gt, _ = assign(out, t)
    assert fg_set(fg) == {a}
    assert int(matched_gt[0, a]) == winner

    total, iou_w, obj, cls, l1, ratio = run(out, t)
    assert cls == pytest.approx(2 * math.log1p(math.exp(-4.0)), rel=1e-5)
    assert obj == pytest.approx(64 * LOG2, rel=1e-6)
    assert ratio == 0.5


def test_zero_gt_image_gives_objectness_only_loss():
    out = torch.randn(1, 64, 5 + C)
    out[0, :, 2:4] = out[0, :, 2:4].exp() * 8
    total, iou_w, obj, cls, l1, ratio = run(out, torch.zeros(1, 3, 5), use_l1=True)
    expected = torch.nn.functional.softplus(out[0, :, 4]).sum()  # BCE(x, 0) over all anchors, / max(0, 1)
    assert obj == pytest.approx(float(expected), rel=1e-6)
    assert total == pytest.approx(obj, rel=1e-6)
    assert iou_w == cls == l1 == ratio == 0.0


def test_gt_without_any_candidate_anchor_matches_nothing():
    """A box centred far outside the grid covers no anchor centre and has no anchor within
    2.5 strides: k is clamped to 1 but there is nothing to take (upstream would fail here)."""
    out = blank_outputs()
    gt = [32.0, 32.0, 24.0, 24.0]
    out[0, anchor(3, 3), :4] = torch.tensor(gt)
    far = [0.0, 300.0, 300.0, 4.0, 4.0]
    assert not assign(out, targets(far))[0].any()
    alone = assign(out, targets([1.0] + gt))[0]
    fg, matched_gt, _ = assign(out, targets(far, [1.0] + gt))
    assert torch.equal(fg, alone) and fg_set(fg) == {anchor(3, 3)}
    assert int(matched_gt[0, anchor(3, 3)]) == 1
    assert run(out, targets(far, [1.0] + gt))[5] == 0.5


# ------------------------------------------------------------ SimOTA: the 1e5 out-of-region penalty
# A 16 x 16 grid (not the 8 x 8 one above) where only the penalty decides the assignment.

GRID = 16   # one stride-8 level over a 128 x 128 image: 256 anchors
STRIDE = 8.0


def _simota_inputs(gts, preds):
    """gts: list of (cx, cy, w, h); preds: {anchor (gx, gy): (cx, cy, w, h)}, all others far away."""
    yv, xv = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
    grids = torch.stack((xv.reshape(-1), yv.reshape(-1)), 1).float()
    strides = torch.full((GRID * GRID,), STRIDE)
    pred = torch.tensor([1000.0, 1000.0, 4.0, 4.0]).repeat(1, GRID * GRID, 1)  # IoU 0 with every GT
    for (gx, gy), box in preds.items():
        pred[0, gy * GRID + gx] = torch.tensor(box)
    obj = torch.zeros(1, GRID * GRID)          # equal class/objectness cost everywhere
    cls = torch.zeros(1, GRID * GRID, 2)
    gt = torch.tensor([gts], dtype=torch.float32)
    gt_cls = torch.zeros(1, len(gts), dtype=torch.long)
    valid = torch.ones(1, len(gts), dtype=torch.bool)
    return pred, obj, cls, gt, gt_cls, valid, grids, strides


def _anchor(gx, gy):
    return gy * GRID + gx


def test_simota_penalty_moves_match_into_box_and_centre_region():
    """GT (64, 64, 120, 120): anchor (1, 1) (centre (12, 12)) is in the box but 52 px > 2.5 strides
    from the centre; its prediction is the GT itself (IoU 1, cost c). Anchor (7, 7) (centre (60, 60))
    is in both; its 4 x 4 prediction has IoU 16/14400 (cost c + 3 * 6.80 = c + 20.4). Only the 1e5
    penalty on (1, 1) makes (7, 7) the match (dynamic k = int(1.001) = 1); a penalty of 10, or none,
    would keep (1, 1)."""
    from yolox.models.simota import simota_assign
    from yolox.models.yolo_loss import assign_in_chunks

    inputs = _simota_inputs([(64.0, 64.0, 120.0, 120.0)],
                            {(1, 1): (64.0, 64.0, 120.0, 120.0), (7, 7): (60.0, 60.0, 4.0, 4.0)})
    fg, matched_gt, matched_iou = simota_assign(*inputs)
    assert fg[0].nonzero().flatten().tolist() == [_anchor(7, 7)]
    assert matched_gt[0, _anchor(7, 7)] == 0
    assert matched_iou[0, _anchor(7, 7)] == pytest.approx(16 / 14400, rel=1e-5)
    # the head's entry point agrees (whole batch in one chunk, and one image per chunk)
    pred, obj, cls, gt, gt_cls, valid, grids, strides = inputs
    outputs = torch.cat((pred, obj[..., None], cls), -1)
    for max_pairs in (1 << 23, 1):
        fg2, _, _ = assign_in_chunks(outputs, gt, gt_cls, valid, grids, strides, max_pairs)
        assert torch.equal(fg2, fg)


def test_simota_penalty_for_anchor_outside_this_gts_region():
    """Anchor (12, 12) (centre (100, 100)) is a candidate only through GT 2 (100, 100, 24, 24); for
    GT 1 (40, 40, 40, 40) it is neither in the box nor within 2.5 strides, yet its prediction is GT 1
    exactly (IoU 1). GT 1's in-region anchor (5, 5) predicts a 2 x 2 box (IoU 4/1600, cost + 18.0).
    With the 1e5 penalty GT 1 takes (5, 5); GT 2 takes (11, 11), whose prediction is GT 2."""
    from yolox.models.simota import simota_assign

    inputs = _simota_inputs(
        [(40.0, 40.0, 40.0, 40.0), (100.0, 100.0, 24.0, 24.0)],
        {(12, 12): (40.0, 40.0, 40.0, 40.0), (5, 5): (44.0, 44.0, 2.0, 2.0),
         (11, 11): (100.0, 100.0, 24.0, 24.0)})
    fg, matched_gt, matched_iou = simota_assign(*inputs)
    assert sorted(fg[0].nonzero().flatten().tolist()) == sorted([_anchor(5, 5), _anchor(11, 11)])
    assert matched_gt[0, _anchor(5, 5)] == 0 and matched_gt[0, _anchor(11, 11)] == 1
    assert matched_iou[0, _anchor(5, 5)] == pytest.approx(4 / 1600, rel=1e-5)
    assert matched_iou[0, _anchor(11, 11)] == pytest.approx(1.0)
