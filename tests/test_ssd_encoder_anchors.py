"""SSD300 default boxes: counts, order and values computed by hand from the reference's formulas."""
import math

import pytest
import torch

from accel.errors import UserError
from ssd import DefaultBoxes, dboxes300_coco

LEVELS = [(38, 4), (19, 6), (10, 6), (5, 6), (3, 4), (1, 4)]


@pytest.fixture(scope="module")
def dboxes():
    return dboxes300_coco()


def level_starts():
    starts, total = [], 0
    for size, per_loc in LEVELS:
        starts.append(total)
        total += size * size * per_loc
    return starts, total


def test_counts_per_level(dboxes):
    _, total = level_starts()
    assert [s * s * n for s, n in LEVELS] == [5776, 2166, 600, 150, 36, 4]
    assert total == 8732 == len(dboxes)
    assert dboxes(order="xywh").shape == (8732, 4)
    assert dboxes(order="ltrb").shape == (8732, 4)
    assert dboxes.num_defaults == [4, 6, 6, 6, 4, 4]
    assert dboxes.scale_xy == 0.1 and dboxes.scale_wh == 0.2


def test_first_anchors_by_hand(dboxes):
    xywh = dboxes(order="xywh")
    c0, c1 = 0.5 / 37.5, 1.5 / 37.5  # (j + 0.5) / (300 / 8)
    expected = {
        0: (c0, c0, 0.07, 0.07),  # level 0, shape 1:1 at 21/300, row 0 col 0
        1: (c1, c0, 0.07, 0.07),  # next column (x moves fastest)
        38: (c0, c1, 0.07, 0.07),  # next row
        38 * 38: (c0, c0, math.sqrt(21 * 45) / 300, math.sqrt(21 * 45) / 300),  # 2nd shape
        2 * 38 * 38: (c0, c0, 0.07 * math.sqrt(2), 0.07 / math.sqrt(2)),  # ratio 2
        3 * 38 * 38: (c0, c0, 0.07 / math.sqrt(2), 0.07 * math.sqrt(2)),  # ratio 1/2
        5776: (0.5 / 18.75, 0.5 / 18.75, 0.15, 0.15),  # level 1 starts: 300/16 = 18.75, 45/300
    }
    for idx, box in expected.items():
        torch.testing.assert_close(xywh[idx], torch.tensor(box), rtol=0, atol=1e-6)
    # ltrb of the first anchor is derived from xywh without clamping, as in the reference
    torch.testing.assert_close(dboxes(order="ltrb")[0], torch.tensor([c0 - 0.035, c0 - 0.035, c0 + 0.035, c0 + 0.035]),
                               rtol=0, atol=1e-6)


def test_last_anchor_by_hand(dboxes):
    w, h = 0.87 / math.sqrt(2), min(1.0, 0.87 * math.sqrt(2))  # ratio 1/2 of 261/300, h clamped to 1
    torch.testing.assert_close(dboxes(order="xywh")[-1], torch.tensor([0.5, 0.5, w, h]), rtol=0, atol=1e-6)
    torch.testing.assert_close(dboxes(order="ltrb")[-1], torch.tensor([0.5 - w / 2, 0.0, 0.5 + w / 2, 1.0]),
                               rtol=0, atol=1e-6)
    s3 = math.sqrt(261 * 315) / 300
    torch.testing.assert_close(dboxes(order="xywh")[-3], torch.tensor([0.5, 0.5, s3, s3]), rtol=0, atol=1e-6)
    torch.testing.assert_close(dboxes(order="xywh")[-2], torch.tensor([0.5, 0.5, 1.0, w]), rtol=0, atol=1e-6)


def test_level_blocks_share_shape_and_cover_grid(dboxes):
    xywh = dboxes(order="xywh")
    starts, _ = level_starts()
    for (size, per_loc), start, step in zip(LEVELS, starts, [8, 16, 32, 64, 100, 300]):
        level = xywh[start:start + size * size * per_loc].reshape(per_loc, size, size, 4)
        assert torch.all(level[..., 2:] == level[:, :1, :1, 2:])  # one shape per block
        centres = ((torch.arange(size, dtype=torch.float64) + 0.5) * step / 300).clamp(max=1).float()
        torch.testing.assert_close(level[..., 0], centres.expand(per_loc, size, -1))  # x along columns
        torch.testing.assert_close(level[..., 1], centres[:, None].expand(per_loc, -1, size))  # y along rows


def test_clamped_and_ltrb_consistent(dboxes):
    xywh, ltrb = dboxes(order="xywh"), dboxes(order="ltrb")
    assert xywh.min() >= 0 and xywh.max() <= 1
    torch.testing.assert_close((ltrb[:, :2] + ltrb[:, 2:]) / 2, xywh[:, :2])
    torch.testing.assert_close(ltrb[:, 2:] - ltrb[:, :2], xywh[:, 2:])


def test_custom_boxes_and_bad_input():
    small = DefaultBoxes(2, [2], [1], [1, 2], [[]])
    assert len(small) == 8 and small.num_defaults == [2]
    torch.testing.assert_close(small(order="ltrb")[:4], torch.tensor(
        [[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]))
    with pytest.raises(UserError, match="order"):
        small(order="cxcywh")
    with pytest.raises(UserError, match="one entry per feature map"):
        DefaultBoxes(300, [38, 19], [8], [21, 45, 99], [[2], [2]])


# ----------------------------------------------------------- every anchor shape and centre by table
# A literal table of all six levels: a one-line change to a scale, ratio or clamp moves a value.

# Distinct (w, h) of every anchor shape per level, normalised by 300, in the reference's order:
# (s_k, s_k), (sqrt(s_k s_k+1), same), then (s_k sqrt(r), s_k / sqrt(r)) and its transpose per ratio r.
# scales 21, 45, 99, 153, 207, 261, 315; ratios [2], [2,3], [2,3], [2,3], [2], [2].
ANCHOR_SHAPES = [
    # level 0: 38x38, step 8, s = 21 / 45
    [(0.07, 0.07), (0.10246951, 0.10246951), (0.09899495, 0.04949747), (0.04949747, 0.09899495)],
    # level 1: 19x19, step 16, s = 45 / 99
    [(0.15, 0.15), (0.22248595, 0.22248595), (0.21213203, 0.10606602), (0.10606602, 0.21213203),
     (0.25980762, 0.08660254), (0.08660254, 0.25980762)],
    # level 2: 10x10, step 32, s = 99 / 153
    [(0.33, 0.33), (0.41024383, 0.41024383), (0.46669048, 0.23334524), (0.23334524, 0.46669048),
     (0.57157677, 0.19052559), (0.19052559, 0.57157677)],
    # level 3: 5x5, step 64, s = 153 / 207
    [(0.51, 0.51), (0.59321160, 0.59321160), (0.72124892, 0.36062446), (0.36062446, 0.72124892),
     (0.88334591, 0.29444864), (0.29444864, 0.88334591)],
    # level 4: 3x3, step 100, s = 207 / 261
    [(0.69, 0.69), (0.77479029, 0.77479029), (0.97580736, 0.48790368), (0.48790368, 0.97580736)],
    # level 5: 1x1, step 300, s = 261 / 315; 0.87 * sqrt(2) = 1.2303658 is clamped to 1
    [(0.87, 0.87), (0.95577194, 0.95577194), (1.0, 0.61518290), (0.61518290, 1.0)],
]
# (feature map size, first anchor centre, last anchor centre) per level: (j + 0.5) / (300 / step),
# the last one clamped to 1 where it falls outside (level 2: 9.5 / 9.375 = 1.01333).
ANCHOR_CENTRES = [
    (38, 0.5 / 37.5, 1.0),            # 37.5 / 37.5
    (19, 0.5 / 18.75, 18.5 / 18.75),  # 0.026667, 0.986667
    (10, 0.5 / 9.375, 1.0),           # 0.053333, clamped from 1.013333
    (5, 0.5 / 4.6875, 4.5 / 4.6875),  # 0.106667, 0.96
    (3, 1 / 6, 5 / 6),
    (1, 0.5, 0.5),
]


def test_ssd_anchor_shapes_and_centres_every_level_by_table():
    from ssd import dboxes300_coco

    xywh = dboxes300_coco()(order="xywh")
    assert xywh.shape == (8732, 4)
    start = 0
    for level, (shapes, (size, first_c, last_c)) in enumerate(zip(ANCHOR_SHAPES, ANCHOR_CENTRES)):
        n = len(shapes) * size * size
        block = xywh[start:start + n].reshape(len(shapes), size * size, 4)
        expected = torch.tensor(shapes).view(len(shapes), 1, 2).expand(-1, size * size, -1)
        torch.testing.assert_close(block[..., 2:], expected, rtol=0, atol=2e-7,
                                   msg=lambda m, level=level: f"level {level}: {m}")
        # every shape block starts at the top-left location and ends at the bottom-right one
        torch.testing.assert_close(block[:, 0, :2], torch.full((len(shapes), 2), first_c), rtol=0, atol=1e-6)
        torch.testing.assert_close(block[:, -1, :2], torch.full((len(shapes), 2), last_c), rtol=0, atol=1e-6)
        start += n
    assert start == 8732
