"""Training-side facts that a bug-seeding run found unguarded, each pinned from first principles:

1. the YOLOX no-aug phase (mosaic off, L1 loss on) covers exactly the last ``no_aug_epochs``
   epochs (0-based epoch index ``max_epoch - no_aug_epochs`` is the first), in a fresh run and in
   a run resumed into or just before that phase (``Trainer.before_epoch`` / ``prepare_data``);
2. the EMA leaves entries frozen by ``freeze_module`` bit-equal to the model (a frozen backbone
   never drifts by rounding), while still averaging the trainable ones;
3. the fine-tune rule of ``load_matching``: fewer than half of the model's tensors fitting by name
   AND shape is another model; a name match of another shape does not count as fitting;
6. ``Precision.autocast()`` carries the requested dtype whatever the device's default autocast
   dtype is (cpu defaults to bf16, cuda to fp16);
7. the SSD encoder's CPU chunking (``accel.policy.chunk_items``) never yields a chunk of 0 images:
   an image with 500 boxes (500 x 8732 pairs > the 4M-pair CPU budget) encodes, and equals a
   plain per-anchor reference and the single-pass result.
"""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from accel.errors import UserError
from accel.precision import Precision
from detcore.training.weights import load_matching
from yolox.core.ema import ModelEMA
from yolox.core.trainer import Trainer
from yolox.utils import freeze_module


# ------------------------------------------------------------------ 1. no-aug phase boundaries
class FakeLoader:
    """What the trainer touches on its train loader."""

    def __init__(self, no_aug=False):
        self.mosaic = not no_aug
        self.closed = 0
        self.iters_per_epoch = 4
        self.batch_sampler = SimpleNamespace(sampler=SimpleNamespace(start=0), batch_size=2)

    def close_mosaic(self):
        self.closed += 1
        self.mosaic = False

    def __iter__(self):
        return iter(())


class FakeExp:
    def __init__(self, no_aug_epochs):
        self.no_aug_epochs = no_aug_epochs
        self.eval_interval = 10
        self.steps = 0
        self.basic_lr_per_img = 0.01 / 64
        self.loader_calls = []

    def get_data_loader(self, batch_size, is_distributed, no_aug=False, cache_img=False):
        self.loader_calls.append(no_aug)
        return FakeLoader(no_aug)

    def get_lr_scheduler(self, lr, iters_per_epoch):
        return SimpleNamespace(update_lr=lambda it: lr)


def bare_trainer(max_epoch, no_aug_epochs, start_epoch=0):
    """A Trainer with only what before_epoch / prepare_data read (no model, data or device)."""
    t = Trainer.__new__(Trainer)
    t.exp = FakeExp(no_aug_epochs)
    t.args = SimpleNamespace(cache=False)
    t.max_epoch, t.batch_size, t.is_distributed = max_epoch, 2, False
    t.start_epoch, t.start_iter, t.no_aug = start_epoch, 0, False
    t.input_size = (64, 64)
    t.model = nn.Module()
    t.model.head = SimpleNamespace(use_l1=False)
    return t


def run_epochs(t):
    """Call before_epoch for every epoch from start_epoch; per epoch (mosaic on, use_l1)."""
    seen = []
    for t.epoch in range(t.start_epoch, t.max_epoch):
        t.before_epoch()
        seen.append((t.train_loader.mosaic, t.model.head.use_l1))
    return seen


@pytest.mark.parametrize("max_epoch,no_aug_epochs", [(5, 2), (6, 1), (4, 4), (3, 0), (300, 15)])
def test_no_aug_phase_is_exactly_the_last_n_epochs(max_epoch, no_aug_epochs):
    t = bare_trainer(max_epoch, no_aug_epochs)
    t.prepare_data(None)
    assert t.exp.loader_calls == [no_aug_epochs >= max_epoch]   # a fresh run starts with mosaic
    seen = run_epochs(t)
    # hand count: epochs 1..E-N (1-based) with mosaic and no L1, the last N without mosaic, with L1
    first_no_aug = max_epoch - no_aug_epochs
    expected = [(e < first_no_aug, e >= first_no_aug) for e in range(max_epoch)]
    assert seen == expected
    assert sum(not mosaic for mosaic, _ in seen) == no_aug_epochs
    assert t.train_loader.closed == (1 if 0 < no_aug_epochs < max_epoch else 0)
    if no_aug_epochs:
        assert t.exp.eval_interval == 1     # the no-aug phase evaluates every epoch


@pytest.mark.parametrize("start_epoch,aug_left", [(0, 3), (2, 1), (3, 0), (4, 0)])
def test_resume_lands_in_the_right_phase(start_epoch, aug_left):
    """max_epoch 5, no_aug_epochs 2: a resume at 0-based epoch 3 or 4 is already in the no-aug
    phase (loader built without mosaic, L1 on from its first step); one at epoch 2 still has one
    mosaic epoch to go."""
    t = bare_trainer(5, 2, start_epoch=start_epoch)
    t.prepare_data(None)
    assert t.no_aug == (aug_left == 0)
    assert t.exp.loader_calls == [aug_left == 0]
    seen = run_epochs(t)
    assert [mosaic for mosaic, _ in seen] == [True] * aug_left + [False] * (5 - start_epoch - aug_left)
    assert [l1 for _, l1 in seen] == [False] * aug_left + [True] * (5 - start_epoch - aug_left)


# ------------------------------------------------------------------ 2. EMA and frozen entries
class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.Conv2d(64, 64, 3))
        self.head = nn.Linear(64, 8)


def test_ema_leaves_frozen_entries_bit_equal_and_averages_the_rest():
    torch.manual_seed(0)
    model = TwoPart()
    with torch.no_grad():     # BN statistics that are not the trivial 0 / 1
        model.backbone[1].running_mean.uniform_(-3, 3)
        model.backbone[1].running_var.uniform_(0.5, 4)
    freeze_module(model.backbone)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    ema = ModelEMA(model, 0.9998)
    ema.updates = 3000        # a decay well inside (0, 1)
    head_w = model.head.weight
    expected_head = ema.ema.head.weight.detach().clone().double()
    for step in range(40):
        with torch.no_grad():
            head_w.add_(torch.randn_like(head_w))      # the trainable part moves
        ema.update(model)
        d = 0.9998 * (1 - math.exp(-(3000 + step + 1) / 2000))
        expected_head = d * expected_head + (1 - d) * head_w.detach().double()
    state = ema.ema.state_dict()
    for k, v in frozen.items():
        assert torch.equal(state[k], v), f"EMA moved frozen {k}"
        assert torch.equal(model.state_dict()[k], v)
    torch.testing.assert_close(ema.ema.head.weight.double(), expected_head, rtol=0, atol=1e-5)

    # the test has teeth: averaging those frozen tensors with themselves, the same way, moves them
    moved = False
    for v in frozen.values():
        if not v.dtype.is_floating_point:
            continue
        avg = v.clone()
        for step in range(40):
            d = 0.9998 * (1 - math.exp(-(3000 + step + 1) / 2000))
            avg.mul_(d).add_(v, alpha=1 - d)
        moved |= not torch.equal(avg, v)
    assert moved


# ------------------------------------------------------------------ 3. fine-tune "fits under half"
def four_tensor_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))   # 0.weight 0.bias 1.weight 1.bias


def test_name_matches_of_another_shape_do_not_count_as_fitting():
    model = four_tensor_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # every name matches, but only 1.bias has the model's shape: 1 of 4 tensors fits (< half)
    ckpt = {"model": {"0.weight": torch.ones(5, 4), "0.bias": torch.ones(5),
                      "1.weight": torch.ones(4, 5), "1.bias": torch.ones(4)}}
    with pytest.raises(UserError, match="fits only 1 of the model's 4 tensors"):
        load_matching(model, ckpt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])       # nothing was loaded


def test_exactly_half_fitting_is_a_fine_tune():
    model = four_tensor_model()
    ckpt = {"model": {"0.weight": torch.full((4, 4), 2.0), "0.bias": torch.full((4,), 3.0),
                      "1.weight": torch.ones(9, 4), "1.bias": torch.ones(9)}}   # a new class count
    assert load_matching(model, ckpt) == ["0.bias", "0.weight"]
    assert (model[0].weight == 2).all() and (model[0].bias == 3).all()
    assert model[1].weight.shape == (4, 4)


# ------------------------------------------------------------------ 6. autocast dtype
@pytest.fixture
def autocast_defaults():
    """Restore the process's default autocast dtypes after a test changes them."""
    saved = {d: torch.get_autocast_dtype(d) for d in ("cpu", "cuda")}
    yield
    for d, dtype in saved.items():
        torch.set_autocast_dtype(d, dtype)


def test_cpu_autocast_carries_bf16_even_when_the_default_is_fp16(autocast_defaults):
    torch.set_autocast_dtype("cpu", torch.float16)     # someone changed the process default
    with Precision("cpu", "bf16").autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("mode,dtype,other", [("bf16", torch.bfloat16, torch.float16),
                                              ("fp16", torch.float16, torch.bfloat16)])
def test_cuda_autocast_carries_the_requested_dtype(autocast_defaults, mode, dtype, other, recwarn):
    """cuda autocast defaults to fp16: bf16 must be asked for explicitly (and fp16 too, whatever
    the default was set to). Checked on the context object, which works without a GPU."""
    torch.set_autocast_dtype("cuda", other)
    ctx = Precision("cuda", mode).autocast()
    assert ctx.device == "cuda" and ctx.fast_dtype == dtype
    if torch.cuda.is_available():
        with ctx:
            assert torch.get_autocast_dtype("cuda") == dtype


# ------------------------------------------------------------------ 7. SSD encoder with 500+ boxes
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


def test_chunk_items_is_never_zero():
    from accel.policy import chunk_items

    for work in (1, 4_194_303, 4_194_305, 500 * 8732, 10 ** 9):
        assert chunk_items("cpu", 8, work, 1 << 22) >= 1
    assert chunk_items("cpu", 8, 0, 1 << 22) >= 1
