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
