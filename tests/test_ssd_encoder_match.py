"""Encoder.encode / encode_batch against hand-derived cases and a literal port of the reference's steps."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from accel.errors import UserError
from ssd import Encoder, dboxes300_coco
from ssd.encoder import first_argmax

DBOXES = dboxes300_coco()
ENCODER = Encoder(DBOXES)


def reference_encode(bboxes, labels, criteria=0.5):
    """The reference's encode step by step, with its sequential forced-match loop (later GT wins)."""
    anchors = DBOXES(order="ltrb")
    lt = torch.max(bboxes[:, None, :2], anchors[None, :, :2])
    rb = torch.min(bboxes[:, None, 2:], anchors[None, :, 2:])
    delta = (rb - lt).clamp(min=0)
    inter = delta[..., 0] * delta[..., 1]
    area1 = ((bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1]))[:, None]
    area2 = ((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1]))[None]
    ious = inter / (area1 + area2 - inter)
    best_dbox_ious, best_dbox_idx = ious.max(dim=0)
    _, best_bbox_idx = ious.max(dim=1)
    best_dbox_ious.index_fill_(0, best_bbox_idx, 2.0)
    for g in range(len(best_bbox_idx)):
        best_dbox_idx[best_bbox_idx[g]] = g
    masks = best_dbox_ious > criteria
    labels_out = torch.zeros(len(anchors), dtype=torch.long)
    labels_out[masks] = labels[best_dbox_idx[masks]]
    out = anchors.clone()
    out[masks] = bboxes[best_dbox_idx[masks]]
    xywh = torch.stack(((out[:, 0] + out[:, 2]) / 2, (out[:, 1] + out[:, 3]) / 2,
                        out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]), dim=1)
    return xywh, labels_out


def test_box_equal_to_anchor_is_positive_with_its_xywh():
    box = torch.tensor([[0.3, 0.3, 0.7, 0.7]])
    ious = box_iou(box, DBOXES(order="ltrb"))[0]
    xywh, labels = ENCODER.encode(box, torch.tensor([7]))
    expected_pos = ious > 0.5
    expected_pos[ious.argmax()] = True
    assert expected_pos.sum() > 1
    assert torch.equal(labels == 7, expected_pos)
    assert torch.all(labels[~expected_pos] == 0)
    gt_xywh = torch.tensor([0.5, 0.5, 0.4, 0.4])
    torch.testing.assert_close(xywh[expected_pos], gt_xywh.expand(int(expected_pos.sum()), 4))
    torch.testing.assert_close(xywh[~expected_pos], DBOXES(order="xywh")[~expected_pos])


def test_tiny_box_is_forced_onto_its_best_anchor():
    box = torch.tensor([[0.500, 0.500, 0.505, 0.505]])  # IoU with every anchor far below 0.5
    ious = box_iou(box, DBOXES(order="ltrb"))[0]
    assert ious.max() < 0.1
    _, labels = ENCODER.encode(box, torch.tensor([3]))
    assert labels.nonzero().flatten().tolist() == [int(ious.argmax())]
    assert labels[ious.argmax()] == 3


def test_duplicate_boxes_later_gt_wins_forced_anchor():
    box = torch.tensor([0.3, 0.3, 0.7, 0.7])
    xywh, labels = ENCODER.encode(torch.stack((box, box)), torch.tensor([1, 2]))
    best = int(box_iou(box[None], DBOXES(order="ltrb"))[0].argmax())
    assert labels[best] == 2  # the forced step runs over GTs in order: the later one overwrites
    others = labels.clone()
    others[best] = 0
    assert set(others.unique().tolist()) == {0, 1}  # plain IoU matches pick the first of equal GTs
    assert torch.equal(ENCODER.encode(torch.stack((box, box)), torch.tensor([1, 2]))[1], reference_encode(
        torch.stack((box, box)), torch.tensor([1, 2]))[1])


def test_zero_boxes_keep_defaults():
    xywh, labels = ENCODER.encode(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert torch.all(labels == 0)
    torch.testing.assert_close(xywh, DBOXES(order="xywh"))
    bxywh, blabels = ENCODER.encode_batch(torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.long))
    assert bxywh.shape == (3, 8732, 4) and blabels.shape == (3, 8732)
    assert torch.all(blabels == 0)
    torch.testing.assert_close(bxywh, DBOXES(order="xywh").expand(3, -1, -1))


def test_outputs_never_alias_the_default_boxes():
    """The outputs start as a copy of the default boxes; were a batch of one a view of the
    encoder's cached anchors, writing its positives would change every later encoding."""
    encoder = Encoder(DBOXES)
    box = torch.tensor([[0.1, 0.1, 0.6, 0.5]])
    first = encoder.encode(box, torch.tensor([3]))
    assert torch.equal(encoder.encode(box, torch.tensor([3]))[0], first[0])
    torch.testing.assert_close(encoder.encode(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))[0],
                               DBOXES(order="xywh"))


def test_bad_shapes_are_user_errors():
    with pytest.raises(UserError, match="encode"):
        ENCODER.encode(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(UserError, match="encode_batch"):
        ENCODER.encode_batch(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


@st.composite
def padded_batches(draw):
    """Random padded batches: 0..6 boxes per image, some duplicated, padding rows anywhere."""
    batch = draw(st.integers(1, 3))
    width = draw(st.integers(0, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, width, 2, generator=gen) * 0.9
    wh = torch.rand(batch, width, 2, generator=gen) * (1 - xy).clamp(min=0.01)
    boxes = torch.cat((xy, xy + wh), dim=2)
    labels = torch.randint(1, 5, (batch, width), generator=gen)
    if width > 1 and draw(st.booleans()):
        boxes[:, -1] = boxes[:, 0]  # duplicate box, maybe with another label
    labels = labels * (torch.rand(batch, width, generator=gen) > 0.3)  # padding rows
    return boxes, labels


@settings(max_examples=25, deadline=None)
@given(padded_batches())
def test_batch_equals_per_image_and_reference(case):
    boxes, labels = case
    bxywh, blabels = ENCODER.encode_batch(boxes, labels)
    for b in range(boxes.shape[0]):
        real = labels[b] > 0
        xywh, lab = ENCODER.encode(boxes[b][real], labels[b][real])
        assert torch.equal(blabels[b], lab)
        assert torch.equal(bxywh[b], xywh)
        if real.any():
            rxywh, rlab = reference_encode(boxes[b][real], labels[b][real])
            assert torch.equal(lab, rlab)
            torch.testing.assert_close(xywh, rxywh, rtol=0, atol=1e-7)


def test_forced_anchor_shared_by_non_duplicates():
    # two GTs whose best anchor is the same (both tiny, inside one anchor): the later one gets it
    boxes = torch.tensor([[0.500, 0.500, 0.504, 0.504], [0.501, 0.501, 0.505, 0.505]])
    best = box_iou(boxes, DBOXES(order="ltrb")).argmax(dim=1)
    assert best[0] == best[1]
    _, labels = ENCODER.encode(boxes, torch.tensor([1, 2]))
    assert labels[best[0]] == 2
    _, blabels = ENCODER.encode_batch(boxes[None], torch.tensor([[1, 2]]))
    assert torch.equal(blabels[0], labels)
    assert torch.equal(labels, reference_encode(boxes, torch.tensor([1, 2]))[1])


def test_padding_row_does_not_take_a_forced_anchor_from_a_real_gt():
    # A padding row is an empty box whose "best anchor" is anchor 0; a real, tiny GT in the corner
    # whose best anchor is also anchor 0 (IoU < 0.5, so only the forced step makes it positive)
    # must keep it though the padding row comes later.
    tiny = torch.tensor([[0.0, 0.0, 0.01, 0.01]])
    ious = box_iou(tiny, DBOXES(order="ltrb"))[0]
    assert int(ious.argmax()) == 0 and ious.max() < 0.5
    boxes = torch.stack((torch.cat((tiny, torch.zeros(1, 4))), torch.tensor([[0.2, 0.2, 0.6, 0.6]] * 2)))
    _, labels = ENCODER.encode_batch(boxes, torch.tensor([[5, 0], [1, 2]]))
    assert labels[0].nonzero().flatten().tolist() == [0] and labels[0, 0] == 5
    assert torch.equal(labels[0], reference_encode(tiny, torch.tensor([5]))[1])


def test_float64_boxes_encode_like_float32():
    # float32 tables are gathered as complex128 scalars; other dtypes take the plain row gather
    boxes = torch.tensor([[[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.7, 0.7]]])
    labels = torch.tensor([[3, 4]])
    xywh32, labels32 = ENCODER.encode_batch(boxes, labels)
    xywh64, labels64 = ENCODER.encode_batch(boxes.double(), labels)
    assert xywh64.dtype == torch.float64 and torch.equal(labels64, labels32)
    torch.testing.assert_close(xywh64.float(), xywh32)


@pytest.mark.parametrize("block", [1, 3, 4, 12])
def test_first_argmax_is_argmax_with_its_tie_rule(block):
    x = torch.zeros(3, 12)
    x[0, [2, 9]] = 5.0  # tie across runs (of 3 or 4): the first wins
    x[1, [4, 5]] = 5.0  # tie inside one run
    x[2, 11] = 1.0      # the very last element
    assert first_argmax(x, block).tolist() == [2, 4, 11]
    y = torch.randint(0, 3, (5, 7, 12)).float()  # many ties
    assert torch.equal(first_argmax(y, block), y.argmax(-1))
