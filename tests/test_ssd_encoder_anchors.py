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
