"""Exponential moving average of model weights (upstream YOLOX ModelEMA semantics)."""
import math
from copy import deepcopy

import torch

from accel import unwrap
from yolox.utils.model_utils import frozen_state_keys


class ModelEMA:
    """Keeps ``ema`` = decayed average of the model's float state; the eval and saved model.

    decay(updates) = decay * (1 - exp(-updates / 2000)) so early updates follow the model closely.
    Buffers (BN running stats) are averaged too, as upstream does.
    """

    def __init__(self, model, decay=0.9998, updates=0):
        self.ema = deepcopy(unwrap(model)).eval()
        self.updates = updates
        self.base_decay = decay
        # frozen entries (freeze_module) never change: averaging a constant could still move it
        # by a rounding step, so they are left out
        frozen = frozen_state_keys(unwrap(model))
        self._keys = [k for k, v in self.ema.state_dict().items()
                      if v.dtype.is_floating_point and k not in frozen]
        for p in self.ema.parameters():
            p.requires_grad_(False)
        ema_state = self.ema.state_dict()
        self._ema_floats = [ema_state[k] for k in self._keys]
        self._src = None

    def decay(self, updates):
        """Decay for the ``updates``-th update."""
        return self.base_decay * (1.0 - math.exp(-updates / 2000.0))

    def _model_floats(self, model):
        # state_dict tensors alias the live parameters, so the list is built once per model
        if self._src is None or self._src[0] is not model:
            sd = unwrap(model).state_dict()
            self._src = (model, [sd[k] for k in self._keys])
        return self._src[1]

    @torch.no_grad()
    def update(self, model):
        """ema = d * ema + (1 - d) * model, as two fused foreach ops (no host syncs)."""
        self.updates += 1
        d = self.decay(self.updates)
        src = self._model_floats(model)
        torch._foreach_mul_(self._ema_floats, d)
        torch._foreach_add_(self._ema_floats, [s.detach() for s in src], alpha=1.0 - d)


def make_ema(ema_class, model, enabled, updates, ckpt=None):
    """The EMA copy of ``model`` (exp.ema; None when off) of ``ema_class`` (``ModelEMA``, or
    Habana's FusedEMA through ``accel.policy.ema_class``), counted on from ``updates`` steps or,
    when the checkpoint has them, from its EMA weights and update count."""
    if not enabled:
        return None
    ema = ema_class(model, 0.9998)
    ema.updates = updates
    if ckpt is not None and "ema_updates" in ckpt:
        # through .ema / .updates only: ModelEMA and Habana's FusedEMA both have them
        ema.ema.load_state_dict(ckpt["model"])
        ema.updates = int(ckpt["ema_updates"])
    return ema
