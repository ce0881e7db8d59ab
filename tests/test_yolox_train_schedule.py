"""Unit checks of the trainer's pieces against hand-computed values: LR schedule, EMA, param groups."""
import math
import types
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from accel.errors import UserError
from detcore.training.epochs import EpochBook
from yolox.exp.yolox_base import Exp, param_groups
from yolox.core.ema import ModelEMA
from yolox.core.lr_scheduler import LRScheduler
from yolox.core.trainer import Trainer
from yolox.utils import freeze_module


def test_yoloxwarmcos_matches_hand_values():
    # 10 epochs x 10 iters, 2 warm-up epochs (20 iters), 2 no-aug epochs (20 iters), min ratio .05
    s = LRScheduler("yoloxwarmcos", 0.01, 10, 10, warmup_epochs=2, warmup_lr_start=0.0,
                    no_aug_epochs=2, min_lr_ratio=0.05)
    assert s.update_lr(10) == pytest.approx(0.01 * 0.25)        # quadratic warm-up, half way
    assert s.update_lr(20) == pytest.approx(0.01)                # end of warm-up
    assert s.update_lr(50) == pytest.approx(0.0005 + 0.5 * 0.0095)   # cosine half way (60-iter span)
    assert s.update_lr(80) == pytest.approx(0.0005)              # flat min lr in the no-aug tail
    assert s.update_lr(100) == pytest.approx(0.0005)
    lrs = [s.update_lr(i) for i in range(21, 80)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))             # monotone decay after warm-up


def test_other_schedules_and_unknown_name():
    assert LRScheduler("cos", 0.1, 10, 1).update_lr(5) == pytest.approx(0.05)
    warm = LRScheduler("warmcos", 0.1, 10, 2, warmup_epochs=1, warmup_lr_start=0.0)
    assert warm.update_lr(5) == pytest.approx(0.05)              # linear warm-up
    assert warm.update_lr(15) == pytest.approx(0.05)             # cosine half way over 10 iters
    assert LRScheduler("multistep", 0.1, 10, 10).update_lr(95) == pytest.approx(0.001)
    with pytest.raises(UserError, match="yoloxwarmcos"):
        LRScheduler("nope", 0.1, 10, 1)


def test_ema_update_follows_upstream_formula():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = ModelEMA(model, decay=0.9998)
    start = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema.update(model)
    d = 0.9998 * (1 - math.exp(-1 / 2000))
    for k, v in ema.ema.state_dict().items():
        if v.dtype.is_floating_point:
            expected = d * start[k] + (1 - d) * model.state_dict()[k]
            assert torch.allclose(v, expected, atol=1e-7), k
    assert ema.ema.state_dict()["1.num_batches_tracked"] == start["1.num_batches_tracked"]
    assert ema.updates == 1 and all(not p.requires_grad for p in ema.ema.parameters())


def test_weight_decay_only_on_conv_and_linear_weights():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(),
                          nn.Linear(4, 2))
    no_decay, decay, biases = param_groups(model)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(no_decay) == {id(model[1].weight)}
    assert ids(decay) == {id(model[0].weight), id(model[3].weight)}
    assert ids(biases) == {id(model[1].bias), id(model[3].bias)}


def test_preprocess_rescales_batch_and_targets():
    x = torch.rand(2, 3, 64, 96)
    t = torch.tensor([[[1.0, 48.0, 32.0, 10.0, 20.0], [0, 0, 0, 0, 0]]]).repeat(2, 1, 1)
    y, t2 = Exp().preprocess(x, t, (32, 192))
    assert y.shape == (2, 3, 32, 192)
    assert torch.equal(t2[0, 0], torch.tensor([1.0, 96.0, 16.0, 20.0, 10.0]))
    assert torch.equal(t2[:, 1], torch.zeros(2, 5)) and t[0, 0, 1] == 48.0   # input untouched


# --------------------------------------------------------------- learning rates at given iterations

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
    from detcore.training.progress import StepClock
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
    trainer.clock = StepClock()
    trainer.run_iters, trainer.batch_size = 0, 1
    trainer.book = EpochBook(None, None, None, ("total_loss",), "total_loss")
    trainer.max_iter = 10
    trainer.compiled = False
    monkeypatch.setattr(trainer, "train_step", lambda inps, targets: {}, raising=False)
    for (epoch, it), lr in [((0, 4), 0.003125),       # -> iteration 5
                            ((2, 0), 0.019982240556),  # -> iteration 21
                            ((4, 4), 0.011)]:          # -> iteration 45
        trainer.epoch, trainer.iter = epoch, it
        trainer.train_one_iter()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-9), (epoch, it)


# -------------------------------------------------------------------------- no-aug phase boundaries
# The no-aug phase (mosaic off, L1 loss on) covers exactly the last ``no_aug_epochs`` epochs
# (0-based epoch index ``max_epoch - no_aug_epochs`` is the first), in a fresh run and in a run
# resumed into or just before that phase (``Trainer.before_epoch`` / ``prepare_data``).

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
    t.book = EpochBook(None, None, None, ("total_loss",), "total_loss")    # before_epoch starts its epoch
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


# --------------------------------------------------------------------------- EMA and frozen entries
# The EMA leaves entries frozen by ``freeze_module`` bit-equal to the model (a frozen backbone
# never drifts by rounding), while still averaging the trainable ones.

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
