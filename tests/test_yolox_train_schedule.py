"""Unit checks of the trainer's pieces against hand-computed values: LR schedule, EMA, param groups."""
import math

import pytest
import torch
import torch.nn as nn

from accel.errors import UserError
from yolox.exp.yolox_base import Exp, param_groups
from yolox.core.ema import ModelEMA
from yolox.core.lr_scheduler import LRScheduler


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
