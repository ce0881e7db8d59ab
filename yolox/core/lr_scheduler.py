"""Learning-rate schedules of upstream YOLOX, as pure functions of the global iteration.

The trainer calls ``update_lr(iteration)`` every step; keeping the schedule a pure function of the
iteration count is what lets ``--resume`` continue with exactly the rate it stopped at.
"""
import math
from functools import partial

from accel.errors import UserError


def cos_lr(lr, total_iters, iters):
    """Plain cosine decay from ``lr`` to 0."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * iters / total_iters))


def warm_cos_lr(lr, total_iters, warmup_total_iters, warmup_lr_start, iters):
    """Linear warm-up from ``warmup_lr_start``, then cosine decay to 0."""
    if iters <= warmup_total_iters:
        return (lr - warmup_lr_start) * iters / float(warmup_total_iters) + warmup_lr_start
    return lr * 0.5 * (1.0 + math.cos(
        math.pi * (iters - warmup_total_iters) / (total_iters - warmup_total_iters)))


def yolox_warm_cos_lr(lr, min_lr_ratio, total_iters, warmup_total_iters, warmup_lr_start,
                      no_aug_iter, iters):
    """Quadratic warm-up, cosine down to ``lr * min_lr_ratio``, flat for the no-aug tail (upstream)."""
    min_lr = lr * min_lr_ratio
    if iters <= warmup_total_iters:
        return (lr - warmup_lr_start) * (iters / float(warmup_total_iters)) ** 2 + warmup_lr_start
    if iters >= total_iters - no_aug_iter:
        return min_lr
    span = max(total_iters - warmup_total_iters - no_aug_iter, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * (iters - warmup_total_iters) / span))


def multistep_lr(lr, milestones, gamma, iters):
    """Step decay by ``gamma`` at each milestone iteration."""
    return lr * gamma ** sum(iters >= m for m in milestones)


class LRScheduler:
    """Named schedule over ``total_epochs * iters_per_epoch`` iterations (upstream names)."""

    NAMES = ("cos", "warmcos", "yoloxwarmcos", "multistep")

    def __init__(self, name, lr, iters_per_epoch, total_epochs, warmup_epochs=0, warmup_lr_start=0.0,
                 no_aug_epochs=0, min_lr_ratio=0.2, milestones=None, gamma=0.1):
        self.lr = lr
        self.iters_per_epoch = iters_per_epoch
        self.total_iters = max(iters_per_epoch * total_epochs, 1)
        # at least one warm-up iteration keeps the warm-up ratio well defined
        warmup_iters = max(int(round(iters_per_epoch * warmup_epochs)), 1)
        if name == "cos":
            self._fn = partial(cos_lr, lr, self.total_iters)
        elif name == "warmcos":
            self._fn = partial(warm_cos_lr, lr, self.total_iters, warmup_iters, warmup_lr_start)
        elif name == "yoloxwarmcos":
            self._fn = partial(yolox_warm_cos_lr, lr, min_lr_ratio, self.total_iters, warmup_iters,
                               warmup_lr_start, iters_per_epoch * no_aug_epochs)
        elif name == "multistep":
            steps = [int(self.total_iters * m) for m in (milestones or (0.7, 0.9))]
            self._fn = partial(multistep_lr, lr, steps, gamma)
        else:
            raise UserError(f"exp.scheduler {name!r} is unknown; expected one of {', '.join(self.NAMES)}")

    def update_lr(self, iters):
        """Learning rate for global iteration ``iters`` (1-based, as upstream)."""
        return self._fn(iters)
