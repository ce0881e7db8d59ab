"""Encoder.encode / encode_batch against hand-derived cases and a literal port of the reference's steps."""
from fractions import Fraction

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


# --------------------------------------------------------------------- an anchor at IoU exactly 0.5
# The match threshold is strict: IoU == criteria stays negative (the reference's ``> criteria``).

def _half_iou_case():
    """A GT twice as wide as a level-2 1:1 anchor (index 7976, 0.33 x 0.33 at (0.48, 0.3733)),
    same rows: it contains the anchor, so IoU = w h / (2 w h) = 1/2, and the float32 numbers are
    chosen so that IoU arithmetic (inter = anchor area A, union = (g + A) - A) gives exactly 0.5."""
    from ssd import dboxes300_coco

    dboxes = dboxes300_coco()
    anchors = dboxes(order="ltrb")
    idx = 7976
    left, top, right, bottom = anchors[idx]
    w = right - left
    gt = torch.stack((left - w / 2, top, right + w / 2, bottom))
    # preconditions, exact in float32: width exactly 2 w, same rows, so g = 2 A bit for bit, and
    # (g + A) - A == g (3 A is representable): the IoU comes out as A / 2A = 0.5 exactly
    assert gt[2] - gt[0] == 2 * w and gt[3] - gt[1] == bottom - top
    area = w * (bottom - top)
    g = (gt[2] - gt[0]) * (gt[3] - gt[1])
    assert g == 2 * area and (g + area) - area == g and area / ((g + area) - area) == 0.5
    assert Fraction(float(area)) * 3 == Fraction(float(area * 3))
    return dboxes, idx, gt


def test_ssd_anchor_at_iou_exactly_half_stays_negative():
    from torchvision.ops import box_iou

    from ssd import Encoder

    dboxes, idx, gt = _half_iou_case()
    encoder = Encoder(dboxes)
    ious = box_iou(gt[None], dboxes(order="ltrb"))[0]
    assert ious[idx] == 0.5
    best = int(ious.argmax())
    assert best != idx and ious[best] > 0.5          # the anchor is not this GT's forced match
    expected_pos = ious > 0.5
    expected_pos[best] = True
    default_xywh = dboxes(order="xywh")

    boxes, labels = encoder.encode(gt[None], torch.tensor([5]))
    assert labels[idx] == 0
    torch.testing.assert_close(boxes[idx], default_xywh[idx], rtol=0, atol=1e-6)
    assert torch.equal(labels == 5, expected_pos)

    # the batched path, with padding rows and a second image
    other = torch.tensor([0.1, 0.6, 0.3, 0.9])
    bboxes = torch.stack((torch.stack((gt, torch.zeros(4))), torch.stack((other, gt))))
    blabels = torch.tensor([[5, 0], [2, 0]])
    bxywh, blab = encoder.encode_batch(bboxes, blabels)
    assert blab[0, idx] == 0 and blab[1, idx] == 0
    torch.testing.assert_close(bxywh[0, idx], default_xywh[idx], rtol=0, atol=1e-6)
    assert torch.equal(blab[0], labels) and torch.equal(bxywh[0], boxes)

    # the case really sits on the threshold: any criteria just below 0.5 makes the anchor positive
    _, below = encoder.encode(gt[None], torch.tensor([5]), criteria=0.4999)
    assert below[idx] == 5
    _, bbelow = encoder.encode_batch(bboxes[:1], blabels[:1], criteria=0.4999)
    assert bbelow[0, idx] == 5


# --------------------------------------------------------------- 500+ boxes in one image on the CPU
# The encoder's CPU chunking (``accel.policy.chunk_items``) never yields a chunk of 0 images: an
# image with 500 boxes (500 x 8732 pairs > the 4M-pair CPU budget) encodes, and equals a plain
# per-anchor reference and the single-pass result.

def plain_encode(anchors_ltrb, boxes, labels, criteria=0.5):
    """The reference's matching, written plainly: best GT per anchor, each GT claims its best
    anchor (later GT wins), IoU > criteria positive; outputs xywh + labels."""
    lt = torch.max(boxes[:, None, :2], anchors_ltrb[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], anchors_ltrb[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_b = (boxes[:, 2:] - boxes[:, :2]).prod(-1)[:, None]
    area_a = (anchors_ltrb[:, 2:] - anchors_ltrb[:, :2]).prod(-1)[None]
    ious = inter / (area_b + area_a - inter)
    best_iou, best_gt = ious.max(dim=0)
    best_anchor = ious.argmax(dim=1)
    for g in range(len(boxes)):
        best_iou[best_anchor[g]] = 2.0
        best_gt[best_anchor[g]] = g
    pos = best_iou > criteria
    out = anchors_ltrb.clone()
    out[pos] = boxes[best_gt[pos]]
    lab = torch.zeros(len(anchors_ltrb), dtype=torch.long)
    lab[pos] = labels[best_gt[pos]]
    xywh = torch.cat(((out[:, :2] + out[:, 2:]) / 2, out[:, 2:] - out[:, :2]), dim=1)
    return xywh, lab


def many_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 0.8
    wh = 0.02 + torch.rand(n, 2, generator=g) * 0.2
    return torch.cat((xy, (xy + wh).clamp(max=1.0)), 1), torch.randint(1, 81, (n,), generator=g)


def test_ssd_encoder_handles_500_boxes_per_image_on_cpu(monkeypatch):
    import ssd.encoder as enc
    from ssd import Encoder, dboxes300_coco

    dboxes = dboxes300_coco()
    assert 500 * 8732 > enc.CPU_CHUNK_PAIRS     # the case: one image is over the CPU budget
    encoder = Encoder(dboxes)
    boxes, labels = many_boxes(500, 0)
    xywh, lab = encoder.encode(boxes, labels)           # must run (a 0-image chunk cannot)
    ref_xywh, ref_lab = plain_encode(dboxes(order="ltrb"), boxes, labels)
    assert torch.equal(lab, ref_lab)
    torch.testing.assert_close(xywh, ref_xywh, rtol=0, atol=1e-6)

    # a padded batch of such images: each row equals its image's encode, and the whole batch in
    # one pass (an unlimited budget) gives the same targets
    b2, l2 = many_boxes(520, 1)
    bb = torch.zeros(2, 520, 4)
    ll = torch.zeros(2, 520, dtype=torch.long)
    bb[0, :500], ll[0, :500] = boxes, labels
    bb[1], ll[1] = b2, l2
    chunked = encoder.encode_batch(bb, ll)
    assert torch.equal(chunked[1][0], lab)
    assert torch.equal(chunked[1][1], encoder.encode(b2, l2)[1])
    monkeypatch.setattr(enc, "CPU_CHUNK_PAIRS", 1 << 40)
    whole = Encoder(dboxes).encode_batch(bb, ll)
    assert torch.equal(chunked[0], whole[0]) and torch.equal(chunked[1], whole[1])
