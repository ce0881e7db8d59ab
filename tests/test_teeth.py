"""Tests with teeth: each one pins a behaviour that a realistic one-line bug (a mutant found by
mutation testing) would change without any other test noticing.

1. SSD300 default boxes: every (w, h) at all six levels against a literal table.
2. SSD matching: an anchor at IoU exactly 0.5 stays negative (the threshold is strict).
3. YOLOX SimOTA: the 1e5 out-of-region penalty decides the assignment.
4. Exp overrides keep int sequences int and float sequences float.
5. backward -> mark_step -> optimizer.step -> mark_step in both trainers' real step functions,
   and mark_step between forward and post-processing in both evaluators.
6. Learning rates at given iterations (YOLOX yoloxwarmcos, SSD MLPerf) against literal numbers.
"""
import math
import types
from fractions import Fraction

import pytest
import torch

import accel
from accel import hpu

# --------------------------------------------------------------------------- 1. SSD anchors

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


# --------------------------------------------------------------------------- 2. SSD IoU == 0.5


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


# --------------------------------------------------------------------------- 3. SimOTA penalty

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


# --------------------------------------------------------------------------- 4. Exp overrides


def test_exp_sequence_overrides_keep_element_types():
    from yolox.exp import get_exp

    exp = get_exp(exp_name="yolox-nano")
    exp.merge(["input_size", "320,416", "test_size", "[256, 288]", "mosaic_scale", "0.5,2",
               "max_epoch", "12", "basic_lr_per_img", "1"])
    assert exp.input_size == (320, 416) and type(exp.input_size) is tuple
    assert [type(v) for v in exp.input_size] == [int, int]
    assert exp.test_size == (256, 288) and [type(v) for v in exp.test_size] == [int, int]
    assert exp.mosaic_scale == (0.5, 2.0) and [type(v) for v in exp.mosaic_scale] == [float, float]
    assert type(exp.max_epoch) is int and exp.max_epoch == 12
    assert type(exp.basic_lr_per_img) is float and exp.basic_lr_per_img == 1.0
    # an int slot takes whole numbers only
    from accel.errors import UserError
    with pytest.raises(UserError, match="input_size"):
        exp.merge(["input_size", "320.5,416"])
    assert exp.input_size == (320, 416)


# --------------------------------------------------------------------------- 5. step order


@pytest.fixture
def events(monkeypatch):
    """Treat the CPU as a lazy-mode HPU for ``accel.hpu.mark_step`` and record every flush.

    Patching the Habana seam itself (``is_hpu`` and the module loader that ``mark_step`` looks up
    at call time) records the calls whichever name the code imported ``mark_step`` under.
    """
    log = []
    fake_core = types.SimpleNamespace(mark_step=lambda: log.append("mark_step"))
    monkeypatch.setenv("PT_HPU_LAZY_MODE", "1")
    monkeypatch.setattr(hpu, "is_hpu", lambda device: torch.device(device).type == "cpu")
    monkeypatch.setattr(hpu, "_module", lambda name: fake_core if name == hpu.CORE else None)
    return log


class RecordingSGD(torch.optim.SGD):
    def __init__(self, params, log):
        super().__init__(params, lr=0.1)
        self.log = log

    def zero_grad(self, set_to_none=True):
        self.log.append("zero_grad")
        return super().zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        self.log.append(("step", self.param_groups[0]["lr"]))
        assert all(p.grad is not None for g in self.param_groups for p in g["params"])
        return super().step(closure)


class TinyYOLOX(torch.nn.Module):
    """Stands in for the detector: ``model(inps, targets)`` -> loss dict, backward recorded."""

    def __init__(self, log):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        self.log = log

    def forward(self, inps, targets):
        self.log.append("forward")
        loss = (self.w * inps.mean()).pow(2).sum() + targets.sum() * 0
        loss.register_hook(lambda g: self.log.append("backward"))
        return {"total_loss": loss, "iou_loss": loss * 0.5, "num_fg": 3.0}


def test_yolox_train_step_order(events):
    from yolox.core.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.model = TinyYOLOX(events)
    trainer.forward_model, trainer.compiled = trainer.model, False   # as before_train without compile
    trainer.optimizer = RecordingSGD(trainer.model.parameters(), events)
    trainer.precision = accel.Precision("cpu")
    trainer.ema = None
    before = trainer.model.w.detach().clone()
    out = trainer.train_step(torch.ones(1, 3, 8, 8), torch.zeros(1, 2, 5))
    assert events == ["forward", "zero_grad", "backward", "mark_step", ("step", 0.1), "mark_step"]
    assert not torch.equal(trainer.model.w.detach(), before)          # the step did update
    assert not out["total_loss"].requires_grad and out["num_fg"] == 3.0


class TinySSD(torch.nn.Module):
    """[B, 3, 300, 300] -> ploc [B, 4, 8732], plabel [B, C, 8732]; backward recorded."""

    def __init__(self, log, num_classes=3):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(1, 4, 8732))
        self.conf = torch.nn.Parameter(torch.zeros(1, num_classes, 8732))
        self.log = log

    def forward(self, img):
        self.log.append("forward")
        scale = img.mean(dim=(1, 2, 3)).view(-1, 1, 1)
        ploc, plabel = self.loc * scale, self.conf * scale
        if torch.is_grad_enabled():
            ploc.register_hook(lambda g: self.log.append("backward"))
        return ploc, plabel


@pytest.mark.parametrize("splits", [1, 2])
def test_ssd_train_step_order(events, splits):
    from ssd import Encoder, Loss, dboxes300_coco
    from ssd.engine import TrainStep

    dboxes = dboxes300_coco()
    model = TinySSD(events)
    optimizer = RecordingSGD(model.parameters(), events)
    step = TrainStep(model, Loss(dboxes), Encoder(dboxes), optimizer, accel.Precision("cpu"),
                     torch.device("cpu"), splits)
    imgs = torch.ones(2, 3, 300, 300)
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.6], [0, 0, 0, 0]], [[0.3, 0.3, 0.8, 0.9], [0.5, 0.1, 0.9, 0.4]]])
    labels = torch.tensor([[1, 0], [2, 1]])
    before = model.conf.detach().clone()
    total = step(imgs, boxes, labels, lr=0.025)
    per_split = ["forward", "backward", "mark_step"]
    assert events == ["zero_grad"] + per_split * splits + [("step", 0.025), "mark_step"]
    assert not torch.equal(model.conf.detach(), before)
    assert total.dim() == 0 and torch.isfinite(total)


def test_yolox_evaluator_marks_step_between_forward_and_postprocess(events, monkeypatch):
    import yolox.utils
    from yolox.evaluators.coco_evaluator import COCOEvaluator

    real = yolox.utils.postprocess

    def recording_postprocess(*args, **kwargs):
        events.append("postprocess")
        return real(*args, **kwargs)

    monkeypatch.setattr(yolox.utils, "postprocess", recording_postprocess)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            events.append("forward")
            out = torch.zeros(x.shape[0], 4, 5 + 2)
            out[..., :4] = torch.tensor([10.0, 10.0, 8.0, 8.0])
            out[..., 4:] = 0.9
            return out + self.w

    batches = [(torch.zeros(2, 3, 32, 32), None, (torch.tensor([32, 32]), torch.tensor([32, 32])),
                torch.tensor([1, 2])),
               (torch.zeros(1, 3, 32, 32), None, (torch.tensor([32]), torch.tensor([32])), torch.tensor([3]))]

    class Loader(list):
        dataset = types.SimpleNamespace(class_ids=[7, 9])

    evaluator = COCOEvaluator(Loader(batches), (32, 32), 0.01, 0.65, 2)
    rows, _, n_img = evaluator.predict(Model())
    assert events == ["forward", "mark_step", "postprocess"] * 2
    assert n_img == 3 and rows.shape[1] == 7 and len(rows) > 0


def test_ssd_evaluate_marks_step_between_forward_and_decode(events, monkeypatch):
    import ssd.engine as engine

    model = TinySSD(events)

    class RecordingEncoder:
        def decode_batch(self, ploc, plabel, **kwargs):
            events.append("decode")
            return [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))] * ploc.shape[0]

    scored = []
    monkeypatch.setattr(engine, "gather_and_score",
                        lambda coco, rows, ids, secs, n, keep_rows=False: scored.append((rows.shape, n)) or "result")
    loader = [(torch.ones(2, 3, 300, 300), None, None, torch.tensor([1, 2]), torch.tensor([[300, 300]] * 2)),
              (torch.ones(1, 3, 300, 300), None, None, torch.tensor([3]), torch.tensor([[300, 300]]))]
    dataset = types.SimpleNamespace(coco=None, ids=[1, 2, 3], cat_ids=[1, 2])
    model.train()
    assert engine.evaluate(model, loader, RecordingEncoder(), dataset, torch.device("cpu")) == "result"
    assert events == ["forward", "mark_step", "decode"] * 2
    assert scored == [((0, 7), 3)] and model.training


# --------------------------------------------------------------------------- 6. learning rates


def test_yoloxwarmcos_at_boundaries_with_warmup_start_and_min_ratio():
    from yolox.core.lr_scheduler import LRScheduler

    # lr 0.02 over 10 epochs x 10 iters; warm-up 2 epochs (20 iters) from 0.002; no-aug 3 epochs
    # (last 30 iters) at min_lr = 0.1 * 0.02 = 0.002; cosine over 100 - 20 - 30 = 50 iters.
    s = LRScheduler("yoloxwarmcos", 0.02, 10, 10, warmup_epochs=2, warmup_lr_start=0.002,
                    no_aug_epochs=3, min_lr_ratio=0.1)
    expected = {
        0: 0.002,                   # warm-up start
        5: 0.003125,                # 0.018 * (5/20)^2 + 0.002
        10: 0.0065,                 # 0.018 * 0.25 + 0.002
        20: 0.02,                   # end of warm-up (iters <= 20 is warm-up)
        21: 0.019982240556,         # 0.002 + 0.009 * (1 + cos(pi / 50))
        45: 0.011,                  # cosine half way: 0.002 + 0.009
        69: 0.002017759444,         # 0.002 + 0.009 * (1 + cos(49 pi / 50))
        70: 0.002,                  # no-aug tail starts
        99: 0.002,
        100: 0.002,
        120: 0.002,                 # past the end stays flat
    }
    for it, lr in expected.items():
        assert s.update_lr(it) == pytest.approx(lr, rel=1e-9, abs=1e-12), it


def test_yolox_exp_scheduler_wiring_by_hand():
    from yolox.exp import get_exp

    exp = get_exp(exp_name="yolox-nano")
    # defaults: 300 epochs, warm-up 5 epochs from 0, 15 no-aug epochs, min_lr_ratio 0.05
    s = exp.get_lr_scheduler(0.01, 10)          # 3000 iters, warm-up 50, tail 150, cosine span 2800
    assert s.update_lr(25) == pytest.approx(0.0025, rel=1e-9)   # 0.01 * (25/50)^2
    assert s.update_lr(50) == pytest.approx(0.01, rel=1e-9)
    assert s.update_lr(1450) == pytest.approx(0.00525, rel=1e-9)       # 0.0005 + 0.5 * 0.0095
    assert s.update_lr(2849) == pytest.approx(0.0005 + 0.00475 * (1 + math.cos(math.pi * 2799 / 2800)),
                                              rel=1e-9)
    assert s.update_lr(2850) == pytest.approx(0.0005, rel=1e-9)
    assert s.update_lr(3000) == pytest.approx(0.0005, rel=1e-9)


def test_yolox_trainer_sets_lr_of_next_iteration(monkeypatch):
    """After the step of (epoch e, iter i) the trainer sets the rate of 1-based iteration
    e * max_iter + i + 1, as upstream."""
    from yolox.core.lr_scheduler import LRScheduler
    from yolox.core.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    w = torch.nn.Parameter(torch.zeros(2))
    trainer.optimizer = torch.optim.SGD([w], lr=0.0)
    trainer.lr_scheduler = LRScheduler("yoloxwarmcos", 0.02, 10, 10, warmup_epochs=2,
                                       warmup_lr_start=0.002, no_aug_epochs=3, min_lr_ratio=0.1)
    trainer.device = torch.device("cpu")
    trainer.exp = types.SimpleNamespace(preprocess=lambda inps, targets, size: (inps, targets))
    trainer.input_size = (8, 8)
    trainer.memory_format = torch.contiguous_format
    trainer.train_iter = iter([(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 5))] * 3)
    trainer._window = {"iter_time": 0.0, "data_time": 0.0, "count": 0}
    trainer.run_iters, trainer._epoch_images, trainer.batch_size = 0, 0, 1
    trainer.max_iter = 10
    trainer.compiled = False
    monkeypatch.setattr(trainer, "train_step", lambda inps, targets: {}, raising=False)
    for (epoch, it), lr in [((0, 4), 0.003125),       # -> iteration 5
                            ((2, 0), 0.019982240556),  # -> iteration 21
                            ((4, 4), 0.011)]:          # -> iteration 45
        trainer.epoch, trainer.iter = epoch, it
        trainer.train_one_iter()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-9), (epoch, it)


def test_ssd_mlperf_learning_rate_by_hand():
    from ssd.engine import learning_rate

    # base 0.08, 100 warm-up iters, warmup_factor 3 (start at base - base / 8), x0.1 at 300 and 400
    args = dict(base_lr=0.08, warmup_iters=100, warmup_factor=3, boundaries=[300, 400])
    expected = {
        0: 0.07,          # 0.08 - 100 * 0.08 / (100 * 2**3)
        60: 0.076,        # 0.08 - 40 * 0.0001
        99: 0.0799,       # last warm-up iteration: 0.08 - 0.0001
        100: 0.08,        # warm-up over
        299: 0.08,
        300: 0.008,       # first boundary, inclusive
        399: 0.008,
        400: 0.0008,      # second boundary
        5000: 0.0008,
    }
    for it, lr in expected.items():
        assert learning_rate(it, **args) == pytest.approx(lr, rel=1e-12), it
    # warm-up longer than a boundary: warm-up wins while it lasts, then the boundary applies
    assert learning_rate(5, 1.0, 10, 1, [5]) == pytest.approx(0.75)      # 1 - 5 / 20
    assert learning_rate(10, 1.0, 10, 1, [5]) == pytest.approx(0.1)
    assert learning_rate(0, 0.08, 0, 0, [300]) == 0.08                  # no warm-up at all
